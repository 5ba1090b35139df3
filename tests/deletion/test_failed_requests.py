"""A FAILED request (or any ended one) takes no more decisions, and its failure says what the DPO can
do instead: file a new request, which finds the records still held and plans them afresh."""

import pytest

from deletion import workflow
from deletion.models import DeletionRequest, ModelOutcome, OutcomeStatus, RequestStatus
from models_registry.models import ModelVersion, VersionStatus
from models_registry.services import model_version_create
from tests import factories
from workers.models import Job

pytestmark = pytest.mark.django_db

BODY = {"identifiers": {"email": "p0@example.org"}, "jurisdiction": "GDPR", "legal_ground": "art17_1_b",
        "channel": "web-form"}
EVIDENCE = {"method": "email-link", "verified_at": "2026-11-20T10:00:00Z", "verifier": "support"}


@pytest.fixture
def three_models(trained):
    """The fixture's SISA model and two more trained on the same nine records."""
    versions = [trained["version"]]
    for _ in range(2):
        model = factories.registered_model(recipe="sisa")
        versions.append(factories.trained_version(model, trained["ds"], [(f"r{i}", i % 2, 0) for i in range(9)])[1])
    return versions


def _finished(job: Job, *, new_version=None, status="succeeded", verdict=None) -> ModelOutcome:
    Job.objects.filter(pk=job.pk).update(status=status, result_version=new_version, error="" if new_version else "boom")
    workflow.on_job_finished(job_id=job.pk)
    outcome = ModelOutcome.objects.get(job=job)
    if verdict:
        Job.objects.filter(pk=outcome.audit_job_id).update(
            status="succeeded", result={"verdict": verdict, "audit": {"verdict": {"verdict": verdict}}})
        workflow.on_job_finished(job_id=outcome.audit_job_id)
    outcome.refresh_from_db()
    return outcome


def _failed_request(dpo, versions):
    """A request over three models: the first passed its audit (awaiting deployment), the second
    failed it (awaiting the DPO), the third's unlearning job failed, which fails the request."""
    request_id = dpo.post("/api/v1/deletion-requests/", BODY, format="json", HTTP_IDEMPOTENCY_KEY="k1").json()["id"]
    dpo.post(f"/api/v1/deletion-requests/{request_id}/verify/", EVIDENCE, format="json")
    assert dpo.post(f"/api/v1/deletion-requests/{request_id}/approve/", {}, format="json").status_code == 200
    jobs = {job.source_version_id: job for job in Job.objects.filter(kind="unlearn")}
    new = [model_version_create(model=v.model, artifact_sha256=f"{i}" * 64, training_run=None, parent=v)
           for i, v in enumerate(versions[:2], start=7)]
    passed = _finished(jobs[versions[0].id], new_version=new[0], verdict="PASS")
    failed_audit = _finished(jobs[versions[1].id], new_version=new[1], verdict="FAIL")
    _finished(jobs[versions[2].id], status="failed")
    assert (passed.status, failed_audit.status) == (OutcomeStatus.AWAITING_DEPLOYMENT, OutcomeStatus.AUDIT_FAILED)
    assert DeletionRequest.objects.get(public_id=request_id).status == RequestStatus.FAILED
    return request_id, new


def test_a_failed_request_refuses_every_decision_with_its_status(api_client_for, three_models):
    dpo = api_client_for("dpo", user="alice")
    request_id, new = _failed_request(dpo, three_models)
    jobs_before = Job.objects.count()
    url = f"/api/v1/deletion-requests/{request_id}"
    refusals = {
        "escalate": dpo.post(f"{url}/escalate/", {"model_version_id": three_models[1].id}, format="json"),
        "accept-risk": dpo.post(f"{url}/accept-risk/", {"model_version_id": three_models[1].id, "reason": "low risk"},
                                format="json"),
        "withdraw-model": dpo.post(f"{url}/withdraw-model/", {"model_version_id": three_models[1].id,
                                                              "reason": "stop serving"}, format="json"),
        "confirm-deployment": dpo.post(f"{url}/confirm-deployment/", {"new_version_id": new[0].id}, format="json"),
    }
    for action, response in refusals.items():
        assert response.status_code == 409, (action, response.content)
        error = response.json()["error"]
        assert error["code"] == "request_ended", (action, error)
        assert "this request is FAILED" in error["message"] and "file a new request" in error["message"], error
    # The approval (a method choice included) names the status too.
    approve = dpo.post(f"{url}/approve/", {"methods": [{"model_version_id": three_models[0].id, "method": "sisa"}]},
                       format="json")
    assert approve.status_code == 409 and "FAILED" in approve.json()["error"]["message"], approve.content
    # Nothing ran and nothing moved: no retrain, no deployment, no withdrawal, no acceptance.
    assert Job.objects.count() == jobs_before
    assert ModelVersion.objects.get(pk=new[0].id).status != VersionStatus.SERVING
    assert ModelVersion.objects.get(pk=three_models[1].id).status == VersionStatus.SERVING
    outcome = ModelOutcome.objects.get(model_version=three_models[1])
    assert (outcome.status, outcome.risk_acceptance, outcome.attempts) == (OutcomeStatus.AUDIT_FAILED, {}, [])


@pytest.mark.parametrize("ended", [RequestStatus.COMPLETED, RequestStatus.CLOSED_RISK_ACCEPTED])
def test_an_ended_request_refuses_decisions_on_its_outcomes(api_client_for, three_models, ended):
    dpo = api_client_for("dpo", name="alice")
    request_id, _ = _failed_request(dpo, three_models)
    DeletionRequest.objects.filter(public_id=request_id).update(status=ended)
    response = dpo.post(f"/api/v1/deletion-requests/{request_id}/escalate/",
                        {"model_version_id": three_models[1].id}, format="json")
    assert response.status_code == 409, response.content
    assert response.json()["error"]["code"] == "request_ended"
    assert f"this request is {ended}" in response.json()["error"]["message"]
    assert "file a new request" not in response.json()["error"]["message"]


def test_the_failure_says_what_the_dpo_can_do_and_a_new_request_finds_the_records(api_client_for, three_models):
    dpo = api_client_for("dpo", name="alice")
    request_id, _ = _failed_request(dpo, three_models)
    failure = dpo.get(f"/api/v1/deletion-requests/{request_id}/").json()
    row = DeletionRequest.objects.get(public_id=request_id)
    assert "new approval" not in row.failure and "retried" not in row.failure
    assert "its records were not erased and the models still hold them" in row.failure
    assert "file a new request for the same person or records" in row.failure
    assert failure["status"] == "FAILED"
    # What the text says holds: the records were not erased, and a new request for the same person
    # is taken in while the failed one exists and plans every model that still holds them.
    new_id = dpo.post("/api/v1/deletion-requests/", BODY, format="json", HTTP_IDEMPOTENCY_KEY="k2").json()["id"]
    scoped = dpo.post(f"/api/v1/deletion-requests/{new_id}/verify/", EVIDENCE, format="json").json()
    assert scoped["status"] == "SCOPED"
    assert {step["model_version_id"] for step in scoped["plan"]} == {v.id for v in three_models}
    assert {step["records"] for step in scoped["plan"]} == {len(row.plan[0]["record_ids"])} == {3}


def test_a_result_that_did_not_pass_is_destroyed_when_the_request_fails_and_blocks_no_new_request(
        api_client_for, three_models):
    """Nobody can decide on the failed audit's result any more: left in place it would stay the head of
    its model's unlearning chain and the next request's job would wait behind it for good (or build on
    what it failed to forget). It is destroyed; the passed result stays for the next request to build on."""
    from models_registry.selectors import current_source

    dpo = api_client_for("dpo", name="alice")
    request_id, new = _failed_request(dpo, three_models)
    assert ModelVersion.objects.get(pk=new[1].id).status == VersionStatus.PURGED
    assert ModelVersion.objects.get(pk=new[0].id).status != VersionStatus.PURGED
    assert (current_source(three_models[1]), current_source(three_models[0])) == (three_models[1], new[0])
    purged = [e for e in dpo.get(f"/api/v1/deletion-requests/{request_id}/").json()["timeline"]
              if e["event"] == "version.purged"]
    assert [e["data"]["model_version"] for e in purged] == [new[1].id]
    new_id = dpo.post("/api/v1/deletion-requests/", BODY, format="json", HTTP_IDEMPOTENCY_KEY="k2").json()["id"]
    dpo.post(f"/api/v1/deletion-requests/{new_id}/verify/", EVIDENCE, format="json")
    assert dpo.post(f"/api/v1/deletion-requests/{new_id}/approve/", {}, format="json").status_code == 200
    jobs = Job.objects.filter(kind="unlearn", deletion_request__public_id=new_id)
    assert len(jobs) == 3 and [workflow.unsettled_source_reason(job) for job in jobs] == ["", "", ""]


def test_an_audit_that_ends_after_the_request_failed_is_not_offered_to_anyone(api_client_for, three_models,
                                                                                  monkeypatch):
    dpo = api_client_for("dpo", name="alice")
    request_id = dpo.post("/api/v1/deletion-requests/", BODY, format="json", HTTP_IDEMPOTENCY_KEY="k1").json()["id"]
    dpo.post(f"/api/v1/deletion-requests/{request_id}/verify/", EVIDENCE, format="json")
    dpo.post(f"/api/v1/deletion-requests/{request_id}/approve/", {}, format="json")
    jobs = {job.source_version_id: job for job in Job.objects.filter(kind="unlearn")}
    new = [model_version_create(model=v.model, artifact_sha256=f"{i}" * 64, training_run=None, parent=v)
           for i, v in enumerate(three_models[:2], start=7)]
    passing, failing = (_finished(jobs[three_models[i].id], new_version=new[i]) for i in range(2))
    _finished(jobs[three_models[2].id], status="failed")  # the request fails while both are audited
    assert DeletionRequest.objects.get(public_id=request_id).status == RequestStatus.FAILED
    announced = []
    monkeypatch.setattr(workflow, "webhooks_notify", lambda **kw: announced.append(kw["event"]))
    for outcome, verdict in ((passing, "PASS"), (failing, "FAIL")):
        Job.objects.filter(pk=outcome.audit_job_id).update(
            status="succeeded", result={"verdict": verdict, "audit": {"verdict": {"verdict": verdict}}})
        workflow.on_job_finished(job_id=outcome.audit_job_id)
    # Neither the serving side (deployment.requested) nor the DPO (outcome.audit_failed) is asked.
    assert announced == []
    assert ModelVersion.objects.get(pk=new[1].id).status == VersionStatus.PURGED
    assert ModelVersion.objects.get(pk=new[0].id).status != VersionStatus.PURGED
    assert dpo.get("/api/v1/deployments/pending/").json() == []


def test_a_result_whose_audit_job_failed_is_destroyed_with_the_failed_request(api_client_for, three_models):
    """Never audited, it is not the base the next request builds on."""
    from models_registry.selectors import current_source

    dpo = api_client_for("dpo", name="alice")
    request_id = dpo.post("/api/v1/deletion-requests/", BODY, format="json", HTTP_IDEMPOTENCY_KEY="k1").json()["id"]
    dpo.post(f"/api/v1/deletion-requests/{request_id}/verify/", EVIDENCE, format="json")
    dpo.post(f"/api/v1/deletion-requests/{request_id}/approve/", {}, format="json")
    job = Job.objects.get(kind="unlearn", source_version=three_models[0])
    new = model_version_create(model=three_models[0].model, artifact_sha256="7" * 64, training_run=None,
                               parent=three_models[0])
    outcome = _finished(job, new_version=new)
    Job.objects.filter(pk=outcome.audit_job_id).update(status="failed", error="out of memory")
    workflow.on_job_finished(job_id=outcome.audit_job_id)
    assert DeletionRequest.objects.get(public_id=request_id).status == RequestStatus.FAILED
    assert ModelOutcome.objects.get(pk=outcome.pk).status == OutcomeStatus.FAILED
    assert ModelVersion.objects.get(pk=new.id).status == VersionStatus.PURGED
    assert current_source(three_models[0]) == three_models[0]
