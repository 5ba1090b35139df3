"""Reads over the registry: who holds whose data. Keyword-only functions.

Scoping is an indexed walk done in one prepared SQL statement: subject -> records -> memberships
(the record's block of the membership index, one index-only scan) -> model versions that hold them
-> versions downstream by model-to-model lineage -> stored artifacts that still hold them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from django.db import connection
from django.db.models import QuerySet

from models_registry.models import (
    CanaryRecord,
    DataRecord,
    DataSubject,
    ExcludedRecord,
    KeepOutSelection,
    ModelVersion,
    TrainingMembership,
    VersionStatus,
)

HOLDING_STATUSES = (VersionStatus.SERVING, VersionStatus.RETAINED)


@dataclass
class RecordPlacement:
    record_id: int
    shard: int
    slice: int
    # "training" (a membership row), "keep_out_selection" (a non-static record of a keep-out transfer
    # model, held through the auxiliary examples it selected), "concept_eraser" (a record the version's
    # concept eraser was fitted on), or the lineage edge kind, for versions
    # downstream of a trained one
    via: str = "training"


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


@dataclass(frozen=True)
class ArtifactRef:
    id: int
    sha256: str
    kind: str
    label: str
    size_bytes: int


@dataclass
class Scope:
    """Everything that holds some records: versions (any status; see ``holding``) and artifacts."""

    record_ids: list[int]
    records_by_dataset: dict[str, int]
    all_versions: list[AffectedVersion]
    artifacts: list[ArtifactRef]
    subject_id: int | None = None

    @property
    def is_empty(self) -> bool:
        return not self.record_ids

    @property
    def versions(self) -> list[AffectedVersion]:
        """The versions that still serve or are retained (what a deletion must act on)."""
        return [v for v in self.all_versions if v.status in HOLDING_STATUSES]


SubjectScope = Scope

# The runs that hold one record, with its shard and slice: an index-only scan of the record's
# block in models_registry_membershipblock (migration 0005; the placements pack shard and slice). OFFSET 0 keeps it a per-record
# parameterised scan instead of letting the planner join the whole table.
_RUNS_OF_RECORD = """
    SELECT b.run_id,
           (b.placements[array_position(b.offsets, ({record} & 255)::int2)] >> 16)::int AS shard,
           ((b.placements[array_position(b.offsets, ({record} & 255)::int2)] << 16) >> 16)::int AS slice
    FROM models_registry_membershipblock b
    WHERE b.block = {record} >> 8 AND ({record} & 255)::int2 = ANY(b.offsets)
    OFFSET 0
"""

# One statement for the whole walk. {records} is replaced by the record-selecting CTE body and
# {blocks} by the per-record run lookup.
_SCOPE_SQL = """
WITH RECURSIVE
rec AS MATERIALIZED ({records}),
mem AS MATERIALIZED (
    SELECT rec.id AS record_id, b.run_id, b.shard, b.slice FROM rec CROSS JOIN LATERAL ({blocks}) b
),
direct AS (
    SELECT v.id AS version_id, v.model_id, v.version, v.status, mem.record_id, mem.shard, mem.slice,
           'training' AS via
    FROM mem JOIN models_registry_modelversion v ON v.training_run_id = mem.run_id
    WHERE NOT EXISTS (SELECT 1 FROM models_registry_excludedrecord e
                      WHERE e.version_id = v.id AND e.record_id = mem.record_id)
    UNION ALL
    -- Keep-out transfer: a non-static record is in no membership; the version depends on it
    -- through the auxiliary examples it selected (KeepOutSelection, indexed on record).
    SELECT DISTINCT v.id, v.model_id, v.version, v.status, s.record_id, 0, 0, 'keep_out_selection'
    FROM rec JOIN models_registry_keepoutselection s ON s.record_id = rec.id
    JOIN models_registry_modelversion v ON v.id = s.version_id
    UNION ALL
    -- Concept erasure: the eraser stored with a version was fitted on these records' representations
    -- (ConceptFitRecord, indexed on record), members of its training run or not.
    SELECT v.id, v.model_id, v.version, v.status, f.record_id, 0, 0, 'concept_eraser'
    FROM rec JOIN models_registry_conceptfitrecord f ON f.record_id = rec.id
    JOIN models_registry_modelversion v ON v.id = f.version_id
),
down AS (
    SELECT e.child_id AS version_id, e.parent_id AS source_id, e.kind AS via, 1 AS depth
    FROM models_registry_modellineageedge e WHERE e.parent_id IN (SELECT version_id FROM direct)
    UNION
    SELECT e.child_id, down.source_id, e.kind, down.depth + 1
    FROM models_registry_modellineageedge e JOIN down ON e.parent_id = down.version_id
    WHERE down.depth < 64
),
arts AS (
    SELECT a.id FROM models_registry_storedartifact a JOIN mem ON mem.run_id = a.training_run_id
    WHERE a.status = 'present' AND (a.shard IS NULL OR a.shard = mem.shard)
      AND (a.slices IS NULL OR mem.slice = ANY(a.slices))
      AND NOT EXISTS (SELECT 1 FROM models_registry_excludedrecord x
                      WHERE x.version_id = a.origin_version_id AND x.record_id = mem.record_id)
    UNION
    SELECT a.id FROM models_registry_storedartifact a
    WHERE a.status = 'present' AND a.training_run_id IS NULL
      AND a.dataset_id IN (SELECT dataset_id FROM rec WHERE status = 'active')
    UNION
    SELECT a.id FROM models_registry_storedartifact a
    WHERE a.status = 'present' AND (a.model_version_id IN (SELECT version_id FROM direct)
                                    OR a.model_version_id IN (SELECT version_id FROM down))
)
SELECT 'record', r.id, NULL::bigint, NULL::bigint, NULL::int, NULL::int, d.name || '@' || d.version
  FROM rec r JOIN models_registry_dataset d ON d.id = r.dataset_id
UNION ALL
SELECT 'direct', version_id, model_id, record_id, shard, slice, status || ':' || version || ':' || via FROM direct
UNION ALL
SELECT DISTINCT 'down', down.version_id, v.model_id, down.source_id, NULL::int, NULL::int,
       v.status || ':' || v.version || ':' || down.via
  FROM down JOIN models_registry_modelversion v ON v.id = down.version_id
UNION ALL
SELECT 'artifact', a.id, a.size_bytes, NULL::bigint, NULL::int, NULL::int, a.kind || ':' || a.sha256 || ':' || a.label
  FROM models_registry_storedartifact a WHERE a.id IN (SELECT id FROM arts)
"""
_BY_SUBJECT = _SCOPE_SQL.format(
    # Canaries (planted by training, nobody's data) are in no request's scope.
    records="SELECT id, dataset_id, status FROM models_registry_datarecord WHERE subject_id = %s AND status = 'active' "
            "AND NOT canary",
    blocks=_RUNS_OF_RECORD.format(record="rec.id"),
)
_BY_RECORDS = _SCOPE_SQL.format(
    records="SELECT id, dataset_id, status FROM models_registry_datarecord WHERE id = ANY(%s) AND NOT canary",
    blocks=_RUNS_OF_RECORD.format(record="rec.id"),
)


def _run_scope(sql: str, param, subject_id: int | None) -> Scope:
    with connection.cursor() as cursor:
        # Prepared on the server: the statement is long, and planning it costs more than running it.
        cursor.cursor.execute(sql, [param], prepare=True)
        rows = cursor.fetchall()
    record_ids: list[int] = []
    by_dataset: dict[str, int] = {}
    direct: dict[int, AffectedVersion] = {}
    downstream: list[tuple] = []
    artifacts: list[ArtifactRef] = []
    for kind, a, b, c, d, e, text in rows:
        if kind == "record":
            record_ids.append(a)
            by_dataset[text] = by_dataset.get(text, 0) + 1
        elif kind == "direct":
            status, number, via = text.split(":")
            entry = direct.setdefault(a, AffectedVersion(a, b, int(number), status))
            entry.placements.append(RecordPlacement(c, d, e, via=via))
        elif kind == "down":
            downstream.append((a, b, c, text))
        else:
            art_kind, sha, label = text.split(":", 2)
            artifacts.append(ArtifactRef(a, sha, art_kind, label, b))
    versions = dict(direct)
    for version_id, model_id, source_id, text in downstream:
        status, number, via = text.split(":")
        entry = versions.get(version_id)
        if entry is None:
            entry = versions[version_id] = AffectedVersion(version_id, model_id, int(number), status)
        held = {p.record_id for p in entry.placements}
        for p in direct[source_id].placements:
            if p.record_id not in held:
                entry.placements.append(RecordPlacement(p.record_id, p.shard, p.slice, via=via))
                held.add(p.record_id)
    return Scope(
        record_ids=sorted(record_ids),
        records_by_dataset=by_dataset,
        all_versions=sorted(versions.values(), key=lambda v: (v.model_id, v.version)),
        artifacts=sorted(artifacts, key=lambda a: a.id),
        subject_id=subject_id,
    )


def subject_scope(*, subject: DataSubject | None) -> Scope:
    """Everything that holds a subject's active records: records by dataset, model versions
    (``versions``: serving or retained, lineage followed) and stored artifacts still present.
    A subject of None (nobody found) has an empty scope."""
    if subject is None:
        return Scope([], {}, [], [], None)
    return _run_scope(_BY_SUBJECT, subject.id, subject.id)


def records_scope(*, record_ids: Iterable[int]) -> Scope:
    """The same walk for given record ids (e.g. a request naming record keys)."""
    ids = sorted(set(record_ids))
    if not ids:
        return Scope([], {}, [], [], None)
    return _run_scope(_BY_RECORDS, ids, None)


def records_of_subject(*, subject: DataSubject, include_erased: bool = False) -> QuerySet[DataRecord]:
    records = DataRecord.objects.filter(subject=subject).select_related("dataset")
    return records if include_erased else records.filter(status="active")


def versions_trained_on(
    *, record_ids: Iterable[int], statuses: Iterable[str] = HOLDING_STATUSES
) -> list[AffectedVersion]:
    """Model versions that hold any of ``record_ids`` — trained on them and not unlearned since,
    or downstream of such a version by model-to-model lineage — with shard and slice per record."""
    wanted = set(statuses)
    return [v for v in records_scope(record_ids=record_ids).all_versions if v.status in wanted]


def artifacts_holding(*, record_ids: Iterable[int]) -> list[ArtifactRef]:
    """Stored artifacts still present that hold any of the records: weights, checkpoints and
    adapters of runs that trained on them (matching shard and slice where the artifact has them),
    dataset caches of their datasets, and every artifact of a version that holds them."""
    return records_scope(record_ids=record_ids).artifacts


def downstream_version_ids(*, version_ids: Iterable[int]) -> set[int]:
    """Every version reachable from ``version_ids`` by fine-tuned-from / distilled-from edges."""
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


def memberships_of_records(*, record_ids: Iterable[int]) -> list[tuple[int, int, int, int]]:
    """``(record_id, run_id, shard, slice)`` for every run that trained on any of the records."""
    ids = sorted(set(record_ids))
    if not ids:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT r.id, b.run_id, b.shard, b.slice FROM unnest(%s::int[]) AS r(id) CROSS JOIN LATERAL ("
            + _RUNS_OF_RECORD.format(record="r.id") + ") b ORDER BY 1, 2",
            [ids],
        )
        return cursor.fetchall()


# ---------------------------------------------------------------- canaries


def canary_keys_of_run(*, run_id: int | None) -> list[str]:
    """The keys of the canaries training run ``run_id`` planted (workers.canaries), sorted; none
    for a run without canaries (or no run)."""
    if run_id is None:
        return []
    return sorted(CanaryRecord.objects.filter(run_id=run_id).values_list("record__external_key", flat=True))


def dataset_canaries(*, dataset_id: int) -> list[CanaryRecord]:
    """Every active canary planted in the dataset's training runs, with its record, by key."""
    return list(CanaryRecord.objects.filter(record__dataset_id=dataset_id, record__status="active")
                .select_related("record").order_by("record__external_key"))


# ---------------------------------------------------------------- unlearning chains


def lineage_root(version: ModelVersion) -> ModelVersion:
    """The trained version at the top of ``version``'s unlearning chain (shadows are made for it)."""
    while version.parent_id is not None:
        version = version.parent
    return version


def current_source(version: ModelVersion) -> ModelVersion:
    """The version to unlearn from: ``version``, or the newest version an earlier unlearning job
    made from it (and so on down), so that a second request for the same model builds on the
    first one's result — its new version then excludes both requests' records — instead of on a
    parent that still holds them (and that the first request's audit purges)."""
    return unlearning_path(version)[-1]


def unlearning_path(version: ModelVersion) -> list[ModelVersion]:
    """``version`` and the versions :func:`current_source` walks down from it, in order: each the newest
    unpurged version a succeeded unlearning job made from the one before; the last is the current source."""
    path = [version]
    while True:
        child = (ModelVersion.objects.filter(parent=path[-1], created_by_job__kind="unlearn",
                                             created_by_job__status="succeeded")
                 .exclude(status=VersionStatus.PURGED).order_by("-id").first())
        if child is None:
            return path
        path.append(child)


# ---------------------------------------------------------------- what a version holds


def version_membership(*, version: ModelVersion) -> list[tuple[str, int, int, int]]:
    """The registry's membership of ``version``: ``(record key, shard, slice, position)`` of each
    record its training run used, without those the version excludes (every deletion on its chain),
    by shard, slice and position. Empty for a version without a training run."""
    if version.training_run_id is None:
        return []
    return run_membership(run_id=version.training_run_id,
                          excluding=ExcludedRecord.objects.filter(version=version).values("record_id"))


def run_membership(*, run_id: int, excluding=None) -> list[tuple[str, int, int, int]]:
    """``(record key, shard, slice, position)`` of each record training run ``run_id`` used (less the
    record ids ``excluding`` names: a list or a subquery), by shard, slice and position."""
    rows = TrainingMembership.objects.filter(run_id=run_id)
    if excluding is not None:
        rows = rows.exclude(record_id__in=excluding)
    return list(rows.order_by("shard", "slice", "position")
                .values_list("record__external_key", "shard", "slice", "position"))


def membership_by_slice(*, version: ModelVersion, record_ids: Iterable[int]
                        ) -> tuple[dict[tuple[int, int], int], dict[int, set[int]]]:
    """Where a deletion of ``record_ids`` from ``version`` falls, counted in the database (no
    record key is read): the records the version keeps, ``(shard, slice) -> count``, and the slices
    of each shard that hold a record to delete (those the version holds)."""
    ids = sorted(set(record_ids))
    if version.training_run_id is None:
        return {}, {}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT m.shard, m.slice, count(*) FILTER (WHERE NOT m.record_id = ANY(%s)), "
            "       bool_or(m.record_id = ANY(%s)) "
            "FROM models_registry_trainingmembership m WHERE m.run_id = %s AND NOT EXISTS ("
            "  SELECT 1 FROM models_registry_excludedrecord x WHERE x.version_id = %s AND x.record_id = m.record_id) "
            "GROUP BY 1, 2",
            [ids, ids, version.training_run_id, version.id],
        )
        rows = cursor.fetchall()
    kept = {(shard, slice_): count for shard, slice_, count, _ in rows if count}
    affected: dict[int, set[int]] = {}
    for shard, slice_, _, holds in rows:
        if holds:
            affected.setdefault(shard, set()).add(slice_)
    return kept, affected


# ---------------------------------------------------------------- keep-out transfer


def keep_out_selection_of(*, version: ModelVersion) -> dict[str, tuple[str, ...]]:
    """The keep-out transfer selection recorded for ``version`` (KeepOutSelection): each non-static
    record's key -> the keys of the auxiliary examples it selected, nearest first. Empty for a
    version of any other recipe."""
    selection: dict[str, list[str]] = {}
    rows = (KeepOutSelection.objects.filter(version=version).order_by("record__external_key", "rank")
            .values_list("record__external_key", "auxiliary__external_key"))
    for key, auxiliary in rows:
        selection.setdefault(key, []).append(auxiliary)
    return {key: tuple(chosen) for key, chosen in selection.items()}
