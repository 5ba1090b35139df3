"""Lineage import: good files load; every kind of bad input is refused naming the line, and the
database is unchanged afterwards."""

import io

import pytest
from django.db import connection

from models_registry import services
from models_registry.importing import (
    ImportRejected,
    dataset_records_import,
    training_membership_import_file,
)
from models_registry.models import DataRecord, DataSubject, SubjectIdentifier, TrainingMembership
from tests import factories

pytestmark = pytest.mark.django_db


def _rows(n: int, *, subject_every: int = 2):
    return [
        {"record_key": f"r{i}", "split": "train", "email": f"person{i // subject_every}@example.org",
         "content": f"content of record {i}"}
        for i in range(n)
    ]


def _snapshot():
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM models_registry_trainingmembership")
        memberships = cursor.fetchone()[0]
        cursor.execute("SELECT count(*), coalesce(sum(cardinality(offsets)), 0) FROM models_registry_membershipblock")
        blocks = cursor.fetchone()
    return (DataRecord.objects.count(), DataSubject.objects.count(), SubjectIdentifier.objects.count(),
            memberships, blocks)


def test_records_import_creates_records_and_subjects():
    ds = factories.dataset()
    result = factories.import_records(ds, _rows(6))
    assert result.rows == 6 and result.subjects_created == 3
    assert DataRecord.objects.filter(dataset=ds).count() == 6
    # Records of one e-mail share a subject.
    subjects = DataRecord.objects.filter(external_key__in=["r0", "r1"]).values_list("subject_id", flat=True)
    assert len(set(subjects)) == 1


def test_jsonl_records_import_with_nested_subject():
    ds = factories.dataset()
    body = b'{"record_key": "a", "content": "x", "subject": {"customer_id": "C1"}}\n' \
           b'{"record_key": "b", "content": "y", "subject": {"customer_id": "C1", "email": "c1@example.org"}}\n'
    result = dataset_records_import(dataset=ds, source=io.BytesIO(body), fmt="jsonl")
    assert result.rows == 2 and result.subjects_created == 1


def test_second_import_links_records_to_existing_subject():
    ds = factories.dataset()
    factories.import_records(ds, [{"record_key": "a", "email": "x@example.org", "content": "1"}])
    result = factories.import_records(ds, [{"record_key": "b", "email": "X@example.org", "content": "2"}])
    assert result.subjects_created == 0
    assert DataSubject.objects.count() == 1


def test_membership_import_from_csv():
    ds = factories.dataset()
    factories.import_records(ds, _rows(4))
    model = factories.registered_model()
    run = services.training_run_start(model=model, recipe="plain", config={}, seed=1, code_version="t", datasets=[ds])
    csv_body = b"record_key,shard,slice\nr0,0,0\nr1,0,1\nr2,1,0\n"
    result = training_membership_import_file(run=run, dataset=ds, source=io.BytesIO(csv_body), fmt="csv")
    assert result.rows == 3
    rows = sorted(TrainingMembership.objects.filter(run=run).values_list("record__external_key", "shard", "slice", "position"))
    assert rows == [("r0", 0, 0, 0), ("r1", 0, 1, 1), ("r2", 1, 0, 2)]


BAD_RECORD_FILES = [
    ("duplicate key", b"record_key,content\na,1\nb,2\na,3\n", 4, "repeats line 2"),
    ("malformed row", b"record_key,content\na,1\nb,2,extra\n", 3, "3 cells"),
    ("unknown column", b"record_key,content,ssn\na,1,123\n", 1, "unknown column 'ssn'"),
    ("missing column", b"record_key\na\n", 1, "missing column 'content'"),
    ("empty content", b"record_key,content\na,\n", 2, "content is empty"),
    ("bad email", b"record_key,content,email\na,1,not-an-email\n", 2, "valid e-mail"),
    ("formula injection", b"record_key,content\n=HYPERLINK(\"x\"),1\n", 2, "formula prefix"),
    ("too many columns", b",".join([b"c%d" % i for i in range(5000)]) + b"\n", 1, "columns; at most"),
    ("bad split", b"record_key,content,split\na,1,Train Set\n", 2, "split"),
    ("not utf-8", b"record_key,content\na,\xff\xfe\n", 2, "UTF-8"),
    ("empty file", b"", 1, "empty"),
]


@pytest.mark.parametrize("label,body,line,problem", BAD_RECORD_FILES, ids=[b[0] for b in BAD_RECORD_FILES])
def test_bad_record_files_are_refused_and_nothing_is_kept(label, body, line, problem):
    ds = factories.dataset()
    factories.import_records(ds, [{"record_key": "existing", "content": "z", "email": "e@example.org"}])
    before = _snapshot()
    with pytest.raises(ImportRejected) as caught:
        dataset_records_import(dataset=ds, source=io.BytesIO(body), fmt="csv")
    first = caught.value.errors[0]
    assert first.line == line, caught.value.message
    assert problem in first.problem or problem in caught.value.message
    assert _snapshot() == before


def test_malformed_jsonl_names_the_line():
    ds = factories.dataset()
    body = b'{"record_key": "a", "content": "x"}\n{"record_key": "b", "content": \n'
    with pytest.raises(ImportRejected) as caught:
        dataset_records_import(dataset=ds, source=io.BytesIO(body), fmt="jsonl")
    assert caught.value.errors[0].line == 2 and "JSON" in caught.value.errors[0].problem
    assert DataRecord.objects.filter(dataset=ds).count() == 0


def test_record_already_registered_is_refused_and_file_not_half_imported():
    ds = factories.dataset()
    factories.import_records(ds, [{"record_key": "a", "content": "1"}])
    before = _snapshot()
    with pytest.raises(ImportRejected) as caught:
        factories.import_records(ds, [{"record_key": "new", "content": "2"}, {"record_key": "a", "content": "3"}])
    assert caught.value.errors[0].line == 3 and "already registered" in caught.value.errors[0].problem
    assert _snapshot() == before


def test_unknown_dataset_format_is_refused():
    from foundation.errors import ValidationFailed

    ds = factories.dataset()
    with pytest.raises(ValidationFailed):
        dataset_records_import(dataset=ds, source=io.BytesIO(b"x"), fmt="parquet")


BAD_MEMBERSHIP_FILES = [
    ("unknown record key", b"record_key,shard\nr0,0\nnope,0\n", 3, "unknown record_key 'nope'"),
    ("duplicate record", b"record_key\nr0\nr1\nr0\n", 2, "more than once"),
    ("negative shard", b"record_key,shard\nr0,-1\n", 2, "shard must be between"),
    ("not an integer", b"record_key,slice\nr0,two\n", 2, "slice must be an integer"),
    ("unknown column", b"record_key,weight\nr0,1\n", 1, "unknown column"),
]


@pytest.mark.parametrize("label,body,line,problem", BAD_MEMBERSHIP_FILES, ids=[b[0] for b in BAD_MEMBERSHIP_FILES])
def test_bad_membership_files_are_refused_and_nothing_is_kept(label, body, line, problem):
    ds = factories.dataset()
    factories.import_records(ds, _rows(3))
    model = factories.registered_model()
    run = services.training_run_start(model=model, recipe="plain", config={}, seed=1, code_version="t", datasets=[ds])
    before = _snapshot()
    with pytest.raises(ImportRejected) as caught:
        training_membership_import_file(run=run, dataset=ds, source=io.BytesIO(body), fmt="csv")
    first = caught.value.errors[0]
    assert first.line == line, caught.value.message
    assert problem in first.problem
    assert _snapshot() == before


def test_membership_of_a_record_from_another_dataset_is_unknown():
    ds, other = factories.dataset(), factories.dataset()
    factories.import_records(ds, _rows(2))
    factories.import_records(other, [{"record_key": "elsewhere", "content": "q"}])
    model = factories.registered_model()
    run = services.training_run_start(model=model, recipe="plain", config={}, seed=1, code_version="t", datasets=[ds])
    with pytest.raises(ImportRejected):
        training_membership_import_file(run=run, dataset=ds, source=io.BytesIO(b"record_key\nelsewhere\n"), fmt="csv")


def test_second_import_into_a_run_adds_rows_and_refuses_records_already_in_it():
    ds = factories.dataset()
    dataset_records_import(dataset=ds, source=io.StringIO(
        "record_key,content\n" + "".join(f"k{i},c{i}\n" for i in range(600))), fmt="csv")
    run = services.training_run_start(model=factories.registered_model(), recipe="plain", config={}, seed=0,
                                      code_version="t", datasets=[ds])
    first = "record_key,shard,slice,position\n" + "".join(f"k{i},{i % 3},{i % 5},{i}\n" for i in range(0, 600, 2))
    training_membership_import_file(run=run, dataset=ds, source=io.StringIO(first), fmt="csv")
    before = _snapshot()
    clash = "record_key,shard,slice,position\nk1,0,0,0\nk4,0,0,1\n"  # k4 is already in the run
    with pytest.raises(ImportRejected) as refused:
        training_membership_import_file(run=run, dataset=ds, source=io.StringIO(clash), fmt="csv")
    assert refused.value.errors[0].line == 3 and "already a member" in refused.value.errors[0].problem
    assert _snapshot() == before
    second = "record_key,shard,slice,position\n" + "".join(f"k{i},{i % 3},{i % 5},{i}\n" for i in range(1, 600, 2))
    training_membership_import_file(run=run, dataset=ds, source=io.StringIO(second), fmt="csv")
    assert TrainingMembership.objects.filter(run=run).count() == 600
