"""Notices about a request: to the person who made it (GDPR Art. 12(3)-(4), CCPA §1798.105) and to
the recipients of model copies (GDPR Art. 19).

The person is told of the receipt, an extension and its reasons, a refusal with its grounds and
the right to complain, the completion (or the residual risk accepted) and a cancellation; by
e-mail through Django's e-mail backend, or, where the requesting client chose ``handoff``, as a
signed webhook to that client (the company's own request system tells the person).

What a notice may say: the request's public id, dates, the reasons the DPO gave, and what was done
per model in plain words; never the identifiers, record keys or anything of other people. The
e-mail address is kept only encrypted under a data key of its own (``contact:request:<id>`` in the
platform keystore), decrypted only to send, and crypto-shredded once the last notice went out.
Its own key rather than the subject's: the subject's key is destroyed when the data is erased, in
the middle of the request's last step and before the completion notice is sent (or retried), and
another request of the same person may destroy it while this one is still open; a request with no
subject at all has no subject key. A key per request lives exactly as long as the address is needed.

Each notice is a :class:`NoticeDelivery` row (kind, channel, status, attempts; no address) and a
ledger event ``notice.sent`` / ``notice.failed`` (kind, channel, language; never the address or
the text). Templates: ``deletion/templates/deletion/notices/<language>/<kind>.txt``, first line the
subject; a language without a template of that kind falls back to English.
"""

from __future__ import annotations

import re
import smtplib
from datetime import datetime
from typing import Any

from celery import current_app
from cryptography.exceptions import InvalidTag
from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.mail import EmailMessage
from django.core.validators import validate_email
from django.db import transaction
from django.db.models import F
from django.template import TemplateDoesNotExist
from django.template.loader import get_template
from django.utils import timezone, translation

from deletion.models import (
    LAST_NOTICES,
    DeletionRequest,
    ModelRecipient,
    NoticeDelivery,
    NoticeKind,
    OutcomeStatus,
    RejectionGround,
    RequestStatus,
    WebhookEndpoint,
)
from deletion.webhooks import webhook_register, webhook_send
from foundation.errors import ValidationFailed
from foundation.ledger.services import ledger_append
from models_registry.keystore import KeyDestroyed, keystore
from models_registry.models import ModelVersion

EMAIL, WEBHOOK = "email", "webhook"
PENDING, SENT, FAILED = "pending", "sent", "failed"
SEND_TASK = "deletion.send_notice"
MAX_ATTEMPTS = 6
DEFAULT_LANGUAGE = "en"
TEMPLATE_DIR = "deletion/notices"
_LANGUAGE_TAG = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$")


class NoticeNotSent(Exception):
    """A notice that may go out later (the mail server unreachable): the task retries it."""


# ---------------------------------------------------------------- intake


def notice_contact_validate(*, contact: dict[str, Any] | None, language: str | None, client) -> None:
    """Check what intake was given for notices: ``contact`` = {"email"?, "handoff"?: "webhook"},
    ``language`` a language tag (``de``, ``fr-CA``). Raises ValidationFailed naming the field."""
    if language and not _LANGUAGE_TAG.match(language):
        raise ValidationFailed(f"language {language!r} is not a language tag such as en, de or fr-CA",
                               field="language")
    if not contact:
        return
    email = contact.get("email")
    if email is not None:
        try:
            validate_email(email)
        except DjangoValidationError:
            raise ValidationFailed("contact.email is not a valid e-mail address", field="contact.email") from None
    handoff = contact.get("handoff")
    if handoff not in (None, WEBHOOK):
        raise ValidationFailed("contact.handoff must be \"webhook\"", field="contact.handoff")
    if handoff and client is None:
        raise ValidationFailed("contact.handoff needs a request made by an API client (its webhooks receive "
                               "the notices)", field="contact.handoff")
    if email is None and handoff is None:
        raise ValidationFailed("contact needs an email or handoff", field="contact")


def contact_sealed(*, public_id: str, contact: dict[str, Any] | None) -> dict[str, Any]:
    """The request fields that keep ``contact``: the e-mail address encrypted under a new key of
    its own in the keystore (nothing when none was given), and the handoff choice."""
    fields: dict[str, Any] = {"contact_handoff": bool((contact or {}).get("handoff"))}
    email = (contact or {}).get("email")
    if email:
        key_ref = f"contact:request:{public_id}"
        nonce, ciphertext = keystore().encrypt(key_ref, email.strip().encode())
        fields.update(contact_key_ref=key_ref, contact_nonce=nonce, contact_ciphertext=ciphertext)
    return fields


def contact_discard(*, key_ref: str) -> None:
    """A sealed contact that no row ended up holding (the insert failed): its key goes."""
    if key_ref:
        keystore().destroy(key_ref)


def contact_destroy(*, request: DeletionRequest) -> bool:
    """Crypto-shred the person's address: destroy its key, blank the ciphertext. True when there
    was one. Called once the last notice ended (sent, or failed for good)."""
    key_ref = request.contact_key_ref
    changed = DeletionRequest.objects.filter(pk=request.pk, contact_destroyed_at=None).exclude(
        contact_key_ref="").update(contact_key_ref="", contact_nonce=b"", contact_ciphertext=b"",
                                   contact_destroyed_at=timezone.now())
    if not changed:
        return False
    key_existed = keystore().destroy(key_ref)
    ledger_append(event_type="contact.destroyed", actor="platform", request=str(request.public_id),
                  key_destroyed=key_existed)
    return True


# ---------------------------------------------------------------- what a notice says


def notice_send(*, request: DeletionRequest, kind: str) -> list[NoticeDelivery]:
    """Queue ``kind`` to the person on every channel they gave (after commit). Returns the notices
    (none when the person gave no contact)."""
    channels = ([EMAIL] if request.contact_key_ref else []) + ([WEBHOOK] if request.contact_handoff else [])
    if not channels:
        return []
    context = _context(request, kind)
    language = notice_language(request.language)
    notices = [NoticeDelivery.objects.create(request=request, kind=kind, channel=channel, language=language,
                                             context=context) for channel in channels]
    for notice in notices:
        transaction.on_commit(lambda n=notice.id: _enqueue(n))
    return notices


def notice_language(tag: str) -> str:
    """The language a notice is written in: the person's (``de-AT`` -> ``de``) where templates
    exist for it, else English."""
    for candidate in (tag.lower(), tag.lower().split("-")[0]) if tag else ():
        try:
            get_template(f"{TEMPLATE_DIR}/{candidate}/receipt.txt")
            return candidate
        except TemplateDoesNotExist:
            continue
    return DEFAULT_LANGUAGE


def _context(request: DeletionRequest, kind: str) -> dict[str, Any]:
    """The facts a notice states, as plain JSON (kept on the notice row: what the person was told)."""
    context: dict[str, Any] = {"request_id": str(request.public_id), "jurisdiction": request.jurisdiction,
                               "received_at": request.received_at.isoformat(), "due_at": request.due_at.isoformat()}
    if kind == NoticeKind.EXTENSION:
        context["reason"] = request.extension_reason
    elif kind == NoticeKind.REFUSAL:
        context.update(ground=request.rejection_ground, ground_label=RejectionGround(request.rejection_ground).label,
                       reason=request.decision_reason)
    elif kind == NoticeKind.CANCELLATION:
        context["reason"] = request.decision_reason
    elif kind == NoticeKind.COMPLETION:
        models = [_model_fact(o) for o in request.outcomes.select_related("model_version__model")
                  .order_by("model_version__model__name", "model_version__version")]
        context.update(status=request.status, completed_at=(request.completed_at or timezone.now()).isoformat(),
                       risk_accepted=request.status == RequestStatus.CLOSED_RISK_ACCEPTED, models=models,
                       # A legal hold keeps the records (and the person off the suppression list).
                       kept_under_hold=any(m["done"] == "held" for m in models))
    return context


def _model_fact(outcome) -> dict[str, Any]:
    """What was done to one model, as one of a few plain facts the templates word."""
    if outcome.status == OutcomeStatus.HELD:
        done = "held"
    elif outcome.status == OutcomeStatus.WITHDRAWN:
        done = "withdrawn"
    elif (outcome.risk_acceptance or {}).get("confirmed_by"):
        done = "risk_accepted"
    else:
        done = outcome.guarantee_class or "approximate"
    return {"model": outcome.model_version.model.name, "done": done,
            **({"hold_reason": outcome.hold_reason} if done == "held" else {})}


def notice_render(*, kind: str, language: str, context: dict[str, Any]) -> tuple[str, str]:
    """(subject, text) of a notice in ``language`` (English where that language has no template of
    this kind). Dates are written in the language's words."""
    try:
        template = get_template(f"{TEMPLATE_DIR}/{language}/{kind}.txt")
    except TemplateDoesNotExist:
        language = DEFAULT_LANGUAGE
        template = get_template(f"{TEMPLATE_DIR}/{language}/{kind}.txt")
    values = {k: _datetime(v) if k.endswith("_at") else v for k, v in context.items()}
    values["sender"] = settings.NOTICE_SENDER_NAME
    with translation.override(language):
        rendered = template.render(values).strip()
    subject, _, text = rendered.partition("\n")
    return subject.strip(), re.sub(r"\n{3,}", "\n\n", text.strip()) + "\n"


def _datetime(value):
    return datetime.fromisoformat(value) if isinstance(value, str) else value


# ---------------------------------------------------------------- delivery


def _enqueue(notice_id: int) -> None:
    # By name: the task module (deletion.tasks) imports this one.
    current_app.send_task(SEND_TASK, args=[notice_id], queue="default")


def notice_deliver(*, notice_id: int) -> str:
    """Send one notice: an e-mail (the address decrypted for this moment only) or a webhook to the
    requesting client. Raises NoticeNotSent (the task retries with backoff) while the mail server
    cannot take it, until MAX_ATTEMPTS; then, or at once for a permanent error, the notice fails.
    Once the person's last notice has ended, their address is destroyed."""
    notice = NoticeDelivery.objects.select_related("request", "request__created_by").get(pk=notice_id)
    if notice.status != PENDING:
        return notice.status
    # The attempt is recorded (and claimed: a redelivered task finds it taken) before anything is sent.
    if not NoticeDelivery.objects.filter(pk=notice.pk, status=PENDING, attempts=notice.attempts).update(
            attempts=F("attempts") + 1):
        return "claimed elsewhere"
    request = notice.request
    subject, text = notice_render(kind=notice.kind, language=notice.language, context=notice.context)
    final = True
    try:
        if notice.channel == EMAIL:
            _send_email(request, subject, text)
        else:
            _hand_off(request, notice, subject, text)
        error = ""
    except (KeyDestroyed, InvalidTag):
        error = "the address cannot be decrypted any more (its key was destroyed)"
    except smtplib.SMTPRecipientsRefused:
        error = "the mail server refused the address"
    except _NoReceiver as exc:
        error = str(exc)
    except OSError as exc:  # smtplib's errors are OSErrors too: the server may take it later
        error = f"{type(exc).__name__}: {exc}"[:1000]
        final = notice.attempts + 1 >= MAX_ATTEMPTS
    status = SENT if not error else (FAILED if final else PENDING)
    with transaction.atomic():
        NoticeDelivery.objects.filter(pk=notice.pk).update(status=status, last_error=error,
                                                           sent_at=timezone.now() if status == SENT else None)
        if status != PENDING:
            ledger_append(event_type=f"notice.{status}", actor="platform", request=str(request.public_id),
                          notice=notice.id, kind=notice.kind, channel=notice.channel, language=notice.language,
                          **({"error": error} if error else {}))
            if notice.channel == EMAIL:
                _forget_contact_when_done(request)
    if status == PENDING:
        raise NoticeNotSent(error)
    return status


def _send_email(request: DeletionRequest, subject: str, text: str) -> None:
    address = keystore().decrypt(request.contact_key_ref, bytes(request.contact_nonce),
                                 bytes(request.contact_ciphertext)).decode() if request.contact_key_ref else None
    if address is None:
        raise KeyDestroyed("the address was destroyed")
    EmailMessage(subject=subject, body=text, from_email=settings.DEFAULT_FROM_EMAIL, to=[address],
                 headers={"Auto-Submitted": "auto-generated"}).send()


class _NoReceiver(Exception):
    """A handoff with nowhere to go: the requesting client has no active webhook."""


def _client_endpoints(request: DeletionRequest):
    return WebhookEndpoint.objects.filter(client_id=request.created_by_id, active=True, recipient__isnull=True)


def _hand_off(request: DeletionRequest, notice: NoticeDelivery, subject: str, text: str) -> None:
    """The notice, as written, to the requesting client's webhooks (signed, retried there): its own
    request system tells the person. Nothing of the person's contact goes with it."""
    endpoints = list(_client_endpoints(request))
    if not endpoints:
        raise _NoReceiver("the requesting client has no active webhook to hand the notice to")
    payload = {"event": f"notice.{notice.kind}", "request": str(request.public_id), "status": request.status,
               "at": timezone.now().isoformat(),
               "notice": {"kind": notice.kind, "language": notice.language, "subject": subject, "text": text}}
    with transaction.atomic():
        for endpoint in endpoints:
            webhook_send(endpoint=endpoint, payload=payload)


def _forget_contact_when_done(request: DeletionRequest) -> None:
    """After the last notice (refusal, completion, cancellation) and no e-mail still pending, the
    person's address is destroyed."""
    emails = NoticeDelivery.objects.filter(request=request, channel=EMAIL)
    if emails.filter(kind__in=LAST_NOTICES).exists() and not emails.filter(status=PENDING).exists():
        contact_destroy(request=request)


# ---------------------------------------------------------------- recipients of model copies (Art. 19)


def model_recipient_register(*, actor: str, client, model_version: ModelVersion, name: str,
                             url: str) -> tuple[ModelRecipient, str]:
    """Register a recipient of a copy of ``model_version``, told through a webhook at ``url``
    (checked like every webhook target). Returns (recipient, its signing secret, shown once)."""
    if not name.strip():
        raise ValidationFailed("a name is required", field="name")
    endpoint, secret = webhook_register(client=client, url=url)
    recipient = ModelRecipient.objects.create(name=name.strip(), model_version=model_version, endpoint=endpoint,
                                              registered_by=actor)
    ledger_append(event_type="recipient.registered", actor=actor, recipient=recipient.id, name=recipient.name,
                  model_version=model_version.id, endpoint=endpoint.id)
    return recipient, secret


RECIPIENT_ACTIONS = {
    "replace": "Replace version {held} of {model} with version {new} (sha256 {sha}) and delete every copy of "
               "version {held} you hold: it was trained on data that has been erased.",
    "delete": "Stop using version {held} of {model} and delete every copy of it you hold: it was withdrawn from "
              "use (GDPR Art. 18) because it was trained on data that has been erased.",
}


def recipients_notify(*, request: DeletionRequest) -> list[NoticeDelivery]:
    """Tell every recipient of a copy of a version this request changed (a new version replaces it,
    or it was withdrawn) what to do, once per request: a signed webhook ``recipient.erasure_notice``.
    No person's identifiers go with it. Returns the notices queued."""
    notified = set(request.notices.filter(kind=NoticeKind.RECIPIENT_ERASURE).values_list("recipient_id", flat=True))
    notices = []
    outcomes = request.outcomes.filter(status__in=[OutcomeStatus.CONFIRMED, OutcomeStatus.WITHDRAWN]).select_related(
        "model_version__model", "new_version")
    for outcome in outcomes:
        held = outcome.model_version
        replaced = outcome.status == OutcomeStatus.CONFIRMED and outcome.new_version is not None
        action = "replace" if replaced else "delete"
        for recipient in (ModelRecipient.objects.filter(model_version=held, endpoint__active=True)
                          .exclude(pk__in=notified).select_related("endpoint")):
            fact = {"model": held.model.name, "version_held": held.version,
                    "new_version": outcome.new_version.version if replaced else None,
                    "new_artifact_sha256": outcome.new_version.artifact_sha256 if replaced else None,
                    "action": action, "erasure_confirmed": not (outcome.risk_acceptance or {}).get("confirmed_by")}
            what = RECIPIENT_ACTIONS[action].format(held=held.version, model=held.model.name,
                                                    new=fact["new_version"], sha=fact["new_artifact_sha256"])
            delivery = webhook_send(endpoint=recipient.endpoint, payload={
                "event": "recipient.erasure_notice", "request": str(request.public_id),
                "at": timezone.now().isoformat(), "recipient": recipient.name, **fact, "what_to_do": what})
            notice = NoticeDelivery.objects.create(
                request=request, kind=NoticeKind.RECIPIENT_ERASURE, channel=WEBHOOK, recipient=recipient,
                status=SENT, sent_at=timezone.now(),
                context={**fact, "recipient": recipient.name, "endpoint": recipient.endpoint_id,
                         "webhook_delivery": delivery.id})
            ledger_append(event_type="notice.sent", actor="platform", request=str(request.public_id),
                          notice=notice.id, kind=notice.kind, channel=WEBHOOK, recipient=recipient.id,
                          recipient_name=recipient.name, endpoint=recipient.endpoint_id, model_version=held.id,
                          action=action)
            notified.add(recipient.id)
            notices.append(notice)
    return notices


def recipients_notified(*, request: DeletionRequest) -> list[dict[str, Any]]:
    """For the report: who was told what (names and endpoint ids, never secrets or URLs)."""
    return [{"name": n.context["recipient"], "endpoint_id": n.context["endpoint"], "model": n.context["model"],
             "version_held": n.context["version_held"], "new_version": n.context["new_version"],
             "action": n.context["action"]}
            for n in request.notices.filter(kind=NoticeKind.RECIPIENT_ERASURE).order_by("id")]
