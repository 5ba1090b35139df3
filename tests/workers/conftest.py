"""Fixtures the worker tests share."""

from tests.company_sources import company_database  # noqa: F401 (the company's own PostgreSQL database)
from tests.workers.store_backends import store_backend  # noqa: F401 (both store backends)
