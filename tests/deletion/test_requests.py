"""Deletion requests through the API: intake, idempotency, access, every transition, deadlines."""

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from deletion import deadlines, decisions, workflow
from deletion.models import DeletionRequest, ModelOutcome, RequestStatus
from models_registry.models import DataRecord
from tests import factories
from workers.models import Job

pytestmark = pytest.mark.django_db

BODY = {
    "identifiers": {"email": "p0@example.org"},
    "jurisdiction": "GDPR", "legal_ground": "art17_1_b", "channel": "web-form",
}
EVIDENCE = {"method": "email-link", "verified_at": "2026-11-20T10:00:00Z", "verifier": "support"}


@pytest.fixture(autouse=True)
def _report_signing_stubbed(monkeypatch):
    """These tests are about the workflow; the report itself is built and signed for real in
    tests/audits and in the worker end-to-end tests."""
    import deletion.report_data

    monkeypatch.setattr(deletion.report_data, "report_build_and_sign",
                        lambda *, request: {"id": 0, "pdf_path": "stub.pdf", "pdf_sha256": "0" * 64})


def _finish_unlearning_and_audit(job, new_version, verdict="PASS"):
    Job.objects.filter(pk=job.pk).update(status="succeeded", result_version=new_version)
    workflow.on_job_finished(job_id=job.pk)
    outcome = ModelOutcome.objects.get(job=job)
    Job.objects.filter(pk=outcome.audit_job_id).update(
        status="succeeded", result={"verdict": verdict, "audit": {"verdict": {"verdict": verdict}}})
    workflow.on_job_finished(job_id=outcome.audit_job_id)


def _run_report_job(request_id):
    report_job = Job.objects.get(kind="report", deletion_request__public_id=request_id)
    workflow.request_finalize(request_id=report_job.deletion_request_id)


def _approved_then_failed(dpo, trained) -> tuple[str, Job, object]:
    """A request by ``dpo`` verified and approved, its unlearning job finished with a new version
    whose audit FAILed. Returns (request id, that job, the failed version)."""
    from models_registry.services import model_version_create

    request_id = _create(dpo).json()["id"]
    dpo.post(f"/api/v1/deletion-requests/{request_id}/verify/", EVIDENCE, format="json")
    dpo.post(f"/api/v1/deletion-requests/{request_id}/approve/", {}, format="json")
    job = Job.objects.get(kind="unlearn")
    failed = model_version_create(model=trained["model"], artifact_sha256="9" * 64, training_run=None,
                                  parent=trained["version"])
    _finish_unlearning_and_audit(job, failed, verdict="FAIL")
    return request_id, job, failed


def _create(client, body=BODY, key="k1"):
    return client.post("/api/v1/deletion-requests/", body, format="json", HTTP_IDEMPOTENCY_KEY=key)


def test_intake_pseudonymises_and_stores_no_raw_identifier(api_client_for, trained):
    response = _create(api_client_for("intake"))
    assert response.status_code == 201, response.content
    data = response.json()
    assert data["status"] == "RECEIVED" and data["subject"].startswith("subj_")
    row = DeletionRequest.objects.get()
    assert "p0@example.org" not in str(row.__dict__)
    assert data["timeline"][0]["event"] == "request.received"


def test_idempotency_same_body_200_other_body_409(api_client_for, trained):
    client = api_client_for("intake")
    first = _create(client)
    again = _create(client)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    other = _create(client, {**BODY, "channel": "email"})
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_key_reused"
    assert DeletionRequest.objects.count() == 1


def test_the_201_body_is_what_a_read_returns(api_client_for, trained, django_assert_max_num_queries):
    """The create answer is built without reading the request back: it must not differ from a read."""
    client = api_client_for("intake")
    # token, subject lookup, BEGIN, INSERT, ledger append, COMMIT (the token's last_used_at is
    # written at most once a minute; this client is new, so it is written here too)
    with django_assert_max_num_queries(7):
        created = _create(client)
    assert created.status_code == 201
    read = client.get(f"/api/v1/deletion-requests/{created.json()['id']}/")
    assert created.json() == read.json()
    assert [e["event"] for e in read.json()["timeline"]] == ["request.received"]


def test_a_repeat_after_the_first_failed_validation_is_a_new_request(api_client_for, trained):
    client = api_client_for("intake")
    refused = _create(client, {**BODY, "legal_ground": "ccpa_1798_105"}, key="k9")
    assert refused.status_code == 400 and "legal_ground" in refused.json()["error"]["fields"]
    assert DeletionRequest.objects.count() == 0
    assert _create(client, key="k9").status_code == 201


def test_intake_sees_only_its_own_requests(api_client_for, trained):
    alice, bob = api_client_for("intake", "alice"), api_client_for("intake", "bob")
    request_id = _create(alice).json()["id"]
    assert alice.get(f"/api/v1/deletion-requests/{request_id}/").status_code == 200
    assert bob.get(f"/api/v1/deletion-requests/{request_id}/").status_code == 404
    assert bob.get("/api/v1/deletion-requests/").json()["count"] == 0
    assert api_client_for("auditor").get(f"/api/v1/deletion-requests/{request_id}/").status_code == 200


def test_auditor_and_intake_cannot_act(api_client_for, trained):
    request_id = _create(api_client_for("intake")).json()["id"]
    for role in ("auditor", "ml_engineer"):
        response = api_client_for(role).post(f"/api/v1/deletion-requests/{request_id}/verify/", EVIDENCE, format="json")
        assert response.status_code == 403


def test_full_path_to_completion(api_client_for, trained):
    dpo = api_client_for("dpo")
    request_id = _create(dpo).json()["id"]
    scoped = dpo.post(f"/api/v1/deletion-requests/{request_id}/verify/", EVIDENCE, format="json").json()
    assert scoped["status"] == "SCOPED"
    assert scoped["scope"]["records"] == 3
    assert [(p["method"], p["guarantee_class"]) for p in scoped["plan"]] == [("sisa", "exact")]
    executing = dpo.post(f"/api/v1/deletion-requests/{request_id}/approve/", {}, format="json").json()
    assert executing["status"] == "EXECUTING"
    job = Job.objects.get(kind="unlearn")
    assert job.method == "sisa" and sorted(job.forget_record_ids) == sorted(
        DataRecord.objects.filter(external_key__in=["r0", "r3", "r6"]).values_list("id", flat=True))
    # The worker finishes: a new version exists.
    from models_registry.services import model_version_create

    new = model_version_create(model=trained["model"], artifact_sha256="9" * 64, training_run=None,
                               parent=trained["version"])
    _finish_unlearning_and_audit(job, new)
    assert DeletionRequest.objects.get().status == RequestStatus.AUDITING
    confirmed = dpo.post(f"/api/v1/deletion-requests/{request_id}/confirm-deployment/", {"new_version_id": new.id},
                         format="json").json()
    assert confirmed["status"] == "AUDITING" and confirmed["outcomes"][0]["status"] == "confirmed"
    _run_report_job(request_id)
    done = dpo.get(f"/api/v1/deletion-requests/{request_id}/").json()
    assert done["status"] == "COMPLETED"
    events = [e["event"] for e in done["timeline"]]
    assert events[:4] == ["request.received", "request.verified", "request.scoped", "request.approved"]
    assert events[-1] == "request.completed"


def test_subject_with_no_data_completes_with_empty_scope(api_client_for, trained):
    dpo = api_client_for("dpo")
    request_id = _create(dpo, {**BODY, "identifiers": {"email": "stranger@example.org"}}).json()["id"]
    scoped = dpo.post(f"/api/v1/deletion-requests/{request_id}/verify/", EVIDENCE, format="json").json()
    assert scoped["scope"]["empty"] and scoped["plan"] == []
    approved = dpo.post(f"/api/v1/deletion-requests/{request_id}/approve/", {}, format="json").json()
    assert approved["status"] == "AUDITING"
    _run_report_job(request_id)
    assert DeletionRequest.objects.get().status == "COMPLETED"


def test_a_person_with_no_data_yet_is_suppressed_so_their_data_is_not_imported_later(api_client_for, trained):
    """Issue 22 (3): the identifiers go on the suppression list when the request ends, data or not."""
    from models_registry.importing import ImportRejected

    dpo = api_client_for("dpo")
    request_id = _create(dpo, {**BODY, "identifiers": {"email": "Stranger@Example.org "}}).json()["id"]
    dpo.post(f"/api/v1/deletion-requests/{request_id}/verify/", EVIDENCE, format="json")
    dpo.post(f"/api/v1/deletion-requests/{request_id}/approve/", {}, format="json")
    _run_report_job(request_id)
    request = DeletionRequest.objects.get()
    assert request.status == "COMPLETED" and request.identifier_digests == []  # now suppression entries
    with pytest.raises(ImportRejected, match="the record's subject was erased and is on the suppression list"):
        factories.import_records(trained["ds"], [{"record_key": "late-1", "content": "arrived after the request",
                                                  "email": "stranger@example.org"}])
    assert not DataRecord.objects.filter(external_key="late-1").exists()


def test_a_cancelled_request_keeps_no_digest_of_the_identifiers(api_client_for, trained):
    dpo = api_client_for("dpo")
    request_id = _create(dpo, {**BODY, "identifiers": {"email": "changed.mind@example.org"}}).json()["id"]
    assert DeletionRequest.objects.get().identifier_digests  # kept while the request is worked on
    dpo.post(f"/api/v1/deletion-requests/{request_id}/cancel/", {"reason": "withdrawn"}, format="json")
    assert DeletionRequest.objects.get().identifier_digests == []
    factories.import_records(trained["ds"], [{"record_key": "kept-1", "content": "c", "email": "changed.mind@example.org"}])


def test_a_dpo_cancels_a_requests_queued_unlearning_job_and_the_request_waits_for_the_dpo(
        api_client_for, trained, django_capture_on_commit_callbacks):
    """Issue 22 (4): the job ends cancelled, no version is made, the outcome comes back to the DPO
    (INCONCLUSIVE: nothing was unlearned or tested), who can then escalate to a retrain."""
    dpo = api_client_for("dpo")
    request_id = _create(dpo).json()["id"]
    dpo.post(f"/api/v1/deletion-requests/{request_id}/verify/", EVIDENCE, format="json")
    dpo.post(f"/api/v1/deletion-requests/{request_id}/approve/", {}, format="json")
    job = Job.objects.get(kind="unlearn")
    with django_capture_on_commit_callbacks(execute=True):
        cancelled = dpo.post(f"/api/v1/jobs/{job.id}/cancel/")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled", cancelled.content
    outcome = ModelOutcome.objects.get()
    assert (outcome.status, outcome.verdict, outcome.new_version) == ("awaiting_decision", "INCONCLUSIVE", None)
    assert "was cancelled before it made a new version" in outcome.audit["verdict"]["reasons"][0]
    assert DeletionRequest.objects.get().status in ("EXECUTING", "AUDITING")
    assert trained["version"].model.versions.count() == 1  # no partial version
    escalated = dpo.post(f"/api/v1/deletion-requests/{request_id}/escalate/",
                         {"model_version_id": trained["version"].id}, format="json")
    assert escalated.status_code == 200, escalated.content
    assert Job.objects.filter(kind="unlearn", status="pending").count() == 1


def test_partial_approval_with_legal_hold(api_client_for, trained):
    dpo = api_client_for("dpo")
    request_id = _create(dpo).json()["id"]
    dpo.post(f"/api/v1/deletion-requests/{request_id}/verify/", EVIDENCE, format="json")
    held = dpo.post(f"/api/v1/deletion-requests/{request_id}/approve/",
                    {"legal_holds": [{"model_version_id": trained["version"].id, "reason": "litigation hold"}]},
                    format="json").json()
    assert held["outcomes"][0]["status"] == "held" and held["outcomes"][0]["hold_reason"] == "litigation hold"
    assert not Job.objects.filter(kind="unlearn").exists()
    _run_report_job(request_id)
    assert DeletionRequest.objects.get().status == "COMPLETED"


def test_illegal_transition_is_409_with_code(api_client_for, trained):
    dpo = api_client_for("dpo")
    request_id = _create(dpo).json()["id"]
    response = dpo.post(f"/api/v1/deletion-requests/{request_id}/approve/", {}, format="json")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "illegal_transition"
    assert response.json()["error"]["details"]["status"] == "RECEIVED"


@pytest.mark.parametrize("jurisdiction,ground,expected", [
    ("GDPR", "art17_3_e", 200), ("GDPR", "ccpa_d1", 400), ("CCPA", "ccpa_d7", 200), ("CCPA", "art17_3_a", 400),
])
def test_rejection_grounds_follow_the_jurisdiction(api_client_for, trained, jurisdiction, ground, expected):
    dpo = api_client_for("dpo")
    legal = "ccpa_1798_105" if jurisdiction == "CCPA" else "art17_1_a"
    request_id = _create(dpo, {**BODY, "jurisdiction": jurisdiction, "legal_ground": legal}).json()["id"]
    response = dpo.post(f"/api/v1/deletion-requests/{request_id}/reject/", {"ground": ground, "reason": "why"},
                        format="json")
    assert response.status_code == expected, response.content
    if expected == 200:
        assert response.json()["status"] == "REJECTED"


def test_legal_ground_must_fit_the_jurisdiction(api_client_for, trained):
    response = _create(api_client_for("intake"), {**BODY, "jurisdiction": "CCPA"})
    assert response.status_code == 400 and response.json()["error"]["fields"]["legal_ground"]


def test_cancel_then_no_further_action(api_client_for, trained):
    dpo = api_client_for("dpo")
    request_id = _create(dpo).json()["id"]
    assert dpo.post(f"/api/v1/deletion-requests/{request_id}/cancel/", {}, format="json").json()["status"] == "CANCELLED"
    assert dpo.post(f"/api/v1/deletion-requests/{request_id}/verify/", EVIDENCE, format="json").status_code == 409


def test_failed_job_fails_the_request_and_withdrawal_completes_another(api_client_for, trained):
    dpo = api_client_for("dpo")
    request_id = _create(dpo).json()["id"]
    dpo.post(f"/api/v1/deletion-requests/{request_id}/verify/", EVIDENCE, format="json")
    dpo.post(f"/api/v1/deletion-requests/{request_id}/approve/", {}, format="json")
    job = Job.objects.get(kind="unlearn")
    Job.objects.filter(pk=job.pk).update(status="failed", error="boom")
    workflow.on_job_finished(job_id=job.pk)
    assert DeletionRequest.objects.get().status == RequestStatus.FAILED


def test_withdrawal_under_article_18(api_client_for, trained):
    from models_registry.models import ModelVersion
    from models_registry.selectors import current_source

    dpo = api_client_for("dpo")
    request_id, _, failed = _approved_then_failed(dpo, trained)
    assert ModelOutcome.objects.get().status == "audit_failed"
    response = dpo.post(f"/api/v1/deletion-requests/{request_id}/withdraw-model/",
                        {"model_version_id": trained["version"].id, "reason": "audit failed"}, format="json")
    assert response.json()["status"] == "AUDITING"
    _run_report_job(request_id)
    assert DeletionRequest.objects.get().status == "COMPLETED"
    trained["version"].refresh_from_db()
    # Withdrawn, then erased: the version and the failed result made from it are purged, so
    # neither serves nor becomes the source of a later request's unlearning.
    assert trained["version"].status == "purged"
    assert ModelVersion.objects.get(pk=failed.pk).status == "purged"
    assert current_source(trained["version"]) == trained["version"]
    assert ModelOutcome.objects.get().status == "withdrawn"
    events = [e["event"] for e in dpo.get(f"/api/v1/deletion-requests/{request_id}/").json()["timeline"]]
    assert "model.withdrawn" in events


def test_due_dates_per_jurisdiction():
    received = datetime(2026, 1, 31, 12, tzinfo=UTC)
    assert deadlines.due_date(jurisdiction="GDPR", received_at=received) == datetime(2026, 2, 28, 12, tzinfo=UTC)
    assert deadlines.due_date(jurisdiction="UK_GDPR", received_at=received) == datetime(2026, 2, 28, 12, tzinfo=UTC)
    assert deadlines.due_date(jurisdiction="CCPA", received_at=received) == received + timedelta(days=45)


@pytest.mark.parametrize("jurisdiction,legal,body,delta", [
    ("GDPR", "art17_1_a", {"reason": "complex", "months": 2}, "2 months"),
    ("CCPA", "ccpa_1798_105", {"reason": "volume"}, timedelta(days=45)),
])
def test_extension_once(api_client_for, trained, jurisdiction, legal, body, delta):
    dpo = api_client_for("dpo")
    created = _create(dpo, {**BODY, "jurisdiction": jurisdiction, "legal_ground": legal}).json()
    before = DeletionRequest.objects.get().due_at
    response = dpo.post(f"/api/v1/deletion-requests/{created['id']}/extend/", body, format="json")
    assert response.status_code == 200, response.content
    after = DeletionRequest.objects.get().due_at
    expected = deadlines.add_months(before, 2) if delta == "2 months" else before + delta
    assert after == expected
    again = dpo.post(f"/api/v1/deletion-requests/{created['id']}/extend/", body, format="json")
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_extended"


def test_an_extension_after_the_deadline_is_refused_and_changes_nothing(api_client_for, trained):
    from foundation.ledger.models import LedgerEvent

    dpo = api_client_for("dpo")
    created = _create(dpo).json()
    missed = timezone.now() - timedelta(hours=1)
    DeletionRequest.objects.update(due_at=missed)
    events = LedgerEvent.objects.count()
    response = dpo.post(f"/api/v1/deletion-requests/{created['id']}/extend/", {"reason": "complex", "months": 2},
                        format="json")
    assert response.status_code == 409 and response.json()["error"]["code"] == "deadline_passed", response.content
    assert "the deadline passed on" in response.json()["error"]["message"]
    request = DeletionRequest.objects.get()
    assert (request.due_at, request.extended_at, request.extension_reason) == (missed, None, "")
    assert LedgerEvent.objects.count() == events


def test_gdpr_extension_beyond_two_months_refused(api_client_for, trained):
    dpo = api_client_for("dpo")
    created = _create(dpo).json()
    response = dpo.post(f"/api/v1/deletion-requests/{created['id']}/extend/", {"reason": "x", "months": 3},
                        format="json")
    assert response.status_code == 400


def test_deadline_marking_and_overdue_filter(api_client_for, trained):
    dpo = api_client_for("dpo")
    late = _create(dpo, key="a").json()["id"]
    soon = _create(dpo, {**BODY, "channel": "phone"}, key="b").json()["id"]
    _create(dpo, {**BODY, "channel": "post"}, key="c")
    now = datetime.now(UTC)
    DeletionRequest.objects.filter(public_id=late).update(due_at=now - timedelta(days=1))
    DeletionRequest.objects.filter(public_id=soon).update(due_at=now + timedelta(days=3))
    assert deadlines.deadlines_mark() == (1, 1)
    listed = dpo.get("/api/v1/deletion-requests/?overdue=true").json()
    assert [r["id"] for r in listed["results"]] == [late]
    assert listed["results"][0]["days_left"] < 0
    assert dpo.get("/api/v1/deletion-requests/?status=BOGUS").status_code == 400


def test_identifiers_of_two_registered_subjects_are_linked_in_one_request(api_client_for, trained):
    from models_registry import services as registry

    other_ds = factories.dataset()
    factories.import_records(other_ds, [{"record_key": "x1", "content": "other system", "customer_id": "C-77"}])
    other_model = factories.registered_model()
    factories.trained_version(other_model, other_ds, [("x1", 0, 0)])
    assert len(registry.subjects_find(identifiers=[("email", "p0@example.org"), ("customer_id", "C-77")])) == 2
    dpo = api_client_for("dpo")
    body = {**BODY, "identifiers": {"email": "p0@example.org", "customer_id": "C-77"}}
    request_id = _create(dpo, body).json()["id"]
    scoped = dpo.post(f"/api/v1/deletion-requests/{request_id}/verify/", EVIDENCE, format="json").json()
    assert scoped["scope"]["records"] == 4
    assert sorted(p["model"] for p in scoped["plan"]) == sorted([trained["model"].name, other_model.name])


def test_the_list_filters_what_waits_for_a_decision(api_client_for, trained):
    dpo = api_client_for("dpo")
    failed_id, _, _ = _approved_then_failed(dpo, trained)
    received_id = _create(dpo, {**BODY, "channel": "phone"}, key="k2").json()["id"]

    def listed(query: str) -> list[str]:
        response = dpo.get(f"/api/v1/deletion-requests/?{query}")
        assert response.status_code == 200, response.content
        return [r["id"] for r in response.json()["results"]]

    assert listed("awaiting=audit_failed") == [failed_id]
    assert listed("awaiting=verify") == [received_id]
    assert listed("awaiting=approve") == [] and listed("awaiting=confirm") == []
    refused = dpo.get("/api/v1/deletion-requests/?awaiting=soon")
    assert refused.status_code == 400 and "awaiting" in refused.json()["error"]["fields"]


def test_the_serving_side_is_told_what_to_deploy_and_confirms_it(api_client_for, trained):
    from deletion.models import WebhookDelivery
    from models_registry.services import model_version_create

    serving, dpo, intake = api_client_for("ml_engineer"), api_client_for("dpo"), api_client_for("intake")
    for client, url in ((serving, "https://serving.example.org/hook"), (intake, "https://portal.example.org/hook")):
        assert client.post("/api/v1/webhooks/", {"url": url}, format="json").status_code == 201
    request_id = _create(intake).json()["id"]
    dpo.post(f"/api/v1/deletion-requests/{request_id}/verify/", EVIDENCE, format="json")
    dpo.post(f"/api/v1/deletion-requests/{request_id}/approve/", {}, format="json")
    assert serving.get("/api/v1/deployments/pending/").json() == []
    new = model_version_create(model=trained["model"], artifact_sha256="7" * 64, training_run=None,
                               parent=trained["version"])
    _finish_unlearning_and_audit(Job.objects.get(kind="unlearn"), new, verdict="PASS")

    [pending] = serving.get("/api/v1/deployments/pending/").json()
    assert (pending["request_id"], pending["model"], pending["version"]) == (request_id, trained["model"].name, 1)
    assert (pending["new_version_id"], pending["new_artifact_sha256"]) == (new.id, "7" * 64)
    by_url = {d.endpoint.url: d.event for d in WebhookDelivery.objects.filter(event__event="deployment.requested")}
    assert set(by_url) == {"https://serving.example.org/hook"}  # not the intake portal's
    assert by_url["https://serving.example.org/hook"]["new_version"] == new.id
    confirmed = serving.post(pending["confirm_url"], {"new_version_id": new.id}, format="json")
    assert confirmed.status_code == 200 and confirmed.json()["outcomes"][0]["status"] == "confirmed"
    assert serving.get("/api/v1/deployments/pending/").json() == []
    assert intake.get("/api/v1/deployments/pending/").status_code == 403


def test_escalation_is_refused_when_the_version_to_retrain_from_is_gone(api_client_for, trained):
    from models_registry.models import ModelVersion

    dpo = api_client_for("dpo")
    request_id, job, failed = _approved_then_failed(dpo, trained)
    ModelVersion.objects.filter(pk=trained["version"].pk).update(status="purged")  # e.g. by another request's purge
    response = dpo.post(f"/api/v1/deletion-requests/{request_id}/escalate/",
                        {"model_version_id": trained["version"].id}, format="json")
    assert response.status_code == 409 and response.json()["error"]["code"] == "escalation_impossible"
    assert "withdraw the model" in response.json()["error"]["message"]
    # Nothing changed: the failed version is kept, no retrain job, the DPO can still withdraw.
    outcome = ModelOutcome.objects.get()
    assert (outcome.status, outcome.new_version_id, outcome.attempts) == ("audit_failed", failed.id, [])
    assert Job.objects.filter(kind="unlearn").count() == 1
    withdrawn = dpo.post(f"/api/v1/deletion-requests/{request_id}/withdraw-model/",
                         {"model_version_id": trained["version"].id, "reason": "cannot retrain"}, format="json")
    assert withdrawn.status_code == 200


def test_escalation_after_a_failed_audit(api_client_for, trained):
    _, job, _ = _approved_then_failed(api_client_for("dpo"), trained)
    request = DeletionRequest.objects.get()
    escalated = decisions.outcome_escalate(request=request, actor=None, model_version_id=trained["version"].id)
    assert escalated.status == "EXECUTING"
    retrain = Job.objects.filter(kind="unlearn").order_by("-id").first()
    assert retrain.method == "retrain" and retrain.guarantee_class == "exact" and retrain.pk != job.pk
    outcome = ModelOutcome.objects.get()
    assert outcome.status == "executing" and outcome.method == "retrain"
    from deletion.selectors import request_timeline

    assert "outcome.escalated" in [e["event"] for e in request_timeline(request=request)]


def test_an_escalation_moves_the_request_back_to_executing_like_any_transition(api_client_for, trained):
    from deletion.models import WebhookDelivery
    from deletion.selectors import request_timeline

    dpo = api_client_for("dpo")
    assert dpo.post("/api/v1/webhooks/", {"url": "https://hooks.example.org/dpo"}, format="json").status_code == 201
    request_id, _, _ = _approved_then_failed(dpo, trained)
    assert DeletionRequest.objects.get().status == "AUDITING"
    # No transition announces a failed audit (the request stays AUDITING): its own event does.
    failed = WebhookDelivery.objects.order_by("id").last().event
    assert (failed["event"], failed["status"], failed["model_version"]) == (
        "outcome.audit_failed", "AUDITING", trained["version"].id)
    before = WebhookDelivery.objects.count()
    response = dpo.post(f"/api/v1/deletion-requests/{request_id}/escalate/",
                        {"model_version_id": trained["version"].id}, format="json")
    assert response.status_code == 200 and response.json()["status"] == "EXECUTING"
    sent = [d.event for d in WebhookDelivery.objects.order_by("id")[before:]]
    assert [(e["event"], e["status"]) for e in sent] == [("request.executing", "EXECUTING")]
    executing = [e for e in request_timeline(request=DeletionRequest.objects.get()) if e["event"] == "request.executing"]
    assert executing[-1]["data"]["to"] == "EXECUTING"


FAILED_AUDIT = {"verdict": {"verdict": "FAIL", "rule": "FAIL when the attack still tells the records apart",
                            "reasons": ["population attack: TPR@1%FPR 0.62 on the erased records"]},
                "metrics": {"accuracy_test": {"original": 0.97, "unlearned": 0.95}},
                "checks": [{"check": "population_attack", "verdict": "FAIL", "rule": "TPR@1%FPR <= 0.05"}]}


def test_an_escalated_attempt_stays_on_record_and_in_the_report(api_client_for, trained):
    from audits.report_schema import validate_report
    from deletion.report_data import report_data
    from models_registry.services import model_version_create

    request_id, first_job, failed = _approved_then_failed(api_client_for("dpo"), trained)
    ModelOutcome.objects.update(audit=FAILED_AUDIT)
    dpo_token = api_client_for("dpo", "dpo-alice")
    response = dpo_token.post(f"/api/v1/deletion-requests/{request_id}/escalate/",
                              {"model_version_id": trained["version"].id}, format="json")
    assert response.status_code == 200, response.content

    outcome = ModelOutcome.objects.get()
    assert outcome.audit == {} and outcome.verdict == "" and outcome.audit_job is None
    [attempt] = outcome.attempts
    assert attempt["method"] == first_job.method and attempt["guarantee_class"] == first_job.guarantee_class
    assert (attempt["new_version"], attempt["new_artifact_sha256"]) == (failed.version, "9" * 64)
    assert attempt["verdict"] == "FAIL" and attempt["audit"] == FAILED_AUDIT
    assert attempt["escalated_by"] == "api:dpo-alice(dpo)" and attempt["job_id"] == first_job.id
    shown_by_api = response.json()["outcomes"][0]["earlier_attempts"]
    assert shown_by_api == [{k: attempt[k] for k in ("method", "guarantee_class", "job_id", "new_version_id",
                                                      "verdict", "escalated_at", "escalated_by")}]

    retrain = Job.objects.filter(kind="unlearn").exclude(pk=first_job.pk).get()
    retrained = model_version_create(model=trained["model"], artifact_sha256="8" * 64, training_run=None,
                                     parent=trained["version"])
    _finish_unlearning_and_audit(retrain, retrained, verdict="PASS")
    ModelOutcome.objects.update(audit={"verdict": {"verdict": "PASS", "rule": "exact retrain"}, "purged": [
        {"sha256": "a" * 64, "kind": "checkpoint", "label": "checkpoint of churn v1", "files": [],
         "still_held_by": "checkpoint of twin v1"}]})
    report = report_data(request=DeletionRequest.objects.get())
    [kept] = [p for p in report["scope"]["purged_artifacts"] if p["sha256"] == "a" * 64]
    assert kept["description"].startswith("checkpoint of churn v1; an identical file is still held by "
                                          "checkpoint of twin v1")
    report["ledger_head"] = {"seq": 1, "hash": "0" * 64}
    report["signer"] = {"name": "test", "organisation": "", "certificate_sha256": "0" * 64}
    validate_report(report)
    [entry] = report["model_versions"]
    assert entry["verdict"]["verdict"] == "PASS" and entry["method"] == "retrain"
    assert entry["new_artifact_sha256"] == "8" * 64
    [shown] = entry["earlier_attempts"]
    assert shown["verdict"]["verdict"] == "FAIL" and shown["new_artifact_sha256"] == "9" * 64
    assert shown["verdict"]["reasons"] == FAILED_AUDIT["verdict"]["reasons"]
    assert [m["name"] for m in shown["metrics"]][-1] == "population_attack"
    assert shown["escalated_by"] == "api:dpo-alice(dpo)"


def test_requests_for_one_version_within_the_window_share_a_job(api_client_for, trained, settings):
    settings.UNLEARNING_BATCH_WINDOW_SECONDS = 60
    dpo = api_client_for("dpo")
    ids = []
    for n, email in enumerate(["p0@example.org", "p1@example.org"]):
        request_id = _create(dpo, {**BODY, "identifiers": {"email": email}}, key=f"batch-{n}").json()["id"]
        dpo.post(f"/api/v1/deletion-requests/{request_id}/verify/", EVIDENCE, format="json")
        dpo.post(f"/api/v1/deletion-requests/{request_id}/approve/", {}, format="json")
        ids.append(request_id)
    job = Job.objects.get(kind="unlearn")
    assert len(job.forget_record_ids) == 6  # both subjects' three records, one job
    assert ModelOutcome.objects.filter(job=job).count() == 2
    settings.UNLEARNING_BATCH_WINDOW_SECONDS = 0
    request_id = _create(dpo, {**BODY, "identifiers": {"email": "p2@example.org"}}, key="batch-3").json()["id"]
    dpo.post(f"/api/v1/deletion-requests/{request_id}/verify/", EVIDENCE, format="json")
    dpo.post(f"/api/v1/deletion-requests/{request_id}/approve/", {}, format="json")
    assert Job.objects.filter(kind="unlearn").count() == 2
