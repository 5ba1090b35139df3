"""Shared test set-up: the real PostgreSQL and Redis (embedded unless DATABASE_URL and
CELERY_BROKER_URL are set), and a small cast of factories."""

from __future__ import annotations

import os

import pytest

from tests.s3_server import s3_server  # noqa: F401 (moto's S3 server, one per session, started on first use)
from tests.workers.store_backends import keystore_database_url  # noqa: F401 (the keystore's own database)


def pytest_configure(config):
    if not config.pluginmanager.hasplugin("django"):
        return
    if not os.environ.get("DATABASE_URL") or not os.environ.get("CELERY_BROKER_URL"):
        from deletion_platform import embedded

        embedded.ensure_running()


def _django_settings(request):
    """pytest-django's ``settings`` fixture, or None in a run without Django (-p no:django: the
    pure ML and audit-check tests)."""
    if not request.config.pluginmanager.hasplugin("django"):
        return None
    return request.getfixturevalue("settings")


@pytest.fixture(autouse=True)
def _isolated_stores(request, tmp_path):
    """Artifacts, datasets and reports of a test go to its own temporary folder."""
    settings = _django_settings(request)
    if settings is not None:
        settings.ARTIFACT_ROOT = tmp_path / "artifacts"
        settings.DATASET_ROOT = tmp_path / "datasets"
        settings.REPORT_ROOT = tmp_path / "reports"


@pytest.fixture
def api_client_for(db):
    """``api_client_for("dpo")`` -> an APIClient authenticated with a fresh token of that role, a
    service client's (bound to no one). ``user="alice"``: the token is bound to that user (created,
    active and in the role's staff group, where there is none), the person decisions count; its
    name is then the user's unless ``name`` is given."""
    from rest_framework.test import APIClient

    from foundation.access.authentication import api_token_create
    from tests.factories import staff_user

    def make(role: str, name: str | None = None, *, user: str | None = None) -> APIClient:
        if user is not None:
            staff_user(user, role=role)
        _, token = api_token_create(name=name or user or f"{role}-client", role=role, user=user)
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
        client.token_value = token
        return client

    return make


@pytest.fixture
def celery_worker_process(transactional_db, tmp_path):
    """A real `celery worker` subprocess on the test broker and the test database."""
    from tests.worker_process import WorkerProcess, purge_broker

    purge_broker()
    worker = WorkerProcess(tmp_path / "worker.log").start()
    yield worker
    worker.stop()


def pytest_collection_modifyitems(config, items):
    """Tests marked slow run only with RUN_SLOW=1 (they load the pretrained SmolLM2, etc.)."""
    if os.environ.get("RUN_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow; set RUN_SLOW=1 to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _isolated_keystore(request, tmp_path):
    settings = _django_settings(request)
    if settings is not None:
        settings.KEYSTORE_DIR = tmp_path / "keystore"


def pytest_terminal_summary(terminalreporter):
    """Print the fuzz run's count of cases (make test's output shows how much was fuzzed)."""
    import sys

    fuzz = sys.modules.get("tests.api.test_fuzz_schema")
    uploads = sys.modules.get("tests.api.test_fuzz_uploads")
    for line in (fuzz.fuzz_summary() if fuzz else None, uploads.upload_fuzz_summary() if uploads else None):
        if line:
            terminalreporter.write_line(line)


@pytest.fixture
def one_torch_thread():
    """torch on one thread for the test (small models: threads cost more than they give, and two
    test processes may share the machine's cores)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
