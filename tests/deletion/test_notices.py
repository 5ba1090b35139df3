"""Issue 22 (7): the person is told of the receipt, an extension, a refusal (with the right to
complain) and the completion, in their language, by e-mail or through the requesting client's
webhook; the address is kept only encrypted and destroyed after the last notice; recipients of
model copies are told through their own signed webhooks (GDPR Art. 19)."""

import json

import pytest
from django.core import mail
from django.db import connection

from deletion import notices
from deletion.models import DeletionRequest, ModelRecipient, NoticeDelivery, WebhookDelivery
from deletion.report_data import report_data
from deletion.webhooks import verify_signature, webhook_deliver
from foundation.ledger.models import LedgerEvent
from models_registry.keystore import keystore
from tests.deletion.test_end_states import _audited
from tests.deletion.test_requests import (
    BODY,
    EVIDENCE,
    _create,
    _finish_unlearning_and_audit,
    _run_report_job,
)
from tests.deletion.test_webhooks import Receiver
from workers.models import Job

pytestmark = pytest.mark.django_db

ADDRESS = "Erika.Mustermann@example.net"  # where the person asked to be told; not an identifier


@pytest.fixture(autouse=True)
def _report_signing_stubbed(monkeypatch):
    import deletion.report_data

    monkeypatch.setattr(deletion.report_data, "report_build_and_sign",
                        lambda *, request: {"id": 0, "pdf_path": "stub.pdf", "pdf_sha256": "0" * 64})


def _deliver_pending() -> list[str]:
    return [notices.notice_deliver(notice_id=n.id) for n in NoticeDelivery.objects.filter(status="pending")]


def _with_contact(language="en", **body):
    return {**BODY, "contact": {"email": ADDRESS}, "language": language, **body}


def _stored_anywhere(text: str) -> bool:
    """Whether ``text`` is in any row of the request, notice, webhook or ledger tables (as text)."""
    with connection.cursor() as cursor:
        for table in ("deletion_deletionrequest", "deletion_noticedelivery", "deletion_webhookdelivery",
                      LedgerEvent._meta.db_table):
            cursor.execute(f"SELECT t::text FROM {table} t")  # noqa: S608 - fixed table names
            if any(text.lower() in row[0].lower() for row in cursor.fetchall()):
                return True
    return False


def _ledger(event: str) -> list[dict]:
    events = (json.loads(e.payload) for e in LedgerEvent.objects.order_by("seq"))
    return [e["data"] for e in events if e["type"] == event]


def test_receipt_in_the_persons_language_says_no_more_than_they_gave(api_client_for, trained):
    response = _create(api_client_for("intake"), _with_contact(language="de-AT"))
    assert response.status_code == 201, response.content
    request_id = response.json()["id"]
    assert _deliver_pending() == ["sent"]
    message, = mail.outbox
    assert message.to == [ADDRESS]
    assert message.subject == f"Ihr Löschantrag {request_id} ist eingegangen"
    assert "Art. 12 Abs. 3 DSGVO" in message.body and request_id in message.body
    # German month names, the deadline; nothing the person did not give: no identifier, pseudonym, record key.
    request = DeletionRequest.objects.get()
    assert f"{request.due_at.day}. " in message.body
    for given_elsewhere in ("p0@example.org", request.subject.reference, "r0", "r3"):
        assert given_elsewhere not in message.body and given_elsewhere not in message.subject
    # The address is nowhere in plain text: not the row, the notice, the ledger.
    assert not _stored_anywhere(ADDRESS) and not _stored_anywhere("mustermann")
    assert request.contact_ciphertext and request.contact_key_ref == f"contact:request:{request_id}"
    sent, = _ledger("notice.sent")
    assert (sent["kind"], sent["channel"], sent["language"]) == ("receipt", "email", "de")


def test_extension_then_refusal_with_the_right_to_complain_then_the_address_is_destroyed(api_client_for, trained):
    dpo = api_client_for("dpo")
    request_id = _create(dpo, _with_contact(language="fr")).json()["id"]  # no French yet: English
    dpo.post(f"/api/v1/deletion-requests/{request_id}/extend/", {"reason": "many models to check", "months": 1},
             format="json")
    dpo.post(f"/api/v1/deletion-requests/{request_id}/reject/",
             {"ground": "art17_3_e", "reason": "the data is evidence in a pending lawsuit"}, format="json")
    assert _deliver_pending() == ["sent", "sent", "sent"]
    receipt, extension, refusal = mail.outbox
    assert extension.subject.startswith("We need more time") and "many models to check" in extension.body
    due = DeletionRequest.objects.get().due_at
    assert f"{due.day} {due:%B %Y}" in extension.body
    assert "legal claims" in refusal.body and "pending lawsuit" in refusal.body
    assert "supervisory authority" in refusal.body and "GDPR Art. 77" in refusal.body
    # After the last notice the address is gone: the key destroyed, the ciphertext blanked.
    request = DeletionRequest.objects.get()
    key_ref = f"contact:request:{request_id}"
    assert request.contact_destroyed_at and not request.contact_ciphertext and not request.contact_key_ref
    assert not keystore()._path(key_ref).exists()
    assert _ledger("contact.destroyed")[0]["request"] == request_id
    assert [e["kind"] for e in _ledger("notice.sent")] == ["receipt", "extension", "refusal"]


def test_a_ccpa_refusal_names_the_californian_authority(api_client_for, trained):
    dpo = api_client_for("dpo")
    request_id = _create(dpo, _with_contact(jurisdiction="CCPA", legal_ground="ccpa_1798_105")).json()["id"]
    dpo.post(f"/api/v1/deletion-requests/{request_id}/reject/", {"ground": "ccpa_d2", "reason": "fraud case"},
             format="json")
    _deliver_pending()
    refusal = mail.outbox[-1]
    assert "California Privacy Protection Agency" in refusal.body and "§1798.105(d)(2)" in refusal.body


def test_completion_says_per_model_what_was_done_and_art19_recipients_are_told(api_client_for, trained):
    receiver = Receiver()
    try:
        engineer = api_client_for("ml_engineer")
        registered = engineer.post("/api/v1/model-recipients/", {
            "model": trained["model"].name, "version": 1, "name": "Partner GmbH", "url": receiver.url}, format="json")
        assert registered.status_code == 201, registered.content
        secret = registered.json()["secret"]
        dpo = api_client_for("dpo")
        request_id = _create(dpo, _with_contact()).json()["id"]
        dpo.post(f"/api/v1/deletion-requests/{request_id}/verify/", EVIDENCE, format="json")
        dpo.post(f"/api/v1/deletion-requests/{request_id}/approve/", {}, format="json")
        from models_registry.services import model_version_create

        new = model_version_create(model=trained["model"], artifact_sha256="9" * 64, training_run=None,
                                   parent=trained["version"])
        _finish_unlearning_and_audit(Job.objects.get(kind="unlearn"), new)
        dpo.post(f"/api/v1/deletion-requests/{request_id}/confirm-deployment/", {"new_version_id": new.id},
                 format="json")
        # The recipient's endpoint heard none of the request's events so far.
        recipient = ModelRecipient.objects.get()
        assert not WebhookDelivery.objects.filter(endpoint=recipient.endpoint).exists()
        _run_report_job(request_id)  # erases the data (and the subject's key), then completes
        request = DeletionRequest.objects.get()
        assert request.status == "COMPLETED"
        assert _deliver_pending() == ["sent", "sent"]
        completion = mail.outbox[-1]
        assert completion.subject == f"Your erasure request {request_id} is done"
        assert f"- {trained['model'].name}: retrained without your data" in completion.body
        assert "r0" not in completion.body and request.subject.reference not in completion.body
        assert DeletionRequest.objects.get().contact_destroyed_at is not None

        delivery = WebhookDelivery.objects.get(endpoint=recipient.endpoint)
        assert webhook_deliver(delivery_id=delivery.id) == "delivered"
        body, header = receiver.received[0]
        assert verify_signature(secret, body, header)
        event = json.loads(body)
        assert event["event"] == "recipient.erasure_notice" and event["action"] == "replace"
        assert (event["model"], event["version_held"], event["new_version"]) == (trained["model"].name, 1,
                                                                                 new.version)
        assert "p0@example.org" not in body.decode() and request.subject.reference not in body.decode()
        assert report_data(request=request)["recipients_notified"] == [{
            "name": "Partner GmbH", "endpoint_id": recipient.endpoint_id, "model": trained["model"].name,
            "version_held": 1, "new_version": new.version, "action": "replace"}]
        told, = [e for e in _ledger("notice.sent") if e["kind"] == "recipient_erasure"]
        assert (told["recipient_name"], told["endpoint"], told["action"]) == ("Partner GmbH", recipient.endpoint_id,
                                                                              "replace")
    finally:
        receiver.close()


def test_a_closed_risk_accepted_completion_says_the_model_may_still_hold_influence(api_client_for, trained):
    alice, bob = api_client_for("dpo", user="alice"), api_client_for("dpo", user="bob")
    request_id, new = _audited(alice, trained, "INCONCLUSIVE")
    # The person gave an address and asked for German (set on the row: the helper's intake gave none).
    DeletionRequest.objects.update(**notices.contact_sealed(public_id=request_id, contact={"email": ADDRESS}),
                                   language="de")
    version = trained["version"].id
    for dpo in (alice, bob):
        dpo.post(f"/api/v1/deletion-requests/{request_id}/accept-risk/",
                 {"model_version_id": version, "reason": "inconclusive at this record count"}, format="json")
    alice.post(f"/api/v1/deletion-requests/{request_id}/confirm-deployment/", {"new_version_id": new.id}, format="json")
    _run_report_job(request_id)
    assert DeletionRequest.objects.get().status == "CLOSED_RISK_ACCEPTED"
    assert _deliver_pending() == ["sent"]
    message, = mail.outbox
    assert "nicht für jedes Modell" in message.subject
    assert "kann noch einen gewissen Einfluss Ihrer Daten enthalten" in message.body
    assert "dieses Risiko in Kauf" in message.body and "Art. 77 DSGVO" in message.body


def test_handoff_sends_the_written_notice_to_the_requesting_clients_webhook(api_client_for, trained):
    intake = api_client_for("intake")
    intake.post("/api/v1/webhooks/", {"url": "http://127.0.0.1:9/hook"}, format="json")
    request_id = _create(intake, {**BODY, "contact": {"handoff": "webhook"}}).json()["id"]
    assert _deliver_pending() == ["sent"]
    assert mail.outbox == []
    delivery, = WebhookDelivery.objects.filter(event__event="notice.receipt")
    notice = delivery.event["notice"]
    assert delivery.event["request"] == request_id and notice["language"] == "en"
    assert notice["subject"] == f"Your erasure request {request_id} was received" and request_id in notice["text"]
    assert _ledger("notice.sent")[0]["channel"] == "webhook"


def test_a_bad_email_is_a_clear_error_and_creates_nothing(api_client_for, trained, settings):
    keys_before = sorted(settings.KEYSTORE_DIR.rglob("*.key"))
    response = _create(api_client_for("intake"), {**BODY, "contact": {"email": "not-an-address"}})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["fields"] == {"contact.email": ["contact.email is not a valid e-mail address"]}
    assert not DeletionRequest.objects.exists() and not NoticeDelivery.objects.exists()
    assert sorted(settings.KEYSTORE_DIR.rglob("*.key")) == keys_before


def test_a_mail_server_that_is_down_is_retried_and_the_attempt_recorded(api_client_for, trained, monkeypatch):
    _create(api_client_for("intake"), _with_contact())
    notice = NoticeDelivery.objects.get()

    def refused(self, *args, **kwargs):
        raise ConnectionRefusedError("mail server down")

    monkeypatch.setattr("django.core.mail.EmailMessage.send", refused)
    with pytest.raises(notices.NoticeNotSent, match="mail server down"):
        notices.notice_deliver(notice_id=notice.id)
    notice.refresh_from_db()
    assert (notice.status, notice.attempts) == ("pending", 1) and not _ledger("notice.failed")
