"""Jobs: the unit of work a Celery worker runs. The row is the source of truth; Celery carries ids."""

from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.db import models


class JobKind(models.TextChoices):
    TRAIN = "train", "Train a model (records lineage)"
    UNLEARN = "unlearn", "Unlearn records from a model version"
    SHADOW = "shadow", "Train shadow models for audits"
    AUDIT = "audit", "Audit a new version"
    REPORT = "report", "Erase the request's data and sign its report"
    UPLOAD_CHECK = "upload_check", "Check an uploaded model in a worker and register it"


class JobStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


QUEUE_OF_KIND = {JobKind.TRAIN: "gpu", JobKind.UNLEARN: "gpu", JobKind.SHADOW: "gpu", JobKind.AUDIT: "audit",
                 JobKind.REPORT: "audit", JobKind.UPLOAD_CHECK: "default"}


class Job(models.Model):
    kind = models.CharField(max_length=20, choices=JobKind.choices)
    status = models.CharField(max_length=20, choices=JobStatus.choices, default=JobStatus.PENDING)
    queue = models.CharField(max_length=20, default="gpu")
    registered_model = models.ForeignKey(
        "models_registry.RegisteredModel", on_delete=models.PROTECT, null=True, blank=True, related_name="jobs"
    )
    deletion_request = models.ForeignKey(
        "deletion.DeletionRequest", on_delete=models.PROTECT, null=True, blank=True, related_name="jobs"
    )
    source_version = models.ForeignKey(
        "models_registry.ModelVersion", on_delete=models.PROTECT, null=True, blank=True,
        related_name="jobs_from", help_text="The version an unlearning job starts from.",
    )
    result_version = models.OneToOneField(
        "models_registry.ModelVersion", on_delete=models.PROTECT, null=True, blank=True,
        related_name="created_by_job", help_text="The version this job produced.",
    )
    method = models.CharField(max_length=50, blank=True, default="")
    guarantee_class = models.CharField(max_length=20, blank=True, default="")
    config = models.JSONField(default=dict, blank=True)
    forget_record_ids = ArrayField(models.IntegerField(), default=list, blank=True)
    # What happened, written while it runs.
    progress_stage = models.CharField(max_length=100, blank=True, default="")
    progress_percent = models.FloatField(default=0.0)
    claimed_by = models.CharField(max_length=200, blank=True, default="")
    claimed_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    cancel_requested = models.BooleanField(default=False)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    wall_seconds = models.FloatField(null=True, blank=True)
    device = models.CharField(max_length=50, blank=True, default="")
    estimated_seconds = models.FloatField(null=True, blank=True)
    result = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["status", "heartbeat_at"], name="job_status_heartbeat_idx")]
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"job {self.id} {self.kind} {self.method} ({self.status})"


# ---------------------------------------------------------------- the company's MLflow registry


class MlflowVersionStatus(models.TextChoices):
    IMPORTED = "imported", "Registered as a platform version"
    CHECK_QUEUED = "check_queued", "Its weights wait for a worker's check (a model of the company's own package)"
    REFUSED = "refused", "Not taken: its artifact is in a form the platform does not load, or failed the check"
    NO_MEMBERSHIP = "no_membership", "Not taken: no platform training run holds which records it trained on"
    REGISTERED_BACK = "registered_back", "An unlearned version the platform registered in MLflow"


class MlflowModelVersion(models.Model):
    """A version of a registered model in the company's MLflow registry, as the platform knows it
    (workers.mlflow_registry): imported as ``model_version``, refused or skipped with the reason,
    or registered back by the platform (an unlearned version). ``layout`` says where its weights
    lie among its artifacts and ``flavor_files`` keeps its MLmodel and environment files, so that
    an unlearned version goes back in the same form."""

    model = models.ForeignKey("models_registry.RegisteredModel", on_delete=models.PROTECT,
                              related_name="mlflow_versions")
    registered_model = models.CharField(max_length=256, help_text="The registered model's name in MLflow.")
    version = models.PositiveIntegerField(help_text="Its version number in MLflow.")
    run_id = models.CharField(max_length=64, blank=True, default="")
    source = models.CharField(max_length=1000, blank=True, default="")
    serving_alias = models.CharField(max_length=256, help_text="The alias the company serves the model from.")
    aliases = models.JSONField(default=list, blank=True, help_text="The aliases that named it when it was read.")
    status = models.CharField(max_length=20, choices=MlflowVersionStatus.choices)
    code = models.CharField(max_length=50, blank=True, default="")
    reason = models.TextField(blank=True, default="")
    layout = models.JSONField(default=dict, blank=True)
    flavor_files = models.JSONField(default=dict, blank=True)
    model_version = models.ForeignKey("models_registry.ModelVersion", on_delete=models.PROTECT, null=True,
                                      blank=True, related_name="mlflow_versions")
    upload_check = models.ForeignKey(Job, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["registered_model", "version"],
                                               name="mlflow_version_once")]
        ordering = ["registered_model", "version"]

    def __str__(self) -> str:
        return f"MLflow {self.registered_model} v{self.version} ({self.status})"


class MlflowSyncKind(models.TextChoices):
    REGISTER = "register", "Register an unlearned version and move the serving alias to it"
    REMOVE_ALIAS = "remove_alias", "Remove the serving alias from a withdrawn model"


class MlflowSyncStatus(models.TextChoices):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


class MlflowSync(models.Model):
    """A change the platform owes the company's MLflow registry, written before it is attempted and
    retried with backoff until it is done (workers.mlflow_registry.mlflow_sync_run): the platform's
    own state never waits on MLflow. ``model_version``: the confirmed unlearned version (register)
    or the withdrawn one (remove_alias)."""

    kind = models.CharField(max_length=20, choices=MlflowSyncKind.choices)
    model_version = models.ForeignKey("models_registry.ModelVersion", on_delete=models.PROTECT,
                                      related_name="mlflow_syncs")
    registered_model = models.CharField(max_length=256)
    alias = models.CharField(max_length=256)
    deletion_request = models.CharField(max_length=64, blank=True, default="", help_text="Its public id.")
    guarantee_class = models.CharField(max_length=20, blank=True, default="")
    status = models.CharField(max_length=10, choices=MlflowSyncStatus.choices, default=MlflowSyncStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    result = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"MLflow {self.kind} {self.registered_model}@{self.alias} ({self.status})"


# ---------------------------------------------------------------- the artifact store's held orphans


class HeldOrphan(models.Model):
    """An orphan of the artifact store (workers.artifact_gc) that the object store keeps: Object
    Lock retention not yet passed, or a legal hold. Its data key is destroyed, so the copy cannot be
    read. Reported once, when first found; every later collection re-checks the hold (no delete is
    tried, nothing is ledgered while it holds) and deletes the copy on the first run after the hold
    is gone, saying so, and then this row goes."""

    store = models.CharField(max_length=500, help_text="The store's name (s3://bucket/prefix).")
    kind = models.CharField(max_length=20, help_text="manifest or blob")
    sha256 = models.CharField(max_length=64)
    location = models.CharField(max_length=1000, unique=True)
    reason = models.TextField(help_text="What keeps the copy, as the object store says it.")
    retain_until = models.DateTimeField(null=True, blank=True, help_text="The latest retention date of its versions.")
    legal_hold = models.BooleanField(default=False)
    holds = models.JSONField(default=list, blank=True, help_text="Each kept version and why.")
    first_reported_at = models.DateTimeField(auto_now_add=True)
    last_checked_at = models.DateTimeField()

    class Meta:
        ordering = ["store", "kind", "sha256"]

    def __str__(self) -> str:
        return f"held {self.kind} {self.sha256} in {self.store}: {self.reason}"
