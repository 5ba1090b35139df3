"""Property-based fuzz of the two upload operations schemathesis cannot generate bodies for:
a dataset's records and a training run's membership, as CSV and as NDJSON.

Bodies are built from well-formed rows with hostile parts mixed in: bad UTF-8, lines over the CSV
field limit, deeply nested JSON, wrong types, repeated and unknown keys, NUL bytes, lone
surrogates, BOMs, CRLF and lone CR line ends, formula-injection cells, NaN and numbers of
thousands of digits. Every answer must be a 201 whose row counts match what it says it stored,
or a 4xx JSON error that names the line (import_rejected) or the field, after which the database
is exactly as it was. Never a 5xx.

FUZZ_MAX_EXAMPLES sets the number of bodies per test (`make reliability` raises it to 200).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import re
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models_registry import services
from models_registry.importing import MEMBERSHIP_COLUMNS, RECORD_COLUMNS
from models_registry.models import (
    DataRecord,
    DataSubject,
    RecordContent,
    StoredArtifact,
    SubjectIdentifier,
    SuppressionEntry,
    TrainingMembership,
)
from tests import factories

pytestmark = pytest.mark.django_db

MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "40"))
STATUSES: Counter = Counter()  # printed at the end of the run (tests/conftest.py)
FUZZ_SETTINGS = settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
                         suppress_health_check=list(HealthCheck))
FIELD_LIMIT = 1024 * 1024  # csv.field_size_limit set by the importer
MEMBER_KEYS = [f"m{i}" for i in range(60)]
_SERIAL = itertools.count()

# ---------------------------------------------------------------- hostile parts

FORMULAS = ["=1+1", '=HYPERLINK("http://evil.example","x")', "+1", "-2", "@SUM(A1:A9)", "\tx", "\rx",
            "=cmd|' /C calc'!A0"]
ODD_TEXT = ["a\x00b", "\x00", "\ud800", "x\udfff", "\ufeffk", "a\r\nb", '"', ",", "  ", "", "x" * 201,
            "ﬀ", "Ａ@example.org", "\u202ekey", "k\u2028ey"]
text = st.one_of(st.text(max_size=20), st.sampled_from(FORMULAS), st.sampled_from(ODD_TEXT))
scalar = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                   st.floats(allow_nan=True, allow_infinity=True), text)
json_value = st.recursive(scalar, lambda inner: st.lists(inner, max_size=3)
                          | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)
UNKNOWN_KEYS = ["colour", "Record_Key", "record_key ", "__proto__", "", "subject", "id", "dataset"]

RAW_JSON_LINES = [
    b"[" * 5000 + b"]" * 5000,
    b'{"record_key": ' + b"[" * 3000 + b"}",
    b'{"record_key": "d1", "record_key": "d2", "content": "x"}',
    b'{"record_key": "n1", "content": NaN}',
    b'{"record_key": "n2", "shard": Infinity, "content": "x"}',
    b'{"record_key": "n3", "shard": 1e400, "content": "x"}',
    b'{"record_key": "n4", "shard": ' + b"9" * 5000 + b', "content": "x"}',
    b'{"record_key": "n5", "content": "x"',
    b"null", b"[]", b'"just a string"', b"123", b"{}", b"\xef\xbb\xbf{}",
    b'{"record_key": "n6\\u0000", "content": "x"}',
    b'{"record_key": "n7\\ud800", "content": "x"}',
    b'{"record_key": "n8", "content": "x", "subject": {"email": "a@example.org", "email": "b@example.org"}}',
    b'{"record_key": "n9", "content": "x", "subject": "a@example.org"}',
    b'{"record_key": "n10", "content": "x", "email": "a@example.org", "subject": {"email": "b@example.org"}}',
]
RAW_CSV_LINES = [
    b'a,"unterminated', b"a,b,c,d,e,f,g", b"=1+1,x", b"a\x00,b", b'"a""b",c', b",", b"\xff\xfe,x",
    b"a\rb,c", b",".join([b"z"] * 20000),
]
BAD_BYTES = [b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80", b"\x00", b"\xef\xbb\xbf"]


def _key_text():
    return st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=12)


def _maybe_hostile(valid, hostile: bool):
    """In a hostile body mostly the valid value, now and then anything at all."""
    return st.one_of(valid, valid, valid, json_value) if hostile else valid


def _record_row(hostile: bool):
    valid = {  # keys that repeat (within a file, or an earlier import) in hostile bodies only
        "record_key": _key_text().map(lambda k: f"r-{k}") if hostile else st.builds(lambda: f"r-{next(_SERIAL)}"),
        "content": st.text(min_size=1, max_size=40),
    }
    optional = {
        "split": st.sampled_from(["train", "test", "Train", "tr ain", "x" * 30]),
        "email": st.from_regex(r"[a-z]{1,8}@example\.org", fullmatch=True),
        "customer_id": _key_text(),
        "phone": st.sampled_from(["+44 20 7946 0000", "+1 (555) 010-9999", "12", "=1+2", "+"]),
    }
    if not hostile:
        optional["split"] = st.sampled_from(["train", "test"])
        optional["phone"] = st.sampled_from(["+44 20 7946 0000", "+1 (555) 010-9999"])
    unknown = {k: json_value for k in UNKNOWN_KEYS[:3]} if hostile else {}
    return st.fixed_dictionaries(
        {k: _maybe_hostile(v, hostile) for k, v in valid.items()},
        optional={**{k: _maybe_hostile(v, hostile) for k, v in optional.items()}, **unknown},
    )


def _membership_row(hostile: bool):
    small = st.integers(min_value=0, max_value=4)
    unknown = {k: json_value for k in UNKNOWN_KEYS[:2]} if hostile else {}
    return st.fixed_dictionaries(
        {"record_key": _maybe_hostile(st.sampled_from(MEMBER_KEYS), hostile)},
        optional={"shard": _maybe_hostile(small, hostile), "slice": _maybe_hostile(small, hostile),
                  "position": _maybe_hostile(st.integers(min_value=0, max_value=10_000), hostile),
                  **unknown},
    )


def _json_line(draw, row: dict, hostile: bool) -> bytes:
    choice = draw(st.integers(min_value=0, max_value=19)) if hostile else 19
    if choice == 0:
        return draw(st.sampled_from(RAW_JSON_LINES))
    if choice == 1:  # a line far longer than any legitimate one
        return json.dumps({**row, "content": "x" * (FIELD_LIMIT + 10)}).encode()
    text_line = json.dumps(row, ensure_ascii=draw(st.booleans()), allow_nan=True)
    if choice == 2 and len(row) > 0:  # the same field twice, the first one hidden from a naive reader
        text_line = '{"record_key": "shadowed", ' + text_line[1:]
    # ensure_ascii=False with a lone surrogate: 'surrogatepass' writes bytes that are not UTF-8.
    return text_line.encode("utf-8", "surrogatepass")


def _csv_cell(value) -> str:
    if isinstance(value, str):
        return value
    return "" if value is None else json.dumps(value, allow_nan=True)


def _csv_body(draw, columns: tuple[str, ...] | set[str], rows: list[dict], required: set[str],
              hostile: bool) -> list[bytes]:
    header_choice = draw(st.integers(min_value=0, max_value=9)) if hostile else 9
    if header_choice == 0:
        header = draw(st.lists(st.sampled_from([*sorted(columns), *UNKNOWN_KEYS]), min_size=0, max_size=8))
    elif header_choice == 1:
        header = [f"c{i}" for i in range(draw(st.sampled_from([17, 5000])))]
    else:
        extra = draw(st.lists(st.sampled_from(sorted(set(columns) - required)), unique=True))
        header = draw(st.permutations([*sorted(required), *extra]))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    lines = [out.getvalue().rstrip("\n").encode("utf-8", "surrogatepass")]
    for row in rows:
        choice = draw(st.integers(min_value=0, max_value=14)) if hostile else 14
        if choice == 0:
            lines.append(draw(st.sampled_from(RAW_CSV_LINES)))
            continue
        if choice == 1:
            lines.append(b"big," + b"x" * (FIELD_LIMIT + 10))
            continue
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([_csv_cell(row.get(name)) for name in header])
        lines.append(out.getvalue().rstrip("\n").encode("utf-8", "surrogatepass"))
    return lines


@st.composite
def upload(draw, operation: str, fmt: str):
    """(body bytes, content type, query string). One body in four is well-formed, so that the
    accepting path (and its row counts) is exercised as well as the refusing one."""
    hostile = draw(st.integers(min_value=0, max_value=3)) > 0
    row_strategy = _record_row(hostile) if operation == "records" else _membership_row(hostile)
    empty = hostile and draw(st.integers(min_value=0, max_value=19)) == 0
    unique = None if hostile else (lambda row: row["record_key"])
    rows = [] if empty else draw(st.lists(row_strategy, min_size=1, max_size=6, unique_by=unique))
    if fmt == "jsonl":
        lines = [_json_line(draw, row, hostile) for row in rows]
    else:
        columns, required = ((RECORD_COLUMNS, {"record_key", "content"}) if operation == "records"
                             else (MEMBERSHIP_COLUMNS, {"record_key"}))
        lines = _csv_body(draw, columns, rows, required, hostile)
    separator = draw(st.sampled_from([b"\n", b"\n", b"\r\n", b"\r"] if hostile else [b"\n", b"\r\n"]))
    body = separator.join(lines) + draw(st.sampled_from([separator, b""]))
    if hostile and draw(st.integers(min_value=0, max_value=7)) == 0:
        body = b"\xef\xbb\xbf" + body
    if hostile and body and draw(st.integers(min_value=0, max_value=5)) == 0:  # corrupt a byte
        at = draw(st.integers(min_value=0, max_value=len(body)))
        body = body[:at] + draw(st.sampled_from(BAD_BYTES)) + body[at:]
    if hostile and body and draw(st.integers(min_value=0, max_value=11)) == 0:  # cut off mid-way
        body = body[: draw(st.integers(min_value=0, max_value=len(body)))]
    content_types = {"csv": ["text/csv", "text/csv; charset=utf-8"],
                     "jsonl": ["application/x-ndjson", "application/jsonl"]}[fmt]
    content_type = draw(st.sampled_from(content_types))
    if hostile and draw(st.integers(min_value=0, max_value=9)) == 0:
        content_type = draw(st.sampled_from(["application/json", "text/plain", "", "text/csv; x=\x00"]))
    query = f"format={fmt}" if draw(st.integers(min_value=0, max_value=5)) == 0 else ""
    return body, content_type, query


# ---------------------------------------------------------------- checks


def _counts() -> dict[str, int]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_inherits WHERE inhparent = "
                       "'models_registry_trainingmembership'::regclass")
        (partitions,) = cursor.fetchone()
        cursor.execute("SELECT count(*) FROM models_registry_trainingrun_datasets")
        (run_datasets,) = cursor.fetchone()
    return {
        "records": DataRecord.objects.count(), "contents": RecordContent.objects.count(),
        "subjects": DataSubject.objects.count(), "identifiers": SubjectIdentifier.objects.count(),
        "memberships": TrainingMembership.objects.count(), "suppression": SuppressionEntry.objects.count(),
        "artifacts": StoredArtifact.objects.count(), "partitions": partitions, "run_datasets": run_datasets,
    }


_FORMULA_START = re.compile(r"^[=+\-@\t\r]")


def _check_answer(response, body: bytes, before: dict[str, int], stored_kind: str) -> None:
    STATUSES[response.status_code] += 1
    sample = body[:200]
    assert response.status_code < 500, f"{response.status_code} for {sample!r}: {response.content[:500]!r}"
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    answer = response.json()
    after = _counts()
    if response.status_code == 201:
        rows = answer["rows"]
        assert rows > 0
        assert after[stored_kind] - before[stored_kind] == rows, (before, after, answer)
        if stored_kind == "records":
            assert after["contents"] - before["contents"] == rows
            assert after["subjects"] - before["subjects"] == answer["subjects_created"]
        # Nothing stored may start a spreadsheet formula or hold a NUL.
        keys = DataRecord.objects.values_list("external_key", flat=True)
        assert not [k for k in keys if _FORMULA_START.match(k) or "\x00" in k]
        return
    assert 400 <= response.status_code < 500, response.status_code
    error = answer["error"]
    assert error["code"] and error["message"], error
    if error["code"] == "import_rejected":
        problems = error["details"]["errors"]
        assert problems, error
        lines_in_body = body.count(b"\n") + body.count(b"\r") + 1
        for problem in problems:
            assert isinstance(problem["line"], int) and 1 <= problem["line"] <= lines_in_body, (problem, sample)
            assert isinstance(problem["problem"], str) and problem["problem"]
        assert f"line {problems[0]['line']}:" in error["message"]
    else:
        assert error.get("fields"), f"a 4xx that names no line and no field: {error}"
    assert after == before, f"a refused import changed the database: {before} -> {after}"


# ---------------------------------------------------------------- the tests


@pytest.fixture
def ml_client(api_client_for):
    return api_client_for("ml_engineer")


@pytest.fixture
def member_run(db):
    dataset = factories.dataset(name="fuzz-members")
    factories.import_records(dataset, [{"record_key": k, "content": f"c{k}"} for k in MEMBER_KEYS])
    model = factories.registered_model(name="fuzz-model")
    run = services.training_run_start(model=model, recipe="plain", config={}, seed=0, code_version="fuzz",
                                      datasets=[dataset])
    return run, dataset


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_records_upload_never_5xx_and_refusals_change_nothing(ml_client, fmt):
    dataset = factories.dataset(name=f"fuzz-records-{fmt}")

    @FUZZ_SETTINGS
    @given(upload("records", fmt))
    def check(case):
        body, content_type, query = case
        before = _counts()
        response = ml_client.generic("POST", f"/api/v1/datasets/{dataset.id}/records/?{query}", body,
                                     content_type=content_type)
        _check_answer(response, body, before, "records")

    check()


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_membership_upload_never_5xx_and_refusals_change_nothing(ml_client, member_run, fmt):
    first_run, dataset = member_run

    @FUZZ_SETTINGS
    @given(upload("membership", fmt), st.integers(min_value=0, max_value=39))
    def check(case, dataset_choice):
        dataset_param = ["", "x1", "-1", "١", "999999"][dataset_choice] if dataset_choice < 5 else str(dataset.id)
        # A body goes to the first run (whose members pile up) or to a fresh one.
        run = first_run if dataset_choice % 2 else services.training_run_start(
            model=first_run.model, recipe="plain", config={}, seed=0, code_version="fuzz", datasets=[dataset])
        body, content_type, query = case
        before = _counts()
        url = f"/api/v1/training-runs/{run.id}/membership/?dataset={dataset_param}&{query}"
        response = ml_client.generic("POST", url, body, content_type=content_type)
        _check_answer(response, body, before, "memberships")

    check()


# ---------------------------------------------------------------- the cases the fuzz found


REGRESSIONS = [
    # (operation, content type, body, line, problem) — each was a 500 before it was fixed.
    ("records", "application/x-ndjson", b'{"record_key": "a", "content": ' + b"[" * 100_000 + b"}\n", 1,
     "nested too deeply"),
    ("records", "text/csv", b"record_key,content\na\x00b,x\n", 2, "record_key contains a NUL character"),
    ("records", "application/x-ndjson", b'{"record_key": "a\\u0000b", "content": "x"}\n', 1, "NUL"),
    ("records", "application/x-ndjson", b'{"record_key": "a\\ud800", "content": "x"}\n', 1, "lone surrogate"),
    ("records", "application/x-ndjson", b'{"record_key": "a", "content": "x\\udc80"}\n', 1, "lone surrogate"),
    ("records", "application/x-ndjson", b'{"record_key": "a", "record_key": "b", "content": "x"}\n', 1,
     "field 'record_key' given twice"),
    ("membership", "application/x-ndjson", b'{"record_key": "m1", "shard": 1e400}\n', 1,
     "shard must be an integer"),
    ("membership", "application/x-ndjson", b'{"record_key": "m1", "shard": 1.5}\n', 1,
     "shard must be an integer"),
    ("membership", "application/x-ndjson", b'{"record_key": "m1", "shard": ' + b"9" * 5000 + b"}\n", 1,
     "not accepted JSON"),
    ("membership", "text/csv", b"record_key\nm1\x00\n", 2, "NUL"),
]


@pytest.mark.parametrize("operation,content_type,body,line,problem", REGRESSIONS,
                         ids=[f"{r[0]}-{i}" for i, r in enumerate(REGRESSIONS)])
def test_inputs_that_once_answered_500_are_refused_naming_the_line(
        ml_client, member_run, operation, content_type, body, line, problem):
    run, dataset = member_run
    url = (f"/api/v1/datasets/{dataset.id}/records/" if operation == "records"
           else f"/api/v1/training-runs/{run.id}/membership/?dataset={dataset.id}")
    before = _counts()
    response = ml_client.generic("POST", url, body, content_type=content_type)
    assert response.status_code == 400, response.content[:300]
    error = response.json()["error"]
    assert error["details"]["errors"][0]["line"] == line
    assert problem in error["details"]["errors"][0]["problem"]
    assert _counts() == before


def upload_fuzz_summary() -> str | None:
    """The line tests/conftest.py prints at the end of the run."""
    if not STATUSES:
        return None
    by_status = ", ".join(f"{status}: {count}" for status, count in sorted(STATUSES.items()))
    return (f"upload fuzz: {sum(STATUSES.values())} bodies sent (at most {MAX_EXAMPLES} per test), "
            f"answers {by_status}")
