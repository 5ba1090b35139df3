"""A live worker's claim does not go stale in a long step that reports no progress: its heartbeat
thread keeps writing (the multi-host test saw the sweeper hand a running audit to a second worker)."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from workers.jobs import ClaimHeartbeat, jobs_sweep_stale
from workers.models import Job, JobStatus

pytestmark = pytest.mark.django_db(transaction=True)  # the heartbeat thread has its own connection


def _running_job(claimed_by: str) -> Job:
    old = timezone.now() - timedelta(hours=1)
    return Job.objects.create(kind="audit", queue="audit", status=JobStatus.RUNNING, claimed_by=claimed_by,
                              claimed_at=old, heartbeat_at=old)


def test_a_running_claim_keeps_its_heartbeat_and_is_not_swept(settings, monkeypatch):
    settings.JOB_STALE_AFTER_SECONDS = 5
    monkeypatch.setattr("workers.jobs.job_enqueue", lambda **kw: None)
    job = _running_job("host-a:1")
    with ClaimHeartbeat(job.id, "host-a:1", every=0.05):
        time.sleep(0.5)  # a step without progress writes
        assert jobs_sweep_stale() == []
    job.refresh_from_db()
    assert job.status == JobStatus.RUNNING and timezone.now() - job.heartbeat_at < timedelta(seconds=5)


def test_the_heartbeat_writes_nothing_once_the_claim_is_someone_elses(settings, monkeypatch):
    monkeypatch.setattr("workers.jobs.job_enqueue", lambda **kw: None)
    job = _running_job("host-b:2")
    before = job.heartbeat_at
    with ClaimHeartbeat(job.id, "host-a:1", every=0.05):
        time.sleep(0.3)
    job.refresh_from_db()
    assert job.heartbeat_at == before
    # And a claim whose worker died (no heartbeat) is released as before.
    settings.JOB_STALE_AFTER_SECONDS = 5
    assert jobs_sweep_stale() == [job.id]


def test_a_released_job_whose_message_is_lost_again_is_sent_again(settings, monkeypatch):
    """A job released after its worker died is re-sent; if that message is lost too (the worker
    that took it was killed before acknowledging), a later sweep sends it again (it never did:
    the release kept claimed_at, which the pending-job pass skips)."""
    sent = []
    monkeypatch.setattr("workers.jobs.job_enqueue", lambda **kw: sent.append(kw["job_id"]))
    settings.JOB_STALE_AFTER_SECONDS = 5
    job = _running_job("dead-host:1")
    assert jobs_sweep_stale() == [job.id] and sent == [job.id]
    later = timezone.now() + timedelta(seconds=6)
    assert jobs_sweep_stale(now=later) == [job.id] and sent == [job.id, job.id]
