"""Purging every copy that still holds forgotten data, and refusing to bring it back.

After a successful unlearning job, the copies of the job's model lineage that hold the forgotten
records — the parent version's top-level artifact, SISA checkpoints after the affected slice,
deactivated adapters — are destroyed in the store (not just retired), their rows marked purged,
and the parent version marked purged. When a whole request has run, its records are marked
erased, go on the suppression list (with the subject), and the dataset files that hold them are
rewritten without them. Every purged sha256 is returned for the report.
"""

from __future__ import annotations

import logging

from django.db import transaction
from django.utils import timezone

from foundation.errors import Conflict
from models_registry import selectors
from models_registry.importing import erasure_lock
from models_registry.keystore import keystore, subject_key_ref
from models_registry.models import (
    ArtifactKind,
    ArtifactStatus,
    DataRecord,
    ModelVersion,
    RecordContent,
    StoredArtifact,
    VersionStatus,
)
from models_registry.services import records_erase, stored_artifact_register, subject_suppress
from workers.datasets.purge import dataset_files_without
from workers.models import Job
from workers.runners.storage import artifact_store, dataset_folder
from workers.unlearning.catalogue import GUARD, method_specs

logger = logging.getLogger(__name__)


def _purge_rows(store, artifacts: list[StoredArtifact]) -> list[dict]:
    """Mark the rows purged and destroy their files. The store is content-addressed: while another
    row that is not being purged names the same file (another model trained to the same bytes,
    whose copy its own deletion purges), the file stays for it and the entry says so
    (``still_held_by``) instead of claiming it destroyed. A copy the object store keeps (Object
    Lock retention, a legal hold, a replica) is named in ``retained`` with why: such a file is
    not destroyed, only unreadable (its data key is), and the report says so."""
    purging = {a.pk for a in artifacts}
    purged = []
    for artifact in artifacts:
        removed, retained = [], []
        sharer = (StoredArtifact.objects.filter(sha256=artifact.sha256, status=ArtifactStatus.PRESENT)
                  .exclude(pk__in=purging).order_by("id").first())
        if artifact.kind != ArtifactKind.DATASET_CACHE and sharer is None and store.exists(artifact.sha256):
            report = store.purge(artifact.sha256, include_parts=False)
            removed = [{"sha256": f.sha256, "kind": f.kind, "bytes": f.bytes} for f in report.removed]
            retained = report.retained
        StoredArtifact.objects.filter(pk=artifact.pk).update(status=ArtifactStatus.PURGED, purged_at=timezone.now())
        entry = {"sha256": artifact.sha256, "kind": artifact.kind, "label": artifact.label, "files": removed}
        if sharer is not None:
            entry["still_held_by"] = sharer.label or f"stored artifact {sharer.id}"
        if retained:
            entry["retained"] = retained
            logger.warning("purge of %s %s: the object store keeps a copy: %s", artifact.kind, artifact.sha256,
                           "; ".join(sorted({r["reason"] for r in retained})))
        purged.append(entry)
    return purged


def lineage_copies_purge(*, store, source: ModelVersion, record_ids: list[int],
                         keep_versions: set[int] = frozenset(),
                         audited: set[int] = frozenset()) -> tuple[list[dict], list[dict]]:
    """Destroy the artifacts of ``source``'s model that still hold ``record_ids`` (call after the
    new version, which excludes them, is recorded); mark ``source`` purged. Artifacts that a
    version in ``keep_versions`` still needs (another open request unlearns from it) are deferred:
    returned second, and purged by that request's own audit. ``source`` itself stays whole only
    when another audit still compares against it (``audited``: workers.jobs.versions_audited); an
    unlearning job scoped on it builds on the newest version instead. Returns (purged, deferred)."""
    needed = set()
    # Only this model's versions: another model's identical files are its own rows (see _purge_rows).
    kept = (set(keep_versions) - {source.id}) | set(audited)
    for version in ModelVersion.objects.filter(id__in=kept, model_id=source.model_id):
        if version.artifact_sha256 and store.exists(version.artifact_sha256):
            needed |= set(store.closure(version.artifact_sha256))
    holding = {a.id for a in selectors.artifacts_holding(record_ids=record_ids)}
    candidates = list(StoredArtifact.objects.filter(id__in=holding).exclude(kind=ArtifactKind.DATASET_CACHE).filter(
        models_q_same_model(source)))
    deferred = [{"sha256": a.sha256, "kind": a.kind, "label": a.label} for a in candidates if a.sha256 in needed]
    destroyed = [a for a in candidates if a.sha256 not in needed]
    purged = _purge_rows(store, destroyed)
    if source.id not in set(keep_versions) | set(audited):
        for artifact in StoredArtifact.objects.filter(model_version=source, status=ArtifactStatus.PRESENT):
            purged += _purge_rows(store, [artifact])  # the parent's top level, even if shared parts stay
        ModelVersion.objects.filter(pk=source.pk).update(status=VersionStatus.PURGED, purged_at=timezone.now())
    # A version whose own artifact was just destroyed is gone too, whichever request it was
    # scoped under: an earlier version a queued request kept for a while (its copies were deferred
    # then) must not stay "serving" without weights, in scope for every later request.
    ModelVersion.objects.filter(id__in={a.model_version_id for a in destroyed if a.model_version_id},
                                artifact_sha256__in={a.sha256 for a in destroyed}).exclude(
        status=VersionStatus.PURGED).update(status=VersionStatus.PURGED, purged_at=timezone.now())
    return purged, deferred


def version_purge(*, version: ModelVersion) -> list[dict]:
    """Destroy a version's own artifacts (not parts it shares with its parent) and mark it purged."""
    purged = _purge_rows(artifact_store(), list(StoredArtifact.objects.filter(model_version=version,
                                                                              status=ArtifactStatus.PRESENT)))
    ModelVersion.objects.filter(pk=version.pk).update(status=VersionStatus.PURGED, purged_at=timezone.now())
    _guard_key_destroy(version)
    return purged


def _guard_key_destroy(version: ModelVersion) -> None:
    """A guarded version's hashing key (keystore ``guard:job:<id>``, see the unlearning runner)
    goes with it: with the key, the stored n-gram hashes of the forgotten texts could be tested
    against guesses. A guarded version is the result of a job whose method is of kind GUARD."""
    guards = [spec.name for spec in method_specs(kind=GUARD)]
    job = Job.objects.filter(result_version=version, method__in=guards).first()
    if job is not None:
        keystore().destroy(f"guard:job:{job.id}")


def models_q_same_model(source: ModelVersion):
    """Artifacts of ``source``'s lineage: its run (weights, checkpoints, adapters, and versions
    unlearned from it), the shadow models made for it, and the version's own artifacts."""
    from django.db.models import Q

    return (Q(training_run_id=source.training_run_id)
            | Q(training_run__config__shadow_of=selectors.lineage_root(source).id) | Q(model_version_id=source.id))


def model_version_rollback(*, version: ModelVersion) -> ModelVersion:
    """Make ``version`` serve again; refused for a purged version (its data must not return)."""
    if version.status == VersionStatus.PURGED:
        raise Conflict(f"{version} was purged after an erasure and cannot be restored", code="version_purged")
    ModelVersion.objects.filter(pk=version.pk).update(status=VersionStatus.SERVING)
    version.refresh_from_db()
    return version


def shadow_models_holding(holding: list) -> list[StoredArtifact]:
    """The shadow models among ``holding`` (artifact refs, selectors.artifacts_holding), as rows."""
    return list(StoredArtifact.objects.filter(id__in=[a.id for a in holding if a.kind == ArtifactKind.SHADOW_MODEL])
                .select_related("training_run").order_by("id"))


def shadow_models_purge(shadows: list[StoredArtifact]) -> tuple[list[dict], list[int]]:
    """Destroy ``shadows`` (:func:`_purge_rows`). Returns the purged entries and the ids of the versions
    whose shadow sets lost them (their roots, ``shadow_of``: the caller replenishes those sets)."""
    roots = sorted({int(a.training_run.config["shadow_of"]) for a in shadows
                    if a.training_run_id and "shadow_of" in a.training_run.config})
    return _purge_rows(artifact_store(), shadows), roots


@transaction.atomic
def request_data_erase(*, record_ids: list[int], subjects: list, reason: str) -> dict:
    """Mark the records erased, put them and the subject on the suppression list, and rewrite the
    dataset files (caches, and source files kept in the artifact store) that still hold them.
    Shadow models that still hold them go too: one trained between an audit's purge and the request's
    end, while the records were still active (a replenishing job), or one a job registered before the
    records were erased. Returns ``{"purged": the purged dataset files, "shadow_models": the purged
    shadow models, "shadow_roots": the versions whose shadow sets lost them (to be replenished),
    "source_still_holds": per database source, the erased records the company's data still holds}``
    (workers.data_sources)."""
    from workers.data_sources import source_file_rewrite, source_still_holds

    # Before reading what holds the records: a membership import (a shadow model registering) waits
    # for this transaction and then reads the records as erased.
    erasure_lock(exclusive=True)
    records = list(DataRecord.objects.filter(id__in=record_ids).select_related("dataset"))
    holding = selectors.artifacts_holding(record_ids=record_ids)
    caches = [a for a in holding if a.kind == ArtifactKind.DATASET_CACHE]
    shadows_purged, shadow_roots = shadow_models_purge(shadow_models_holding(holding))
    purged = []
    still_held = []
    by_dataset: dict[int, list[str]] = {}
    for record in records:
        by_dataset.setdefault(record.dataset_id, []).append(record.external_key)
    for dataset_id, keys in by_dataset.items():
        # Row-locked to the end of the transaction: two hosts erasing from one dataset at once would
        # rewrite its files over each other (a split file of one rewrite beside the records of another).
        dataset = records[0].dataset.__class__.objects.select_for_update().get(pk=dataset_id)
        folder = dataset_folder(dataset.storage_location)  # a path here, or shared files (object store)
        rewritten = dataset_files_without(folder, set(keys))
        # Copies of the old files the object store keeps (Object Lock, a replica): unreadable, not deleted.
        retained = list(getattr(folder, "retained", []))
        cache_rows = StoredArtifact.objects.filter(dataset=dataset, kind=ArtifactKind.DATASET_CACHE, status=ArtifactStatus.PRESENT)
        for row in cache_rows:
            if row.id in {c.id for c in caches}:
                StoredArtifact.objects.filter(pk=row.pk).update(status=ArtifactStatus.PURGED, purged_at=timezone.now())
                purged.append({"sha256": row.sha256, "kind": row.kind, "label": row.label, "files": [],
                               **({"retained": retained} if retained else {})})

        for path, digest, size in rewritten:
            stored_artifact_register(sha256=digest, kind=ArtifactKind.DATASET_CACHE, size_bytes=size, dataset=dataset,
                                     label=f"{dataset.name} {path.name} (rewritten after erasure)")
        purged += _purge_rows(artifact_store(), source_file_rewrite(dataset=dataset, keys=set(keys)))
        held = source_still_holds(dataset=dataset, keys=set(keys))
        if held is not None:
            still_held.append(held)
    records_erase(records=records, reason=reason)
    # Stored content goes, and each subject's data key is destroyed: copies of the content in
    # backups the platform cannot reach become unreadable (crypto-shredding).

    RecordContent.objects.filter(record_id__in=[r.id for r in records]).delete()
    keys = keystore()
    for subject in subjects:
        if subject.erased_at is None:
            subject_suppress(subject=subject, reason=reason)
        if not DataRecord.objects.filter(subject=subject, status="active").exists():
            keys.destroy(subject_key_ref(subject.reference, 0))
    return {"purged": purged, "shadow_models": shadows_purged, "shadow_roots": shadow_roots,
            "source_still_holds": still_held}
