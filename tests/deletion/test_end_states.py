"""A request ends as its evidence supports (issue: honest end states). A result whose audit is
INCONCLUSIVE no longer completes the request by itself: the request waits for the DPO, who escalates
to an exact retrain, withdraws the model, or accepts the residual risk in writing with a second DPO
user, and the request then ends CLOSED_RISK_ACCEPTED, never COMPLETED; the report's first page says
the same. The older copies wait for that decision (an escalation retrains from them)."""

import pytest

from deletion.models import DeletionRequest, ModelOutcome, RequestStatus
from foundation.ledger.models import LedgerEvent
from models_registry.models import ModelVersion
from tests.deletion.test_requests import (
    EVIDENCE,
    _create,
    _finish_unlearning_and_audit,
    _run_report_job,
)
from workers.models import Job

pytestmark = pytest.mark.django_db


def _audited(dpo, trained, verdict: str, **unlearned_with) -> tuple[str, object]:
    """A request by ``dpo`` verified and approved, its unlearning job (``unlearned_with``: the method,
    class or result it ran with) finished with a new version whose audit gave ``verdict``.
    Returns (request id, the new version)."""
    from models_registry.services import model_version_create

    request_id = _create(dpo).json()["id"]
    dpo.post(f"/api/v1/deletion-requests/{request_id}/verify/", EVIDENCE, format="json")
    dpo.post(f"/api/v1/deletion-requests/{request_id}/approve/", {}, format="json")
    if unlearned_with:
        ModelOutcome.objects.update(**{k: v for k, v in unlearned_with.items() if k != "result"})
        Job.objects.filter(kind="unlearn").update(**unlearned_with)
    new = model_version_create(model=trained["model"], artifact_sha256="9" * 64, training_run=None,
                               parent=trained["version"])
    _finish_unlearning_and_audit(Job.objects.get(kind="unlearn"), new, verdict=verdict)
    return request_id, new


@pytest.fixture
def inconclusive(api_client_for, trained):
    """A request whose one model's audit came back INCONCLUSIVE. Returns (dpo client, request id, new version):
    the client's token is bound to the DPO user alice."""
    dpo = api_client_for("dpo", user="alice")
    request_id, new = _audited(dpo, trained, "INCONCLUSIVE")
    return dpo, request_id, new


def test_an_inconclusive_audit_waits_for_the_dpo_instead_of_completing(inconclusive, api_client_for):
    dpo, request_id, new = inconclusive
    state = dpo.get(f"/api/v1/deletion-requests/{request_id}/").json()
    assert state["status"] == "AUDITING" and state["outcomes"][0]["status"] == "awaiting_decision"
    # Nothing is offered to the serving side, no report is queued: erasure is not confirmed.
    assert api_client_for("ml_engineer").get("/api/v1/deployments/pending/").json() == []
    assert not Job.objects.filter(kind="report").exists()
    listed = dpo.get("/api/v1/deletion-requests/?awaiting=inconclusive").json()
    assert [r["id"] for r in listed["results"]] == [request_id]


def test_accepting_the_risk_takes_two_dpo_users_and_ends_closed_not_completed(inconclusive, api_client_for, trained,
                                                                             tmp_path):
    from deletion.report_data import report_data

    alice, request_id, new = inconclusive
    url = f"/api/v1/deletion-requests/{request_id}/accept-risk/"
    body = {"model_version_id": trained["version"].id, "reason": "approximate result; retraining costs too much"}
    assert alice.post(url, {"model_version_id": trained["version"].id}, format="json").status_code == 400  # no reason
    assert alice.post(url, body, format="json").status_code == 200
    again = alice.post(url, body, format="json")
    assert again.status_code == 409 and again.json()["error"]["code"] == "second_dpo_required"
    assert api_client_for("auditor").post(url, body, format="json").status_code == 403
    outcome = ModelOutcome.objects.get()
    assert outcome.status == "awaiting_decision" and "confirmed_by" not in outcome.risk_acceptance

    bob = api_client_for("dpo", user="bob")
    confirmed = bob.post(url, body, format="json").json()
    assert confirmed["outcomes"][0]["status"] == "awaiting_deployment"
    # The path each took and the person behind it.
    assert confirmed["outcomes"][0]["risk_acceptance"] == {
        **confirmed["outcomes"][0]["risk_acceptance"], "proposed_by": "user:alice via api:alice(dpo)",
        "proposed_by_person": "user:alice", "confirmed_by": "user:bob via api:bob(dpo)",
        "confirmed_by_person": "user:bob"}
    events = [e["event"] for e in confirmed["timeline"]]
    assert events[-2:] == ["outcome.risk_acceptance_proposed", "outcome.risk_accepted"]

    bob.post(f"/api/v1/deletion-requests/{request_id}/confirm-deployment/", {"new_version_id": new.id}, format="json")
    _run_report_job(request_id)
    request = DeletionRequest.objects.get()
    assert request.status == RequestStatus.CLOSED_RISK_ACCEPTED  # never COMPLETED
    assert LedgerEvent.objects.filter(payload__contains='"request.closed_risk_accepted"').exists()
    data = report_data(request=request)
    assert data["end_state"]["status"] == "CLOSED_RISK_ACCEPTED"
    assert data["end_state"]["meaning"].startswith("Erasure is NOT confirmed")
    [entry] = data["model_versions"]
    assert entry["risk_acceptance"]["reason"] == body["reason"]
    assert (entry["risk_acceptance"]["proposed_by_person"], entry["risk_acceptance"]["confirmed_by_person"]) == (
        "user:alice", "user:bob")
    # The report's first page and section 1 say what the status says, never "completed".
    text = _pdf_text(data, tmp_path)
    assert "How the request ended: closed with the residual risk accepted, erasure NOT confirmed" in text
    assert ("erasure not confirmed; accepted by user:alice via api:alice(dpo) and user:bob via api:bob(dpo) on" in text
            and body["reason"] in text)
    assert "The request was closed (erasure not confirmed for every model) within the legal deadline" in text
    assert "The request was completed" not in text


def test_a_token_bound_to_no_person_takes_no_part_in_accepting_a_risk(inconclusive, api_client_for, trained):
    """A service client's token (bound to no user) can be nobody's proposal and nobody's
    confirmation: it is refused with what to do instead, and nothing is recorded."""
    alice, request_id, _ = inconclusive
    url = f"/api/v1/deletion-requests/{request_id}/accept-risk/"
    body = {"model_version_id": trained["version"].id, "reason": "approximate result; retraining costs too much"}
    console = api_client_for("dpo", name="dpo-console")
    refused = console.post(url, body, format="json")
    assert refused.status_code == 403, refused.content
    error = refused.json()["error"]
    assert error["code"] == "person_required" and error["message"].startswith("api:dpo-console(dpo) is bound to no person")
    assert "create_api_token --role dpo --name <name> --user <your username>" in error["message"]
    assert ModelOutcome.objects.get().risk_acceptance == {}
    assert alice.post(url, body, format="json").status_code == 200
    refused = console.post(url, body, format="json")  # nor can it be the second DPO
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "person_required"
    outcome = ModelOutcome.objects.get()
    assert outcome.status == "awaiting_decision" and "confirmed_by" not in outcome.risk_acceptance


def test_two_tokens_bound_to_one_person_are_one_dpo(inconclusive, api_client_for, trained):
    alice, request_id, _ = inconclusive
    url = f"/api/v1/deletion-requests/{request_id}/accept-risk/"
    body = {"model_version_id": trained["version"].id, "reason": "approximate result; retraining costs too much"}
    assert alice.post(url, body, format="json").status_code == 200
    laptop = api_client_for("dpo", name="alice-laptop", user="alice")
    again = laptop.post(url, body, format="json")
    assert again.status_code == 409, again.content
    error = again.json()["error"]
    assert error["code"] == "second_dpo_required" and error["details"] == {"person": "user:alice"}
    assert error["message"] == ("user:alice proposed accepting this risk (as user:alice via api:alice(dpo), now as "
                                "user:alice via api:alice-laptop(dpo): one person); a second DPO user must confirm it")
    assert "confirmed_by" not in ModelOutcome.objects.get().risk_acceptance


def test_an_acceptance_recorded_before_tokens_named_people(inconclusive, api_client_for, trained, tmp_path):
    """Rows from before: a proposal by a user (``user:alice``) names its person, one by a token
    (``api:...``) names nobody and is proposed again by the next DPO user; a confirmed acceptance
    without persons still goes into the report and its PDF as it was."""
    from deletion.report_data import report_data

    alice, request_id, new = inconclusive
    url = f"/api/v1/deletion-requests/{request_id}/accept-risk/"
    body = {"model_version_id": trained["version"].id, "reason": "approximate result; retraining costs too much"}
    old = {"reason": "decided before", "proposed_by": "user:alice", "proposed_at": "2026-12-01T10:00:00+00:00"}
    ModelOutcome.objects.update(risk_acceptance=old)
    assert alice.post(url, body, format="json").json()["error"]["code"] == "second_dpo_required"
    ModelOutcome.objects.update(risk_acceptance={**old, "proposed_by": "api:dpo-console(dpo)"})
    assert alice.post(url, body, format="json").status_code == 200  # a new proposal, hers
    outcome = ModelOutcome.objects.get()
    assert outcome.risk_acceptance["proposed_by_person"] == "user:alice" and "confirmed_by" not in outcome.risk_acceptance
    proposed = LedgerEvent.objects.filter(payload__contains='"outcome.risk_acceptance_proposed"').get()
    assert '"replaces_proposal_by":"api:dpo-console(dpo)"' in proposed.payload.replace(" ", "")

    ModelOutcome.objects.update(risk_acceptance={
        **old, "proposed_by": "api:alice(dpo)", "confirmed_by": "api:bob(dpo)",
        "confirmed_at": "2026-12-01T11:00:00+00:00"}, status="awaiting_deployment")
    api_client_for("ml_engineer").post(f"/api/v1/deletion-requests/{request_id}/confirm-deployment/",
                                       {"new_version_id": new.id}, format="json")
    _run_report_job(request_id)
    data = report_data(request=DeletionRequest.objects.get())
    assert "proposed_by_person" not in data["model_versions"][0]["risk_acceptance"]
    assert "erasure not confirmed; accepted by api:alice(dpo) and api:bob(dpo) on" in _pdf_text(data, tmp_path)


def _pdf_text(data: dict, tmp_path) -> str:
    import subprocess

    from audits.rendering import render_report_pdf
    from audits.report_schema import validate_report

    data = {**data, "ledger_head": {"seq": 1, "hash": "0" * 64},
            "signer": {"name": "test", "organisation": "test", "certificate_sha256": "0" * 64}}
    validate_report(data)
    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(render_report_pdf(data))
    out = subprocess.run(["pdftotext", str(pdf), "-"], check=True, capture_output=True, text=True).stdout
    return " ".join(out.split())


def test_a_passed_result_cannot_have_its_risk_accepted(api_client_for, trained):
    from deletion.report_data import NO_REPLAY_NOTE, report_data

    dpo = api_client_for("dpo", user="alice")
    request_id, new = _audited(dpo, trained, "PASS")
    # No replay ran for this audit: the report says what the exact verdict rests on.
    assert NO_REPLAY_NOTE in report_data(request=DeletionRequest.objects.get())["model_versions"][0]["verdict"]["notes"]
    refused = dpo.post(f"/api/v1/deletion-requests/{request_id}/accept-risk/",
                       {"model_version_id": trained["version"].id, "reason": "x"}, format="json")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "illegal_transition"
    dpo.post(f"/api/v1/deletion-requests/{request_id}/confirm-deployment/", {"new_version_id": new.id}, format="json")
    _run_report_job(request_id)
    assert DeletionRequest.objects.get().status == RequestStatus.COMPLETED
    assert report_data(request=DeletionRequest.objects.get())["end_state"]["status"] == "COMPLETED"


def test_an_inconclusive_result_can_be_escalated_to_an_exact_retrain(inconclusive, trained):
    dpo, request_id, new = inconclusive
    escalated = dpo.post(f"/api/v1/deletion-requests/{request_id}/escalate/",
                         {"model_version_id": trained["version"].id}, format="json")
    assert escalated.status_code == 200, escalated.content
    assert escalated.json()["status"] == "EXECUTING"
    retrain = Job.objects.get(kind="unlearn", method="retrain")
    assert retrain.source_version_id == trained["version"].id  # the parent was kept for this
    assert ModelVersion.objects.get(pk=new.id).status == "purged"  # the inconclusive result is destroyed


def test_a_guard_that_holds_its_bound_is_suppression_not_erasure(api_client_for, trained):
    """A PASS of the verifier guard confirms the filter, not erasure: the weights still hold the
    data, so the request waits for the DPO, and accepting suppression closes it, never COMPLETED."""
    from deletion.report_data import report_data

    alice, bob = api_client_for("dpo", user="alice"), api_client_for("dpo", user="bob")
    request_id, guarded = _audited(alice, trained, "PASS", method="verifier_guard", guarantee_class="suppressed")
    outcome = ModelOutcome.objects.get()
    assert (outcome.verdict, outcome.status) == ("PASS", "awaiting_decision")
    assert api_client_for("ml_engineer").get("/api/v1/deployments/pending/").json() == []

    body = {"model_version_id": trained["version"].id, "reason": "suppression until the next retrain"}
    alice.post(f"/api/v1/deletion-requests/{request_id}/accept-risk/", body, format="json")
    bob.post(f"/api/v1/deletion-requests/{request_id}/accept-risk/", body, format="json")
    bob.post(f"/api/v1/deletion-requests/{request_id}/confirm-deployment/", {"new_version_id": guarded.id},
             format="json")
    _run_report_job(request_id)
    request = DeletionRequest.objects.get()
    assert request.status == RequestStatus.CLOSED_RISK_ACCEPTED
    [entry] = report_data(request=request)["model_versions"]
    assert entry["guarantee"]["action"] == "suppression, not erasure: the weights still hold the data"


def test_an_s3t_result_promises_only_what_is_true_and_says_how_much_kept_data_it_learned_from(api_client_for,
                                                                                               trained):
    from deletion.report_data import report_data

    _audited(api_client_for("dpo"), trained, "PASS", method="s3t",
             result={"unlearning": {"details": {"kept_records": 1433, "kept_records_served": 274}}})
    [entry] = report_data(request=DeletionRequest.objects.get())["model_versions"]
    promise = entry["guarantee"]["promises"]
    assert "It is NOT the model a retrain on the kept data would give" in promise
    assert "the model the company would have had" not in promise
    row = next(m for m in entry["metrics"] if m["name"] == "Kept records the served model learned from")
    assert (row["before"], row["after"]) == (1433, 274)


def test_the_plan_says_before_the_method_runs_when_the_audit_cannot_confirm_erasure(api_client_for, trained):
    from audits.checks.registry import audit_cannot_confirm

    # The runner runs the equivalence test (TOST) on classifiers, so an approximate classifier result
    # can PASS unless the request has too few records for it; an approximate language model cannot;
    # exact can; a guard never confirms erasure.
    assert audit_cannot_confirm(guarantee_class="approximate", model_kind="classifier", records=3) is None
    one = audit_cannot_confirm(guarantee_class="approximate", model_kind="classifier", records=1)
    assert one.startswith("this audit cannot confirm erasure here (no aggregate metric was tested")
    assert "needs at least 2 forgotten records and this request has 1" in one
    assert audit_cannot_confirm(guarantee_class="approximate", model_kind="language_model").startswith(
        "this audit cannot confirm erasure here (")
    assert audit_cannot_confirm(guarantee_class="exact", model_kind="classifier") is None
    assert "suppression is not erasure" in audit_cannot_confirm(guarantee_class="suppressed",
                                                                 model_kind="language_model")
    dpo = api_client_for("dpo")
    request_id = _create(dpo).json()["id"]
    scoped = dpo.post(f"/api/v1/deletion-requests/{request_id}/verify/", EVIDENCE, format="json").json()
    [step] = scoped["plan"]
    assert (step["method"], step["audit_cannot_confirm"]) == ("sisa", None)
    trained["model"].training_recipe = "plain"
    trained["model"].unlearning_policy = {"approximate_method": "finetune", "equivalence_margin": 0.3}
    trained["model"].save()
    request_id = _create(dpo, key="k2").json()["id"]
    scoped = dpo.post(f"/api/v1/deletion-requests/{request_id}/verify/", EVIDENCE, format="json").json()
    [step] = scoped["plan"]
    # The equivalence test can run on three records, but the per-record test needs 16 shadow models
    # without each record and this model has none: the plan says so before anything runs.
    assert (step["method"], step["records"]) == ("finetune", 3)
    assert step["audit_cannot_confirm"].startswith("this audit cannot confirm erasure here: its per-record test "
                                                   "needs 16 shadow models without each forgotten record, and this "
                                                   "model has no shadow models")
    # The margins the audit will use are declared here, from the model's policy, with the power they
    # leave three records.
    declared = step["equivalence_test"]["declared"]
    assert (declared["lower_margin"], declared["upper_margin"]) == (-0.3, 0.3)
    assert declared["declared_by"] == f"the policy of model {trained['model'].name}"
    assert "with 3 forgotten records" in step["equivalence_test"]["statement"]


def test_a_withdrawal_whose_copies_wait_for_another_request_says_so(api_client_for, trained):
    from deletion.report_data import report_data

    dpo = api_client_for("dpo")
    request_id, _ = _audited(dpo, trained, "FAIL")
    dpo.post(f"/api/v1/deletion-requests/{request_id}/withdraw-model/",
             {"model_version_id": trained["version"].id, "reason": "retired"}, format="json")
    outcome = ModelOutcome.objects.get()
    assert outcome.audit["withdrawal"]["copies_remain"] is False  # nothing else builds on it
    rule = report_data(request=DeletionRequest.objects.get())["model_versions"][0]["verdict"]["rule"]
    assert "were kept for now" not in rule
    outcome.audit = {**outcome.audit, "withdrawal": {"purge_deferred": [], "copies_remain": True}}
    outcome.save(update_fields=["audit"])
    rule = report_data(request=DeletionRequest.objects.get())["model_versions"][0]["verdict"]["rule"]
    assert "Copies that another open request still builds on were kept for now" in rule
