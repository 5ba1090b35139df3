"""Every API endpoint x every role (and an anonymous client), generated from the URL conf: a new
endpoint that is not in EXPECTED fails this test until someone decides who may call it."""

import re
import uuid

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

pytestmark = pytest.mark.django_db

ROLES = ("intake", "dpo", "ml_engineer", "auditor")
ALL = set(ROLES)
# url name -> method -> roles allowed past authorisation (others: 403; anonymous: 401).
EXPECTED = {
    "datasets": {"get": {"ml_engineer", "dpo", "auditor"}, "post": {"ml_engineer"}},
    "dataset-records-import": {"post": {"ml_engineer"}},
    "dataset-source-import": {"post": {"ml_engineer"}},
    "training-runs": {"post": {"ml_engineer"}},
    "training-membership-import": {"post": {"ml_engineer"}},
    "membership-uploads": {"post": {"ml_engineer"}},
    "membership-upload": {"get": {"ml_engineer", "dpo", "auditor"}},
    "membership-upload-chunk": {"put": {"ml_engineer"}},
    "membership-upload-complete": {"post": {"ml_engineer"}},
    "models": {"get": {"ml_engineer", "dpo", "auditor"}, "post": {"ml_engineer"}},
    "model-version-upload": {"post": {"ml_engineer"}},
    "upload-check": {"get": {"ml_engineer", "dpo", "auditor"}},
    "training-jobs": {"post": {"ml_engineer"}},
    "shadow-jobs": {"post": {"ml_engineer", "auditor"}},  # the audits' reference: auditors may ask for it
    "job": {"get": {"ml_engineer", "dpo", "auditor"}},
    "job-cancel": {"post": {"ml_engineer", "auditor", "dpo"}},  # who may start the job's kind; a request's: the dpo
    "mlflow-imports": {"post": {"ml_engineer"}},
    "mlflow-syncs": {"get": {"ml_engineer", "dpo", "auditor"}},
    "mlflow-sync-retry": {"post": {"ml_engineer"}},
    "deletion-requests": {"get": {"intake", "dpo", "auditor"}, "post": {"intake", "dpo"}},
    "deletion-request": {"get": {"intake", "dpo", "auditor"}},
    # "Stop using attribute X": filed by the DPO or a client's API (read through deletion-request).
    "concept-requests": {"post": {"intake", "dpo"}},
    **{f"deletion-request-{action}": {"post": {"dpo"}}
       for action in ("verify", "approve", "reject", "extend", "cancel", "withdraw", "escalate", "accept-risk")},
    "deletion-request-confirm": {"post": {"dpo", "ml_engineer"}},
    "deployments-pending": {"get": {"ml_engineer", "dpo"}},
    "webhooks": {"get": ALL, "post": ALL},
    "webhook": {"delete": ALL},
    # Recipients of model copies (GDPR Art. 19): registered by the DPO or an ML engineer.
    "model-recipients": {"get": {"dpo", "ml_engineer", "auditor"}, "post": {"dpo", "ml_engineer"}},
    "model-recipient": {"delete": {"dpo", "ml_engineer"}},
    "report": {"get": {"dpo", "auditor"}},
    "report-pdf": {"get": {"dpo", "auditor"}},
    # Opened by the upload token of an external-retrain job only: an API token of any role is a 403,
    # no credential a 401 (tests/deletion/test_external_retrain.py sends the tokens that do and do not).
    "external-retrain-upload": {"post": set()},
}
PUBLIC = {"schema", "api-docs"}


def _api_patterns(patterns=None, prefix=""):
    for entry in patterns if patterns is not None else get_resolver().url_patterns:
        if isinstance(entry, URLResolver):
            yield from _api_patterns(entry.url_patterns, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern) and (prefix + str(entry.pattern)).startswith("api/"):
            yield prefix + str(entry.pattern), entry


def _concrete(route: str) -> str:
    route = re.sub(r"<uuid:\w+>", str(uuid.uuid4()), route)
    route = re.sub(r"<int:\w+>", "999999", route)
    route = re.sub(r"<str:\w+>", "no-such-name", route)
    return "/" + route


def _methods(view) -> list[str]:
    cls = getattr(view, "view_class", None) or getattr(view, "cls", None)
    return [m for m in ("get", "post", "put", "patch", "delete") if cls and hasattr(cls, m)]


def test_every_api_endpoint_is_in_the_matrix():
    names = {pattern.name for _, pattern in _api_patterns()} - PUBLIC
    assert names - set(EXPECTED) == set(), "new endpoint(s): decide who may call them in EXPECTED"
    for _, pattern in _api_patterns():
        if pattern.name in EXPECTED:
            assert set(_methods(pattern.callback)) == set(EXPECTED[pattern.name]), pattern.name


def test_every_endpoint_against_every_role(api_client_for):
    from rest_framework.test import APIClient

    clients = {role: api_client_for(role) for role in ROLES}
    clients["anonymous"] = APIClient()
    checked = 0
    for route, pattern in _api_patterns():
        if pattern.name in PUBLIC:
            continue
        url = _concrete(route)
        for method, allowed in EXPECTED[pattern.name].items():
            for role, client in clients.items():
                response = getattr(client, method)(url, {}, format="json")
                checked += 1
                if role == "anonymous":
                    assert response.status_code == 401, (method, url, role, response.status_code)
                elif role in allowed:
                    assert response.status_code not in (401, 403), (method, url, role, response.content[:200])
                else:
                    assert response.status_code == 403, (method, url, role, response.status_code)
                assert response.status_code < 500, (method, url, role)
    assert checked >= 5 * 20


def test_intake_is_rate_limited(api_client_for, settings):
    from django.core.cache import cache

    cache.clear()
    from deletion.throttling import IntakeThrottle

    IntakeThrottle.THROTTLE_RATES = {"intake": "3/minute"}
    try:
        client = api_client_for("intake")
        body = {"identifiers": {"email": "a@example.org"}, "jurisdiction": "GDPR", "legal_ground": "art17_1_a",
                "channel": "web"}
        codes = [client.post("/api/v1/deletion-requests/", body, format="json", HTTP_IDEMPOTENCY_KEY=str(i)).status_code
                 for i in range(5)]
    finally:
        IntakeThrottle.THROTTLE_RATES = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]
        cache.clear()
    assert codes[:3] == [201, 201, 201] and codes[3:] == [429, 429]


def test_check_deploy_is_clean_under_production_settings():
    import os
    import secrets
    import subprocess
    import sys

    env = {**os.environ, "DJANGO_DEBUG": "false", "SECRET_KEY": secrets.token_urlsafe(50),
           "SUBJECT_PEPPER": "p" * 40, "RECORD_KEK": "k" * 40, "CONTENT_FINGERPRINT_KEY": "c" * 40,
           "ALLOWED_HOSTS": "platform.example.org"}
    result = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
