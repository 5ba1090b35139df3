"""Shared test set-up: the real PostgreSQL and Redis (embedded unless DATABASE_URL and
CELERY_BROKER_URL are set), and a small cast of factories."""

from __future__ import annotations

import os

import pytest


def pytest_configure(config):
    if not os.environ.get("DATABASE_URL") or not os.environ.get("CELERY_BROKER_URL"):
        from deletion_platform import embedded

        embedded.ensure_running()


@pytest.fixture(autouse=True)
def _isolated_stores(settings, tmp_path):
    """Artifacts, datasets and reports of a test go to its own temporary folder."""
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    settings.DATASET_ROOT = tmp_path / "datasets"
    settings.REPORT_ROOT = tmp_path / "reports"
