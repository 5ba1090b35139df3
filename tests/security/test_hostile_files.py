"""Hostile files: refused with a clear error, nothing executed, nothing half-imported."""

import io
import json
import pickle
import struct

import pytest
import torch
from safetensors.torch import save

from models_registry import services as registry
from models_registry.models import DataRecord, ModelVersion, StoredArtifact
from tests import factories

pytestmark = pytest.mark.django_db
MLP = {"name": "mlp", "config": {"in_features": 4, "num_classes": 2, "hidden": [3]}}
MARKER = "/tmp/deletion-platform-pwned"


class _Exploit:
    def __reduce__(self):
        import os

        return (os.system, (f"touch {MARKER}",))


def _setup(api_client_for):
    ds = factories.dataset()
    factories.import_records(ds, [{"record_key": "a", "content": "x"}])
    model = registry.registered_model_create(name="uploaded", task="classification", training_recipe="plain",
                                             architecture=MLP)
    run, _ = factories.trained_version(model, ds, [("a", 0, 0)])
    return api_client_for("ml_engineer"), model, run


def _good_weights() -> bytes:
    from workers.training.architectures import build_model

    return save({k: v.contiguous() for k, v in build_model(MLP).state_dict().items()})


def _upload(client, model, run, body: bytes):
    return client.generic("POST", f"/api/v1/models/{model.name}/versions/?training_run={run.id}", body,
                          content_type="application/octet-stream")


def test_good_safetensors_is_accepted(api_client_for):
    client, model, run = _setup(api_client_for)
    response = _upload(client, model, run, _good_weights())
    assert response.status_code == 201, response.content
    assert StoredArtifact.objects.filter(kind="weights", label__startswith="uploaded").count() == 1


def _huge_header() -> bytes:
    return struct.pack("<Q", 10 * 1024**3) + b"{}"


def _truncated() -> bytes:
    return _good_weights()[:-10]


def _lying_offsets() -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [1000, 1000], "data_offsets": [0, 4_000_000]}}).encode()
    return struct.pack("<Q", len(header)) + header + b"\0" * 16


HOSTILE = [
    ("pickle that would run code", lambda: pickle.dumps(_Exploit()), "pickle"),
    ("torch.save checkpoint (zip of pickles)", lambda: _torch_save_bytes(), "zip"),
    ("truncated safetensors", _truncated, "fall outside the"),
    ("10 GB header claim", _huge_header, "header claims"),
    ("offsets beyond the data", _lying_offsets, "fall outside the"),
    ("wrong architecture", lambda: save({"other": torch.zeros(2, 2)}), "do not fit"),
]


def _torch_save_bytes() -> bytes:
    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("label,make,needle", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_checkpoint_is_refused_and_nothing_is_kept(api_client_for, tmp_path, label, make, needle):
    import os

    client, model, run = _setup(api_client_for)
    versions = ModelVersion.objects.count()
    artifacts = StoredArtifact.objects.count()
    if os.path.exists(MARKER):
        os.remove(MARKER)
    response = _upload(client, model, run, make())
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert needle.lower() in error["message"].lower(), error
    assert not os.path.exists(MARKER), "the file ran code"
    assert ModelVersion.objects.count() == versions and StoredArtifact.objects.count() == artifacts


def test_csv_with_a_million_columns_is_refused_quickly(api_client_for):
    from models_registry.importing import ImportRejected, dataset_records_import

    ds = factories.dataset()
    header = ",".join(f"c{i}" for i in range(1_000_000)).encode() + b"\n"
    with pytest.raises(ImportRejected, match="columns; at most"):
        dataset_records_import(dataset=ds, source=io.BytesIO(header + b"1,2\n"), fmt="csv")
    assert not DataRecord.objects.filter(dataset=ds).exists()


def test_valid_weights_whose_header_length_reads_as_a_pickle_are_accepted(api_client_for):
    from workers.training.architectures import build_model

    batchnorm = {"name": "mlp", "config": {"in_features": 30, "num_classes": 2, "hidden": [32],
                                           "input_norm": "batchnorm"}}
    ds = factories.dataset()
    factories.import_records(ds, [{"record_key": "a", "content": "x"}])
    model = registry.registered_model_create(name="uploaded-bn", task="classification", training_recipe="plain",
                                             architecture=batchnorm)
    run, _ = factories.trained_version(model, ds, [("a", 0, 0)])
    body = save({k: v.contiguous() for k, v in build_model(batchnorm).state_dict().items()})
    assert body[:2] == b"\x80\x02"  # a 640-byte header, which the old first-bytes check took for a pickle
    response = _upload(api_client_for("ml_engineer"), model, run, body)
    assert response.status_code == 201, response.content
