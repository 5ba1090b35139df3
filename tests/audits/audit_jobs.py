"""Helpers of the audit tests that read an audit's JSON (jobs run with tests.flows.run_job)."""

from __future__ import annotations


def check(audit: dict, name: str) -> dict:
    """The result of check ``name`` in an audit's JSON."""
    return next(c for c in audit["checks"] if c["check"] == name)
