"""Webhooks: request state changes POSTed to clients' callback URLs, signed and retried.

Signature header: ``X-Deletion-Signature: t=<unix time>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``;
a receiver recomputes it and rejects old timestamps, as with Stripe's scheme.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

import urllib3
from celery import current_app
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from deletion.models import DeletionRequest, WebhookDelivery, WebhookEndpoint
from foundation import outbound
from foundation.access.models import ApiToken
from foundation.errors import ValidationFailed
from foundation.strict_json import canonical_json

MAX_ATTEMPTS = 8
# WebhookDelivery.status: pending until delivered, or failed after MAX_ATTEMPTS.
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
DELIVER_TASK = "deletion.deliver_webhook"
TIMEOUT_SECONDS = 10


def allowed_networks():
    return outbound.networks(settings.WEBHOOK_ALLOWED_NETWORKS)


def webhook_register(*, client: ApiToken, url: str) -> tuple[WebhookEndpoint, str]:
    """Register a callback URL; refused when it is not http(s) or its host resolves to an internal
    address now (it is checked again, and pinned, at every delivery: foundation.outbound). A name
    that does not resolve yet is accepted: its deliveries fail until it does."""
    if not url.startswith(("https://", "http://")):
        raise ValidationFailed("url must be http(s)", field="url")
    try:
        outbound.target_of(url, allowed=allowed_networks())
    except outbound.OutboundRefused as exc:
        raise ValidationFailed(str(exc), field="url", code="webhook_target_refused") from None
    except (OSError, UnicodeError):
        pass
    secret = "whsec_" + secrets.token_urlsafe(32)
    return WebhookEndpoint.objects.create(client=client, url=url, secret=secret), secret


def sign(secret: str, body: bytes, timestamp: int) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(secret: str, body: bytes, header: str, *, tolerance: int = 300) -> bool:
    """What a receiver does; used by the tests and offered to clients as reference code."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs(time.time() - timestamp) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, body, timestamp), header)


# Who hears what: request events go to the clients that may read the request (intake only its
# own); deployment events go to the serving side (ml_engineer) and the DPO.
AUDIENCES = {"requests": ("intake", "dpo", "auditor"), "serving": ("ml_engineer", "dpo")}


def webhooks_notify(*, request: DeletionRequest, event: str, audience: str = "requests", **data) -> None:
    """Queue a delivery to every active endpoint of ``audience`` whose client may see ``request``
    (after commit). ``data`` (plain JSON values) is added to the payload, e.g. the model version
    an event is about."""
    # A recipient's endpoint (Art. 19, deletion.notices) hears only its own erasure notices.
    endpoints = WebhookEndpoint.objects.filter(active=True, recipient__isnull=True).select_related("client")
    payload = {"event": event, "request": str(request.public_id), "status": request.status,
               "at": timezone.now().isoformat(), **data}
    for endpoint in endpoints:
        role = endpoint.client.role
        if endpoint.client.revoked_at or role not in AUDIENCES[audience]:
            continue
        if role == "intake" and request.created_by_id != endpoint.client_id:
            continue
        delivery = WebhookDelivery.objects.create(endpoint=endpoint, event=payload)
        transaction.on_commit(lambda d=delivery.id: _enqueue(d))


def webhook_send(*, endpoint: WebhookEndpoint, payload: dict) -> WebhookDelivery:
    """Queue one signed delivery of ``payload`` to ``endpoint`` alone (after commit), e.g. the
    external-retrain job to the company's pipeline. A credential in it (``payload["upload"]["token"]``)
    is forgotten once the delivery ends (:func:`webhook_deliver`)."""
    delivery = WebhookDelivery.objects.create(endpoint=endpoint, event=payload)
    transaction.on_commit(lambda: _enqueue(delivery.id))
    return delivery


def _without_credentials(event: dict) -> dict:
    """The event as kept after its delivery ended: an upload token it carried is redacted (only the
    receiver needed it; the platform keeps its hash)."""
    upload = event.get("upload")
    if not isinstance(upload, dict) or "token" not in upload:
        return event
    return {**event, "upload": {**upload, "token": "(redacted once the delivery ended)"}}


def _enqueue(delivery_id: int) -> None:
    # By name: the task module (deletion.tasks) imports this one.
    current_app.send_task(DELIVER_TASK, args=[delivery_id], queue="default")


class DeliveryFailed(Exception):
    """A delivery that may succeed later (unreachable, timed out, not 2xx): the task retries it."""


def webhook_deliver(*, delivery_id: int) -> str:
    """POST one delivery; raises DeliveryFailed (so the task retries with backoff) until
    MAX_ATTEMPTS, then marks it failed."""
    delivery = WebhookDelivery.objects.select_related("endpoint").get(pk=delivery_id)
    if delivery.status != PENDING:
        return delivery.status
    body = canonical_json(delivery.event).encode()
    header = sign(delivery.endpoint.secret, body, int(time.time()))
    WebhookDelivery.objects.filter(pk=delivery_id).update(attempts=delivery.attempts + 1)
    try:
        status_code = outbound.post_pinned(delivery.endpoint.url, body=body, timeout=TIMEOUT_SECONDS,
                                           headers={"Content-Type": "application/json", "X-Deletion-Signature": header},
                                           allowed=allowed_networks())
        if 200 <= status_code < 300:
            WebhookDelivery.objects.filter(pk=delivery_id).update(status=DELIVERED, delivered_at=timezone.now(),
                                                                  last_error="",
                                                                  event=_without_credentials(delivery.event))
            return DELIVERED
        error = f"HTTP {status_code}" + (" (redirects are not followed)" if 300 <= status_code < 400 else "")
        final = delivery.attempts + 1 >= MAX_ATTEMPTS
    except outbound.OutboundRefused as exc:  # the target is the problem, not the moment: no retry
        error, final = f"refused: {exc}"[:1000], True
    except (urllib3.exceptions.HTTPError, OSError, UnicodeError) as exc:
        error = f"{type(exc).__name__}: {exc}"[:1000]
        final = delivery.attempts + 1 >= MAX_ATTEMPTS
    WebhookDelivery.objects.filter(pk=delivery_id).update(
        last_error=error, status=FAILED if final else PENDING,
        **({"event": _without_credentials(delivery.event)} if final else {}))
    if final:
        return FAILED
    raise DeliveryFailed(error)
