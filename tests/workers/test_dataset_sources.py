"""Datasets read where the company keeps them (issue 20): a Parquet file and a query against the
company's own PostgreSQL imported over the REST API (subjects pseudonymised, one subject over
several rows), bad input refused naming the problem with nothing imported, and every read
excluding erased records and noticing a source that changed under its registered records."""

from __future__ import annotations

import pytest

from models_registry.models import (
    ArtifactKind,
    DataRecord,
    Dataset,
    DataSubject,
    StoredArtifact,
    SubjectIdentifier,
)
from tests.company_sources import (
    BREAST_CANCER_SCHEMA,
    breast_cancer_rows,
    operator_queries,
    parquet_bytes,
    source_dataset_over_api,
)

pytestmark = pytest.mark.django_db

CHURN_SCHEMA = {"record_key": "customer_no", "subjects": {"email": "email"},
                "features": ["tenure_months", "monthly_spend", "support_calls"], "label": "churned", "split": "cohort"}


def _customers(company, count: int = 40) -> None:
    for i in range(count):
        company.execute("INSERT INTO customers VALUES (%s, %s, %s, %s, %s, %s, %s)",
                        [f"K{i:04d}", f"customer.{i // 2:03d}@example.org" if i % 10 else None, 1 + i % 36,
                         20 + (i * 7) % 80, i % 5, int(i % 3 == 0), "test" if i % 5 == 0 else "train"])


def test_a_parquet_file_is_imported_with_a_subject_over_several_rows_and_kept_in_the_artifact_store(api_client_for):
    engineer = api_client_for("ml_engineer")
    rows = breast_cancer_rows(limit=60)
    registered, imported = source_dataset_over_api(engineer, name="exams", modality="tabular",
                                                   source={"kind": "parquet"}, schema=BREAST_CANCER_SCHEMA,
                                                   body=parquet_bytes(rows))
    assert imported.status_code == 201, imported.content
    assert imported.json()["rows"] == 60 and imported.json()["subjects_created"] == 20
    dataset = Dataset.objects.get(pk=registered.json()["id"])
    first = DataRecord.objects.filter(dataset=dataset, external_key__in=["exam-0000", "exam-0001", "exam-0002"])
    assert len({r.subject_id for r in first}) == 1 and first[0].subject_id is not None
    # Pseudonymised: no identifier is stored as given.
    assert not SubjectIdentifier.objects.filter(digest=b"patient.0000@example.org").exists()
    assert sorted(set(DataRecord.objects.filter(dataset=dataset).values_list("split", flat=True))) == ["test", "train"]
    stored = StoredArtifact.objects.get(dataset=dataset, kind=ArtifactKind.DATASET_FILE)
    assert dataset.source == {"kind": "parquet", "artifact": stored.sha256}
    listed = {d["id"]: d for d in engineer.get("/api/v1/datasets/").json()}[dataset.id]
    assert listed["source"]["artifact"] == stored.sha256 and listed["record_count"] == 60
    again = engineer.generic("POST", f"/api/v1/datasets/{dataset.id}/import/", parquet_bytes(rows),
                             content_type="application/octet-stream")
    assert again.status_code == 409 and "already has its records" in again.json()["error"]["message"]


def _wrong_types(rows):
    import pyarrow as pa

    fields = [pa.field(name, pa.string() if name in ("record_id", "patient_email", "split", "f3") else
                       pa.int64() if name == "diagnosis" else pa.float64()) for name in rows[0]]
    return parquet_bytes([{**row, "f3": str(row["f3"])} for row in rows], schema=pa.schema(fields))


@pytest.mark.parametrize(("case", "status", "message"), [
    ("missing column", 400, "the schema names column(s) the source does not have: f99"),
    ("repeated key", 400, "row 13: record key 'exam-0002' repeats row 3"),
    ("wrong types", 400, "column 'f3' has type string; it must be numeric"),
    ("empty label", 400, "row 7: diagnosis: a label must be an integer, got None"),
    ("a stored file named", 400, "takes only its kind"),
    ("image modality", 400, "tabular or text, not 'image'"),
])
def test_bad_input_is_refused_naming_the_problem_and_nothing_is_imported(api_client_for, case, status, message):
    engineer = api_client_for("ml_engineer")
    rows = breast_cancer_rows(limit=30)
    schema, source, modality, body = dict(BREAST_CANCER_SCHEMA), {"kind": "parquet"}, "tabular", None
    if case == "missing column":
        schema["features"] = [*schema["features"][:5], "f99"]
    elif case == "repeated key":
        rows[12]["record_id"] = "exam-0002"
    elif case == "wrong types":
        body = _wrong_types(rows)
    elif case == "empty label":
        rows[6]["diagnosis"] = None
    elif case == "a stored file named":
        source = {"kind": "parquet", "artifact": "0" * 64}
    elif case == "image modality":
        modality = "image"
    subjects = DataSubject.objects.count()
    registered, imported = source_dataset_over_api(engineer, name="exams", modality=modality, source=source,
                                                   schema=schema, body=body or parquet_bytes(rows))
    refused = imported if imported is not None else registered
    assert refused.status_code == status, refused.content
    assert message in refused.json()["error"]["message"], refused.json()
    assert not DataRecord.objects.exists() and DataSubject.objects.count() == subjects
    assert not StoredArtifact.objects.exists()
    assert all("artifact" not in d.source for d in Dataset.objects.all())


def test_a_query_against_the_companys_database_is_imported_and_cannot_write_or_run_forever(
        api_client_for, company_database, settings):
    engineer = api_client_for("ml_engineer")
    _customers(company_database)
    operator_queries(settings, customers="SELECT * FROM customers ORDER BY customer_no",
                     deleting="WITH gone AS (DELETE FROM customers RETURNING *) SELECT * FROM gone",
                     numbering="SELECT *, nextval('export_numbers') AS n FROM customers",
                     slow=("SELECT *, pg_sleep(0.2) AS waited FROM customers", 0.5))
    _, imported = source_dataset_over_api(engineer, name="churn", modality="tabular",
                                          source={"kind": "postgresql", "query": "customers"}, schema=CHURN_SCHEMA)
    assert imported.status_code == 201, imported.content
    assert imported.json()["rows"] == 40
    assert DataRecord.objects.filter(subject__isnull=True).count() == 4  # rows without an e-mail address

    _, writing = source_dataset_over_api(engineer, name="churn-w", modality="tabular",
                                         source={"kind": "postgresql", "query": "deleting"}, schema=CHURN_SCHEMA)
    assert writing.status_code == 400 and "READ ONLY transaction" in writing.json()["error"]["message"], writing.content
    company_database.execute("CREATE SEQUENCE export_numbers")  # a write hidden in a function call
    _, numbering = source_dataset_over_api(engineer, name="churn-n", modality="tabular",
                                           source={"kind": "postgresql", "query": "numbering"}, schema=CHURN_SCHEMA)
    assert numbering.status_code == 400, numbering.content
    assert "nextval() in a read-only transaction" in numbering.json()["error"]["message"]
    _, slow = source_dataset_over_api(engineer, name="churn-s", modality="tabular",
                                      source={"kind": "postgresql", "query": "slow"}, schema=CHURN_SCHEMA)
    assert slow.status_code == 400 and "ran past its timeout of 0.5 s" in slow.json()["error"]["message"], slow.content
    unknown, _ = source_dataset_over_api(engineer, name="churn-u", modality="tabular",
                                         source={"kind": "postgresql", "query": "everything"}, schema=CHURN_SCHEMA)
    assert unknown.status_code == 400 and "no query 'everything' is configured" in unknown.json()["error"]["message"]
    sql, _ = source_dataset_over_api(engineer, name="churn-x", modality="tabular",
                                     source={"kind": "postgresql", "query": "customers", "sql": "SELECT 1"},
                                     schema=CHURN_SCHEMA)
    assert sql.status_code == 400 and "SQL is never sent over the API" in sql.json()["error"]["message"]
    # The write was refused: the company's rows are all there.
    import psycopg

    with psycopg.connect(company_database.dsn) as connection:
        assert connection.execute("SELECT count(*) FROM customers").fetchone()[0] == 40
    assert DataRecord.objects.count() == 40


def test_a_read_excludes_erased_records_and_notices_a_source_that_changed(api_client_for, company_database, settings):
    from models_registry.services import records_erase
    from workers.data_sources import SourceChanged, dataset_split, source_still_holds

    engineer = api_client_for("ml_engineer")
    _customers(company_database)
    operator_queries(settings, customers="SELECT * FROM customers")
    registered, imported = source_dataset_over_api(engineer, name="churn", modality="tabular",
                                                   source={"kind": "postgresql", "query": "customers"},
                                                   schema=CHURN_SCHEMA)
    assert imported.status_code == 201, imported.content
    dataset = Dataset.objects.get(pk=registered.json()["id"])
    train = dataset_split(dataset, "train")
    assert len(train) == 32 and list(train.record_keys) == sorted(train.record_keys)
    assert train.inputs.shape == (32, 3) and train.source_read.to_dict() == {
        "records": 32, "unregistered_rows": 0, "excluded_still_held": 0, "missing": 0, "suppressed": 0}

    records_erase(records=DataRecord.objects.filter(dataset=dataset, external_key="K0001"), reason="test")
    company_database.execute("INSERT INTO customers VALUES ('K9999', NULL, 1, 1, 1, 0, 'train')")
    train = dataset_split(dataset, "train")
    assert "K0001" not in train.record_keys and len(train) == 31
    assert train.source_read.excluded_still_held == ["K0001"] and train.source_read.unregistered_rows == 1
    assert source_still_holds(dataset=dataset, keys={"K0001"})["records"] == ["K0001"]

    company_database.execute("UPDATE customers SET monthly_spend = monthly_spend + 1 WHERE customer_no = 'K0002'")
    with pytest.raises(SourceChanged, match=r"1 record\(s\) of split 'train' now hold other content \(K0002\)"):
        dataset_split(dataset, "train")
    company_database.execute("DELETE FROM customers WHERE customer_no IN ('K0001', 'K0002')")
    train = dataset_split(dataset, "train")
    assert train.source_read.missing == ["K0002"] and train.source_read.excluded_still_held == []


def test_a_retrain_refuses_a_source_that_changed_since_training(api_client_for, company_database, settings):
    from models_registry.models import TrainingMembership
    from tests import factories
    from tests.flows import approved_request, run_job
    from workers.jobs import job_execute
    from workers.models import Job
    from workers.services import model_train

    engineer = api_client_for("ml_engineer")
    _customers(company_database)
    operator_queries(settings, customers="SELECT * FROM customers")
    registered, _ = source_dataset_over_api(engineer, name="churn", modality="tabular",
                                            source={"kind": "postgresql", "query": "customers"}, schema=CHURN_SCHEMA)
    dataset = Dataset.objects.get(pk=registered.json()["id"])
    mlp = {"name": "mlp", "config": {"in_features": 3, "num_classes": 2, "hidden": [8]}}
    version = run_job(model_train(model=factories.registered_model(name="churn-plain", recipe="plain"),
                                  dataset=dataset, recipe_config={"architecture": mlp, "epochs": 2},
                                  enqueue=False)).result_version
    members = TrainingMembership.objects.filter(run=version.training_run).select_related("record")
    assert members.count() == 32
    # The company edits a customer the model trained on; then someone asks for another's erasure.
    company_database.execute("UPDATE customers SET tenure_months = 99 WHERE customer_no = 'K0003'")
    request = approved_request([DataRecord.objects.get(dataset=dataset, external_key="K0001")])
    job = Job.objects.get(deletion_request=request, kind="unlearn")
    assert job_execute(job_id=job.id) == "failed"
    job.refresh_from_db()
    assert "the source of churn@1 changed since its records were registered: 1 record(s) of split 'train' " \
           "now hold other content (K0003)" in job.error, job.error
