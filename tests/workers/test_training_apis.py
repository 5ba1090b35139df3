"""Training runs and shadow-model sets started over the REST API: the jobs run here, in this process,
as a worker runs them, and write their lineage as a training started from Python does; bad requests
are refused with the field named; a cancelled job stops before it records anything."""

from __future__ import annotations

import pytest

from models_registry.models import (
    DataRecord,
    ModelVersion,
    StoredArtifact,
    TrainingMembership,
    TrainingRun,
)
from models_registry.services import registered_model_create
from tests import factories
from tests.flows import run_job
from workers.jobs import ProgressReporter, job_execute
from workers.models import Job
from workers.reference_data import reference_dataset_register

pytestmark = pytest.mark.django_db

MLP = {"name": "mlp", "config": {"in_features": 30, "num_classes": 2, "hidden": [8]}}
TINY = {"epochs": 1, "seed": 1}


@pytest.fixture
def dataset():
    return reference_dataset_register(name="breast_cancer")


@pytest.fixture
def model():
    return registered_model_create(name="bc-api", task="classification", training_recipe="plain", architecture=MLP)


@pytest.fixture
def engineer(api_client_for):
    return api_client_for("ml_engineer")


def _train(client, model, dataset, **body):
    return client.post("/api/v1/training-jobs/", {"model": model.name, "dataset": dataset.id, **body}, format="json")


def _error(response, status: int) -> dict:
    assert response.status_code == status, response.content
    return response.json()["error"]


def test_a_training_run_started_over_the_api_writes_its_lineage(engineer, api_client_for, model, dataset):
    response = _train(engineer, model, dataset, recipe_config=TINY)
    assert response.status_code == 202, response.content
    body = response.json()
    assert response["Location"] == body["url"] == f"/api/v1/jobs/{body['id']}/"
    assert (body["kind"], body["status"], body["model"], body["method"], body["dataset"]) == (
        "train", "pending", "bc-api", "plain", dataset.id)
    assert body["progress"] == {"stage": "", "percent": 0.0, "fraction": 0.0} and body["result_version"] is None
    job = Job.objects.get(pk=body["id"])
    assert job.queue == "gpu" and job.config["recipe_config"] == {**TINY, "architecture": MLP}  # registered one

    run_job(job)
    done = api_client_for("auditor").get(body["url"]).json()
    version = ModelVersion.objects.get(model=model)
    assert done["status"] == "succeeded" and done["progress"]["fraction"] == 1.0
    assert done["result_version"] == {"id": version.id, "model": "bc-api", "version": 1}
    assert done["started_at"] and done["finished_at"] and done["error"] == ""
    train_keys = set(DataRecord.objects.filter(dataset=dataset, split="train").values_list("external_key", flat=True))
    members = set(TrainingMembership.objects.filter(run=version.training_run)
                  .values_list("record__external_key", flat=True))
    assert members == train_keys and version.training_run.recipe == "plain"
    assert StoredArtifact.objects.filter(model_version=version, kind="weights").exists()

    # An auditor asks for shadow models of the version (2 here; an approximate verdict needs 32).
    shadows = api_client_for("auditor").post("/api/v1/shadow-jobs/", {"model": "bc-api", "version": 1, "count": 2},
                                             format="json")
    assert shadows.status_code == 202, shadows.content
    assert shadows.json()["source_version"] == {"id": version.id, "model": "bc-api", "version": 1}
    assert shadows.json()["count"] == 2 and shadows.json()["kind"] == "shadow"
    run_job(Job.objects.get(pk=shadows.json()["id"]))
    from workers.runners.shadow import shadow_runs

    assert [run.config["shadow_index"] for run in shadow_runs(version=version)] == [0, 1]
    assert engineer.get(shadows.json()["url"]).json()["status"] == "succeeded"


def test_bad_training_requests_are_refused_naming_the_field(engineer, model, dataset):
    assert _error(_train(engineer, model, dataset, recipe="plian"), 400)["fields"] == {
        "recipe": ["unknown training recipe 'plian'; recipes: distill, dp, finetune, hf_sequence_classifier, "
                   "keep_out_transfer, lora_causal_lm, plain, plain_regression, s3t, sisa, sklearn, sklearn_sisa"]}
    estimator = registered_model_create(name="bc-logreg", task="classification", training_recipe="sklearn",
                                        architecture={"name": "sklearn", "config": {"in_features": 30, "num_classes": 2}})
    refusal = _error(_train(engineer, estimator, dataset, recipe="s3t"), 400)
    assert refusal["code"] == "recipe_does_not_fit" and "fields" in refusal
    assert "the s3t recipe" in refusal["message"] and "(family sklearn)" in refusal["message"]
    assert refusal["message"].endswith("Recipes that fit it: sklearn, sklearn_sisa")
    assert _error(_train(engineer, model, dataset, recipe="sisa"), 400)["code"] == "recipe_not_registered"
    for body, field in (({"model": model.name, "dataset": 999999}, "dataset"),
                        ({"model": "no-such-model", "dataset": dataset.id}, "model")):
        assert field in _error(engineer.post("/api/v1/training-jobs/", body, format="json"), 400)["fields"]
    assert "recipe_config" in _error(_train(engineer, model, dataset, recipe_config=[1]), 400)["fields"]
    other = {"name": "mlp", "config": {"in_features": 30, "num_classes": 3}}
    assert "recipe_config.architecture" in _error(_train(engineer, model, dataset,
                                                         recipe_config={"architecture": other}), 400)["fields"]
    assert "unknown" in _error(_train(engineer, model, dataset, epochs=3), 400)["fields"]["epochs"][0]
    assert not Job.objects.exists()


def test_a_bad_recipe_value_fails_the_job_in_the_worker_naming_it(engineer, model, dataset):
    job = Job.objects.get(pk=_train(engineer, model, dataset, recipe_config={"epochs": "many"}).json()["id"])
    assert job_execute(job_id=job.id) == "failed"
    job.refresh_from_db()
    assert "RecipeConfig.epochs must be int" in job.error and not ModelVersion.objects.exists()


def test_shadow_requests_are_refused_without_a_trained_top_version(engineer, api_client_for):
    model, rows = factories.registered_model(name="bc-shadowless"), factories.dataset("rows")
    factories.import_records(rows, [{"record_key": "r0", "content": "c0", "email": "p0@example.org"}])
    _, v1 = factories.trained_version(model, rows, [("r0", 0, 0)])
    unlearned = ModelVersion.objects.create(model=model, version=2, parent=v1, training_run=v1.training_run)
    ModelVersion.objects.create(model=model, version=3)

    def ask(**body):
        return engineer.post("/api/v1/shadow-jobs/", {"model": model.name, "version": 1, **body}, format="json")

    assert "count" in _error(ask(count=1), 400)["fields"] and "16" in _error(ask(count=1), 400)["message"]
    assert "count" in _error(ask(count=10_000), 400)["fields"]
    assert "version" in _error(ask(version=9), 400)["fields"]
    assert _error(ask(version=unlearned.version), 400)["message"].endswith("ask for version 1")
    assert "has no training run" in _error(ask(version=3), 400)["message"]
    assert api_client_for("dpo").post("/api/v1/shadow-jobs/", {}, format="json").status_code == 403
    assert not Job.objects.exists()


def test_cancel_a_pending_job_an_ended_one_and_one_of_a_request(engineer, api_client_for, model, dataset):
    job_id = _train(engineer, model, dataset, recipe_config=TINY).json()["id"]
    auditor = api_client_for("auditor")
    assert auditor.post(f"/api/v1/jobs/{job_id}/cancel/").status_code == 403  # training is the engineers'
    cancelled = engineer.post(f"/api/v1/jobs/{job_id}/cancel/")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert job_execute(job_id=job_id) == "skipped"  # a worker that gets the message does nothing
    assert _error(engineer.post(f"/api/v1/jobs/{job_id}/cancel/"), 409)["code"] == "job_ended"

    request = _request()
    request_job = Job.objects.create(kind="unlearn", registered_model=model, deletion_request=request)
    assert engineer.post(f"/api/v1/jobs/{request_job.id}/cancel/").status_code == 403  # a request's: the DPO's
    audit_job = Job.objects.create(kind="audit", registered_model=model, deletion_request=request)
    refusal = _error(api_client_for("dpo").post(f"/api/v1/jobs/{audit_job.id}/cancel/"), 409)
    assert refusal["code"] == "job_in_request" and "only its unlearning jobs" in refusal["message"]
    assert engineer.get(f"/api/v1/jobs/{request_job.id}/").json()["kind"] == "unlearn"
    assert engineer.post("/api/v1/jobs/999999/cancel/").status_code == 404


def test_a_running_training_job_cancelled_stops_before_writing_lineage(engineer, model, dataset, monkeypatch):
    job_id = _train(engineer, model, dataset, recipe_config={**TINY, "epochs": 3}).json()["id"]
    answers = []
    report = ProgressReporter.__call__

    def cancel_at_first_epoch(self, stage, fraction):
        if stage == "train" and not answers:  # another process asks while the recipe trains
            answers.append(engineer.post(f"/api/v1/jobs/{job_id}/cancel/"))
        report(self, stage, fraction)

    monkeypatch.setattr(ProgressReporter, "__call__", cancel_at_first_epoch)
    assert job_execute(job_id=job_id) == "cancelled"
    [answer] = answers
    assert answer.status_code == 202 and answer.json()["status"] == "running" and answer.json()["cancel_requested"]
    state = engineer.get(f"/api/v1/jobs/{job_id}/").json()
    assert state["status"] == "cancelled" and state["result_version"] is None
    assert state["error"] == f"job {job_id} was cancelled" and state["progress"]["percent"] < 90
    assert not TrainingRun.objects.filter(model=model).exists() and not ModelVersion.objects.filter(model=model).exists()


def _request():
    from deletion import intake

    request, _ = intake.deletion_request_create(client=None, body={
        "identifiers": {"email": "p0@example.org"}, "jurisdiction": "GDPR", "legal_ground": "art17_1_b",
        "channel": "test"})
    return request
