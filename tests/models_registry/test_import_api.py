"""The import endpoints and management commands use the same service and its errors."""

import pytest
from django.core.management import CommandError, call_command

from models_registry.models import DataRecord, TrainingMembership
from tests import factories

pytestmark = pytest.mark.django_db


def _dataset_via_api(client):
    response = client.post("/api/v1/datasets/", {
        "name": "patients", "version": "1", "modality": "tabular", "storage_location": "/data/p.csv",
        "purpose": "diagnosis model", "legal_basis": "consent"}, format="json")
    assert response.status_code == 201, response.content
    return response.json()["id"]


def test_records_and_membership_import_over_http(api_client_for):
    client = api_client_for("ml_engineer")
    dataset_id = _dataset_via_api(client)
    body = b"record_key,email,content\np1,a@example.org,x\np2,b@example.org,y\n"
    response = client.generic("POST", f"/api/v1/datasets/{dataset_id}/records/", body, content_type="text/csv")
    assert response.status_code == 201, response.content
    assert response.json()["rows"] == 2
    factories.registered_model(name="diag")
    run = client.post("/api/v1/training-runs/", {"model": "diag", "recipe": "plain", "seed": 1,
                                                   "code_version": "abc", "datasets": [dataset_id]}, format="json")
    assert run.status_code == 201, run.content
    run_id = run.json()["id"]
    response = client.generic("POST", f"/api/v1/training-runs/{run_id}/membership/?dataset={dataset_id}",
                              b'{"record_key": "p1"}\n', content_type="application/x-ndjson")
    assert response.status_code == 201, response.content
    assert TrainingMembership.objects.filter(run_id=run_id).count() == 1


def test_bad_upload_is_a_400_naming_the_line(api_client_for):
    client = api_client_for("ml_engineer")
    dataset_id = _dataset_via_api(client)
    body = b"record_key,content\np1,x\np1,y\n"
    response = client.generic("POST", f"/api/v1/datasets/{dataset_id}/records/", body, content_type="text/csv")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "import_rejected"
    assert error["details"]["errors"][0] == {"line": 3, "problem": "record_key 'p1' repeats line 2"}
    assert DataRecord.objects.count() == 0


def test_unknown_field_and_bad_enum_name_the_field(api_client_for):
    client = api_client_for("ml_engineer")
    response = client.post("/api/v1/datasets/", {"name": "x", "version": "1", "modality": "video",
                                                 "storage_location": "/", "purpose": "p", "legal_basis": "consent",
                                                 "colour": "red"}, format="json")
    assert response.status_code == 400
    fields = response.json()["error"]["fields"]
    assert "colour" in fields


@pytest.mark.parametrize("role,expected", [("intake", 403), ("auditor", 403), ("dpo", 403), ("ml_engineer", 201)])
def test_only_ml_engineers_register_datasets(api_client_for, role, expected):
    client = api_client_for(role)
    response = client.post("/api/v1/datasets/", {"name": f"d-{role}", "version": "1", "modality": "tabular",
                                                 "storage_location": "/", "purpose": "p", "legal_basis": "consent"},
                           format="json")
    assert response.status_code == expected


def test_import_records_command_reports_line_errors(tmp_path):
    ds = factories.dataset(name="cmd")
    good = tmp_path / "good.csv"
    good.write_text("record_key,content\na,1\nb,2\n")
    call_command("import_records", "--dataset", "cmd@1", str(good))
    assert DataRecord.objects.filter(dataset=ds).count() == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"record_key": "c", "content": "3"}\n{"record_key": "c", "content": "4"}\n')
    with pytest.raises(CommandError, match="line 2"):
        call_command("import_records", "--dataset", "cmd@1", str(bad))
    assert DataRecord.objects.filter(dataset=ds).count() == 2
