"""Datasets kept where the company keeps them: importing their records, reading them for the
workers, and purging the platform's own copy (the source modules are workers.datasets.sources).

- Import (web side, no torch until a file is stored): the source's rows become records through the
  platform's own record import, so subjects are pseudonymised, suppressed records and subjects are
  refused and a problem anywhere rejects everything. A file source's file goes into the artifact
  store (a ``dataset_file`` artifact, its bytes as one uint8 tensor) and the dataset names it.
- Reading (workers): every read goes back to the source. Only records the registry holds as active
  and unsuppressed are returned — a record erased from the platform is never trained on again,
  even where the company's table still holds it — and a row whose subject identifiers or content
  are on the suppression list is left out too (an erased person's row that comes back under a
  kept key, with their e-mail address filled in or their content copied); the read counts what it
  left out, never which. Every returned record's content is checked against the fingerprint stored
  at import, so a retrain or a replay notices that the source changed under the model
  (:class:`SourceChanged`). A folder in the platform's own layout is read with the same
  suppression filter (:func:`folder_split`).
- Purge: a file in the artifact store is rewritten without the erased rows and the old file is
  purged; a database the platform cannot write is asked whether it still holds them, for the report.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction

from foundation.errors import Conflict, ValidationFailed
from models_registry import services as registry
from models_registry.importing import ImportResult, dataset_records_import
from models_registry.models import (
    ArtifactKind,
    ArtifactStatus,
    DataRecord,
    Dataset,
    RecordStatus,
    StoredArtifact,
    SuppressionEntry,
    SuppressionKind,
)
from models_registry.pseudonyms import (
    content_fingerprints_all_versions,
    current_content_key_version,
)
from models_registry.suppression import suppression_list
from workers.datasets.sources import (
    DatasetSchema,
    DataSource,
    SchemaError,
    SourceError,
    source_class,
    source_config_problem,
    source_records,
)

MAX_SOURCE_FILE_BYTES = 2 * 1024**3
DEFAULT_QUERY_TIMEOUT_SECONDS = 60


class SourceChanged(ValueError):
    """Records whose content in the source is no longer what was registered (and trained on)."""


def has_source(dataset: Dataset) -> bool:
    return bool(dataset.source)


def dataset_schema(dataset: Dataset) -> DatasetSchema:
    try:
        return DatasetSchema.from_dict(dataset.modality, dataset.record_schema)
    except SchemaError as exc:
        raise ValidationFailed(f"{dataset}: {exc}", field="record_schema") from None


def dataset_source_problem(source: dict, modality: str, record_schema: dict) -> str | None:
    """Why a dataset cannot be registered with this source and schema (the registry's source check)."""
    problem = source_config_problem(source, modality, record_schema)
    if problem is None and source.get("kind") == "postgresql" and source["query"] not in settings.DATA_SOURCE_QUERIES:
        known = ", ".join(sorted(settings.DATA_SOURCE_QUERIES)) or "none"
        problem = f"no query {source['query']!r} is configured by the operator; configured: {known}"
    return problem


def operator_query(name: str) -> dict[str, Any]:
    """The operator's query ``name`` (settings.DATA_SOURCE_QUERIES) with its DSN read from its
    secret: ``dsn_env`` names an environment variable, ``dsn_file`` a file (a Docker secret)."""
    queries = settings.DATA_SOURCE_QUERIES
    if name not in queries:
        known = ", ".join(sorted(queries)) or "none (set DATA_SOURCE_QUERIES_FILE)"
        raise ValidationFailed(f"no query {name!r} is configured by the operator; configured: {known}",
                               field="source")
    entry = queries[name]
    if entry.get("dsn_env"):
        dsn = os.environ.get(entry["dsn_env"], "")
    elif entry.get("dsn_file"):
        try:
            with open(entry["dsn_file"], encoding="utf-8") as handle:
                dsn = handle.read().strip()
        except OSError as exc:
            raise ValidationFailed(f"query {name!r}: its DSN file cannot be read ({exc.strerror})") from None
    else:
        dsn = ""
    if not dsn:
        raise ValidationFailed(f"query {name!r}: its DSN secret (dsn_env or dsn_file) is not set")
    return {"kind": "postgresql", "query": name, "sql": entry["sql"], "dsn": dsn,
            "timeout_seconds": float(entry.get("timeout_seconds", DEFAULT_QUERY_TIMEOUT_SECONDS))}


def source_of(dataset: Dataset, *, data: bytes | None = None) -> DataSource:
    """The dataset's source, ready to read: a file source with its file (``data``, or the file
    kept in the artifact store), a database source with the operator's query and its secret."""
    if not has_source(dataset):
        raise ValidationFailed(f"{dataset} is not read from a data source", field="source")
    cls = source_class(dataset.source)
    if not cls.holds_file:
        return cls(operator_query(dataset.source["query"]))
    if data is None:
        data = stored_file(dataset)
    return cls(dict(dataset.source), data=data)


def stored_file(dataset: Dataset) -> bytes:
    from workers.runners.storage import artifact_store

    artifact = dataset.source.get("artifact")
    if not artifact:
        raise ValidationFailed(f"{dataset} has no file yet: upload it (POST /api/v1/datasets/{dataset.id}/import/)")
    return artifact_store().load(artifact, role="file")["bytes"].numpy().tobytes()


def _store_file(dataset: Dataset, data: bytes) -> str:
    import torch

    from workers.artifacts import ArtifactManifest, code_version
    from workers.runners.storage import artifact_store

    manifest = ArtifactManifest(kind=ArtifactKind.DATASET_FILE.value, code_version=code_version(),
                                extra={"format": dataset.source["kind"], "dataset": str(dataset),
                                       "file_sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)})
    tensor = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    return artifact_store().put(manifest, {"file": {"bytes": tensor}}).artifact_id


# ---------------------------------------------------------------- import


def source_rejected(exc: SourceError, dataset: Dataset) -> ValidationFailed:
    return ValidationFailed(f"{dataset}: import rejected, nothing was kept: {exc}", code="source_rejected",
                            details={"errors": [{"row": row, "problem": problem} for row, problem in exc.problems]})


def dataset_source_import(*, dataset: Dataset, data: bytes | None) -> ImportResult:
    """Import a source dataset's records (and keep its file, for a file source). Refused, with
    nothing kept, for a schema naming a missing column, a value of the wrong type, a repeated or
    suppressed record key, a query that writes or runs past its timeout."""
    if not has_source(dataset):
        raise ValidationFailed(f"{dataset} has no data source; import its records with "
                               f"POST /api/v1/datasets/{dataset.id}/records/", field="source")
    if DataRecord.objects.filter(dataset=dataset).exists():
        raise Conflict(f"{dataset} already has its records; register a new version of the dataset for new data",
                       code="dataset_imported")
    cls = source_class(dataset.source)
    if cls.holds_file and not data:
        raise ValidationFailed(f"the body must be the dataset's {cls.name} file", field="body")
    if not cls.holds_file and data:
        raise ValidationFailed("a database source is read by the operator's query: send no body", field="body")
    if data is not None and len(data) > MAX_SOURCE_FILE_BYTES:
        raise ValidationFailed(f"file larger than {MAX_SOURCE_FILE_BYTES} bytes", field="body")
    schema = dataset_schema(dataset)
    try:
        records = list(source_records(source_of(dataset, data=data), schema))
    except SourceError as exc:
        raise source_rejected(exc, dataset) from None
    rows = ((r.row, {"record_key": r.key, "split": r.split, "content": r.content(), **r.identifiers})
            for r in records)
    artifact = _store_file(dataset, data) if cls.holds_file else None
    with transaction.atomic():
        result = dataset_records_import(dataset=dataset, rows=rows)
        if artifact is not None:
            registry.stored_artifact_register(sha256=artifact, kind=ArtifactKind.DATASET_FILE, size_bytes=len(data),
                                              dataset=dataset, label=f"{dataset} source file ({cls.name})")
            Dataset.objects.filter(pk=dataset.pk).update(
                source={**dataset.source, "artifact": artifact}, storage_location=f"artifact store: {artifact}")
        else:
            Dataset.objects.filter(pk=dataset.pk).update(storage_location=f"postgresql query {dataset.source['query']!r}")
    dataset.refresh_from_db()
    result.extra["source"] = dataset.source
    return result


# ---------------------------------------------------------------- reading


@dataclass
class SourceRead:
    """What one read found besides the records it returned."""

    records: int
    unregistered_rows: int = 0
    excluded_still_held: list[str] = field(default_factory=list)  # erased or suppressed, still in the source
    missing: list[str] = field(default_factory=list)  # active records of the split the source lost
    # Left out because the row's subject identifiers or content are on the suppression list: a count only.
    suppressed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"records": self.records, "unregistered_rows": self.unregistered_rows,
                "excluded_still_held": len(self.excluded_still_held), "missing": len(self.missing),
                "suppressed": self.suppressed}


def _registered(dataset: Dataset) -> dict[str, tuple[str, bool, bytes, int]]:
    """key -> (split, usable, fingerprint, fingerprint key version)."""
    suppressed = set(SuppressionEntry.objects.filter(kind=SuppressionKind.RECORD, dataset_name__in=[dataset.name, ""])
                     .values_list("external_key", flat=True))
    rows = DataRecord.objects.filter(dataset=dataset).values_list(
        "external_key", "split", "status", "content_fingerprint", "fingerprint_key_version")
    return {key: (split, status == RecordStatus.ACTIVE and key not in suppressed, bytes(fp), version)
            for key, split, status, fp, version in rows.iterator(chunk_size=10000)}


def source_split(dataset: Dataset, split: str):
    """The records of ``split`` as a RecordDataset (sorted by key), read from the source now. The
    read's findings are on the dataset's ``source_read`` attribute. SourceChanged when a record's
    content differs from what was registered."""
    import torch

    from workers.datasets.memory import TensorRecordDataset
    from workers.datasets.text import TextRecordDataset

    schema = dataset_schema(dataset)
    registered = _registered(dataset)
    suppressed = suppression_list(dataset_name=dataset.name)
    current = current_content_key_version()
    read = SourceRead(records=0)
    kept, changed = [], []
    seen: set[str] = set()
    try:
        for record in source_records(source_of(dataset), schema):
            entry = registered.get(record.key)
            if entry is None:
                read.unregistered_rows += 1
                continue
            seen.add(record.key)
            registered_split, usable, fingerprint, version = entry
            if registered_split != split:
                continue
            if not usable:
                read.excluded_still_held.append(record.key)
                continue
            fingerprints = content_fingerprints_all_versions(record.content(), up_to=max(version, current))
            if suppressed.has_identifier(record.identifiers) or suppressed.has_fingerprint(fingerprints[current], current):
                read.suppressed += 1
                continue
            if fingerprints[version] != fingerprint:
                changed.append(record.key)
                continue
            kept.append(record)
    except SourceError as exc:
        raise SourceError([(row, f"reading {dataset}: {problem}") for row, problem in exc.problems]) from None
    if changed:
        sample = ", ".join(sorted(changed)[:5])
        raise SourceChanged(
            f"the source of {dataset} changed since its records were registered: {len(changed)} record(s) of "
            f"split {split!r} now hold other content ({sample}). A model trained on the old content cannot be "
            "retrained or replayed from this source; register the changed data as a new dataset version")
    read.missing = sorted(k for k, (s, usable, _, _) in registered.items() if s == split and usable and k not in seen)
    kept.sort(key=lambda r: r.key)
    keys = [r.key for r in kept]
    read.records = len(kept)
    if schema.modality == "text":
        data = TextRecordDataset(keys, [r.text for r in kept], [r.label for r in kept])
    else:
        features = torch.tensor([r.features for r in kept], dtype=torch.float32).reshape(len(kept), len(schema.features))
        data = TensorRecordDataset(keys, features, torch.tensor([r.label for r in kept], dtype=torch.int64))
    data.source_read = read
    return data


def folder_split(dataset: Dataset, split: str):
    """The records of ``split`` of a dataset kept as a folder in the platform's own layout, less
    those on the suppression list: an erased record key, a record whose subject (records.jsonl)
    or content is suppressed. A purge rewrites such a folder, but a folder restored from a backup,
    copied back or rebuilt still holds them. The read's count is on ``source_read``."""
    from workers.datasets.reference import load_reference_split, record_content, record_subjects
    from workers.runners.storage import dataset_folder

    folder = dataset_folder(dataset.storage_location)
    data = load_reference_split(folder, split)
    suppressed = suppression_list(dataset_name=dataset.name)
    subjects = record_subjects(folder) if suppressed.subjects else {}
    left_out = []
    for index, key in enumerate(data.record_keys):
        if (suppressed.has_key(key) or suppressed.has_identifier(subjects.get(key) or {})
                or (suppressed.contents and suppressed.has_content(record_content(data, index)))):
            left_out.append(key)
    if left_out:
        data = data.without(left_out)
    data.source_read = SourceRead(records=len(data), suppressed=len(left_out))
    return data


def dataset_split(dataset: Dataset, split: str):
    """What the workers train, unlearn and audit on: one split of a dataset, from its source or
    from a folder in the platform's own layout (the reference sets); either way without what is
    on the suppression list, the read's findings on the result's ``source_read``."""
    if has_source(dataset):
        return source_split(dataset, split)
    return folder_split(dataset, split)


# ---------------------------------------------------------------- purge


def source_file_rewrite(*, dataset: Dataset, keys: set[str]) -> list[StoredArtifact]:
    """After records of ``dataset`` were erased: keep its file (in the artifact store) without them
    and return the rows of the old file, for the caller to purge. [] when the dataset has no file
    source or its file holds none of them."""
    if not has_source(dataset) or not keys or not source_class(dataset.source).holds_file:
        return []
    schema = dataset_schema(dataset)
    rewritten = source_of(dataset).rewritten_without(keys, schema)
    if rewritten is None:
        return []
    old = dataset.source["artifact"]
    new = _store_file(dataset, rewritten)
    registry.stored_artifact_register(sha256=new, kind=ArtifactKind.DATASET_FILE, size_bytes=len(rewritten),
                                      dataset=dataset, label=f"{dataset} source file (rewritten after erasure)")
    Dataset.objects.filter(pk=dataset.pk).update(source={**dataset.source, "artifact": new},
                                                 storage_location=f"artifact store: {new}")
    dataset.refresh_from_db()
    return list(StoredArtifact.objects.filter(dataset=dataset, kind=ArtifactKind.DATASET_FILE, sha256=old,
                                              status=ArtifactStatus.PRESENT))


def source_still_holds(*, dataset: Dataset, keys: set[str]) -> dict[str, Any] | None:
    """For a database source the platform cannot write: which of the erased ``keys`` the company's
    data still holds (the platform excludes them at every read; the company deletes them at the
    source), for the report. None for other datasets."""
    if not has_source(dataset) or not keys or source_class(dataset.source).holds_file:
        return None
    entry: dict[str, Any] = {"dataset": str(dataset), "source": f"postgresql query {dataset.source['query']!r}"}
    try:
        held = sorted(r.key for r in source_records(source_of(dataset), dataset_schema(dataset)) if r.key in keys)
    except (SourceError, ValidationFailed) as exc:
        return {**entry, "checked": False, "problem": str(exc)[:300], "records": []}
    return {**entry, "checked": True, "records": held}
