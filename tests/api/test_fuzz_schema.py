"""Schemathesis against /api/schema/: every operation, a bounded number of generated cases each,
authenticated with the role that may call it. No response may be a 5xx. The count of cases run
is printed at the end (FUZZ_MAX_EXAMPLES sets the bound per operation; `make reliability` raises it)."""

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "15"))
CASES_RUN = {"count": 0, "operations": set()}
REGISTRY_PATHS = ("/api/v1/datasets", "/api/v1/training-runs", "/api/v1/models", "/api/v1/training-jobs",
                  "/api/v1/shadow-jobs", "/api/v1/jobs", "/api/v1/membership-uploads",
                  "/api/v1/mlflow")


def _load_schema():
    from deletion_platform.wsgi import application

    return schemathesis.openapi.from_wsgi("/api/schema/", application)


schema = _load_schema()


@pytest.fixture(autouse=True)
def _keep_test_connection():
    """As Django's test client does: a request must not close the test transaction's connection."""
    from django.core import signals
    from django.db import close_old_connections

    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def role_tokens(db):
    from foundation.access.authentication import api_token_create
    from tests.factories import staff_user

    # Bound to people, as a DPO's console token is: decisions that need a person get past that check.
    return {role: api_token_create(name=f"fuzz-{role}", role=role, user=staff_user(f"fuzz-{role}", role=role).username)[1]
            for role in ("dpo", "ml_engineer")}


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_no_operation_answers_5xx(case, role_tokens, db):
    role = "ml_engineer" if case.path.startswith(REGISTRY_PATHS) else "dpo"
    case.headers = {**(case.headers or {}), "Authorization": f"Bearer {role_tokens[role]}"}
    response = case.call()
    CASES_RUN["count"] += 1
    CASES_RUN["operations"].add(case.operation.label)
    assert response.status_code < 500, f"{case.method} {case.path} -> {response.status_code}: {response.text[:500]}"
    if response.status_code >= 400 and response.headers.get("Content-Type", "").startswith("application/json"):
        assert "error" in response.json(), response.text[:300]


def fuzz_summary() -> str | None:
    """The line tests/conftest.py prints at the end of the run."""
    if not CASES_RUN["count"]:
        return None
    return (f"schemathesis: {CASES_RUN['count']} cases run over {len(CASES_RUN['operations'])} operations "
            f"(at most {MAX_EXAMPLES} per operation), no 5xx")
