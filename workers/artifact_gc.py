"""Garbage collection of the artifact store against the registry.

A job writes its artifacts first and registers them (StoredArtifact rows, the version's
``artifact_sha256``) in its final transaction; a worker killed in between leaves files that no
row names. Such orphans may hold training data, so they are found and removed here, and what was
removed goes to the log and the ledger.

Kept, always:
- every artifact a registry row names — a present StoredArtifact row, or a version that is not
  purged — with everything it reaches: the artifacts in its ``parts`` (SISA checkpoints, S3T
  adapters) and the blobs of each (``parent`` is provenance, not containment: not followed);
- every file younger than the grace period, and everything a young manifest reaches: a job may be
  about to register it. A put of content already stored refreshes the file's age;
- every file written since the start of a job that is running with a fresh heartbeat, less the
  grace period again (a long job registers at its end what it stored on the way).

The store is held alone from the scan to the last removal (ArtifactStore.exclusively), so no put
can make a file referenced, or young, between its check and its removal. When a file that
decides what is referenced cannot be read, nothing is removed.

The same holds on both backends (workers.artifacts): on S3 a file's age is its LastModified, a
partial is a multipart upload left open (aborted once older than the grace period), and removing
an orphan deletes all its versions and destroys its data key; a version Object Lock keeps is
listed in ``retained``, never as removed. Such a held orphan is reported once: it is recorded
(workers.models.HeldOrphan, with its retention date and legal hold), and every later run re-checks
the hold without trying a delete (``still_held``, not ledgered again); the first run after the
hold is gone deletes it and says so (``released``, in the ledger with what was removed).

The reverse — a row whose manifest or blob is missing — is reported (``missing``), never fixed
here: a missing copy of a model is for a person to look into. While a row's manifest is missing,
no blob is removed (``blobs_held``): the blobs it named cannot be told from orphans, and they may
be what recovers it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Min
from django.utils import timezone

from foundation.ledger.services import ledger_append
from models_registry.models import (
    ArtifactKind,
    ArtifactStatus,
    ModelVersion,
    StoredArtifact,
    VersionStatus,
)
from workers.models import HeldOrphan, Job, JobStatus
from workers.runners.storage import artifact_store

logger = logging.getLogger(__name__)

# Registry rows whose sha256 names a manifest in the store (dataset caches are files elsewhere).
STORE_KINDS = (ArtifactKind.WEIGHTS, ArtifactKind.CHECKPOINT, ArtifactKind.ADAPTER, ArtifactKind.SHADOW_MODEL)
_PLACEHOLDER = "0" * 64  # a version registered without weights in the store


@dataclass
class StoreFile:
    kind: str  # "manifest", "blob" or "partial" (a temporary file a killed writer left)
    sha256: str  # the file's name (for a partial: the name it was being written as)
    path: str  # a path, or s3://bucket/key on the object-store backend
    bytes: int
    age_seconds: float


@dataclass
class MissingFile:
    """A registry row that names something the store no longer holds."""

    source: str  # "stored_artifact" or "model_version"
    row_id: int
    sha256: str  # the artifact the row names
    missing: str  # what is missing: the artifact itself, or a part or blob of it
    label: str = ""


@dataclass
class ArtifactGcReport:
    dry_run: bool
    min_age_seconds: float
    protected_since: str  # files modified at or after this are young
    manifests: int = 0
    blobs: int = 0
    referenced_manifests: int = 0
    referenced_blobs: int = 0
    young_kept: int = 0
    orphans: list[StoreFile] = field(default_factory=list)
    removed: list[StoreFile] = field(default_factory=list)
    missing: list[MissingFile] = field(default_factory=list)
    unreadable: list[dict[str, str]] = field(default_factory=list)
    refused: str = ""  # why nothing was removed, when something made it unsafe
    blobs_held: str = ""  # why no blob was removed (a row's manifest is missing: they may be its)
    retained: list[dict[str, Any]] = field(default_factory=list)  # copies the object store keeps (Object Lock), new
    still_held: list[dict[str, Any]] = field(default_factory=list)  # held orphans reported before, re-checked
    released: list[dict[str, Any]] = field(default_factory=list)  # held orphans whose hold is gone: removed now

    @property
    def removed_bytes(self) -> int:
        return sum(f.bytes for f in self.removed)

    def summary(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "manifests": self.manifests, "blobs": self.blobs,
                "referenced_manifests": self.referenced_manifests, "referenced_blobs": self.referenced_blobs,
                "young_kept": self.young_kept, "orphans_found": len(self.orphans),
                "orphans_removed": len(self.removed), "removed_bytes": self.removed_bytes,
                "missing": len(self.missing), "unreadable": len(self.unreadable), "refused": self.refused,
                "blobs_held": self.blobs_held, "retained": len(self.retained), "still_held": len(self.still_held),
                "released": len(self.released)}

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "removed_bytes": self.removed_bytes}


def artifact_store_gc(*, dry_run: bool = False, min_age_seconds: float | None = None, store=None,
                      actor: str = "platform") -> ArtifactGcReport:
    """Find the store's orphans (files no registry row reaches, older than ``min_age_seconds``,
    default ARTIFACT_GC_MIN_AGE_SECONDS) and, unless ``dry_run``, remove them, writing what was
    removed to the ledger. Returns the report (orphans found, removed, rows with missing files)."""
    store = store or artifact_store()
    min_age = float(settings.ARTIFACT_GC_MIN_AGE_SECONDS if min_age_seconds is None else min_age_seconds)
    if min_age < 0:
        raise ValueError("min_age_seconds must not be negative")
    with store.exclusively():
        report = _collect(store, min_age=min_age, dry_run=dry_run, actor=actor)
    for row in report.missing:
        logger.warning("registry row %s %s names %s, which is missing: %s", row.source, row.row_id,
                       row.sha256, row.missing)
    logger.info("artifact gc%s: %d orphans found, %d removed (%d bytes), %d rows with missing files%s%s",
                " (dry run)" if dry_run else "", len(report.orphans), len(report.removed),
                report.removed_bytes, len(report.missing), f"; refused: {report.refused}" if report.refused else "",
                f"; {report.blobs_held}" if report.blobs_held else "")
    return report


def _collect(store, *, min_age: float, dry_run: bool, actor: str) -> ArtifactGcReport:
    now = time.time()
    protected_since = min(now, _oldest_live_job_start(now)) - min_age
    report = ArtifactGcReport(dry_run=dry_run, min_age_seconds=min_age,
                              protected_since=datetime.fromtimestamp(protected_since, tz=UTC).isoformat())
    manifests, blobs, partials = store.scan()
    report.manifests, report.blobs = len(manifests), len(blobs)
    reader = _ManifestReader(store, report)

    # What the registry reaches. Missing files are reported for StoredArtifact rows, the record
    # of what is stored; a version's own artifact_sha256 only adds protection (an unlearned
    # sibling's weights are purged while its version row stays).
    live_manifests, live_blobs = set(), set()
    for source, row_id, label, artifact_id in _registry_roots():
        reported = source == "stored_artifact"
        if artifact_id not in manifests:
            if reported:
                report.missing.append(MissingFile(source, row_id, artifact_id, "the artifact's manifest", label))
            continue
        for missing in reader.reach(artifact_id, manifests, blobs, live_manifests, live_blobs):
            if reported:
                report.missing.append(MissingFile(source, row_id, artifact_id, missing, label))
    report.referenced_manifests, report.referenced_blobs = len(live_manifests), len(live_blobs)

    # What is young, and what young manifests reach.
    young_manifests, young_blobs = set(), set()
    for name, entry in manifests.items():
        if entry.mtime >= protected_since and name not in live_manifests:
            reader.reach(name, manifests, blobs, young_manifests, young_blobs)
    young_blobs |= {name for name, entry in blobs.items() if entry.mtime >= protected_since}
    keep_manifests = live_manifests | young_manifests
    keep_blobs = live_blobs | young_blobs
    report.young_kept = (len(young_manifests - live_manifests) + len(young_blobs - live_blobs)
                         + sum(1 for e in partials.values() if e.mtime >= protected_since))

    report.orphans = (
        [_file("manifest", n, manifests[n], now) for n in sorted(set(manifests) - keep_manifests)]
        + [_file("blob", n, blobs[n], now) for n in sorted(set(blobs) - keep_blobs)]
        + [_file("partial", n, e, now) for n, e in sorted(partials.items()) if e.mtime < protected_since]
    )
    known_held = _recheck_held(store, report, dry_run=dry_run)
    entries = {("manifest", n): e for n, e in manifests.items()} | {("blob", n): e for n, e in blobs.items()} | {
        ("partial", n): e for n, e in partials.items()}
    if reader.unsafe:
        report.refused = ("a manifest that decides what is referenced could not be read "
                          f"({reader.unsafe}); nothing removed")
        report.released = []  # not removed: still recorded as held, re-checked next run
        return report
    lost = [m for m in report.missing if not m.missing.startswith("blob ")]
    if lost:
        report.blobs_held = (f"{len(lost)} registry row(s) name a manifest the store lacks; its blobs cannot be "
                             "told from orphans, so no blob is removed until a person has looked")
    removable = [f for f in report.orphans if not (report.blobs_held and f.kind == "blob")]
    report.released = [r for r in report.released if r["location"] in {f.path for f in removable}]
    if dry_run or not removable:
        return report
    # The attempt is recorded before the files go, the outcome after.
    _ledger("artifacts.gc_started", actor, orphans=len(removable),
            files=[{"kind": f.kind, "sha256": f.sha256, "bytes": f.bytes} for f in removable])
    for orphan in removable:
        key = (orphan.kind, orphan.sha256 if orphan.kind != "partial" else _partial_name(orphan, partials))
        removed, retained = store.remove_scanned(key[0], key[1], entries[key])
        held = [copy for copy in retained if "version_id" in copy]  # a version still in the bucket
        if held:
            _held_record(store, orphan, held)
        if held and orphan.path in known_held:  # held again since the re-check: not news
            report.released = [r for r in report.released if r["location"] != orphan.path]
            report.still_held.append(_held_entry(orphan, held, known_held[orphan.path].first_reported_at))
        else:
            report.retained += [{"kind": orphan.kind, "sha256": orphan.sha256, **copy} for copy in retained]
        if not removed or retained:  # gone meanwhile, or a copy stays: not reported removed
            continue
        if orphan.path in known_held:
            HeldOrphan.objects.filter(location=orphan.path).delete()
            logger.info("artifact gc: the hold on %s %s is gone (%s before); removed now", orphan.kind,
                        orphan.sha256, known_held[orphan.path].reason)
        logger.info("artifact gc removed %s %s (%d bytes, %.0f s old)", orphan.kind, orphan.sha256,
                    orphan.bytes, orphan.age_seconds)
        report.removed.append(orphan)
    report.released = [r for r in report.released if r["location"] in {f.path for f in report.removed}]
    _ledger("artifacts.gc_finished", actor, removed=len(report.removed), removed_bytes=report.removed_bytes,
            files=[{"kind": f.kind, "sha256": f.sha256, "bytes": f.bytes} for f in report.removed],
            missing=[asdict(m) for m in report.missing], retained=report.retained, released=report.released)
    return report


def _recheck_held(store, report: ArtifactGcReport, *, dry_run: bool) -> dict[str, HeldOrphan]:
    """Re-check the orphans recorded as held (HeldOrphan rows of this store): one still held leaves
    ``report.orphans`` for ``report.still_held`` (its row updated: the date may have moved), one
    whose hold is gone stays an orphan, noted in ``report.released``, and the removal deletes it.
    A row whose object is no longer an orphan (referenced or young again, or gone) is dropped.
    Returns the rows of the orphans re-checked, by location."""
    rows = {row.location: row for row in HeldOrphan.objects.filter(store=store.name)}
    if not rows:
        return {}
    known, orphans = {}, []
    for orphan in report.orphans:
        row = rows.pop(orphan.path, None)
        if row is None or orphan.kind == "partial":
            orphans.append(orphan)
            continue
        known[orphan.path] = row
        held = store.held_copies(orphan.kind, orphan.sha256)
        if held:
            report.still_held.append(_held_entry(orphan, held, row.first_reported_at))
            if not dry_run:
                _held_record(store, orphan, held)
            continue
        report.released.append({"kind": orphan.kind, "sha256": orphan.sha256, "location": orphan.path,
                                "held_since": row.first_reported_at.isoformat(), "was_held_by": row.reason})
        orphans.append(orphan)
    report.orphans = orphans
    if rows and not dry_run:
        HeldOrphan.objects.filter(pk__in=[row.pk for row in rows.values()]).delete()
    return known


def _held_summary(held: list[dict[str, Any]]) -> dict[str, Any]:
    """What keeps an object, from its held versions (workers.object_store.S3Objects.holds): the
    reasons, the latest retention date, whether a legal hold is on."""
    dates = [datetime.fromisoformat(copy["retain_until"]) for copy in held if copy.get("retain_until")]
    return {"reason": "; ".join(dict.fromkeys(copy["reason"] for copy in held)),
            "retain_until": max(dates) if dates else None,
            "legal_hold": any(copy.get("legal_hold") for copy in held)}


def _held_entry(orphan: StoreFile, held: list[dict[str, Any]], since: datetime) -> dict[str, Any]:
    summary = _held_summary(held)
    return {"kind": orphan.kind, "sha256": orphan.sha256, "location": orphan.path, "reason": summary["reason"],
            "retain_until": summary["retain_until"].isoformat() if summary["retain_until"] else None,
            "legal_hold": summary["legal_hold"], "held_since": since.isoformat()}


def _held_record(store, orphan: StoreFile, held: list[dict[str, Any]]) -> None:
    """Record (or update) a held orphan, so that later runs re-check it instead of reporting it."""
    summary = _held_summary(held)
    HeldOrphan.objects.update_or_create(
        location=orphan.path,
        defaults={"store": store.name, "kind": orphan.kind, "sha256": orphan.sha256, "holds": held,
                  "last_checked_at": timezone.now(), **summary})


def _file(kind: str, name: str, entry, now: float) -> StoreFile:
    """A scanned store entry (workers.artifacts.StoreEntry) as the report lists it; a partial is
    named by the last part of its location (the file's name, or the key and upload id)."""
    shown = name if kind != "partial" else entry.location.rsplit("/", 1)[-1]
    return StoreFile(kind=kind, sha256=shown, path=entry.location, bytes=entry.size,
                     age_seconds=round(now - entry.mtime, 1))


def _partial_name(orphan: StoreFile, partials: dict) -> str:
    return next(name for name, entry in partials.items() if entry.location == orphan.path)


class _ManifestReader:
    """Follows manifests through their parts to their blobs, noting what it could not read."""

    def __init__(self, store, report: ArtifactGcReport) -> None:
        self.store, self.report = store, report
        self.unsafe = ""
        self._cache: dict[str, Any] = {}

    def _manifest(self, artifact_id: str):
        if artifact_id not in self._cache:
            try:
                self._cache[artifact_id] = self.store.manifest(artifact_id)
            except Exception as exc:  # integrity, size, JSON: any of them hides its references
                self.report.unreadable.append({"sha256": artifact_id, "problem": f"{type(exc).__name__}: {exc}"})
                self._cache[artifact_id] = None
                self.unsafe = self.unsafe or artifact_id
        return self._cache[artifact_id]

    def reach(self, artifact_id: str, manifests, blobs, seen_manifests: set[str], seen_blobs: set[str]) -> list[str]:
        """Add ``artifact_id`` and all it reaches to the seen sets; return what is missing."""
        missing, stack = [], [artifact_id]
        while stack:
            current = stack.pop()
            if current in seen_manifests:
                continue
            if current not in manifests:
                missing.append(f"part {current}")
                continue
            seen_manifests.add(current)
            manifest = self._manifest(current)
            if manifest is None:
                continue
            for role, entry in manifest.files.items():
                digest = entry.get("sha256") if isinstance(entry, dict) else None
                if digest not in blobs:
                    missing.append(f"blob {digest} ({role}) of {current}")
                    continue
                seen_blobs.add(digest)
            stack.extend(manifest.parts.values())
        return missing


def _registry_roots() -> list[tuple[str, int, str, str]]:
    """(source, row id, label, artifact id) for every registry row that says its artifact is
    present: StoredArtifact rows of store kinds, versions not purged."""
    rows = StoredArtifact.objects.filter(status=ArtifactStatus.PRESENT, kind__in=STORE_KINDS).order_by("id")
    roots = [("stored_artifact", row_id, label, sha256)
             for row_id, sha256, label in rows.values_list("id", "sha256", "label")]
    versions = (ModelVersion.objects.exclude(status=VersionStatus.PURGED)
                .exclude(artifact_sha256__in=["", _PLACEHOLDER]).order_by("id"))
    roots += [("model_version", row_id, f"{model_name} v{number}", sha256)
              for row_id, sha256, model_name, number in versions.values_list("id", "artifact_sha256", "model__name",
                                                                            "version")]
    return roots


def _oldest_live_job_start(now: float) -> float:
    """When the oldest job still running with a fresh heartbeat started (``now`` if none)."""
    fresh = timezone.now() - timedelta(seconds=settings.JOB_STALE_AFTER_SECONDS)
    started = (Job.objects.filter(status=JobStatus.RUNNING, heartbeat_at__gte=fresh)
               .aggregate(first=Min("started_at"))["first"])
    return started.timestamp() if started else now


def _ledger(event_type: str, actor: str, **data: Any) -> None:
    with transaction.atomic():
        ledger_append(event_type=event_type, actor=actor, **data)
