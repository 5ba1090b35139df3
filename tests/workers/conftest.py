"""Fixtures the worker tests share."""

from tests.company_sources import company_database  # noqa: F401 (the company's own PostgreSQL database)
