"""Chunked membership uploads (issue 21): each chunk applied once, checked like a whole import;
an upload resumes from the chunks the platform holds; a run whose upload is open has no membership
a version could be registered from."""

from __future__ import annotations

import pytest

from models_registry.models import DataRecord, TrainingMembership
from tests import factories

pytestmark = pytest.mark.django_db

MLP = {"name": "mlp", "config": {"in_features": 4, "num_classes": 2, "hidden": [3]}}


@pytest.fixture
def client(api_client_for):
    return api_client_for("ml_engineer")


@pytest.fixture
def run_and_dataset(client):
    dataset = factories.dataset()
    factories.import_records(dataset, [{"record_key": f"k{i}", "content": f"c{i}"} for i in range(6)])
    factories.registered_model(name="churn", architecture=MLP)
    run = client.post("/api/v1/training-runs/", {"model": "churn", "recipe": "plain", "seed": 1,
                                                   "code_version": "pipeline-1", "datasets": [dataset.id]},
                      format="json")
    assert run.status_code == 201, run.content
    return run.json()["id"], dataset


def _chunk(*rows: tuple[str, int]) -> bytes:
    return ("record_key,shard,slice,position\n" + "".join(f"{key},0,0,{pos}\n" for key, pos in rows)).encode()


def _put(client, upload_id: int, number: int, body: bytes):
    return client.generic("PUT", f"/api/v1/membership-uploads/{upload_id}/chunks/{number}/", body,
                          content_type="text/csv")


def _open(client, run_id: int, dataset_id: int):
    return client.post(f"/api/v1/training-runs/{run_id}/membership-uploads/", {"dataset": dataset_id}, format="json")


def test_chunks_apply_once_in_any_order_and_complete_closes_the_upload(client, run_and_dataset):
    run_id, dataset = run_and_dataset
    opened = _open(client, run_id, dataset.id)
    assert opened.status_code == 201, opened.content
    upload_id = opened.json()["id"]
    assert opened.json()["status"] == "open" and opened.json()["chunks"] == []

    assert _put(client, upload_id, 1, _chunk(("k2", 2), ("k3", 3))).status_code == 201
    first = _put(client, upload_id, 0, _chunk(("k0", 0), ("k1", 1)))
    assert first.status_code == 201 and first.json()["rows"] == 2
    # A retry whose answer was lost: nothing changes, the same answer.
    again = _put(client, upload_id, 0, _chunk(("k0", 0), ("k1", 1)))
    assert again.status_code == 200 and again.json() == first.json()
    other = _put(client, upload_id, 0, _chunk(("k4", 0)))
    assert other.status_code == 409 and other.json()["error"]["code"] == "chunk_differs"

    # A restarted client asks which chunks the platform holds.
    resumed = _open(client, run_id, dataset.id)
    assert resumed.status_code == 200 and resumed.json()["id"] == upload_id
    assert resumed.json()["chunks"] == [0, 1] and resumed.json()["rows"] == 4

    missing = client.post(f"/api/v1/membership-uploads/{upload_id}/complete/", {"chunks": 3}, format="json")
    assert missing.status_code == 409 and missing.json()["error"]["code"] == "chunks_missing"
    assert "chunk(s) 2 not received" in missing.json()["error"]["message"]
    assert _put(client, upload_id, 2, _chunk(("k4", 4))).status_code == 201
    wrong_rows = client.post(f"/api/v1/membership-uploads/{upload_id}/complete/", {"chunks": 3, "rows": 6},
                             format="json")
    assert wrong_rows.status_code == 409 and wrong_rows.json()["error"]["code"] == "rows_differ"
    done = client.post(f"/api/v1/membership-uploads/{upload_id}/complete/", {"chunks": 3, "rows": 5}, format="json")
    assert done.status_code == 200 and done.json()["status"] == "complete", done.content
    assert client.post(f"/api/v1/membership-uploads/{upload_id}/complete/", {"chunks": 3, "rows": 5},
                       format="json").json() == done.json()

    late = _put(client, upload_id, 3, _chunk(("k5", 5)))
    assert late.status_code == 409 and late.json()["error"]["code"] == "membership_upload_complete"
    assert _put(client, upload_id, 1, _chunk(("k2", 2), ("k3", 3))).status_code == 200  # a late retry: a no-op
    held = dict(TrainingMembership.objects.filter(run_id=run_id).values_list("record__external_key", "position"))
    assert held == {"k0": 0, "k1": 1, "k2": 2, "k3": 3, "k4": 4}
    assert client.get(f"/api/v1/membership-uploads/{upload_id}/").json() == done.json()


def test_a_refused_chunk_names_the_line_and_keeps_nothing(client, run_and_dataset):
    run_id, dataset = run_and_dataset
    upload_id = _open(client, run_id, dataset.id).json()["id"]
    assert _put(client, upload_id, 0, _chunk(("k0", 0), ("k1", 1))).status_code == 201
    DataRecord.objects.filter(dataset=dataset, external_key="k5").update(status="erased")
    cases = {
        _chunk(("k2", 2), ("nope", 3)): "chunk 1 rejected, nothing was kept: line 3: unknown record_key 'nope'",
        _chunk(("k2", 2), ("k1", 3)): "chunk 1 rejected, nothing was kept: line 3: record 'k1' is already a member",
        _chunk(("k2", 2), ("k2", 3)): "chunk 1 rejected, nothing was kept: line 2: record_key 'k2' appears more",
        _chunk(("k5", 2)): "chunk 1 rejected, nothing was kept: line 2: record 'k5' was erased",
        b"record_key,shard\nk2,0\n": "chunk 1 rejected, nothing was kept: line 1: missing column 'position'",
    }
    for body, message in cases.items():
        refused = _put(client, upload_id, 1, body)
        assert refused.status_code == 400, refused.content
        assert refused.json()["error"]["code"] == "import_rejected"
        assert refused.json()["error"]["message"].startswith(message), refused.json()["error"]["message"]
    state = client.get(f"/api/v1/membership-uploads/{upload_id}/").json()
    assert state["chunks"] == [0] and state["rows"] == 2
    assert TrainingMembership.objects.filter(run_id=run_id).count() == 2


def test_no_version_from_a_run_whose_membership_is_half_uploaded(client, run_and_dataset):
    from safetensors.torch import save

    from workers.training.architectures import build_model

    run_id, dataset = run_and_dataset
    weights = save({k: v.contiguous() for k, v in build_model(MLP).state_dict().items()})
    upload_id = _open(client, run_id, dataset.id).json()["id"]
    assert _put(client, upload_id, 0, _chunk(("k0", 0), ("k1", 1))).status_code == 201

    def upload():
        return client.generic("POST", f"/api/v1/models/churn/versions/?training_run={run_id}", weights,
                              content_type="application/octet-stream")

    refused = upload()
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "membership_incomplete"
    assert f"/api/v1/membership-uploads/{upload_id}/complete/" in refused.json()["error"]["message"]
    assert client.post(f"/api/v1/membership-uploads/{upload_id}/complete/", {"chunks": 1},
                       format="json").status_code == 200
    registered = upload()
    assert registered.status_code == 201, registered.content
    # The version's lineage is the membership it was registered with: no new upload for the run.
    other = factories.dataset()
    late = _open(client, run_id, other.id)
    assert late.status_code == 409 and late.json()["error"]["code"] == "run_has_versions"
