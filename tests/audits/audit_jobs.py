"""Helpers of the audit tests that read an audit's JSON (jobs run with tests.flows.run_job)."""

from __future__ import annotations

import re


def check(audit: dict, name: str) -> dict:
    """The result of check ``name`` in an audit's JSON."""
    return next(c for c in audit["checks"] if c["check"] == name)


def fix_shadow_halves(monkeypatch, *, halves_of: int) -> None:
    """Shadow halves as if the version's id were ``halves_of``: they are hashed from the version id,
    which depends on what ran before in the test database. Canary keys name their training job
    (``canary-j<job>-NNNN``) and are hashed without it, so that they too fall the same way."""
    from workers.runners import shadow

    halves = shadow.shadow_half

    def fixed(keys, *, version_id, index):
        alias = {re.sub(r"^canary-j\d+-", "canary-", key): key for key in keys}
        return sorted(alias[key] for key in halves(sorted(alias), version_id=halves_of, index=index))

    monkeypatch.setattr(shadow, "shadow_half", fixed)
