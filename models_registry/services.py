"""Writes to the registry. Keyword-only functions named <entity>_<action>."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.utils import timezone

from foundation.errors import Conflict, ValidationFailed
from foundation.registry import Hooks
from models_registry.models import (
    CANARY_SPLIT,
    CanaryRecord,
    ConceptFitRecord,
    DataRecord,
    Dataset,
    DataSubject,
    ExcludedRecord,
    IdentifierKind,
    KeepOutSelection,
    LineageKind,
    ModelLineageEdge,
    ModelVersion,
    RecordStatus,
    RegisteredModel,
    StoredArtifact,
    SubjectIdentifier,
    SuppressionEntry,
    SuppressionKind,
    TrainingRun,
    VersionStatus,
)
from models_registry.pseudonyms import current_key_version, identifier_digests_all_versions
from models_registry.selectors import downstream_version_ids, version_membership

Identifiers = Iterable[tuple[str, str]]


def dataset_register(
    *, name: str, version: str, modality: str, purpose: str, legal_basis: str, storage_location: str = "",
    source: dict | None = None, record_schema: dict | None = None,
) -> Dataset:
    """Register a dataset: a folder in the platform's own layout (``storage_location``), or a data
    source (``source`` and the ``record_schema`` mapping its columns to records), checked by the
    registered source checks before anything is stored."""
    if Dataset.objects.filter(name=name, version=version).exists():
        raise Conflict(f"dataset {name}@{version} already exists", code="dataset_exists", field="name")
    if source:
        for check in DATASET_SOURCE_CHECKS:
            problem = check(source, modality, record_schema or {})
            if problem:
                raise ValidationFailed(f"source: {problem}", field="source")
        storage_location = storage_location or f"{source.get('kind')} source (records not imported yet)"
    elif record_schema:
        raise ValidationFailed("a record schema maps a data source's columns: name the source too", field="source")
    elif not storage_location:
        raise ValidationFailed("give the dataset's storage_location or its data source", field="storage_location")
    dataset = Dataset(
        name=name, version=version, modality=modality, storage_location=storage_location,
        purpose=purpose, legal_basis=legal_basis, source=source or {}, record_schema=record_schema or {},
    )
    _full_clean(dataset)
    dataset.save()
    return dataset


# Who knows the data sources (workers.datasets.sources, added from workers.apps): each check
# answers why a dataset cannot be read from a source with a schema, or None.
DATASET_SOURCE_CHECKS: Hooks[Callable[[dict, str, dict], str | None]] = Hooks("data source check")


def _full_clean(instance) -> None:
    from django.core.exceptions import ValidationError

    try:
        instance.full_clean()
    except ValidationError as exc:
        field, messages = next(iter(exc.message_dict.items()))
        raise ValidationFailed(f"{field}: {'; '.join(messages)}", field=field) from None


def subjects_find(*, identifiers: Identifiers) -> list[DataSubject]:
    """The subjects any of ``identifiers`` (kind, raw value) belong to, under any pepper version.

    Identifiers found only under an older pepper are re-keyed to the current one as a side effect
    (that is how a rotation completes: as identifiers are seen)."""
    current = current_key_version()
    matches: dict[int, DataSubject] = {}
    for kind, value in identifiers:
        digests = identifier_digests_all_versions(kind, value)
        rows = SubjectIdentifier.objects.select_related("subject").filter(
            kind=kind, key_version__in=list(digests)
        )
        for version, digest in digests.items():
            for row in rows.filter(key_version=version, digest=digest):
                matches[row.subject_id] = row.subject
                if version != current:
                    _rekey(row, kind, digests[current], current)
    return sorted(matches.values(), key=lambda s: s.id)


def _rekey(row: SubjectIdentifier, kind: str, digest: bytes, version: int) -> None:
    with transaction.atomic():
        SubjectIdentifier.objects.get_or_create(
            subject_id=row.subject_id, kind=kind, key_version=version, digest=digest
        )
        row.delete()


@transaction.atomic
def subject_get_or_create(*, identifiers: Identifiers) -> DataSubject:
    """The one subject the identifiers name; created (with every identifier) when none matches.

    Raises Conflict when the identifiers belong to two different subjects."""
    identifiers = list(identifiers)
    if not identifiers:
        raise ValidationFailed("at least one subject identifier is required", field="identifiers")
    found = subjects_find(identifiers=identifiers)
    if len(found) > 1:
        raise Conflict("the identifiers belong to different data subjects", code="ambiguous_subject")
    subject = found[0] if found else DataSubject.objects.create()
    version = current_key_version()
    for kind, value in identifiers:
        digest = identifier_digests_all_versions(kind, value)[version]
        SubjectIdentifier.objects.get_or_create(subject=subject, kind=kind, key_version=version, digest=digest)
    return subject


def registered_model_create(
    *, name: str, task: str, training_recipe: str, architecture: dict | None = None,
    unlearning_policy: dict | None = None, s3t_kept_data_floor: float | None = None,
) -> RegisteredModel:
    if RegisteredModel.objects.filter(name=name).exists():
        raise Conflict(f"model {name!r} already exists", code="model_exists", field="name")
    policy = unlearning_policy_validate(policy=unlearning_policy or {}, task=task, architecture=architecture)
    architecture = architecture_validate(architecture=architecture, task=task)
    model = RegisteredModel(
        name=name, task=task, training_recipe=training_recipe, architecture=architecture,
        unlearning_policy=policy,
        s3t_kept_data_floor=kept_data_floor_validate(floor=s3t_kept_data_floor, training_recipe=training_recipe),
    )
    _full_clean(model)
    model.save()
    return model


POLICY_FIELDS = {
    "approximate_method": str,  # a registered method name, used when exact is not available
    "method_config": dict,
    "exact_after": int,  # force an exact retrain after this many approximate deletions
    "prefer_exact": bool,
    "batch_window_seconds": int,
    # Replay every full retrain of this model in its audit (bit for bit; costs one more training).
    "replay_retrain": bool,
    # The equivalence test's symmetric margin (> 0, standardised LiRA score units), declared in the
    # plan before any audit; without it the platform default (audits.checks.equivalence).
    "equivalence_margin": float,
    # The company's own pipeline is the model's exact method (deletion.external_retrain): see
    # EXTERNAL_RETRAIN_FIELDS.
    "external_retrain": dict,
    # The limits a subject's differential-privacy group bound must meet (a DP-trained model's dp_bounded
    # option, deletion.planning); without them the platform's DP_MAX_EPSILON / DP_MAX_DELTA. delta < 1.
    "dp_max_epsilon": float,
    "dp_max_delta": float,
    # The utility bar (> 0, at most 1): the unlearned version's retain and test utility as a ratio of
    # the original's (accuracy; perplexity and a regressor's RMSE inverted, so 1 = as good), declared
    # in the plan before any audit; without it the platform default (audits.checks.evidence).
    "min_utility_ratio": float,
}

# ``unlearning_policy.external_retrain``: ``webhook`` (required), the id of the webhook endpoint of the
# company's pipeline that receives the signed job; ``attested_by`` (required), the team or person who
# attests the pipeline's retrains (the report names them); ``use``: "escalation" (default: when the
# DPO escalates a result that did not pass) or "every_deletion" (the planner's method for every
# deletion of the model); ``token_ttl_seconds``: how long the upload token lives (default 12 hours).
EXTERNAL_RETRAIN_FIELDS = {"webhook": int, "attested_by": str, "use": str, "token_ttl_seconds": int}
EXTERNAL_RETRAIN_USES = ("escalation", "every_deletion")
EXTERNAL_RETRAIN_TTL_SECONDS = (300, 7 * 24 * 3600)

# Who knows the webhook endpoints and the upload path (deletion, added from deletion.apps): each
# check answers why an ``external_retrain`` section cannot serve a model of an architecture (its
# webhook is none such, inactive or not the ML side's; the family's uploads are checked in a
# worker), or None.
EXTERNAL_RETRAIN_CHECKS: Hooks[Callable[[dict, dict], str | None]] = Hooks("external-retrain check")


# Who knows the unlearning methods (the workers' method catalogue, added from workers.apps): each
# check answers why a name cannot be a policy's approximate method for a model of a task, or None.
APPROXIMATE_METHOD_CHECKS: Hooks[Callable[[str, str | None], str | None]] = Hooks("approximate-method check")


# Who knows the model families (workers.model_families, added from workers.apps): each check
# answers why an architecture spec cannot be registered for a task, or None.
ARCHITECTURE_CHECKS: Hooks[Callable[[dict, str | None], str | None]] = Hooks("architecture check")

# Who knows which methods a model family's models take (workers.model_families, added from
# workers.apps): each check answers why an approximate method cannot unlearn models of an
# architecture (a scikit-learn estimator has no gradients), or None.
FAMILY_METHOD_CHECKS: Hooks[Callable[[str, dict], str | None]] = Hooks("family method check")


def architecture_validate(*, architecture: dict | None, task: str | None) -> dict:
    """The architecture spec, checked by every registered family check; ValidationFailed naming it."""
    for check in ARCHITECTURE_CHECKS:
        problem = check(architecture or {}, task)
        if problem:
            raise ValidationFailed(f"architecture: {problem}", field="architecture")
    return architecture or {}


def unlearning_policy_validate(*, policy: dict[str, Any], task: str | None = None,
                               architecture: dict | None = None) -> dict[str, Any]:
    """Check an unlearning policy: its fields, their types, and that ``approximate_method`` is a
    method that exists, unlearns models of ``task`` (when given) and applies to models of
    ``architecture``'s family (when given). Returns the policy; raises ValidationFailed naming the
    field."""
    if not isinstance(policy, dict):
        raise ValidationFailed("unlearning_policy must be an object", field="unlearning_policy")
    for key, value in policy.items():
        expected = POLICY_FIELDS.get(key)
        if expected is None:
            raise ValidationFailed(
                f"unknown unlearning_policy field {key!r}; allowed: {', '.join(sorted(POLICY_FIELDS))}",
                field=f"unlearning_policy.{key}",
            )
        if expected is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ValidationFailed(f"unlearning_policy.{key} must be a number > 0",
                                       field=f"unlearning_policy.{key}")
            continue
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise ValidationFailed(
                f"unlearning_policy.{key} must be {expected.__name__}", field=f"unlearning_policy.{key}"
            )
        if expected is int and value < 0:
            raise ValidationFailed(f"unlearning_policy.{key} must be >= 0", field=f"unlearning_policy.{key}")
    if policy.get("min_utility_ratio", 0) > 1:
        raise ValidationFailed("unlearning_policy.min_utility_ratio must be at most 1 (the unlearned model's utility "
                               "as a share of the original's, e.g. 0.95)", field="unlearning_policy.min_utility_ratio")
    if policy.get("dp_max_delta", 0) >= 1:
        raise ValidationFailed("unlearning_policy.dp_max_delta must be below 1", field="unlearning_policy.dp_max_delta")
    if "external_retrain" in policy:
        _external_retrain_validate(policy["external_retrain"], architecture=architecture or {})
    if "approximate_method" in policy:
        if not len(APPROXIMATE_METHOD_CHECKS):
            raise ImproperlyConfigured("no unlearning method catalogue is registered (the workers app is not installed)")
        problem = next(filter(None, (check(policy["approximate_method"], task) for check in APPROXIMATE_METHOD_CHECKS)),
                       None)
        problem = problem or next(filter(None, (check(policy["approximate_method"], architecture or {})
                                                for check in FAMILY_METHOD_CHECKS)), None)
        if problem:
            raise ValidationFailed(f"unlearning_policy.approximate_method: {problem}",
                                   field="unlearning_policy.approximate_method")
    return policy


def _external_retrain_validate(section: dict[str, Any], *, architecture: dict) -> None:
    """Check ``unlearning_policy.external_retrain`` (see EXTERNAL_RETRAIN_FIELDS); ValidationFailed naming the field."""
    prefix = "unlearning_policy.external_retrain"
    for key, value in section.items():
        expected = EXTERNAL_RETRAIN_FIELDS.get(key)
        if expected is None:
            raise ValidationFailed(f"unknown {prefix} field {key!r}; allowed: {', '.join(sorted(EXTERNAL_RETRAIN_FIELDS))}",
                                   field=f"{prefix}.{key}")
        if not isinstance(value, expected) or isinstance(value, bool):
            raise ValidationFailed(f"{prefix}.{key} must be {expected.__name__}", field=f"{prefix}.{key}")
    for key in ("webhook", "attested_by"):
        if key not in section:
            raise ValidationFailed(f"{prefix}.{key} is required: the webhook of the company's pipeline that receives "
                                   "the signed job, and who attests its retrains", field=f"{prefix}.{key}")
    attested_by = section["attested_by"].strip()
    if not attested_by or len(attested_by) > 300:
        raise ValidationFailed(f"{prefix}.attested_by must name the team or person who attests (1 to 300 characters)",
                               field=f"{prefix}.attested_by")
    if section.get("use", "escalation") not in EXTERNAL_RETRAIN_USES:
        raise ValidationFailed(f"{prefix}.use must be one of {', '.join(EXTERNAL_RETRAIN_USES)}", field=f"{prefix}.use")
    low, high = EXTERNAL_RETRAIN_TTL_SECONDS
    if not low <= section.get("token_ttl_seconds", low) <= high:
        raise ValidationFailed(f"{prefix}.token_ttl_seconds must be from {low} to {high}",
                               field=f"{prefix}.token_ttl_seconds")
    if not len(EXTERNAL_RETRAIN_CHECKS):
        raise ImproperlyConfigured("no webhook check is registered (the deletion app is not installed)")
    problem = next(filter(None, (check(section, architecture) for check in EXTERNAL_RETRAIN_CHECKS)), None)
    if problem:
        raise ValidationFailed(f"{prefix}: {problem}", field=f"{prefix}.webhook")


def kept_data_floor_validate(*, floor: Any, training_recipe: str) -> float | None:
    """Check an S3T model's kept-data floor: None (no floor) or a number from 0 to 1, the smallest
    share of the kept records the served model may still learn from after a deletion. Returns it as
    a float; raises ValidationFailed naming ``s3t_kept_data_floor``."""
    if floor is None:
        return None
    field = "s3t_kept_data_floor"
    if isinstance(floor, bool) or not isinstance(floor, (int, float)):
        raise ValidationFailed(f"{field} must be a number from 0 to 1 (a share of the kept records, "
                               f"e.g. 0.8), not {floor!r}", field=field)
    if not 0 <= floor <= 1:  # NaN fails both comparisons
        raise ValidationFailed(f"{field} must be a share of the kept records from 0 to 1 (e.g. 0.8 for 80 %), "
                               f"not {floor!r}", field=field)
    if training_recipe != "s3t":
        raise ValidationFailed(f"{field} applies to models trained with the s3t recipe (this one: "
                               f"{training_recipe!r}), whose deletions switch adapters off", field=field)
    return float(floor)


def training_run_start(
    *, model: RegisteredModel, recipe: str, config: dict, seed: int, code_version: str,
    datasets: Iterable[Dataset],
) -> TrainingRun:
    run = TrainingRun.objects.create(
        model=model, recipe=recipe, config=config, seed=seed, code_version=code_version,
        started_at=timezone.now(),
    )
    run.datasets.set(list(datasets))
    return run


def training_run_finish(*, run: TrainingRun) -> TrainingRun:
    run.finished_at = timezone.now()
    run.save(update_fields=["finished_at"])
    return run


@transaction.atomic
def model_version_create(
    *, model: RegisteredModel, artifact_sha256: str, training_run: TrainingRun | None,
    parent: ModelVersion | None = None, status: str = VersionStatus.RETAINED,
    guarantee_class: str = "", dp_epsilon: float | None = None, dp_delta: float | None = None,
    metrics: dict | None = None, excluded_record_ids: Iterable[int] = (),
) -> ModelVersion:
    """A new version numbered after the model's last (row lock on the model serialises numbering)."""
    RegisteredModel.objects.select_for_update().get(pk=model.pk)
    last = model.versions.order_by("-version").values_list("version", flat=True).first() or 0
    version = ModelVersion.objects.create(
        model=model, version=last + 1, parent=parent, artifact_sha256=artifact_sha256,
        status=status, training_run=training_run, guarantee_class=guarantee_class,
        dp_epsilon=dp_epsilon, dp_delta=dp_delta, metrics=metrics or {},
    )
    inherited = set(parent.excluded_records.values_list("record_id", flat=True)) if parent else set()
    ExcludedRecord.objects.bulk_create(
        [ExcludedRecord(version=version, record_id=rid) for rid in inherited | set(excluded_record_ids)]
    )
    return version


def model_lineage_edge_add(*, parent: ModelVersion, child: ModelVersion, kind: str) -> ModelLineageEdge:
    if kind not in LineageKind.values:
        raise ValidationFailed(f"lineage kind must be one of {', '.join(LineageKind.values)}", field="kind")
    if parent.pk == child.pk:
        raise ValidationFailed("a version cannot be its own lineage parent", field="parent")
    if parent.pk in downstream_version_ids(version_ids=[child.pk]):
        raise ValidationFailed("this edge would make a lineage cycle", field="parent")
    edge, _ = ModelLineageEdge.objects.get_or_create(parent=parent, child=child, kind=kind)
    return edge


def stored_artifact_register(
    *, sha256: str, kind: str, size_bytes: int = 0, model_version: ModelVersion | None = None,
    training_run: TrainingRun | None = None, dataset: Dataset | None = None,
    shard: int | None = None, slices: list[int] | None = None, label: str = "",
    origin_version: ModelVersion | None = None,
) -> StoredArtifact:
    return StoredArtifact.objects.create(
        sha256=sha256, kind=kind, size_bytes=size_bytes, model_version=model_version,
        training_run=training_run, dataset=dataset, shard=shard, slices=slices, label=label,
        origin_version=origin_version,
    )


# What else holds data about a record by its key and must drop it when the record is erased (a concept
# request's attribute labels, in the request and in its jobs' configs): called inside records_erase's
# transaction with the erased records' keys by dataset id; filled by the apps above (AppConfig.ready()).
RECORDS_ERASED: Hooks[Callable[[dict[int, set[str]]], None]] = Hooks("records-erased hook")


@transaction.atomic
def records_erase(*, records: Iterable[DataRecord], reason: str) -> int:
    """Mark records erased and put them (key and content fingerprint) on the suppression list; the
    :data:`RECORDS_ERASED` hooks drop what else is kept about them by key. Canaries are nobody's data
    and never erased or suppressed: they are passed over."""
    now = timezone.now()
    records = [r for r in records if not r.canary]
    entries = []
    for record in records:
        entries.append(SuppressionEntry(
            kind=SuppressionKind.RECORD, dataset_name=record.dataset.name,
            external_key=record.external_key, reason=reason,
        ))
        entries.append(SuppressionEntry(
            kind=SuppressionKind.CONTENT, dataset_name=record.dataset.name,
            digest=bytes(record.content_fingerprint), key_version=record.fingerprint_key_version,
            reason=reason,
        ))
    SuppressionEntry.objects.bulk_create(entries)
    keys_by_dataset: dict[int, set[str]] = {}
    for record in records:
        keys_by_dataset.setdefault(record.dataset_id, set()).add(record.external_key)
    for hook in RECORDS_ERASED:
        hook(keys_by_dataset)
    return DataRecord.objects.filter(pk__in=[r.pk for r in records]).update(
        status=RecordStatus.ERASED, erased_at=now
    )


@transaction.atomic
def canary_records_create(*, run: TrainingRun, dataset: Dataset, canaries: Iterable[dict[str, Any]]) -> list[DataRecord]:
    """Record the canaries training run ``run`` planted in ``dataset``: per canary a record marked
    ``canary`` (no subject, split ``canary``, content fingerprint of its input) and its content.
    ``canaries``: ``{"key", "kind", "label", "look_alike", "seed", "inputs" (bytes)}``. Conflict when a
    key already names a record of the dataset."""
    from models_registry.pseudonyms import content_fingerprint

    canaries = list(canaries)
    taken = sorted(DataRecord.objects.filter(dataset=dataset, external_key__in=[c["key"] for c in canaries])
                   .values_list("external_key", flat=True))
    if taken:
        raise Conflict(f"canary key(s) already name records of {dataset}: {', '.join(taken[:5])}", code="canary_key_taken")
    records = []
    for canary in canaries:
        fingerprint, version = content_fingerprint(bytes(canary["inputs"]))
        records.append(DataRecord(dataset=dataset, external_key=canary["key"], subject=None, split=CANARY_SPLIT,
                                  content_fingerprint=fingerprint, fingerprint_key_version=version, canary=True))
    records = DataRecord.objects.bulk_create(records)
    CanaryRecord.objects.bulk_create([
        CanaryRecord(record=record, run=run, kind=canary["kind"], label=int(canary["label"]),
                     look_alike=int(canary["look_alike"]), seed=int(canary["seed"]), inputs=bytes(canary["inputs"]))
        for record, canary in zip(records, canaries, strict=True)])
    return records


@transaction.atomic
def subject_suppress(*, subject: DataSubject, reason: str) -> None:
    """Put every identifier digest of a subject on the suppression list and mark it erased."""
    SuppressionEntry.objects.bulk_create([
        SuppressionEntry(
            kind=SuppressionKind.SUBJECT, identifier_kind=ident.kind, key_version=ident.key_version,
            digest=bytes(ident.digest), reason=reason,
        )
        for ident in subject.identifiers.all()
    ])
    subject.erased_at = timezone.now()
    subject.save(update_fields=["erased_at"])


def identifier_digests(*, identifiers: Iterable[tuple[str, str]]) -> list[dict]:
    """``[{"kind", "key_version", "digest" (hex)}]`` of each identifier under every pepper version."""
    from models_registry.pseudonyms import identifier_digests_all_versions

    return [{"kind": kind, "key_version": version, "digest": digest.hex()}
            for kind, value in identifiers for version, digest in identifier_digests_all_versions(kind, value).items()]


def identifiers_suppress(*, digests: Iterable[dict], reason: str) -> int:
    """Put identifier digests (as :func:`identifier_digests` gives them) on the suppression list,
    each once; returns how many entries were added. A person with no data yet is suppressed this way."""
    added = 0
    for entry in digests:
        digest = bytes.fromhex(entry["digest"])
        _, created = SuppressionEntry.objects.get_or_create(
            kind=SuppressionKind.SUBJECT, identifier_kind=entry["kind"], key_version=entry["key_version"],
            digest=digest, defaults={"reason": reason})
        added += created
    return added



def content_fingerprints_rekey(*, batch_size: int = 5000) -> dict[str, int]:
    """After the content fingerprint key was rotated: move every stored content fingerprint (the
    records' and the suppression list's) to the current key version by chaining it through the
    newer keys (models_registry.pseudonyms.content_fingerprint_rekey). Needs no content, so erased
    content stays matchable. Idempotent: what is already under the current version is left alone,
    and each batch commits on its own, so an interrupted run is finished by running it again.
    Returns the current version and how many rows of each kind were moved."""
    from models_registry.pseudonyms import content_fingerprint_rekey, current_content_key_version

    current = current_content_key_version()
    moved = {"key_version": current, "records": 0, "suppression_entries": 0}
    tables = (("records", DataRecord.objects.all(), "content_fingerprint", "fingerprint_key_version"),
              ("suppression_entries", SuppressionEntry.objects.filter(kind=SuppressionKind.CONTENT), "digest",
               "key_version"))
    for name, rows, digest_field, version_field in tables:
        while True:
            with transaction.atomic():
                batch = list(rows.filter(**{f"{version_field}__lt": current}).select_for_update()
                             .only("pk", digest_field, version_field).order_by("pk")[:batch_size])
                if not batch:
                    break
                for row in batch:
                    setattr(row, digest_field, content_fingerprint_rekey(
                        bytes(getattr(row, digest_field)), from_version=getattr(row, version_field), to_version=current))
                    setattr(row, version_field, current)
                rows.model.objects.bulk_update(batch, [digest_field, version_field])
            moved[name] += len(batch)
    return moved

IDENTIFIER_KINDS = tuple(IdentifierKind.values)


def keep_out_selection_record(*, version: ModelVersion, dataset: Dataset,
                              selection: Mapping[str, Sequence[str]]) -> int:
    """Record, for ``version`` of a keep-out transfer model (workers.training.keep_out_transfer),
    which auxiliary examples each non-static record selected: ``selection`` maps a non-static
    record's key to the keys of its selected examples, nearest first (keys of ``dataset``). Call
    after the version's membership is recorded. ValidationFailed (field ``selection``) naming the
    keys: a key the dataset lacks, a non-static record that is in the version's membership (it must
    never enter training), or a selected example that is not (every selected example trained the
    model). Returns the number of rows written."""
    keys = set(selection) | {aux for chosen in selection.values() for aux in chosen}
    ids = dict(DataRecord.objects.filter(dataset=dataset, external_key__in=keys).values_list("external_key", "id"))
    missing = sorted(keys - ids.keys())
    if missing:
        raise ValidationFailed(f"keep-out selection names records {dataset} does not hold: {', '.join(missing[:5])}",
                               field="selection")
    members = {row[0] for row in version_membership(version=version)}
    trained = sorted(set(selection) & members)
    if trained:
        raise ValidationFailed(f"non-static records may not enter training, but {version}'s membership holds "
                               f"{', '.join(trained[:5])}", field="selection")
    unselected = sorted({aux for chosen in selection.values() for aux in chosen} - members)
    if unselected:
        raise ValidationFailed(f"selected auxiliary examples missing from {version}'s membership: "
                               f"{', '.join(unselected[:5])}", field="selection")
    rows = [KeepOutSelection(version=version, record_id=ids[key], auxiliary_id=ids[aux], rank=rank)
            for key in sorted(selection) for rank, aux in enumerate(selection[key])]
    KeepOutSelection.objects.bulk_create(rows, batch_size=5000)
    return len(rows)


def concept_fit_records_record(*, version: ModelVersion, record_ids: Iterable[int]) -> int:
    """Record that the concept eraser stored with ``version`` was fitted on the records ``record_ids``
    (models_registry.models.ConceptFitRecord). Returns the number of rows written."""
    rows = [ConceptFitRecord(version=version, record_id=rid) for rid in sorted(set(record_ids))]
    ConceptFitRecord.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)


def concept_fit_records_inherit(*, version: ModelVersion, source: ModelVersion) -> int:
    """``version`` keeps the eraser of ``source`` (an unlearning that changed the weights around it):
    it inherits the eraser's fitting records, all of them: the eraser is unchanged, so it is still derived
    from each, even one the weights no longer hold. Returns the rows written."""
    fitted = source.concept_fit_records.values_list("record_id", flat=True)
    return concept_fit_records_record(version=version, record_ids=fitted)
