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
