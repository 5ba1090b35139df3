"""The request page and its actions through the Django test client: each action calls its
service, shows the service's error on failure, and is refused (403) to every role but the DPO."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from django.urls import reverse

from deletion.models import DeletionRequest, RequestStatus
from foundation.ledger.models import LedgerEvent
from tests.admin.conftest import finish_job, make_report, make_request
from workers.models import Job

pytestmark = pytest.mark.django_db


def page_url(request: DeletionRequest) -> str:
    return reverse("admin:deletion_deletionrequest_change", args=[request.pk])


def act_url(request: DeletionRequest, action: str) -> str:
    return reverse("admin:deletion_deletionrequest_act", args=[request.pk, action])


def post(client: Client, request: DeletionRequest, action: str, data: dict | None = None) -> list[str]:
    """POST an action; returns the admin messages shown on the request page it redirects back to."""
    response = client.post(act_url(request, action), data or {}, follow=True)
    assert response.redirect_chain == [(page_url(request), 302)], response.content[:500]
    return [str(m) for m in response.context["messages"]]


def last_event(request: DeletionRequest) -> dict:
    event = LedgerEvent.objects.filter(request_ref=request.public_id).order_by("-seq").first()
    return json.loads(event.payload)


# ---------------------------------------------------------------- the page


def test_request_page_shows_timeline_scope_plan_and_actions(client_for, trained):
    request = make_request()
    html = client_for("alice").get(page_url(request)).content.decode()
    for text in ("request.received", "request.verified", "request.scoped", "user:", "customers@1",
                 "churn v1", "sisa", "exact", 'id="dp-approve"', 'id="dp-reject"', 'id="dp-extend"',
                 'id="dp-cancel"', "Art. 17(3)(e): legal claims", "No report yet"):
        assert text in html, text
    assert "§1798.105(d)" not in html  # a GDPR request is refused only on GDPR grounds


def test_ccpa_request_offers_ccpa_grounds_and_days(client_for, trained):
    html = client_for("alice").get(page_url(make_request(jurisdiction="CCPA"))).content.decode()
    assert "§1798.105(d)(7): legal obligation" in html and "Art. 17(3)" not in html
    assert 'name="days"' in html and 'name="months"' not in html


def test_request_page_is_read_only_to_post(client_for, trained):
    response = client_for("alice").post(page_url(make_request()), {"status": "COMPLETED"})
    assert response.status_code == 405
    assert DeletionRequest.objects.get().status == RequestStatus.SCOPED


# ---------------------------------------------------------------- each action


def test_verify_scopes_a_received_request(client_for, trained):
    request = make_request(scoped=False)
    assert 'id="dp-verify"' in client_for("alice").get(page_url(request)).content.decode()
    messages = post(client_for("alice"), request, "verify", {"method": "id-document"})
    request.refresh_from_db()
    assert request.status == RequestStatus.SCOPED and messages == ["Identity verified; the request is scoped."]
    assert request.verification["verifier"] == "alice" and request.verification["method"] == "id-document"
    verified = LedgerEvent.objects.filter(request_ref=request.public_id).order_by("seq")[1]
    assert json.loads(verified.payload)["actor"] == "user:alice"


def test_verify_needs_a_method(client_for, trained):
    request = make_request(scoped=False)
    messages = post(client_for("alice"), request, "verify", {"method": ""})
    assert messages[0].startswith("verify: method:")
    assert DeletionRequest.objects.get().status == RequestStatus.RECEIVED


def test_approve_whole_creates_one_job_per_version(client_for, trained):
    request = make_request()
    messages = post(client_for("alice"), request, "approve")
    request.refresh_from_db()
    assert messages == ["Approved."] and request.status == RequestStatus.EXECUTING
    job = Job.objects.get(kind="unlearn")
    assert job.method == "sisa" and job.source_version == trained["version"]
    assert last_event(request)["type"] == "request.executing"
    assert LedgerEvent.objects.filter(request_ref=request.public_id, payload__contains='"user:alice"').count() >= 2
    html = client_for("alice").get(page_url(request)).content.decode()
    assert f'data-job-id="{job.id}"' in html and 'id="dp-approve"' not in html


def test_approve_partial_with_legal_hold(client_for, trained):
    request = make_request()
    version_id = trained["version"].id
    post(client_for("alice"), request, "approve", {"hold": [version_id], f"hold_reason_{version_id}": "litigation"})
    request.refresh_from_db()
    outcome = request.outcomes.get()
    assert (outcome.status, outcome.hold_reason) == ("held", "litigation")
    # Nothing to unlearn: straight to the report (the report job completes the request).
    assert request.status in (RequestStatus.AUDITING, RequestStatus.COMPLETED)
    assert not Job.objects.filter(kind="unlearn").exists()


def test_legal_hold_needs_a_reason(client_for, trained):
    request = make_request()
    messages = post(client_for("alice"), request, "approve", {"hold": [trained["version"].id]})
    assert "give the reason for the legal hold" in messages[0]
    assert DeletionRequest.objects.get().status == RequestStatus.SCOPED


def test_reject_with_a_ground_of_the_jurisdiction(client_for, trained):
    request = make_request()
    messages = post(client_for("alice"), request, "reject", {"ground": "art17_3_e", "reason": "pending lawsuit"})
    request.refresh_from_db()
    assert messages == ["Rejected."]
    assert (request.status, request.rejection_ground, request.decision_reason) == ("REJECTED", "art17_3_e",
                                                                                  "pending lawsuit")


def test_reject_shows_the_services_error(client_for, trained):
    request = make_request()
    alice = client_for("alice")
    wrong_ground = post(alice, request, "reject", {"ground": "ccpa_d7", "reason": "x"})
    assert wrong_ground == ["reject: 'ccpa_d7' is not a ground for refusal under GDPR; allowed: "
                            "art17_3_a, art17_3_b, art17_3_c, art17_3_d, art17_3_e"]
    no_reason = post(alice, request, "reject", {"ground": "art17_3_e", "reason": " "})
    assert no_reason == ["reject: a reason is required"]
    assert DeletionRequest.objects.get().status == RequestStatus.SCOPED


def test_extend_once_then_the_service_refuses(client_for, trained):
    request = make_request(due_in_days=2)
    alice = client_for("alice")
    before = request.due_at
    assert post(alice, request, "extend", {"months": "2", "reason": "complex request"}) == ["Deadline extended."]
    request.refresh_from_db()
    assert request.due_at > before and request.extension_reason == "complex request" and not request.overdue
    assert post(alice, request, "extend", {"months": "1", "reason": "again"}) == [
        "extend: the deadline was already extended once"]
    # A deadline already missed is not moved after the fact.
    late = make_request(due_in_days=-2)
    [message] = post(alice, late, "extend", {"months": "2", "reason": "complex request"})
    assert message.startswith("extend: the deadline passed on"), message
    late.refresh_from_db()
    assert late.extended_at is None


def test_extend_ccpa_by_days_and_limits(client_for, trained):
    request = make_request(jurisdiction="CCPA")
    alice = client_for("alice")
    assert post(alice, request, "extend", {"days": "90", "reason": "x"}) == ["extend: CCPA extensions are up to 45 days"]
    assert post(alice, request, "extend", {"days": "30", "reason": "x"}) == ["Deadline extended."]


def test_cancel(client_for, trained):
    request = make_request()
    assert post(client_for("alice"), request, "cancel", {"reason": "withdrawn by the subject"}) == ["Cancelled."]
    request.refresh_from_db()
    assert request.status == RequestStatus.CANCELLED and request.decision_reason == "withdrawn by the subject"


def test_withdraw_a_model_from_serving(client_for, trained):
    request = make_request()
    alice = client_for("alice")
    post(alice, request, "approve")
    version_id = trained["version"].id
    assert post(alice, request, "withdraw", {"model_version_id": version_id, "reason": ""}) == [
        "withdraw: a reason is required"]
    assert post(alice, request, "withdraw", {"model_version_id": 999999, "reason": "x"}) == [
        "withdraw: model version 999999 is not affected by this request"]
    assert post(alice, request, "withdraw", {"model_version_id": version_id, "reason": "audit pending"}) == [
        "Model version withdrawn from serving (Art. 18)."]
    trained["version"].refresh_from_db()
    assert trained["version"].status == "purged"  # withdrawn, then erased with its copies
    assert request.outcomes.get().status == "withdrawn"


def test_confirm_deployment_manually_completes(client_for, trained):
    request = make_request()
    alice = client_for("alice")
    post(alice, request, "approve")
    new = finish_job(request.outcomes.get(), trained)
    html = alice.get(page_url(request)).content.decode()
    assert "Confirm deployment (manual)" in html
    assert post(alice, request, "confirm", {"new_version_id": new.id}) == ["Deployment confirmed."]
    request.refresh_from_db()
    outcome = request.outcomes.get()
    assert request.status in (RequestStatus.AUDITING, RequestStatus.COMPLETED)  # the report job finishes it
    assert outcome.status == "confirmed" and outcome.confirmed_manually and outcome.confirmed_by == "user:alice"
    # Confirming again is an illegal transition, and says so.
    assert post(alice, request, "confirm", {"new_version_id": new.id}) == [
        "confirm: this outcome is confirmed, not awaiting deployment"]


def test_illegal_transition_is_shown_not_raised(client_for, trained):
    request = make_request()
    alice = client_for("alice")
    post(alice, request, "approve")
    assert post(alice, request, "approve") == [
        "approve: this request is EXECUTING; this step needs it SCOPED (it would move it to APPROVED)"]
    request = make_request(email="p1@example.org")
    post(alice, request, "cancel")
    assert post(alice, request, "approve") == [
        "approve: this request is CANCELLED: it has ended and takes no more decisions"]


def test_verdict_and_key_metrics_are_shown(client_for, trained):
    request = make_request()
    alice = client_for("alice")
    post(alice, request, "approve")
    finish_job(request.outcomes.get(), trained, verdict="PASS")
    html = alice.get(page_url(request)).content.decode()
    for text in ('dp-badge dp-ok">PASS', "accuracy on the erased records", "0.980 → 0.610", "membership_test",
                 "every check passed", "shadow models"):
        assert text in html, text


def test_escalate_after_an_audit_fail(client_for, trained):
    request = make_request()
    alice = client_for("alice")
    post(alice, request, "approve")
    finish_job(request.outcomes.get(), trained, verdict="PASS")
    assert "Escalate" not in alice.get(page_url(request)).content.decode()  # only after a FAIL
    request = make_request(email="p1@example.org")
    post(alice, request, "approve")
    finish_job(request.outcomes.get(), trained, verdict="FAIL")
    assert "Escalate: exact retrain" in alice.get(page_url(request)).content.decode()
    assert post(alice, request, "escalate", {"model_version_id": trained["version"].id}) == [
        "Escalated to an exact retrain."]
    outcome = request.outcomes.get()
    assert (outcome.method, outcome.guarantee_class, outcome.job.method) == ("retrain", "exact", "retrain")
    page = alice.get(page_url(request)).content.decode()
    assert f"audit FAIL, escalated by {outcome.attempts[0]['escalated_by']}" in page
    assert post(alice, request, "escalate", {"model_version_id": trained["version"].id})[0].startswith(
        "escalate: only an audit that did not pass can be escalated")


def test_progress_endpoint(client_for, trained):
    request = make_request()
    alice = client_for("alice")
    post(alice, request, "approve")
    job = Job.objects.get(kind="unlearn")
    Job.objects.filter(pk=job.pk).update(status="running", progress_percent=40.0, progress_stage="shard 1 of 2")
    url = reverse("admin:deletion_deletionrequest_progress", args=[request.pk])
    assert alice.get(url).json() == {"status": "EXECUTING", "jobs": [
        {"id": job.id, "kind": "unlearn", "status": "running", "stage": "shard 1 of 2", "percent": 40.0}]}


def test_report_button_when_a_report_exists(client_for, trained):
    request = make_request()
    assert "Download signed PDF" not in client_for("alice").get(page_url(request)).content.decode()
    report = make_report(request)
    for user in ("alice", "bob"):
        html = client_for(user).get(page_url(request)).content.decode()
        assert f'id="dp-report-pdf-{report.pk}"' in html and "PAdES-B-T" in html, user
        assert f"/api/v1/reports/{report.pk}/pdf" in html


# ---------------------------------------------------------------- roles


ACTION_POSTS = {
    "verify": {"method": "x"}, "approve": {}, "reject": {"ground": "art17_3_e", "reason": "x"},
    "extend": {"months": "1", "reason": "x"}, "cancel": {"reason": "x"},
    "withdraw": {"model_version_id": 1, "reason": "x"}, "confirm": {"new_version_id": 1},
    "escalate": {"model_version_id": 1},
}


@pytest.mark.parametrize("user", ["bob", "charlie", "mallory"])
def test_forged_posts_are_refused_to_every_other_role(client_for, trained, user):
    request = make_request()
    before = LedgerEvent.objects.count()
    intruder = client_for(user)
    for action, data in ACTION_POSTS.items():
        assert intruder.post(act_url(request, action), data).status_code == 403, action
    request.refresh_from_db()
    assert request.status == RequestStatus.SCOPED and LedgerEvent.objects.count() == before


def test_forged_post_from_another_site_fails_csrf(cast, trained):
    request = make_request()
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(cast["alice"])
    assert browser.post(act_url(request, "approve"), {}).status_code == 403
    assert DeletionRequest.objects.get().status == RequestStatus.SCOPED


def test_anonymous_is_sent_to_log_in(client, trained):
    request = make_request()
    for url in (page_url(request), act_url(request, "approve"),
                reverse("admin:deletion_deletionrequest_progress", args=[request.pk]),
                reverse("admin:deletion_deletionrequest_dashboard")):
        response = client.post(url) if "/act/" in url else client.get(url)
        assert response.status_code == 302 and "/admin/login/" in response["Location"], url
    assert DeletionRequest.objects.get().status == RequestStatus.SCOPED


def test_auditor_sees_the_request_but_no_action(client_for, trained):
    request = make_request()
    response = client_for("bob").get(page_url(request))
    html = response.content.decode()
    assert response.status_code == 200 and "request.scoped" in html
    content = html.split('<div id="content-main">')[1]
    for marker in ('id="dp-actions"', 'id="dp-approve"', "Withdraw from serving", "<form"):
        assert marker not in content, marker


def test_auditor_sees_no_withdraw_or_confirm_buttons(client_for, trained):
    request = make_request()
    post(client_for("alice"), request, "approve")
    finish_job(request.outcomes.get(), trained, verdict="FAIL")
    html = client_for("bob").get(page_url(request)).content.decode()
    assert "Withdraw from serving" not in html and "Confirm deployment" not in html and "FAIL" in html


@pytest.mark.parametrize("user", ["charlie", "mallory"])
def test_requests_are_hidden_from_roles_without_view(client_for, trained, user):
    request = make_request()
    other = client_for(user)
    assert other.get(page_url(request)).status_code == 403
    assert other.get(reverse("admin:deletion_deletionrequest_changelist")).status_code == 403
    assert other.get(reverse("admin:deletion_deletionrequest_progress", args=[request.pk])).status_code == 403
    assert other.get(reverse("admin:deletion_deletionrequest_dashboard")).status_code == 403
    index = other.get(reverse("admin:index")).content.decode()
    assert "Dashboard: deadlines" not in index and "Deletion requests" not in index


def test_get_on_an_action_is_not_allowed(client_for, trained):
    request = make_request()
    assert client_for("alice").get(act_url(request, "approve")).status_code == 405
    assert client_for("alice").post(act_url(request, "explode")).status_code == 404
    assert DeletionRequest.objects.get().status == RequestStatus.SCOPED


def test_ledger_is_read_only_for_everyone(client_for, trained):
    request = make_request()
    event = LedgerEvent.objects.filter(request_ref=request.public_id).order_by("seq").last()
    for user in ("alice", "bob"):
        browser = client_for(user)
        listing = browser.get("/admin/ledger/ledgerevent/").content.decode()
        assert "request.scoped" in listing and "/admin/ledger/ledgerevent/add/" not in listing
        detail = browser.get(f"/admin/ledger/ledgerevent/{event.seq}/change/").content.decode()
        assert bytes(event.hash).hex() in detail and 'type="submit" value="Save"' not in detail
        assert browser.post(f"/admin/ledger/ledgerevent/{event.seq}/delete/").status_code == 403
    assert client_for("charlie").get("/admin/ledger/ledgerevent/").status_code == 403


def test_two_dpo_users_accept_a_residual_risk_on_the_request_page(client_for, cast, trained):
    from django.contrib.auth.models import Group, User

    from tests.admin.conftest import PASSWORD

    request = make_request()
    alice = client_for("alice")
    post(alice, request, "approve")
    finish_job(request.outcomes.get(), trained, verdict="INCONCLUSIVE")
    page = alice.get(page_url(request)).content.decode()
    assert "Accept the residual risk" in page and "Escalate: exact retrain" in page
    version_id = trained["version"].id
    assert post(alice, request, "accept_risk", {"model_version_id": version_id, "reason": ""}) == [
        "accept_risk: a reason is required"]
    assert post(alice, request, "accept_risk", {"model_version_id": version_id, "reason": "too costly"}) == [
        "Residual risk: recorded (a second DPO user confirms it) or confirmed."]
    # The same user cannot confirm their own acceptance: the page offers her nothing more.
    assert "Confirm: accept the residual risk" not in alice.get(page_url(request)).content.decode()
    assert post(alice, request, "accept_risk", {"model_version_id": version_id, "reason": "too costly"})[0].startswith(
        "accept_risk: user:alice proposed accepting this risk; a second DPO user must confirm it")
    dora = User.objects.create_user("dora", "dora@example.org", PASSWORD, is_staff=True)
    dora.groups.add(Group.objects.get(name="dpo"))
    second = client_for("alice").__class__()
    second.force_login(dora)
    assert "Confirm: accept the residual risk" in second.get(page_url(request)).content.decode()
    post(second, request, "accept_risk", {"model_version_id": version_id, "reason": ""})
    outcome = request.outcomes.get()
    assert outcome.risk_acceptance["confirmed_by"] == "user:dora" and outcome.status == "awaiting_deployment"
    assert "residual risk accepted by user:alice and user:dora" in second.get(page_url(request)).content.decode()


def test_a_dpo_in_the_admin_and_her_own_api_token_are_one_person(client_for, cast, trained, api_client_for):
    """The walkthrough's gap: alice proposed in the admin and confirmed with a DPO token. A token
    bound to alice is alice: refused; a token bound to another DPO user confirms."""
    request = make_request()
    alice = client_for("alice")
    post(alice, request, "approve")
    finish_job(request.outcomes.get(), trained, verdict="INCONCLUSIVE")
    version_id = trained["version"].id
    post(alice, request, "accept_risk", {"model_version_id": version_id, "reason": "too costly"})
    url = f"/api/v1/deletion-requests/{request.public_id}/accept-risk/"
    own_token = api_client_for("dpo", name="dpo-console", user="alice")
    refused = own_token.post(url, {"model_version_id": version_id}, format="json")
    assert refused.status_code == 409, refused.content
    assert refused.json()["error"]["code"] == "second_dpo_required"
    assert refused.json()["error"]["message"].startswith(
        "user:alice proposed accepting this risk (as user:alice, now as user:alice via api:dpo-console(dpo): one person)")
    assert request.outcomes.get().status == "awaiting_decision"
    # A token held by nobody is no second DPO either.
    unbound = api_client_for("dpo", name="dpo-second").post(url, {"model_version_id": version_id}, format="json")
    assert unbound.status_code == 403 and unbound.json()["error"]["code"] == "person_required"

    dora_token = api_client_for("dpo", name="dpo-second", user="dora")
    assert dora_token.post(url, {"model_version_id": version_id}, format="json").status_code == 200
    outcome = request.outcomes.get()
    assert outcome.status == "awaiting_deployment"
    assert (outcome.risk_acceptance["proposed_by_person"], outcome.risk_acceptance["confirmed_by_person"]) == (
        "user:alice", "user:dora")
    assert ("residual risk accepted by user:alice and user:dora via api:dpo-second(dpo)"
            in alice.get(page_url(request)).content.decode())
    accepted = LedgerEvent.objects.get(request_ref=request.public_id, payload__contains='"outcome.risk_accepted"')
    assert json.loads(accepted.payload)["data"]["confirmed_by_person"] == "user:dora"


def test_the_page_states_the_utility_bar_and_a_passed_version_below_it(client_for, trained, monkeypatch):
    from audits.checks.utility import utility
    from tests.admin import conftest

    trained["model"].unlearning_policy = {"min_utility_ratio": 0.9}
    trained["model"].save(update_fields=["unlearning_policy"])
    request = make_request()
    alice = client_for("alice")
    version = trained["version"].id
    planned = alice.get(page_url(request)).content.decode()
    assert f'id="dp-utility-bar-{version}">Utility bar (the policy of model churn)' in planned
    assert "accuracy on kept and held-out records at least 90% of the original" in planned
    post(alice, request, "approve")
    below = utility(retain=0.80, test=0.78, original_retain=0.99, original_test=0.95, min_ratio=0.9).to_dict()
    monkeypatch.setattr(conftest, "AUDIT", {**conftest.AUDIT, "checks": [below]})
    finish_job(request.outcomes.get(), trained, verdict="PASS")
    page = alice.get(page_url(request)).content.decode()
    assert f'id="dp-utility-fail-{version}"' in page
    assert "accuracy retain ratio 0.808, test ratio 0.821 (bar 0.90)" in page
    # A passed version within the bar shows no such line.
    other = make_request(email="p1@example.org")
    post(alice, other, "approve")
    monkeypatch.setattr(conftest, "AUDIT", {**conftest.AUDIT, "checks": [
        utility(retain=0.98, test=0.94, original_retain=0.99, original_test=0.95, min_ratio=0.9).to_dict()]})
    finish_job(other.outcomes.get(), trained, verdict="PASS")
    assert "dp-utility-fail" not in alice.get(page_url(other)).content.decode()
