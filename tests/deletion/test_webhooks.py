"""Webhooks: signed POSTs of state changes, retried when the receiver fails."""

import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from deletion.models import WebhookDelivery
from deletion.webhooks import DeliveryFailed, verify_signature, webhook_deliver

pytestmark = pytest.mark.django_db


class Receiver:
    def __init__(self, status_code=200):
        self.received, self.status_code = [], status_code
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append((body, self.headers["X-Deletion-Signature"]))
                self.send_response(receiver.status_code)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def _register(client, url):
    response = client.post("/api/v1/webhooks/", {"url": url}, format="json")
    assert response.status_code == 201, response.content
    return response.json()["secret"]


def test_state_change_is_delivered_signed(api_client_for, receiver):
    intake = api_client_for("intake")
    secret = _register(intake, receiver.url)
    created = intake.post("/api/v1/deletion-requests/", {"identifiers": {"email": "a@example.org"},
                                                         "jurisdiction": "GDPR", "legal_ground": "art17_1_a",
                                                         "channel": "web"}, format="json").json()
    dpo = api_client_for("dpo")
    dpo.post(f"/api/v1/deletion-requests/{created['id']}/cancel/", {"reason": "duplicate"}, format="json")
    delivery = WebhookDelivery.objects.get()
    assert webhook_deliver(delivery_id=delivery.id) == "delivered"
    body, header = receiver.received[0]
    assert verify_signature(secret, body, header)
    assert not verify_signature(secret, body.replace(b"CANCELLED", b"COMPLETED"), header)
    assert not verify_signature("whsec_wrong", body, header)
    assert b'"status":"CANCELLED"' in body and created["id"].encode() in body


def test_other_intake_clients_get_nothing(api_client_for, receiver):
    _register(api_client_for("intake", "bob"), receiver.url)
    alice = api_client_for("intake", "alice")
    created = alice.post("/api/v1/deletion-requests/", {"identifiers": {"email": "a@example.org"},
                                                        "jurisdiction": "GDPR", "legal_ground": "art17_1_a",
                                                        "channel": "web"}, format="json").json()
    api_client_for("dpo").post(f"/api/v1/deletion-requests/{created['id']}/cancel/", {}, format="json")
    assert not WebhookDelivery.objects.exists()


def test_failing_receiver_is_retried_then_marked_failed(api_client_for):
    failing = Receiver(status_code=500)
    try:
        dpo = api_client_for("dpo")
        _register(dpo, failing.url)
        created = dpo.post("/api/v1/deletion-requests/", {"identifiers": {"email": "a@example.org"},
                                                          "jurisdiction": "GDPR", "legal_ground": "art17_1_a",
                                                          "channel": "web"}, format="json").json()
        dpo.post(f"/api/v1/deletion-requests/{created['id']}/cancel/", {}, format="json")
        delivery = WebhookDelivery.objects.get()
        from deletion.webhooks import MAX_ATTEMPTS

        for _ in range(MAX_ATTEMPTS - 1):
            with pytest.raises(DeliveryFailed, match="HTTP 500"):
                webhook_deliver(delivery_id=delivery.id)
        assert webhook_deliver(delivery_id=delivery.id) == "failed"
        delivery.refresh_from_db()
        assert delivery.attempts == MAX_ATTEMPTS and len(failing.received) == MAX_ATTEMPTS
    finally:
        failing.close()


def test_the_task_retries_only_failed_deliveries_and_stops_where_the_row_does(monkeypatch):
    from deletion import tasks, webhooks

    calls = []

    def bug(*, delivery_id):
        calls.append(delivery_id)
        raise ValueError("a bug, not a delivery that may succeed later")

    monkeypatch.setattr(webhooks, "webhook_deliver", bug)
    result = tasks.deliver_webhook.apply(args=[1])
    assert result.failed() and isinstance(result.result, ValueError) and calls == [1]  # not retried

    def unreachable(*, delivery_id):
        calls.append(delivery_id)
        raise DeliveryFailed("ConnectionError: refused")

    calls.clear()
    monkeypatch.setattr(webhooks, "webhook_deliver", unreachable)
    result = tasks.deliver_webhook.apply(args=[2])
    assert result.failed() and len(calls) == webhooks.MAX_ATTEMPTS  # the delivery row's limit, no more
