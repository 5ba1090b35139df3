"""Webhook targets cannot reach the platform's own network (issue 22, 6): a URL whose host is, or
resolves to, a loopback, private, link-local (cloud metadata), multicast or IPv4-mapped address is
refused when it is registered and when it is delivered to; a redirect to one is not followed; a
DNS answer that changes between the check and the connection is not used (the connection goes to
the checked address)."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from deletion import webhooks
from deletion.models import WebhookDelivery, WebhookEndpoint
from foundation import outbound

pytestmark = pytest.mark.django_db


class Server:
    """A receiver on ``host`` that answers ``status`` (with ``location`` for a redirect) and keeps
    what it received."""

    def __init__(self, host: str = "127.0.0.1", status: int = 200, location: str = ""):
        self.received = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                server.received.append(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = HTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.httpd.server_port}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


INTERNAL = [
    "http://127.0.0.1/hook", "http://localhost:8000/hook", "http://2130706433/hook",  # decimal 127.0.0.1
    "http://0x7f.0.0.1/hook", "http://0177.0.0.1/hook", "http://[::ffff:127.0.0.1]/hook",
    "http://[::ffff:a9fe:a9fe]/latest/meta-data", "http://169.254.169.254/latest/meta-data",
    "http://10.0.0.5/hook", "http://192.168.1.1/hook", "http://[::1]/hook", "http://224.0.0.1/hook",
    "http://0.0.0.0/hook", "http://100.64.0.1/hook",
]


@pytest.mark.parametrize("url", INTERNAL)
def test_an_internal_target_is_refused_when_it_is_registered(api_client_for, settings, url):
    settings.WEBHOOK_ALLOWED_NETWORKS = []
    response = api_client_for("intake").post("/api/v1/webhooks/", {"url": url}, format="json")
    assert response.status_code == 400, response.content
    # The numeric forms are already not URLs to the API's validator; the others resolve and are refused.
    assert response.json()["error"]["code"] in ("webhook_target_refused", "validation_failed")
    assert not WebhookEndpoint.objects.exists()
    # Whatever reaches a delivery (a URL kept from before, another way in) is judged by where it resolves.
    with pytest.raises(outbound.OutboundRefused, match="does not send to internal addresses"):
        outbound.target_of(url)


def _delivery_to(url: str) -> WebhookDelivery:
    from foundation.access.authentication import api_token_create

    token, _ = api_token_create(name="receiver", role="intake")
    endpoint = WebhookEndpoint.objects.create(client=token, url=url, secret="whsec_test")
    return WebhookDelivery.objects.create(endpoint=endpoint, event={"event": "request.cancelled"})


def test_a_target_that_became_internal_is_refused_at_delivery_without_a_retry(settings):
    receiver = Server()
    try:
        settings.WEBHOOK_ALLOWED_NETWORKS = []
        delivery = _delivery_to(receiver.url)  # registered while the operator allowed it, say
        assert webhooks.webhook_deliver(delivery_id=delivery.id) == "failed"
        delivery.refresh_from_db()
        assert delivery.last_error.startswith("refused: 127.0.0.1 resolves to 127.0.0.1: 127.0.0.1 is a loopback")
        assert receiver.received == []
    finally:
        receiver.close()


def test_a_redirect_to_an_internal_address_is_not_followed(settings):
    internal = Server(host="127.0.0.2")
    public = Server(status=302, location=internal.url)
    try:
        settings.WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.1/32"]  # the receiver's network, not 127.0.0.2
        delivery = _delivery_to(public.url)
        with pytest.raises(webhooks.DeliveryFailed, match=r"HTTP 302 \(redirects are not followed\)"):
            webhooks.webhook_deliver(delivery_id=delivery.id)
        assert len(public.received) == 1 and internal.received == []
    finally:
        public.close()
        internal.close()


def test_a_dns_answer_that_changes_after_the_check_is_not_connected_to(settings, monkeypatch):
    """The name first resolves to a public address (the check passes), then to 127.0.0.1 where a
    receiver waits: the request goes to the checked public address (unreachable here), never to the
    second answer."""
    receiver = Server()
    real = socket.getaddrinfo
    asked = []

    def rebinding(host, port, *args, **kwargs):
        if host == "hooks.rebind.example":
            asked.append(host)
            address = "93.184.216.34" if len(asked) == 1 else "127.0.0.1"
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    monkeypatch.setattr(webhooks, "TIMEOUT_SECONDS", 0.5)
    try:
        settings.WEBHOOK_ALLOWED_NETWORKS = []
        port = receiver.httpd.server_port
        delivery = _delivery_to(f"http://hooks.rebind.example:{port}/hook")
        with pytest.raises(webhooks.DeliveryFailed):
            webhooks.webhook_deliver(delivery_id=delivery.id)
        assert asked == ["hooks.rebind.example"] and receiver.received == []
        delivery.refresh_from_db()
        assert "93.184.216.34" in delivery.last_error, delivery.last_error
    finally:
        receiver.close()


def test_an_allowed_network_and_a_public_address_pass_the_check():
    allowed = outbound.networks(["10.20.0.0/16"])
    assert outbound.address_problem("10.20.3.4", allowed) is None
    assert outbound.address_problem("10.21.3.4", allowed) == "10.21.3.4 is a private address"
    assert outbound.address_problem("93.184.216.34") is None
    assert outbound.address_problem("::ffff:169.254.169.254").startswith("169.254.169.254 is a link-local")
