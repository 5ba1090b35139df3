"""Canaries planted by a training run (workers.canaries): drawn from the held-out split with the
run's seed, in the run's membership and recorded as canaries, read by the jobs that take a run's
records by its membership, and nobody's data: no request scopes them, no record count or erasure
shows them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from foundation.errors import ValidationFailed
from models_registry import selectors
from models_registry.models import CanaryRecord, DataRecord, SuppressionEntry, TrainingMembership
from models_registry.services import records_erase
from tests import factories
from tests.flows import approved_request, run_job
from workers.datasets.memory import TensorRecordDataset
from workers.training.canaries import WithCanaries, canary_input_from_bytes, synthesise_canaries

MLP = {"architecture": {"name": "mlp", "config": {"in_features": 30, "num_classes": 2, "hidden": [16]}},
       "epochs": 3, "seed": 4}
CANARIES = 5


def _held_out(n_per_class: int = 6, classes: int = 3) -> TensorRecordDataset:
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    # Each record's elements are its class times 100 plus its index: a drawn element names its source.
    inputs = labels[:, None] * 100.0 + torch.arange(len(labels))[:, None].float() + torch.zeros(1, 4)
    return TensorRecordDataset([f"t{i:02d}" for i in range(len(labels))], inputs, labels)


# ---------------------------------------------------------------- the draw (no database)


def test_canaries_are_drawn_from_one_class_and_labelled_another_deterministically():
    held_out = _held_out()
    canaries = synthesise_canaries(held_out, count=20, seed=3, key_prefix="canary-j1")
    again = synthesise_canaries(held_out, count=20, seed=3, key_prefix="canary-j1")
    other = synthesise_canaries(held_out, count=20, seed=4, key_prefix="canary-j1")
    assert [c.key for c in canaries] == [f"canary-j1-{i:04d}" for i in range(20)]
    assert all(torch.equal(a.input, b.input) and a.label == b.label for a, b in zip(canaries, again, strict=True))
    assert any(not torch.equal(a.input, b.input) for a, b in zip(canaries, other, strict=True))
    for canary in canaries:
        assert canary.label != canary.look_alike and canary.input.shape == (4,)
        # Every element comes from a held-out record of the look-alike class.
        assert (canary.input // 100 == canary.look_alike).all()
    # Elements come from different records (nobody's record copied whole).
    assert any(len(set(c.input.tolist())) > 1 for c in canaries)
    stored = WithCanaries(held_out, canaries)
    assert len(stored) == len(held_out) + 20 and stored[len(held_out)][0] == "canary-j1-0000"
    assert int(stored[len(held_out)][2]) == canaries[0].label


def test_canaries_need_two_classes_with_enough_held_out_records():
    with pytest.raises(ValueError, match="at least two classes"):
        synthesise_canaries(_held_out(n_per_class=4), count=3, seed=0, key_prefix="c")
    with pytest.raises(ValueError, match="count must be at least 1"):
        synthesise_canaries(_held_out(), count=0, seed=0, key_prefix="c")
    with pytest.raises(ValueError, match="already name records"):
        clash = TensorRecordDataset(["c-0000"], torch.zeros(1, 4), torch.zeros(1, dtype=torch.int64))
        WithCanaries(clash, synthesise_canaries(_held_out(), count=1, seed=0, key_prefix="c"))


# ---------------------------------------------------------------- a training run with canaries


@pytest.fixture
def planted(db, one_torch_thread):
    """A plain breast-cancer model trained with CANARIES canaries (one run of the real job)."""
    from workers.reference_data import reference_dataset_register
    from workers.services import model_train

    dataset = reference_dataset_register(name="breast_cancer")
    model = factories.registered_model(name="bc-canaries")
    job = run_job(model_train(model=model, dataset=dataset, recipe_config=MLP, canaries=CANARIES, enqueue=False))
    return dataset, model, job


@pytest.mark.django_db
def test_training_plants_canaries_recorded_as_such_and_in_the_run_membership(planted):
    dataset, _, job = planted
    version = job.result_version
    canaries = DataRecord.objects.filter(dataset=dataset, canary=True)
    keys = sorted(canaries.values_list("external_key", flat=True))
    assert keys == [f"canary-j{job.id}-{i:04d}" for i in range(CANARIES)]
    assert set(canaries.values_list("subject", flat=True)) == {None} and set(canaries.values_list("split", flat=True)) == {"canary"}
    members = set(TrainingMembership.objects.filter(run=version.training_run).values_list("record__external_key", flat=True))
    train = set(DataRecord.objects.filter(dataset=dataset, split="train").values_list("external_key", flat=True))
    assert members == train | set(keys)
    assert selectors.canary_keys_of_run(run_id=version.training_run_id) == keys
    # Counted apart from the records.
    assert job.result["members"] == len(train) and job.result["canaries"] == CANARIES
    assert version.metrics["canaries"] == CANARIES
    # Drawn from the test split with the run's seed: the same draw again.
    from workers.data_sources import dataset_split

    redrawn = synthesise_canaries(dataset_split(dataset, "test"), count=CANARIES, seed=MLP["seed"],
                                  key_prefix=f"canary-j{job.id}")
    for canary, row in zip(redrawn, CanaryRecord.objects.filter(run=version.training_run).order_by("record__external_key"),
                           strict=True):
        assert torch.equal(canary_input_from_bytes(row.inputs), canary.input) and canary.label == row.label
        assert row.seed == MLP["seed"] and row.kind == "mislabelled_synthetic"


@pytest.mark.django_db
def test_jobs_that_read_a_run_by_its_membership_read_its_canaries(planted):
    from workers.runners.shadow import shadow_runs
    from workers.services import shadow_models_train

    _, _, job = planted
    version = job.result_version
    run_job(shadow_models_train(version=version, count=2, enqueue=False))
    keys = set(selectors.canary_keys_of_run(run_id=version.training_run_id))
    halves = [set(TrainingMembership.objects.filter(run=run).values_list("record__external_key", flat=True))
              for run in shadow_runs(version=version)]
    # Complementary halves: every canary IN exactly one of the two shadows.
    assert all(sum(key in half for half in halves) == 1 for key in keys)
    # An exact retrain keeps the canaries (kept records of the run, never in a request's forget set).
    from workers.jobs import job_create
    from workers.models import JobKind

    forget = DataRecord.objects.filter(dataset=job.result_version.training_run.datasets.get(), split="train").first()
    retrained = run_job(job_create(kind=JobKind.UNLEARN, registered_model=version.model, source_version=version,
                                   method="retrain", guarantee_class="exact", forget_record_ids=[forget.id],
                                   enqueue=False)).result_version
    from workers.runners.storage import artifact_store
    from workers.training.storage import load_run

    kept = {row.record_key for row in load_run(artifact_store(), retrained.artifact_sha256).membership}
    assert keys <= kept and forget.external_key not in kept


@pytest.mark.django_db
def test_no_request_scopes_a_canary_and_no_count_or_erasure_shows_one(planted, api_client_for):
    dataset, _, job = planted
    canary = DataRecord.objects.filter(dataset=dataset, canary=True).first()
    ordinary = DataRecord.objects.filter(dataset=dataset, split="train").first()
    # A request naming a canary's key: like an unknown key, it holds nothing.
    request = approved_request([canary])
    assert request.record_ids == []
    assert selectors.records_scope(record_ids=[canary.id]).is_empty
    assert selectors.versions_trained_on(record_ids=[canary.id]) == []
    # Beside an ordinary record, the request scopes that record only.
    both = approved_request([canary, ordinary])
    assert both.record_ids == [ordinary.id]
    # The dataset's record count over the API leaves the canaries out.
    client = api_client_for("ml_engineer")
    listed = {d["id"]: d for d in client.get("/api/v1/datasets/").json()}
    assert listed[dataset.id]["record_count"] == DataRecord.objects.filter(dataset=dataset, canary=False).count()
    # Erasure (and its suppression entries) passes a canary over.
    before = SuppressionEntry.objects.count()
    assert records_erase(records=[canary], reason="test") == 0
    assert SuppressionEntry.objects.count() == before
    canary.refresh_from_db()
    assert canary.status == "active"


@pytest.mark.django_db
def test_a_training_request_that_cannot_plant_canaries_is_refused_naming_why(db):
    from workers.reference_data import reference_dataset_register
    from workers.services import model_train

    dataset = reference_dataset_register(name="breast_cancer")
    model = factories.registered_model(name="bc-sklearn", recipe="sklearn",
                                       architecture={"name": "sklearn", "config": {"in_features": 30, "num_classes": 2}})
    with pytest.raises(ValidationFailed, match="plain, sisa, s3t, dp recipes") as refused:
        model_train(model=model, dataset=dataset, recipe_config={}, canaries=3, enqueue=False)
    assert refused.value.field == "canaries"
    plain = factories.registered_model(name="bc-plain-many")
    with pytest.raises(ValidationFailed, match="between 0 and 1000"):
        model_train(model=plain, dataset=dataset, recipe_config=MLP, canaries=5000, enqueue=False)


@pytest.mark.django_db
def test_the_training_api_takes_canaries(api_client_for):
    from workers.models import Job
    from workers.reference_data import reference_dataset_register

    dataset = reference_dataset_register(name="breast_cancer")
    factories.registered_model(name="bc-api-canaries", architecture=MLP["architecture"])
    client = api_client_for("ml_engineer")
    body = {"model": "bc-api-canaries", "dataset": dataset.id, "recipe_config": {"epochs": 1}}
    response = client.post("/api/v1/training-jobs/", {**body, "canaries": 4}, format="json")
    assert response.status_code == 202, response.content
    assert Job.objects.get(pk=response.json()["id"]).config["canaries"] == 4
    refused = client.post("/api/v1/training-jobs/", {**body, "canaries": -1}, format="json")
    assert refused.status_code == 400
    plain = client.post("/api/v1/training-jobs/", body, format="json")
    assert "canaries" not in Job.objects.get(pk=plain.json()["id"]).config


def test_canary_inputs_round_trip_as_safetensors():
    from workers.training.canaries import canary_input_bytes

    tensor = torch.from_numpy(np.arange(6, dtype=np.float32).reshape(2, 3))
    assert torch.equal(canary_input_from_bytes(canary_input_bytes(tensor)), tensor)
