"""The data sources, one shared table: every file source reads the same rows to the same records
(a subject over several rows, features, labels, splits), refuses a schema naming a missing column,
a repeated key and a value of the wrong type with the row and column, and rewrites itself without
purged rows. Pure Python: no database."""

from __future__ import annotations

import csv
import io
import json

import pytest

from workers.datasets.sources import (
    SOURCES,
    DatasetSchema,
    SchemaError,
    SourceError,
    source_class,
    source_records,
)

ROWS = [
    {"id": "r1", "email": "ann@example.org", "age": 31, "income": 1200.5, "label": 1, "split": "train"},
    {"id": "r2", "email": "ann@example.org", "age": 31, "income": 900.0, "label": 0, "split": "train"},
    {"id": "r3", "email": "bob@example.org", "age": 45, "income": 15.25, "label": 1, "split": "test"},
    {"id": "r4", "email": None, "age": 22, "income": 0.0, "label": 0, "split": "train"},
]
TABULAR = {"record_key": "id", "subjects": {"email": "email"}, "features": ["age", "income"], "label": "label",
           "split": "split"}


def as_csv(rows: list[dict]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
    return out.getvalue().encode()


def as_jsonl(rows: list[dict]) -> bytes:
    return b"".join(json.dumps({k: v for k, v in row.items() if v is not None}).encode() + b"\n" for row in rows)


def as_parquet(rows: list[dict]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), out)
    return out.getvalue()


FILES = {"csv": as_csv, "jsonl": as_jsonl, "parquet": as_parquet}


def read(kind: str, data: bytes, schema: dict = TABULAR, modality: str = "tabular"):
    source = source_class({"kind": kind})({"kind": kind}, data=data)
    return list(source_records(source, DatasetSchema.from_dict(modality, schema)))


def test_every_file_source_is_in_the_shared_table():
    assert {name for name in SOURCES.names() if source_class({"kind": name}).holds_file} == set(FILES)


@pytest.mark.parametrize("kind", sorted(FILES))
def test_a_file_source_reads_the_table_to_the_same_records(kind):
    records = read(kind, FILES[kind](ROWS))
    assert [(r.key, r.split, r.identifiers, r.features, r.label) for r in records] == [
        ("r1", "train", {"email": "ann@example.org"}, (31.0, 1200.5), 1),
        ("r2", "train", {"email": "ann@example.org"}, (31.0, 900.0), 0),
        ("r3", "test", {"email": "bob@example.org"}, (45.0, 15.25), 1),
        ("r4", "train", {}, (22.0, 0.0), 0)]
    # The content a fingerprint is taken of is the same whichever file it came from.
    assert [r.content() for r in records] == [r.content() for r in read("parquet", as_parquet(ROWS))]


@pytest.mark.parametrize("kind", sorted(FILES))
def test_a_file_source_is_rewritten_without_purged_rows(kind):
    source = source_class({"kind": kind})({"kind": kind}, data=FILES[kind](ROWS))
    schema = DatasetSchema.from_dict("tabular", TABULAR)
    rewritten = source.rewritten_without({"r2", "r3"}, schema)
    assert [r.key for r in read(kind, rewritten)] == ["r1", "r4"]
    assert source.rewritten_without({"not-there"}, schema) is None


@pytest.mark.parametrize("kind", sorted(FILES))
def test_bad_rows_are_refused_naming_the_row_and_the_column(kind):
    with pytest.raises(SourceError, match=r"does not have: salary"):
        read(kind, FILES[kind](ROWS), {**TABULAR, "features": ["age", "salary"]})
    repeated = [*ROWS, {**ROWS[0], "income": 1.0}]
    with pytest.raises(SourceError, match=r"row 5: record key 'r1' repeats row 1"):
        read(kind, FILES[kind](repeated))
    if kind == "parquet":  # a typed file is refused by its column types before any row is read
        wrong = [{**row, "age": str(row["age"])} for row in ROWS]
        with pytest.raises(SourceError, match=r"column 'age' has type string; it must be numeric"):
            read(kind, as_parquet(wrong))
    else:
        wrong = [*ROWS[:2], {**ROWS[2], "age": "forty-five"}, ROWS[3]]
        with pytest.raises(SourceError, match=r"row 3: age: a feature must be a number, got 'forty-five'"):
            read(kind, FILES[kind](wrong))


def test_a_text_schema_reads_texts_and_labels():
    rows = [{"key": "t1", "customer": "C-1", "body": "Dear support, my account 123 ...", "topic": 2},
            {"key": "t2", "customer": "C-2", "body": "Hello", "topic": 0}]
    schema = {"record_key": "key", "subjects": {"customer": "customer_id"}, "text": "body", "label": "topic"}
    records = read("csv", as_csv(rows), schema, "text")
    assert [(r.key, r.text, r.label, r.split, r.identifiers) for r in records] == [
        ("t1", "Dear support, my account 123 ...", 2, "train", {"customer_id": "C-1"}),
        ("t2", "Hello", 0, "train", {"customer_id": "C-2"})]


@pytest.mark.parametrize(("schema", "message"), [
    ({"subjects": {}}, "record_key must name a column"),
    ({**TABULAR, "label": ""}, "names its label column"),
    ({**TABULAR, "subjects": {"email": "passport"}}, "'passport' is not an identifier kind"),
    ({**TABULAR, "features": ["age", "age"]}, "column 'age' is named twice"),
    ({**TABULAR, "sql": "SELECT 1"}, "unknown schema field 'sql'"),
])
def test_a_malformed_schema_is_refused_naming_the_field(schema, message):
    with pytest.raises(SchemaError, match=message):
        DatasetSchema.from_dict("tabular", schema)


def test_a_file_source_cannot_be_pointed_at_a_stored_file_and_a_query_takes_no_sql():
    assert "takes only its kind" in source_class({"kind": "csv"}).config_problem({"kind": "csv", "artifact": "ab"})
    assert "SQL is never sent" in source_class({"kind": "postgresql"}).config_problem(
        {"kind": "postgresql", "query": "q", "sql": "DELETE FROM customers"})
