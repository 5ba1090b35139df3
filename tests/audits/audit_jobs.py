"""Helpers of the audit tests that run jobs in the test process."""

from __future__ import annotations

from workers.jobs import job_execute
from workers.models import Job


def run(job: Job) -> Job:
    """Run ``job`` here; it must succeed (its error is the assertion's message)."""
    assert job_execute(job_id=job.id) == "succeeded", Job.objects.get(pk=job.id).error
    job.refresh_from_db()
    return job


def check(audit: dict, name: str) -> dict:
    """The result of check ``name`` in an audit's JSON."""
    return next(c for c in audit["checks"] if c["check"] == name)
