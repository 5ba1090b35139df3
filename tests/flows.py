"""Steps many tests take on the way to an audited deletion: run a job in-process, file an erasure
request for some records and take it to approval."""

from __future__ import annotations

from collections.abc import Iterable

from deletion import decisions, intake
from workers.jobs import job_execute
from workers.models import Job

EVIDENCE = {"method": "email-link", "verified_at": "2026-11-20T10:00:00Z", "verifier": "support"}


def run_job(job: Job) -> Job:
    """Run ``job`` here and now; it must succeed (its error is the assertion's message)."""
    assert job_execute(job_id=job.id) == "succeeded", Job.objects.get(pk=job.id).error
    job.refresh_from_db()
    return job


def approved_request(records: Iterable, **approve):
    """An erasure request for ``records`` (DataRecord rows), verified and approved (``approve``:
    ``holds``, ``methods`` for deletion_request_approve)."""
    records = list(records)
    request, _ = intake.deletion_request_create(client=None, body={
        "identifiers": {}, "record_keys": [{"dataset": f"{r.dataset.name}@{r.dataset.version}",
                                            "record_key": r.external_key} for r in records],
        "jurisdiction": "GDPR", "legal_ground": "art17_1_b", "channel": "test"})
    request = decisions.deletion_request_verify(request=request, actor="tests", evidence=EVIDENCE)
    return decisions.deletion_request_approve(request=request, actor="tests", **approve)
