"""A version registered by upload carries what every later job needs (issue 19, item 1): before,
the first job on it failed with ``KeyError: 'membership'``; a version uploaded that way (weights
only) now gets an error naming what is missing and how to add it."""

from __future__ import annotations

import pytest
from safetensors.torch import save

from deletion.models import ModelOutcome
from models_registry.models import DataRecord, ModelVersion
from tests import factories
from tests.flows import approved_request, registered_over_api, run_job, upload_over_api
from workers.reference_data import reference_dataset_register
from workers.training import RECIPES

pytestmark = pytest.mark.django_db

MLP = {"name": "mlp", "config": {"in_features": 30, "num_classes": 2, "hidden": [16]}}


def _company_trained(dataset, keys):
    """What the company did on its own machines: the plain recipe on some of the records."""
    from workers.datasets.reference import load_reference_split

    train = load_reference_split(dataset.storage_location, "train").subset(keys)
    return RECIPES.get("plain")({"architecture": MLP, "epochs": 3, "lr": 0.01, "seed": 5}).train(train)


def _uploaded(client, dataset, keys) -> ModelVersion:
    """Register the model, its training run and membership, and the weights, over the REST API."""
    run_id = registered_over_api(client, name="bc-uploaded", architecture=MLP, dataset=dataset, keys=keys,
                                 policy={"approximate_method": "finetune"}, code_version="company-pipeline-1.4",
                                 run_config={"epochs": 3, "lr": 0.01, "seed": 5, "scheduler": "none"})
    weights = save({k: v.contiguous() for k, v in _company_trained(dataset, keys).model.state_dict().items()})
    response = upload_over_api(client, "bc-uploaded", run_id, weights)
    assert response.status_code == 201, response.content
    return ModelVersion.objects.get(pk=response.json()["id"])


def _request_for(dataset, record) -> ModelOutcome:
    return ModelOutcome.objects.get(request=approved_request([record]))


def test_an_uploaded_version_is_unlearned_shadowed_and_audited_like_a_trained_one(api_client_for):
    from workers.runners.storage import artifact_store
    from workers.services import shadow_models_train
    from workers.training.storage import load_run

    dataset = reference_dataset_register(name="breast_cancer")
    keys = sorted(DataRecord.objects.filter(dataset=dataset, split="train").values_list("external_key", flat=True))
    version = _uploaded(api_client_for("ml_engineer"), dataset, keys[:200])
    stored = load_run(artifact_store(), version.artifact_sha256)
    assert sorted(row.record_key for row in stored.membership) == keys[:200]
    # The family's recipe with what the run recorded (an unknown field of the company's is not taken).
    assert stored.config["epochs"] == 3 and stored.config["lr"] == 0.01 and "scheduler" not in stored.config
    run_job(shadow_models_train(version=version, count=2, enqueue=False))
    record = DataRecord.objects.get(dataset=dataset, external_key=keys[0])
    outcome = _request_for(dataset, record)
    run_job(outcome.job)
    outcome.refresh_from_db()
    run_job(outcome.audit_job)
    outcome.refresh_from_db()
    # Finetune on one record with two shadow models: the audit has too little to confirm erasure.
    assert outcome.verdict == "INCONCLUSIVE" and outcome.audit["shadow_models"] == 2


def test_a_version_uploaded_with_weights_only_gets_an_error_naming_what_is_missing(api_client_for):
    from workers.artifacts import ArtifactManifest, code_version
    from workers.runners.storage import artifact_store
    from workers.training.architectures import build_model
    from workers.training.storage import load_run

    dataset = factories.dataset()
    factories.import_records(dataset, [{"record_key": "a", "content": "x"}])
    model = factories.registered_model(name="old-upload", recipe="plain")
    run, _ = factories.trained_version(model, dataset, [("a", 0, 0)])
    # What model_version_upload stored before this change: the weights and no membership.
    manifest = ArtifactManifest(kind="model", architecture=MLP, code_version=code_version(),
                                recipe={"name": "plain", "config": {"architecture": MLP}}, extra={"uploaded": True})
    ref = artifact_store().put(manifest, {"weights": build_model(MLP).state_dict()})

    with pytest.raises(ValueError) as refused:
        load_run(artifact_store(), ref.artifact_id)
    message = str(refused.value)
    assert "uploaded before uploads carried their lineage" in message
    assert "Upload the same weights again" in message and "training_run=<id>" in message
