"""A company's data through the whole chain, over the REST API only (issue 20): a Parquet table
with a patient over several rows trained with SISA, a CSV of support texts trained with LoRA on a
tiny transformers model, and a query against the company's own PostgreSQL trained with the plain
recipe; each model gets its shadow models from the API, then a deletion request for one person
ends in a signed report. Jobs run here, as the GPU worker would run them."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from models_registry.models import ArtifactKind, ArtifactStatus, Dataset, StoredArtifact
from tests.audits.conftest import dev_identity, nss_db, pdfsig, signing_settings  # noqa: F401 (fixtures)
from tests.company_sources import (
    BREAST_CANCER_SCHEMA,
    breast_cancer_rows,
    operator_queries,
    parquet_bytes,
    source_dataset_over_api,
)
from workers.jobs import job_execute
from workers.models import Job, JobKind

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("signing_settings", "one_torch_thread")]

EVIDENCE = {"method": "email-link", "verified_at": "2026-11-20T10:00:00Z", "verifier": "support"}
MLP_30 = {"name": "mlp", "config": {"in_features": 30, "num_classes": 2, "hidden": [16], "input_norm": "asinh"}}
MLP_3 = {"name": "mlp", "config": {"in_features": 3, "num_classes": 2, "hidden": [8], "input_norm": "asinh"}}
TINY_LM = {"base_model": "tiny_gpt2", "max_length": 96, "max_records": 8, "epochs": 4, "batch_size": 8,
           "lr": 1e-2, "seed": 3}



def _run(job_id: int) -> Job:
    assert job_execute(job_id=job_id) == "succeeded", Job.objects.get(pk=job_id).error
    return Job.objects.get(pk=job_id)


def _trained_over_api(engineer, *, model: str, task: str, recipe: str, architecture: dict | None, dataset_id: int,
                      recipe_config: dict, shadows: int) -> dict:
    """Register the model, train it and its shadow models through the API; returns the version."""
    body = {"name": model, "task": task, "training_recipe": recipe}
    if architecture:
        body["architecture"] = architecture
    registered = engineer.post("/api/v1/models/", body, format="json")
    assert registered.status_code == 201, registered.content
    started = engineer.post("/api/v1/training-jobs/", {"model": model, "dataset": dataset_id,
                                                        "recipe_config": recipe_config}, format="json")
    assert started.status_code == 202, started.content
    _run(started.json()["id"])
    job = engineer.get(started.json()["url"]).json()
    assert job["status"] == "succeeded" and job["progress"]["fraction"] == 1.0, job
    version = job["result_version"]
    if shadows:
        asked = engineer.post("/api/v1/shadow-jobs/", {"model": model, "version": version["version"],
                                                       "count": shadows}, format="json")
        assert asked.status_code == 202, asked.content
        _run(asked.json()["id"])
    return version


def _erased_to_a_signed_report(dpo, request, *, identifiers: dict, idempotency: str) -> dict:
    """A deletion request for one person, from intake to its signed report; returns the report."""
    from audits.models import Report

    created = dpo.post("/api/v1/deletion-requests/", {
        "identifiers": identifiers, "jurisdiction": "GDPR", "legal_ground": "art17_1_b", "channel": "web-form"},
        format="json", HTTP_IDEMPOTENCY_KEY=idempotency)
    assert created.status_code in (200, 201, 202), created.content
    request_id = created.json()["id"]
    scoped = dpo.post(f"/api/v1/deletion-requests/{request_id}/verify/", EVIDENCE, format="json")
    assert scoped.status_code == 200 and scoped.json()["plan"], scoped.content
    assert dpo.post(f"/api/v1/deletion-requests/{request_id}/approve/", {}, format="json").status_code == 200
    for job in Job.objects.filter(kind=JobKind.UNLEARN, deletion_request__public_id=request_id).order_by("id"):
        _run(job.id)
    for job in Job.objects.filter(kind=JobKind.AUDIT, deletion_request__public_id=request_id).order_by("id"):
        _run(job.id)
    state = dpo.get(f"/api/v1/deletion-requests/{request_id}/").json()
    assert {o["verdict"] for o in state["outcomes"]} == {"PASS"}, state["outcomes"]
    for outcome in state["outcomes"]:
        confirmed = dpo.post(f"/api/v1/deletion-requests/{request_id}/confirm-deployment/",
                             {"new_version_id": outcome["new_version_id"]}, format="json")
        assert confirmed.status_code == 200, confirmed.content
    _run(Job.objects.get(kind=JobKind.REPORT, deletion_request__public_id=request_id).id)
    done = dpo.get(f"/api/v1/deletion-requests/{request_id}/").json()
    assert done["status"] == "COMPLETED", done
    report = Report.objects.get(request__public_id=request_id)
    checked = pdfsig(Path(report.pdf_path), request.getfixturevalue("nss_db"))
    assert "Signature is Valid." in checked and "Certificate is Trusted." in checked, checked
    return report.json


def test_a_parquet_table_with_a_patient_over_several_rows_is_trained_with_sisa_and_erased(api_client_for, request):
    from workers.data_sources import stored_file

    engineer, dpo = api_client_for("ml_engineer"), api_client_for("dpo", name="alice")
    registered, imported = source_dataset_over_api(engineer, name="exams", modality="tabular",
                                                   source={"kind": "parquet"}, schema=BREAST_CANCER_SCHEMA,
                                                   body=parquet_bytes(breast_cancer_rows()))
    assert imported.status_code == 201, imported.content
    dataset = Dataset.objects.get(pk=registered.json()["id"])
    _trained_over_api(engineer, model="exams-sisa", task="classification", recipe="sisa", architecture=MLP_30,
                      dataset_id=dataset.id, shadows=4,
                      recipe_config={"architecture": MLP_30, "epochs": 3, "shards": 3, "slices": 2, "seed": 0})
    report = _erased_to_a_signed_report(dpo, request, identifiers={"email": "patient.0001@example.org"},
                                        idempotency="exams-1")
    assert report["scope"]["records"] == 3  # the patient's three examinations
    assert [(e["model"], e["verdict"]["verdict"]) for e in report["model_versions"]] == [("exams-sisa", "PASS")]
    # The platform's copy of the file is rewritten without them, the old one purged and listed.
    dataset.refresh_from_db()
    files = StoredArtifact.objects.filter(dataset=dataset, kind=ArtifactKind.DATASET_FILE)
    assert sorted(files.values_list("status", flat=True)) == [ArtifactStatus.PRESENT, ArtifactStatus.PURGED]
    purged = files.get(status=ArtifactStatus.PURGED).sha256
    assert purged in {p["sha256"] for p in report["scope"]["purged_artifacts"]}
    import pyarrow.parquet as pq

    kept = pq.read_table(io.BytesIO(stored_file(dataset))).column("record_id").to_pylist()
    assert len(kept) == 566 and not {"exam-0003", "exam-0004", "exam-0005"} & set(kept)


def _support_texts_csv(tmp_path) -> tuple[bytes, dict[str, str]]:
    """Support tickets as the company exports them: ticket id, the customer's e-mail and number,
    the text, the split (synthetic customers and the Lee news corpus as background text). Returns
    the file and each ticket's e-mail address."""
    from workers.datasets.reference import materialise_reference, reference_records

    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["ticket", "email", "customer_no", "body", "split"])
    emails = {}
    for row in reference_records(materialise_reference("synthetic_pii_text", tmp_path)):
        subject = row["subject"] or {}
        writer.writerow([row["record_key"], subject.get("email", ""), subject.get("customer_id", ""),
                         row["content"], row["split"]])
        if subject:
            emails[row["record_key"]] = subject["email"]
    return out.getvalue().encode(), emails


def test_a_csv_of_support_texts_is_trained_with_lora_on_a_tiny_transformer_and_erased(
        api_client_for, request, tmp_path):
    from models_registry.models import TrainingMembership

    engineer, dpo = api_client_for("ml_engineer"), api_client_for("dpo", name="alice")
    schema = {"record_key": "ticket", "subjects": {"email": "email", "customer_no": "customer_id"},
              "text": "body", "split": "split"}
    body, emails = _support_texts_csv(tmp_path)
    registered, imported = source_dataset_over_api(engineer, name="tickets", modality="text",
                                                   source={"kind": "csv"}, schema=schema, body=body)
    assert imported.status_code == 201, imported.content
    version = _trained_over_api(engineer, model="support-lm", task="language_modeling", recipe="lora_causal_lm",
                                architecture=None, dataset_id=registered.json()["id"], recipe_config=TINY_LM,
                                shadows=0)
    members = TrainingMembership.objects.filter(run__versions__id=version["id"]).values_list(
        "record__external_key", flat=True)
    person = emails[sorted(k for k in members if k in emails)[0]]
    report = _erased_to_a_signed_report(dpo, request, identifiers={"email": person}, idempotency="tickets-1")
    assert [(e["model"], e["verdict"]["verdict"]) for e in report["model_versions"]] == [("support-lm", "PASS")]
    assert report["model_versions"][0]["language_model"]


def test_a_query_against_the_companys_database_is_trained_and_erased_and_the_report_says_what_it_still_holds(
        api_client_for, request, company_database, settings):
    engineer, dpo = api_client_for("ml_engineer"), api_client_for("dpo", name="alice")
    for i in range(240):
        tenure, calls = 1 + (i * 7) % 48, (i * 5) % 7
        company_database.execute("INSERT INTO customers VALUES (%s, %s, %s, %s, %s, %s, %s)", [
            f"K{i:04d}", f"customer.{i // 2:03d}@example.org", tenure, 20 + (i * 13) % 90, calls,
            int(calls >= 4 and tenure < 24), "test" if i % 5 == 0 else "train"])
    operator_queries(settings, customers="SELECT * FROM customers")
    schema = {"record_key": "customer_no", "subjects": {"email": "email"},
              "features": ["tenure_months", "monthly_spend", "support_calls"], "label": "churned", "split": "cohort"}
    registered, imported = source_dataset_over_api(engineer, name="churn", modality="tabular",
                                                   source={"kind": "postgresql", "query": "customers"}, schema=schema)
    assert imported.status_code == 201, imported.content
    _trained_over_api(engineer, model="churn-mlp", task="classification", recipe="plain", architecture=MLP_3,
                      dataset_id=registered.json()["id"], shadows=4,
                      recipe_config={"architecture": MLP_3, "epochs": 4, "seed": 0})
    report = _erased_to_a_signed_report(dpo, request, identifiers={"email": "customer.001@example.org"},
                                        idempotency="churn-1")
    assert [(e["model"], e["verdict"]["verdict"]) for e in report["model_versions"]] == [("churn-mlp", "PASS")]
    # The company's table still holds the customer's rows: the report says so, and no read takes them in.
    [entry] = report["scope"]["datasets"]
    assert "still holds 2 of the erased records (K0002, K0003)" in entry["source"], entry
    from workers.data_sources import dataset_split

    assert not {"K0002", "K0003"} & set(dataset_split(Dataset.objects.get(name="churn"), "train").record_keys)
