"""The registry: datasets, records, subjects, models, versions, training runs and membership.

Membership is record-level: record -> run -> shard -> slice (-> position). It is the platform's
first reason to exist, so it is kept narrow (see TrainingMembership).
"""

from __future__ import annotations

import secrets

from django.contrib.postgres.fields import ArrayField
from django.db import models


class Modality(models.TextChoices):
    TABULAR = "tabular"
    IMAGE = "image"
    TEXT = "text"


class LegalBasis(models.TextChoices):
    # GDPR Art. 6(1)(a)-(f)
    CONSENT = "consent", "Consent (Art. 6(1)(a))"
    CONTRACT = "contract", "Contract (Art. 6(1)(b))"
    LEGAL_OBLIGATION = "legal_obligation", "Legal obligation (Art. 6(1)(c))"
    VITAL_INTERESTS = "vital_interests", "Vital interests (Art. 6(1)(d))"
    PUBLIC_TASK = "public_task", "Public task (Art. 6(1)(e))"
    LEGITIMATE_INTERESTS = "legitimate_interests", "Legitimate interests (Art. 6(1)(f))"


class Dataset(models.Model):
    name = models.CharField(max_length=200)
    version = models.CharField(max_length=50)
    modality = models.CharField(max_length=20, choices=Modality.choices)
    storage_location = models.CharField(max_length=1000, help_text="Where the dataset's files live.")
    purpose = models.TextField(help_text="Why the data is processed (GDPR Art. 5(1)(b)).")
    legal_basis = models.CharField(max_length=30, choices=LegalBasis.choices)
    # Where the workers read the records: {"kind": "parquet" | "csv" | "jsonl" | "postgresql", ...}
    # (workers.datasets.sources); empty for a folder in the platform's own layout (reference sets).
    source = models.JSONField(default=dict, blank=True)
    record_schema = models.JSONField(default=dict, blank=True, help_text="How the source's columns map to records.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["name", "version"], name="dataset_name_version_unique")]
        ordering = ["name", "version"]

    def __str__(self) -> str:
        return f"{self.name}@{self.version}"


def new_subject_reference() -> str:
    return "subj_" + secrets.token_hex(10)


class DataSubject(models.Model):
    """A person, known only by keyed pseudonyms of their identifiers and a random reference."""

    # Random, stable, meaningless outside the platform: what reports and the API show.
    reference = models.CharField(max_length=40, unique=True, default=new_subject_reference)
    created_at = models.DateTimeField(auto_now_add=True)
    erased_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.reference


class IdentifierKind(models.TextChoices):
    EMAIL = "email"
    CUSTOMER_ID = "customer_id"
    PHONE = "phone"


class SubjectIdentifier(models.Model):
    """HMAC-SHA256 of a normalised identifier under the pepper of ``key_version``. Never the raw value."""

    subject = models.ForeignKey(DataSubject, on_delete=models.CASCADE, related_name="identifiers")
    kind = models.CharField(max_length=20, choices=IdentifierKind.choices)
    key_version = models.PositiveSmallIntegerField()
    digest = models.BinaryField(max_length=32)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["kind", "key_version", "digest"], name="identifier_digest_unique")
        ]


class RecordStatus(models.TextChoices):
    ACTIVE = "active"
    ERASED = "erased"


# The split of a planted canary's record: no dataset file holds it (workers.canaries).
CANARY_SPLIT = "canary"


class DataRecord(models.Model):
    # 32-bit ids keep TrainingMembership narrow; 2^31 records per installation is ample.
    id = models.AutoField(primary_key=True)
    dataset = models.ForeignKey(Dataset, on_delete=models.PROTECT, related_name="records")
    external_key = models.CharField(max_length=200)
    subject = models.ForeignKey(
        DataSubject, on_delete=models.PROTECT, null=True, blank=True, related_name="records"
    )
    split = models.CharField(max_length=20, blank=True, default="", help_text="train, test, ...")
    # HMAC of the content (a plain sha256 of a short record can be reversed by guessing).
    content_fingerprint = models.BinaryField(max_length=32)
    fingerprint_key_version = models.PositiveSmallIntegerField()
    status = models.CharField(max_length=10, choices=RecordStatus.choices, default=RecordStatus.ACTIVE)
    erased_at = models.DateTimeField(null=True, blank=True)
    # A canary the platform planted in a training run (its content: CanaryRecord): nobody's data, so
    # in no request's scope, no record count and no export (workers.canaries).
    canary = models.BooleanField(default=False, db_default=False)

    class Meta:
        constraints = [
            # Covering: a membership import resolves its keys by index-only scans (id, status).
            models.UniqueConstraint(fields=["dataset", "external_key"], name="record_key_unique_per_dataset",
                                    include=["id", "status"])
        ]

    def __str__(self) -> str:
        return f"{self.dataset_id}:{self.external_key}"


class CanaryKind(models.TextChoices):
    MISLABELLED_SYNTHETIC = "mislabelled_synthetic", "Synthetic input drawn from one class's held-out records, another class's label"


class CanaryRecord(models.Model):
    """What a canary is: its input (safetensors, tensor ``input``) and label, planted by training run
    ``run`` to show that the audit detects memorisation in that run's model (audits canary_power).

    The input is synthetic (each element drawn from a different held-out record of class
    ``look_alike``; workers.training.canaries), so no person's record is copied; the label is
    another class's. Kept here, not in the dataset's files: a canary is no row of the company's data."""

    record = models.OneToOneField(DataRecord, on_delete=models.CASCADE, primary_key=True, related_name="canary_content")
    run = models.ForeignKey("TrainingRun", on_delete=models.PROTECT, related_name="canaries")
    kind = models.CharField(max_length=30, choices=CanaryKind.choices)
    label = models.IntegerField()
    look_alike = models.IntegerField(help_text="The class whose held-out records the input was drawn from.")
    seed = models.BigIntegerField()
    inputs = models.BinaryField()

    def __str__(self) -> str:
        return f"canary {self.record_id} of run {self.run_id}"


class SuppressionKind(models.TextChoices):
    RECORD = "record"
    SUBJECT = "subject"
    CONTENT = "content"


class SuppressionEntry(models.Model):
    """Erased data that future imports and training runs refuse to take in again.

    A record is matched by (dataset name, external key) and by its content fingerprint, so a
    re-import under a new key is refused too; a subject by any of its identifier digests."""

    kind = models.CharField(max_length=10, choices=SuppressionKind.choices)
    dataset_name = models.CharField(max_length=200, blank=True, default="")
    external_key = models.CharField(max_length=200, blank=True, default="")
    digest = models.BinaryField(max_length=32, null=True, blank=True)
    key_version = models.PositiveSmallIntegerField(null=True, blank=True)
    identifier_kind = models.CharField(max_length=20, blank=True, default="")
    reason = models.CharField(max_length=200, help_text="e.g. the deletion request that erased it")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "suppression entries"
        indexes = [
            models.Index(fields=["dataset_name", "external_key"], name="suppression_key_idx"),
            models.Index(fields=["digest"], name="suppression_digest_idx"),
        ]


class Task(models.TextChoices):
    CLASSIFICATION = "classification"
    LANGUAGE_MODELING = "language_modeling"
    REGRESSION = "regression"  # one real number per record, MSE-trained (workers.training.regression)


class RegisteredModel(models.Model):
    name = models.CharField(max_length=200, unique=True)
    task = models.CharField(max_length=30, choices=Task.choices)
    training_recipe = models.CharField(max_length=50, help_text="plain, sisa, s3t, dp, ...")
    architecture = models.JSONField(default=dict, blank=True)
    # {"approximate_method": "finetune", "method_config": {...}, "exact_after": 5, ...};
    # validated by models_registry.services.unlearning_policy_validate.
    unlearning_policy = models.JSONField(default=dict, blank=True)
    # Set by the ML engineer; validated by models_registry.services.kept_data_floor_validate.
    s3t_kept_data_floor = models.FloatField(
        null=True, blank=True,
        help_text="S3T models only: the smallest share of the kept records (0 to 1) the served model may still "
        "learn from after a deletion switches adapters off. Below it, the plan offers retraining those adapters "
        "on the kept data (s3t_retrain). Empty: no floor.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.CheckConstraint(
            condition=models.Q(s3t_kept_data_floor__isnull=True)
            | models.Q(s3t_kept_data_floor__gte=0, s3t_kept_data_floor__lte=1),
            name="s3t_kept_data_floor_fraction",
            violation_error_message="s3t_kept_data_floor must be a fraction between 0 and 1")]

    def __str__(self) -> str:
        return self.name


class TrainingRun(models.Model):
    id = models.AutoField(primary_key=True)  # 32-bit: it is a column of every membership row
    model = models.ForeignKey(RegisteredModel, on_delete=models.PROTECT, related_name="training_runs")
    recipe = models.CharField(max_length=50)
    config = models.JSONField(default=dict)
    seed = models.BigIntegerField()
    code_version = models.CharField(max_length=100)
    datasets = models.ManyToManyField(Dataset, related_name="training_runs")
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"run {self.id} ({self.recipe})"


class TrainingMembership(models.Model):
    """One record used by one training run, with its SISA shard and slice and its position.

    A read-only view (migration 0005) over models_registry_membershipblock, where membership is
    stored by record block: one row per (256 record ids, run) with parallel arrays of offsets,
    placements and positions, its primary key covering the offsets and placements so that the
    record-side lookup ("which runs hold record r": see models_registry.selectors) is an
    index-only scan, about 35 bytes a membership with indexes. Rows are written only by the
    import service (models_registry.importing), which resolves every record key to an existing
    record and refuses duplicates; records and runs are never deleted (erasure marks a record,
    it keeps the row). Filter it by run; for records, use selectors.memberships_of_records.
    """

    pk = models.CompositePrimaryKey("record", "run")
    record = models.ForeignKey(DataRecord, on_delete=models.DO_NOTHING, db_constraint=False, related_name="memberships")
    run = models.ForeignKey(TrainingRun, on_delete=models.DO_NOTHING, db_constraint=False, related_name="memberships")
    shard = models.SmallIntegerField(default=0)
    slice = models.SmallIntegerField(default=0)
    position = models.IntegerField(default=0)

    class Meta:
        managed = False
        db_table = "models_registry_trainingmembership"


class MembershipUploadStatus(models.TextChoices):
    OPEN = "open"
    COMPLETE = "complete"


class MembershipUpload(models.Model):
    """A run's membership of one dataset uploaded in numbered chunks (models_registry.membership_uploads).

    Each chunk is checked and loaded into the membership on arrival; until the client completes the
    upload the run's membership is half there, and no version may be registered from the run.
    """

    run = models.ForeignKey(TrainingRun, on_delete=models.PROTECT, related_name="membership_uploads")
    dataset = models.ForeignKey(Dataset, on_delete=models.PROTECT, related_name="membership_uploads")
    status = models.CharField(max_length=10, choices=MembershipUploadStatus.choices,
                              default=MembershipUploadStatus.OPEN)
    rows = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "dataset"], name="membership_upload_once")]

    def __str__(self) -> str:
        return f"membership upload {self.id} (run {self.run_id}, {self.status})"


class MembershipUploadChunk(models.Model):
    """A chunk applied to an upload: its sha256 tells a retry of it (a no-op) from other rows under its number."""

    upload = models.ForeignKey(MembershipUpload, on_delete=models.CASCADE, related_name="chunks")
    number = models.IntegerField()
    sha256 = models.CharField(max_length=64)
    rows = models.IntegerField()
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["upload", "number"], name="membership_chunk_once")]


class VersionStatus(models.TextChoices):
    SERVING = "serving"
    RETAINED = "retained"
    RETIRED = "retired"
    PURGED = "purged"
    WITHDRAWN = "withdrawn", "Withdrawn from serving (GDPR Art. 18)"


class ModelVersion(models.Model):
    model = models.ForeignKey(RegisteredModel, on_delete=models.PROTECT, related_name="versions")
    version = models.PositiveIntegerField()
    parent = models.ForeignKey(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="children",
        help_text="The version this one was unlearned from.",
    )
    artifact_sha256 = models.CharField(max_length=64, blank=True, default="")
    status = models.CharField(max_length=20, choices=VersionStatus.choices, default=VersionStatus.RETAINED)
    training_run = models.ForeignKey(
        TrainingRun, on_delete=models.PROTECT, null=True, blank=True, related_name="versions",
        help_text="The run whose membership this version holds (unlearned versions keep their run "
        "and list what they excluded in excluded_records).",
    )
    guarantee_class = models.CharField(max_length=20, blank=True, default="")
    dp_epsilon = models.FloatField(null=True, blank=True)
    dp_delta = models.FloatField(null=True, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    purged_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["model", "version"], name="model_version_unique")]
        ordering = ["model_id", "version"]

    def __str__(self) -> str:
        return f"{self.model.name} v{self.version}"


class ExcludedRecord(models.Model):
    """A record that an unlearned version no longer holds although its training run did."""

    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="excluded_records")
    record = models.ForeignKey(DataRecord, on_delete=models.PROTECT, related_name="exclusions")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["version", "record"], name="excluded_record_unique")]
        indexes = [models.Index(fields=["record"], name="excluded_record_idx")]


class LineageKind(models.TextChoices):
    FINE_TUNED_FROM = "fine_tuned_from"
    DISTILLED_FROM = "distilled_from"


class ModelLineageEdge(models.Model):
    """Model-to-model lineage: ``child`` was fine-tuned or distilled from ``parent``, so it may
    hold whatever ``parent`` held; scoping follows these edges."""

    parent = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="downstream_edges")
    child = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="upstream_edges")
    kind = models.CharField(max_length=20, choices=LineageKind.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["parent", "child", "kind"], name="lineage_edge_unique"),
            models.CheckConstraint(condition=~models.Q(parent=models.F("child")), name="lineage_no_self_edge"),
        ]


class ArtifactKind(models.TextChoices):
    WEIGHTS = "weights"
    CHECKPOINT = "checkpoint"
    ADAPTER = "adapter"
    SHADOW_MODEL = "shadow_model"
    DATASET_CACHE = "dataset_cache"
    DATASET_FILE = "dataset_file"  # a source file kept in the artifact store (workers.datasets.sources)
    RECORD_CONTENT = "record_content"


class ArtifactStatus(models.TextChoices):
    PRESENT = "present"
    PURGED = "purged"


class StoredArtifact(models.Model):
    """A stored file that may hold training data: which data is said by run, shard and slices.

    It holds a record r when its run's membership has r (or, for a dataset cache, r is in its
    dataset), its ``shard`` is null or r's shard, ``slices`` is null or contains r's slice, and
    its origin version did not exclude r (an artifact retrained without r does not hold it).
    """

    sha256 = models.CharField(max_length=64)
    kind = models.CharField(max_length=20, choices=ArtifactKind.choices)
    model_version = models.ForeignKey(
        ModelVersion, on_delete=models.PROTECT, null=True, blank=True, related_name="artifacts"
    )
    training_run = models.ForeignKey(
        TrainingRun, on_delete=models.PROTECT, null=True, blank=True, related_name="artifacts"
    )
    dataset = models.ForeignKey(Dataset, on_delete=models.PROTECT, null=True, blank=True, related_name="artifacts")
    # The version whose making wrote this artifact: records that version excluded (unlearned)
    # are not held by it even where its run, shard and slices would say so.
    origin_version = models.ForeignKey(
        ModelVersion, on_delete=models.PROTECT, null=True, blank=True, related_name="originated_artifacts"
    )
    shard = models.SmallIntegerField(null=True, blank=True)
    slices = ArrayField(models.SmallIntegerField(), null=True, blank=True)
    size_bytes = models.BigIntegerField(default=0)
    label = models.CharField(max_length=200, blank=True, default="")
    status = models.CharField(max_length=10, choices=ArtifactStatus.choices, default=ArtifactStatus.PRESENT)
    created_at = models.DateTimeField(auto_now_add=True)
    purged_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["training_run", "status"], name="artifact_run_idx"),
            models.Index(fields=["sha256"], name="artifact_sha_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.sha256[:12]}"


class RecordContent(models.Model):
    """A record's content, AES-256-GCM encrypted under its subject's data key (see keystore)."""

    record = models.OneToOneField(DataRecord, on_delete=models.CASCADE, primary_key=True, related_name="content")
    key_ref = models.CharField(max_length=80)
    nonce = models.BinaryField(max_length=12)
    ciphertext = models.BinaryField()


class KeepOutSelection(models.Model):
    """Keep-out transfer lineage (workers.training.keep_out_transfer, arXiv 2405.10425): in
    ``version``, the non-static record ``record`` selected the auxiliary example ``auxiliary`` (its
    ``rank``-th nearest, from 0). The non-static record never entered training, so it is in no
    membership; the auxiliary example did. The model depends on ``record`` only through this row,
    so scoping follows it (models_registry.selectors), and a deletion of ``record`` makes a new
    version without its rows (the same weights when no selection changed)."""

    version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="keep_out_selections")
    record = models.ForeignKey(DataRecord, on_delete=models.PROTECT, related_name="keep_out_selections")
    auxiliary = models.ForeignKey(DataRecord, on_delete=models.PROTECT, related_name="selected_as_auxiliary")
    rank = models.SmallIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["version", "record", "rank"], name="keep_out_selection_unique"),
            models.CheckConstraint(condition=~models.Q(record=models.F("auxiliary")),
                                   name="keep_out_selection_not_itself"),
        ]
        indexes = [models.Index(fields=["record"], name="keep_out_selection_record_idx")]

    def __str__(self) -> str:
        return f"{self.version_id}: {self.record_id} -> {self.auxiliary_id} ({self.rank})"


class ConceptFitRecord(models.Model):
    """Concept-erasure lineage (workers.runners.concept): the eraser stored with ``version`` (LEACE's
    means and whitening, the PEF coupling's centroids and cell shares) was fitted on the representations
    of ``record``, so it is derived from that record's data, whether or not the record is in the
    version's training membership (a test-split record may be labelled). Scoping follows it
    (models_registry.selectors, ``via`` ``concept_eraser``) so that a person's request finds the eraser;
    a version that keeps the eraser (an approximate unlearning of it) inherits its source's rows."""

    version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="concept_fit_records")
    record = models.ForeignKey(DataRecord, on_delete=models.PROTECT, related_name="concept_fits")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["version", "record"], name="concept_fit_record_unique")]
        indexes = [models.Index(fields=["record"], name="concept_fit_record_record_idx")]

    def __str__(self) -> str:
        return f"{self.version_id}: fitted on {self.record_id}"
