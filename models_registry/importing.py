"""Bulk lineage import: a dataset's records and a training run's membership.

Both go through PostgreSQL's COPY into a temporary staging table, are validated there with set
queries, and are then moved into place — all in one transaction, so a rejected import leaves
nothing behind. Errors name the line (1 = the CSV header or the first JSONL line) and the problem.

Membership is stored by record block (models_registry_membershipblock, migration 0005): one row
per block of 256 record ids and run, with parallel arrays of offsets, placements and positions,
written by one grouped INSERT; models_registry_trainingmembership is a view over it.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from django.db import connection, transaction

from foundation.errors import ValidationFailed
from foundation.strict_json import fields_once
from models_registry.keystore import keystore, subject_key_ref
from models_registry.models import (
    Dataset,
    DataSubject,
    SubjectIdentifier,
    TrainingRun,
)
from models_registry.pseudonyms import (
    content_fingerprint,
    current_key_version,
    identifier_digests_all_versions,
)
from models_registry.suppression import suppression_list

MAX_ERRORS = 20
MAX_COLUMNS = 16
IDENTIFIER_COLUMNS = ("email", "customer_id", "phone")
RECORD_COLUMNS = {"record_key", "split", "content", *IDENTIFIER_COLUMNS}
MEMBERSHIP_COLUMNS = ("record_key", "shard", "slice", "position")
# Spreadsheet formula prefixes: a key or identifier starting with one could run a formula when a
# DPO opens an export in a spreadsheet, so such cells are refused at import.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
_SPLIT = re.compile(r"^[a-z][a-z0-9_]{0,19}$")
_PHONE = re.compile(r"^\+[\d\s().-]{6,30}$")  # "+44 20 ..." is a phone number, not a formula


@dataclass
class LineError:
    line: int
    problem: str


class ImportRejected(ValidationFailed):
    default_code = "import_rejected"

    def __init__(self, errors: list[LineError], *, total: int | None = None, what: str = "import") -> None:
        self.errors = errors
        first = errors[0]
        count = self.total = total if total is not None else len(errors)
        super().__init__(
            f"{what} rejected, nothing was kept: line {first.line}: {first.problem}"
            + (f" (and {count - 1} more problem(s))" if count > 1 else ""),
            details={"errors": [{"line": e.line, "problem": e.problem} for e in errors]},
        )


@dataclass
class ImportResult:
    dataset: str
    rows: int
    subjects_created: int = 0
    run_id: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class _Errors:
    def __init__(self) -> None:
        self.items: list[LineError] = []
        self.total = 0

    def add(self, line: int, problem: str) -> None:
        self.total += 1
        if len(self.items) < MAX_ERRORS:
            self.items.append(LineError(line, problem))

    def raise_if_any(self) -> None:
        if self.items:
            raise ImportRejected(self.items, total=self.total)


# ---------------------------------------------------------------- parsing


def _decoded_lines(source: IO) -> Iterator[str]:
    """The source's lines as text; a line that is not UTF-8 is refused naming its number."""
    if isinstance(source, io.TextIOBase):
        yield from source
        return
    for number, raw in enumerate(source, start=1):
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ImportRejected([LineError(number, f"not UTF-8: {exc.reason} at byte {exc.start}")]) from None


def _check_header(header: list[str], allowed: set[str] | tuple[str, ...], required: set[str]) -> None:
    if len(header) > MAX_COLUMNS:
        raise ImportRejected([LineError(1, f"{len(header)} columns; at most {MAX_COLUMNS} are accepted")])
    unknown = [h for h in header if h not in allowed]
    if unknown:
        raise ImportRejected([LineError(1, f"unknown column {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}")])
    duplicated = {h for h in header if header.count(h) > 1}
    if duplicated:
        raise ImportRejected([LineError(1, f"column {sorted(duplicated)[0]!r} appears twice")])
    missing = required - set(header)
    if missing:
        raise ImportRejected([LineError(1, f"missing column {sorted(missing)[0]!r}")])


def iter_rows(source: IO, fmt: str, *, allowed: set[str] | tuple[str, ...], required: set[str]) -> Iterator[tuple[int, dict]]:
    """(line number, row dict) from CSV (with a header) or JSONL. Structural problems raise
    ImportRejected at once; value checks are the caller's."""
    stream = _decoded_lines(source)
    if fmt == "csv":
        csv.field_size_limit(1024 * 1024)
        reader = csv.reader(stream)
        try:
            header = next(reader)
        except StopIteration:
            raise ImportRejected([LineError(1, "the file is empty")]) from None
        except csv.Error as exc:
            raise ImportRejected([LineError(1, f"unreadable CSV header: {exc}")]) from None
        header = [h.strip() for h in header]
        _check_header(header, allowed, required)
        try:
            for cells in reader:
                line = reader.line_num
                if not cells:
                    continue
                if len(cells) != len(header):
                    raise ImportRejected([LineError(line, f"{len(cells)} cells, the header has {len(header)}")])
                yield line, dict(zip(header, cells, strict=True))
        except csv.Error as exc:
            raise ImportRejected([LineError(reader.line_num, f"unreadable CSV: {exc}")]) from None
    elif fmt == "jsonl":
        for line, raw in enumerate(stream, start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw, object_pairs_hook=fields_once, parse_constant=_no_constant)
            except json.JSONDecodeError as exc:
                raise ImportRejected([LineError(line, f"not valid JSON: {exc.msg}")]) from None
            except RecursionError:
                raise ImportRejected([LineError(line, "not valid JSON: nested too deeply")]) from None
            except ValueError as exc:  # a repeated field, NaN/Infinity, a number of thousands of digits
                raise ImportRejected([LineError(line, f"not accepted JSON: {str(exc)[:200]}")]) from None
            if not isinstance(row, dict):
                raise ImportRejected([LineError(line, "each line must be a JSON object")])
            if "subject" in row:
                subject = row.pop("subject")
                if not isinstance(subject, dict):
                    raise ImportRejected([LineError(line, "subject must be an object")])
                for key, value in subject.items():
                    if key in row:
                        raise ImportRejected([LineError(line, f"{key} given twice")])
                    row[key] = value
            keys = list(row)
            if len(keys) > MAX_COLUMNS:
                raise ImportRejected([LineError(line, f"{len(keys)} fields; at most {MAX_COLUMNS}")])
            unknown = [k for k in keys if k not in allowed]
            if unknown:
                raise ImportRejected([LineError(line, f"unknown field {unknown[0]!r}")])
            missing = required - set(keys)
            if missing:
                raise ImportRejected([LineError(line, f"missing field {sorted(missing)[0]!r}")])
            yield line, row

    else:
        raise ValidationFailed(f"unknown import format {fmt!r}; use csv or jsonl", field="format")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def _check_storable(value: str, name: str, *, text_column: bool = True) -> None:
    """PostgreSQL text cannot hold NUL, and UTF-8 cannot encode a lone surrogate (JSON "\\ud800").
    Content is stored encrypted as bytes, not as text (``text_column=False``): NUL is allowed there."""
    if text_column and "\x00" in value:
        raise ValueError(f"{name} contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{name} contains a lone surrogate at character {exc.start}") from None


def _check_text(value: Any, name: str, *, max_length: int, required: bool = True) -> str | None:
    if value is None or value == "":
        if required:
            raise ValueError(f"{name} is empty")
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string")
    if len(value) > max_length:
        raise ValueError(f"{name} is longer than {max_length} characters")
    _check_storable(value, name)
    if value.startswith(FORMULA_PREFIXES) and not (name == "phone" and _PHONE.match(value)):
        raise ValueError(f"{name} starts with {value[0]!r}, a spreadsheet formula prefix")
    return value


def _check_int(value: Any, name: str, *, low: int, high: int, default: int) -> int:
    if value is None or value == "":
        return default
    if isinstance(value, (bool, float)):  # int(1.5) would quietly give 1, int(1e400) raise
        raise ValueError(f"{name} must be an integer")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an integer, got {str(value)[:50]!r}") from None
    if not low <= number <= high:
        raise ValueError(f"{name} must be between {low} and {high}, got {number}")
    return number


# ---------------------------------------------------------------- records


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, x: int) -> int:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def dataset_records_import(*, dataset: Dataset, source: IO | None = None, fmt: str = "",
                           rows: Iterable[tuple[int, dict]] | None = None) -> ImportResult:
    """Register a dataset's records from CSV or JSONL (record_key, split, content and the
    subject's identifiers: email, customer_id, phone), or from ``rows`` already in that shape
    (row number, fields: a data source's records). Raw identifiers are reduced to keyed digests
    here and never stored; content is kept encrypted under the subject's key. One transaction:
    any problem rejects the whole file."""
    with transaction.atomic():
        return _records_import(dataset, rows if rows is not None else iter_rows(
            source, fmt, allowed=RECORD_COLUMNS, required={"record_key", "content"}))


def _records_import(dataset: Dataset, rows: Iterable[tuple[int, dict]]) -> ImportResult:
    errors = _Errors()
    suppressed = suppression_list(dataset_name=dataset.name)
    current = current_key_version()
    seen_keys: dict[str, int] = {}
    staged: list[tuple[int, str, str, bytes, int]] = []
    contents: dict[int, str] = {}
    line_digests: dict[int, list[tuple[str, int, bytes]]] = {}

    for line, row in rows:
        try:
            key = _check_text(row.get("record_key"), "record_key", max_length=200)
            split = row.get("split") or ""
            if split and not _SPLIT.match(str(split)):
                raise ValueError(f"split {split!r} must be lower-case letters, digits and _")
            content = row.get("content")
            if not isinstance(content, str) or not content:
                raise ValueError("content is empty")
            _check_storable(content, "content", text_column=False)
            digests: list[tuple[str, int, bytes]] = []
            for kind in IDENTIFIER_COLUMNS:
                value = _check_text(row.get(kind), kind, max_length=320, required=False)
                if value is not None:
                    try:
                        by_version = identifier_digests_all_versions(kind, value)
                    except ValidationFailed as exc:
                        raise ValueError(exc.message) from None
                    digests.extend((kind, version, digest) for version, digest in by_version.items())
        except ValueError as exc:
            errors.add(line, str(exc))
            continue
        if key in seen_keys:
            errors.add(line, f"record_key {key!r} repeats line {seen_keys[key]}")
            continue
        seen_keys[key] = line
        fingerprint, fp_version = content_fingerprint(content)
        if suppressed.has_key(key) or fingerprint in suppressed.contents:
            errors.add(line, f"record {key!r} was erased and is on the suppression list")
            continue
        if suppressed.has_digest(digests):
            errors.add(line, "the record's subject was erased and is on the suppression list")
            continue
        staged.append((line, key, split, fingerprint, fp_version))
        contents[line] = content
        line_digests[line] = digests
    if not staged and not errors.items:
        errors.add(1, "no records in the file")
    errors.raise_if_any()

    # Records already registered under the same key.
    with connection.cursor() as cursor:
        # Dropped first as well as on commit: an import nested in a larger transaction (or a
        # second import in one) must not find the previous staging table.
        cursor.execute("DROP TABLE IF EXISTS pg_temp.stage_records, pg_temp.stage_subjects")
        cursor.execute("CREATE TEMP TABLE stage_records (line int, external_key text, split text, "
                       "fp bytea, fpv int2, subject_id bigint) ON COMMIT DROP")
        with cursor.copy("COPY stage_records (line, external_key, split, fp, fpv) FROM STDIN") as copy:
            for row in staged:
                copy.write_row(row)
        cursor.execute(
            "SELECT s.line, s.external_key FROM stage_records s JOIN models_registry_datarecord r "
            "ON r.dataset_id = %s AND r.external_key = s.external_key ORDER BY s.line LIMIT %s",
            [dataset.id, MAX_ERRORS],
        )
        for line, key in cursor.fetchall():
            errors.add(line, f"record_key {key!r} is already registered in {dataset}")
    errors.raise_if_any()

    subject_of_line, created = _resolve_subjects(line_digests, errors, current)
    errors.raise_if_any()

    with connection.cursor() as cursor:
        if subject_of_line:
            cursor.execute("CREATE TEMP TABLE stage_subjects (line int, subject_id bigint) ON COMMIT DROP")
            with cursor.copy("COPY stage_subjects (line, subject_id) FROM STDIN") as copy:
                for line, subject_id in subject_of_line.items():
                    copy.write_row((line, subject_id))
            cursor.execute("UPDATE stage_records s SET subject_id = t.subject_id FROM stage_subjects t "
                           "WHERE t.line = s.line")
        cursor.execute(
            "INSERT INTO models_registry_datarecord (dataset_id, external_key, subject_id, split, "
            "content_fingerprint, fingerprint_key_version, status) "
            "SELECT %s, external_key, subject_id, split, fp, fpv, 'active' FROM stage_records ORDER BY line",
            [dataset.id],
        )
        _store_encrypted_content(cursor, dataset, contents, subject_of_line)
    return ImportResult(dataset=str(dataset), rows=len(staged), subjects_created=created)


def _store_encrypted_content(cursor, dataset: Dataset, contents: dict[int, str], subject_of_line: dict[int, int]) -> None:
    """Each record's content, encrypted under its subject's data key (crypto-shredding at erasure)."""
    cursor.execute(
        "SELECT s.line, r.id FROM stage_records s JOIN models_registry_datarecord r "
        "ON r.dataset_id = %s AND r.external_key = s.external_key", [dataset.id])
    record_of_line = dict(cursor.fetchall())
    references = dict(DataSubject.objects.filter(id__in=set(subject_of_line.values())).values_list("id", "reference"))
    keys = keystore()
    with cursor.copy("COPY models_registry_recordcontent (record_id, key_ref, nonce, ciphertext) FROM STDIN") as copy:
        for line, content in contents.items():
            key_ref = subject_key_ref(references.get(subject_of_line.get(line)), dataset.id)
            nonce, ciphertext = keys.encrypt(key_ref, content.encode())
            copy.write_row((record_of_line[line], key_ref, nonce, ciphertext))


def _resolve_subjects(
    line_digests: dict[int, list[tuple[str, int, bytes]]], errors: _Errors, current: int
) -> tuple[dict[int, int], int]:
    """Map each line to a subject id: an existing subject any of its identifiers names (under any
    pepper version), else a new subject shared by every line with a common identifier."""
    all_digests = {d for digests in line_digests.values() for d in digests}
    existing: dict[tuple[str, int, bytes], int] = {}
    digest_list = list({d[2] for d in all_digests})
    for start in range(0, len(digest_list), 5000):
        chunk = digest_list[start:start + 5000]
        for kind, version, digest, subject_id in SubjectIdentifier.objects.filter(digest__in=chunk).values_list(
            "kind", "key_version", "digest", "subject_id"
        ):
            existing[(kind, version, bytes(digest))] = subject_id

    groups = _UnionFind()
    first_line_of: dict[tuple[str, int, bytes], int] = {}
    for line, digests in line_digests.items():
        for d in digests:
            if d[1] != current:
                continue
            if d in first_line_of:
                groups.union(line, first_line_of[d])
            else:
                first_line_of[d] = line
    members: dict[int, list[int]] = {}
    for line in line_digests:
        if line_digests[line]:
            members.setdefault(groups.find(line), []).append(line)

    subject_of_line: dict[int, int] = {}
    new_groups: list[list[int]] = []
    for lines in members.values():
        found = {existing[d] for ln in lines for d in line_digests[ln] if d in existing}
        if len(found) > 1:
            errors.add(min(lines), "the identifiers on this line belong to different data subjects")
            continue
        if found:
            subject_id = found.pop()
            subject_of_line.update(dict.fromkeys(lines, subject_id))
        else:
            new_groups.append(lines)
    if errors.items:
        return subject_of_line, 0

    new_subjects = DataSubject.objects.bulk_create([DataSubject() for _ in new_groups], batch_size=5000)
    for lines, subject in zip(new_groups, new_subjects, strict=True):
        subject_of_line.update(dict.fromkeys(lines, subject.id))

    # Current-version identifiers for every subject seen; old-version rows are re-keyed (removed
    # once the current digest exists), which is how a pepper rotation completes.
    wanted = {
        (subject_of_line[line], d[0], d[2])
        for line, digests in line_digests.items() if line in subject_of_line
        for d in digests if d[1] == current
    }
    SubjectIdentifier.objects.bulk_create(
        [SubjectIdentifier(subject_id=s, kind=k, key_version=current, digest=dg) for s, k, dg in wanted],
        ignore_conflicts=True, batch_size=5000,
    )
    stale = [d for d in existing if d[1] != current]
    for kind, version, digest in stale:
        SubjectIdentifier.objects.filter(kind=kind, key_version=version, digest=digest).delete()
    return subject_of_line, len(new_subjects)


# ---------------------------------------------------------------- membership


def membership_rows_from_file(source: IO, fmt: str, *, required: set[str] | None = None
                              ) -> Iterator[tuple[int, str, int, int, int]]:
    """Checked membership rows ``(line, record_key, shard, slice, position)`` of a CSV or JSONL file
    (``required``: its columns that may not be left out; record_key at least)."""
    errors = _Errors()
    position = 0
    for line, row in iter_rows(source, fmt, allowed=MEMBERSHIP_COLUMNS, required=required or {"record_key"}):
        try:
            key = _check_text(row.get("record_key"), "record_key", max_length=200)
            shard = _check_int(row.get("shard"), "shard", low=0, high=32767, default=0)
            slice_ = _check_int(row.get("slice"), "slice", low=0, high=32767, default=0)
            pos = _check_int(row.get("position"), "position", low=0, high=2**31 - 1, default=position)
        except ValueError as exc:
            errors.add(line, str(exc))
            continue
        position += 1
        yield line, key, shard, slice_, pos
    errors.raise_if_any()


def training_membership_import_file(*, run: TrainingRun, dataset: Dataset, source: IO, fmt: str) -> ImportResult:
    """A run's membership from CSV/JSONL (record_key, shard, slice, position)."""
    return training_membership_import(run=run, dataset=dataset, rows=membership_rows_from_file(source, fmt))


# pg_advisory_xact_lock key that serialises record erasures against membership imports ("ERAS").
ERASURE_LOCK_KEY = 0x45524153


def erasure_lock(*, exclusive: bool) -> None:
    """Take the erasure lock until the current transaction ends: ``exclusive`` for an erasure (from
    before it reads what holds the records to its commit), shared for a membership import (imports do
    not wait for each other). Without it an import whose transaction overlapped an erasure's read the
    records as still active and committed a run trained on them after the erasure had listed the
    copies to destroy (a shadow model registered while a request's data was erased)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)" if exclusive else "SELECT pg_advisory_xact_lock_shared(%s)",
                       [ERASURE_LOCK_KEY])


def training_membership_import(
    *, run: TrainingRun, dataset: Dataset, rows: Iterable[tuple[int, str, int, int, int]]
) -> ImportResult:
    """Load membership rows ``(line, record_key, shard, slice, position)`` for one run and one
    dataset. Unknown, repeated, erased or suppressed record keys reject the whole import; an erasure
    under way is waited for (:func:`erasure_lock`), so its records are read as erased."""
    with transaction.atomic():
        erasure_lock(exclusive=False)
        return _membership_import(run, dataset, rows)


def _membership_import(run: TrainingRun, dataset: Dataset, rows) -> ImportResult:
    errors = _Errors()
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS pg_temp.stage_membership")
        cursor.execute("DROP TABLE IF EXISTS pg_temp.resolved_membership")
        cursor.execute("CREATE TEMP TABLE stage_membership (line int, external_key text, shard int2, "
                       "slice int2, position int4) ON COMMIT DROP")
        with cursor.copy("COPY stage_membership (line, external_key, shard, slice, position) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        # Every key is resolved once; the checks and the load then read this table only. Keys in
        # sorted order against the covering (dataset, key) index (migration 0006) are index-only
        # probes on neighbouring pages, three times faster than hashing the whole records table,
        # which is what the planner picks unaided.
        cursor.execute("SET LOCAL enable_hashjoin = off")
        cursor.execute("SET LOCAL enable_mergejoin = off")
        cursor.execute(
            "CREATE TEMP TABLE resolved_membership ON COMMIT DROP AS "
            "SELECT s.line, s.external_key, r.id AS record_id, r.status, s.shard, s.slice, s.position "
            "FROM (SELECT * FROM stage_membership ORDER BY external_key) s LEFT JOIN models_registry_datarecord r "
            "ON r.dataset_id = %s AND r.external_key = s.external_key", [dataset.id],
        )
        count = cursor.rowcount
        cursor.execute("RESET enable_hashjoin")
        cursor.execute("RESET enable_mergejoin")
        if count == 0:
            raise ImportRejected([LineError(1, "no membership rows")])
        checks = [
            ("SELECT line, external_key FROM resolved_membership WHERE record_id IS NULL ORDER BY line LIMIT %s",
             [MAX_ERRORS], "unknown record_key {!r} in " + str(dataset)),
            ("SELECT min(line), min(external_key) FROM resolved_membership GROUP BY record_id "
             "HAVING count(*) > 1 ORDER BY 1 LIMIT %s", [MAX_ERRORS],
             "record_key {!r} appears more than once in this run"),
            ("SELECT line, external_key FROM resolved_membership WHERE status <> 'active' ORDER BY line LIMIT %s",
             [MAX_ERRORS], "record {!r} was erased and is on the suppression list"),
            ("SELECT s.line, s.external_key FROM resolved_membership s JOIN models_registry_suppressionentry e "
             "ON e.kind = 'record' AND e.dataset_name = %s AND e.external_key = s.external_key "
             "ORDER BY s.line LIMIT %s", [dataset.name, MAX_ERRORS],
             "record {!r} is on the suppression list"),
        ]
        for sql, params, message in checks:
            cursor.execute(sql, params)
            for line, key in cursor.fetchall():
                errors.add(line, message.format(key))
            errors.raise_if_any()

        cursor.execute("SELECT EXISTS (SELECT 1 FROM models_registry_membershipblock WHERE run_id = %s)", [run.id])
        (exists,) = cursor.fetchone()
        if exists:  # a run trained on several datasets gets one import per dataset
            cursor.execute(
                "SELECT s.line, s.external_key FROM resolved_membership s JOIN models_registry_membershipblock b "
                "ON b.block = s.record_id >> 8 AND b.run_id = %s AND (s.record_id & 255)::int2 = ANY(b.offsets) "
                "ORDER BY s.line LIMIT %s", [run.id, MAX_ERRORS],
            )
            for line, key in cursor.fetchall():
                errors.add(line, f"record {key!r} is already a member of run {run.id}")
            errors.raise_if_any()
        # One row per block of 256 record ids (see migration 0005): offsets, placements, positions.
        cursor.execute(
            "INSERT INTO models_registry_membershipblock AS b (block, run_id, offsets, placements, positions) "
            "SELECT record_id >> 8, %s, array_agg((record_id & 255)::int2 ORDER BY record_id), "
            "array_agg((shard::int << 16) | (slice::int & 65535) ORDER BY record_id), "
            "array_agg(position ORDER BY record_id) "
            "FROM resolved_membership GROUP BY 1 "
            "ON CONFLICT (block, run_id) DO UPDATE SET offsets = b.offsets || excluded.offsets, "
            "placements = b.placements || excluded.placements, positions = b.positions || excluded.positions",
            [run.id],
        )
        run.datasets.add(dataset)
    return ImportResult(dataset=str(dataset), rows=count, run_id=run.id)
