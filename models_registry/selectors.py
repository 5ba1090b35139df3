"""Reads over the registry: who holds whose data. Keyword-only functions.

Scoping is an indexed walk: subject -> records -> memberships (primary key on record) -> runs ->
model versions that still hold the records -> versions downstream by model-to-model lineage ->
stored artifacts that still hold the records.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.db import connection
from django.db.models import QuerySet

from models_registry.models import (
    ArtifactStatus,
    DataRecord,
    DataSubject,
    ModelVersion,
    StoredArtifact,
    VersionStatus,
)

HOLDING_STATUSES = (VersionStatus.SERVING, VersionStatus.RETAINED)


@dataclass
class RecordPlacement:
    record_id: int
    shard: int
    slice: int
    via: str = "training"  # or "fine_tuned_from"/"distilled_from" for downstream versions


@dataclass
class AffectedVersion:
    version_id: int
    model_id: int
    version: int
    status: str
    placements: list[RecordPlacement] = field(default_factory=list)

    @property
    def record_ids(self) -> list[int]:
        return sorted({p.record_id for p in self.placements})


@dataclass
class SubjectScope:
    subject_id: int | None
    record_ids: list[int]
    records_by_dataset: dict[str, int]
    versions: list[AffectedVersion]
    artifacts: list[StoredArtifact]

    @property
    def is_empty(self) -> bool:
        return not self.record_ids


def records_of_subject(*, subject: DataSubject, include_erased: bool = False) -> QuerySet[DataRecord]:
    records = DataRecord.objects.filter(subject=subject).select_related("dataset")
    return records if include_erased else records.filter(status="active")


def downstream_version_ids(*, version_ids: Iterable[int]) -> set[int]:
    """Every version reachable from ``version_ids`` by fine-tuned-from / distilled-from edges
    (the starting versions excluded)."""
    start = list(version_ids)
    if not start:
        return set()
    with connection.cursor() as cursor:
        cursor.execute(
            """
            WITH RECURSIVE down(id) AS (
                SELECT child_id FROM models_registry_modellineageedge WHERE parent_id = ANY(%s)
                UNION
                SELECT e.child_id FROM models_registry_modellineageedge e JOIN down ON e.parent_id = down.id
            )
            SELECT id FROM down
            """,
            [start],
        )
        return {row[0] for row in cursor.fetchall()} - set(start)


def versions_trained_on(
    *, record_ids: Iterable[int], statuses: Iterable[str] = HOLDING_STATUSES
) -> list[AffectedVersion]:
    """Model versions that hold any of ``record_ids``: trained on them (and not unlearned since),
    or downstream of such a version by model-to-model lineage. With shard and slice per record."""
    record_ids = list(record_ids)
    statuses = list(statuses)
    if not record_ids:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT v.id, v.model_id, v.version, v.status, m.record_id, m.shard, m.slice
            FROM models_registry_trainingmembership m
            JOIN models_registry_modelversion v ON v.training_run_id = m.run_id
            WHERE m.record_id = ANY(%s)
              AND NOT EXISTS (SELECT 1 FROM models_registry_excludedrecord e
                              WHERE e.version_id = v.id AND e.record_id = m.record_id)
            """,
            [record_ids],
        )
        rows = cursor.fetchall()
    direct: dict[int, AffectedVersion] = {}
    for version_id, model_id, number, status, record_id, shard, slice_ in rows:
        entry = direct.setdefault(version_id, AffectedVersion(version_id, model_id, number, status))
        entry.placements.append(RecordPlacement(record_id, shard, slice_))

    # Downstream versions hold what their upstream held, whatever their own status filter says.
    result = {vid: v for vid, v in direct.items() if v.status in statuses}
    downstream = downstream_version_ids(version_ids=direct)
    if downstream:
        edges = _lineage_edges()
        for version in ModelVersion.objects.filter(id__in=downstream, status__in=statuses):
            inherited = _inherited_placements(version.id, direct, edges)
            result[version.id] = AffectedVersion(
                version.id, version.model_id, version.version, version.status, inherited
            )
    return sorted(result.values(), key=lambda v: (v.model_id, v.version))


def _lineage_edges() -> dict[int, list[tuple[int, str]]]:
    from models_registry.models import ModelLineageEdge

    parents: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for child, parent, kind in ModelLineageEdge.objects.values_list("child_id", "parent_id", "kind"):
        parents[child].append((parent, kind))
    return parents


def _inherited_placements(version_id, direct, parents) -> list[RecordPlacement]:
    """Placements a downstream version inherits; ``via`` is the kind of its own nearest edge."""
    seen, stack, placements = set(), [(version_id, None)], {}
    while stack:
        current, first_kind = stack.pop()
        for parent, kind in parents.get(current, []):
            if parent in seen:
                continue
            seen.add(parent)
            via = first_kind or kind
            if parent in direct:
                for p in direct[parent].placements:
                    placements.setdefault(p.record_id, RecordPlacement(p.record_id, p.shard, p.slice, via=via))
            stack.append((parent, via))
    return sorted(placements.values(), key=lambda p: p.record_id)


def artifacts_holding(*, record_ids: Iterable[int], version_ids: Iterable[int] = ()) -> list[StoredArtifact]:
    """Stored artifacts still present that hold any of the records: weights, checkpoints and
    adapters of runs that trained on them (matching shard and slice where the artifact has them),
    dataset caches of their datasets, and every artifact of the given (affected) versions."""
    record_ids = list(record_ids)
    if not record_ids:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT DISTINCT a.id FROM models_registry_storedartifact a
            JOIN models_registry_trainingmembership m ON m.run_id = a.training_run_id
            WHERE m.record_id = ANY(%s) AND a.status = 'present'
              AND (a.shard IS NULL OR a.shard = m.shard)
              AND (a.slices IS NULL OR m.slice = ANY(a.slices))
            UNION
            SELECT a.id FROM models_registry_storedartifact a
            JOIN models_registry_datarecord r ON r.dataset_id = a.dataset_id
            WHERE r.id = ANY(%s) AND a.status = 'present' AND a.training_run_id IS NULL
            UNION
            SELECT a.id FROM models_registry_storedartifact a
            WHERE a.model_version_id = ANY(%s) AND a.status = 'present'
            """,
            [record_ids, record_ids, list(version_ids)],
        )
        ids = [row[0] for row in cursor.fetchall()]
    return list(StoredArtifact.objects.filter(id__in=ids).order_by("id"))


def subject_scope(*, subject: DataSubject | None) -> SubjectScope:
    """Everything that holds a subject's data: records by dataset, model versions still serving
    or retained (lineage followed), and stored artifacts. A subject of None has an empty scope."""
    if subject is None:
        return SubjectScope(None, [], {}, [], [])
    records = list(records_of_subject(subject=subject).values_list("id", "dataset__name", "dataset__version"))
    record_ids = [r[0] for r in records]
    by_dataset: dict[str, int] = defaultdict(int)
    for _, name, version in records:
        by_dataset[f"{name}@{version}"] += 1
    versions = versions_trained_on(record_ids=record_ids)
    artifacts = artifacts_holding(record_ids=record_ids, version_ids=[v.version_id for v in versions])
    return SubjectScope(subject.id, record_ids, dict(by_dataset), versions, artifacts)


def artifacts_present(*, model_version: ModelVersion) -> QuerySet[StoredArtifact]:
    return model_version.artifacts.filter(status=ArtifactStatus.PRESENT)
