"""A worker whose claim the sweeper released, and another worker took, may not write the job's end:
its finish is refused (ClaimLost, logged), its outcome dropped, and the new holder's result stays.
Two claimants on real PostgreSQL, each on its own connection (a thread each)."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from foundation.registry import Hooks
from workers import jobs
from workers.models import Job, JobKind, JobStatus

pytestmark = pytest.mark.django_db(transaction=True)  # each claimant has its own connection


@pytest.fixture
def engine(monkeypatch, settings):
    """Identities by thread name, a stale period the test can pass, no broker, and heard hooks."""
    settings.JOB_STALE_AFTER_SECONDS = 60
    monkeypatch.setattr(jobs, "worker_identity", lambda: f"{threading.current_thread().name}:1")
    monkeypatch.setattr(jobs, "job_enqueue", lambda **kw: None)
    heard: list[int] = []
    monkeypatch.setattr(jobs, "JOB_FINISHED", Hooks("job-finished hook"))
    jobs.JOB_FINISHED.add(heard.append)
    monkeypatch.setattr(jobs, "JOB_RUNNERS", type(jobs.JOB_RUNNERS)("job runner"))
    return heard


def _sweep_later() -> list[int]:
    """The sweeper, an hour on: every running claim looks dead."""
    return jobs.jobs_sweep_stale(now=timezone.now() + timedelta(hours=1))


def _in_thread(name: str, work):
    """Run ``work`` as worker ``name`` on a connection of its own; its return value or exception."""
    box: dict = {}

    def run():
        try:
            box["value"] = work()
        except BaseException as exc:  # handed back to the test
            box["error"] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=run, name=name)
    thread.start()
    return thread, box


def test_a_released_worker_cannot_overwrite_the_new_holders_result(engine, caplog):
    job = jobs.job_create(kind=JobKind.SHADOW, enqueue=False)
    running, go_on = threading.Event(), threading.Event()

    def slow_runner(job, progress):  # worker A: stalls long enough to be taken for dead
        running.set()
        assert go_on.wait(30)
        return {"from": "host-a"}

    jobs.JOB_RUNNERS.register(JobKind.SHADOW)(slow_runner)
    worker_a, outcome_a = _in_thread("host-a", lambda: jobs.job_execute(job_id=job.id))
    assert running.wait(30)

    assert _sweep_later() == [job.id]  # A's claim released
    claimed, finish_b = threading.Event(), threading.Event()

    def worker_b_runs():  # B claims the job and is still running it when A comes back
        assert jobs.job_claim(job_id=job.id)
        claimed.set()
        assert finish_b.wait(30)
        jobs.job_finish(job_id=job.id, claim=jobs.job_claim_token(Job.objects.get(pk=job.id)),
                        status=JobStatus.SUCCEEDED, started=0.0, result={"from": "host-b"})
        return "finished"

    worker_b, outcome_b = _in_thread("host-b", worker_b_runs)
    assert claimed.wait(30)

    with caplog.at_level(logging.WARNING, logger="workers.jobs"):
        go_on.set()
        worker_a.join(30)

    assert outcome_a == {"value": "claim lost"}
    job.refresh_from_db()  # B's claim and run are untouched by A's end
    assert (job.status, job.result, job.claimed_by, job.attempts) == ("running", {}, "host-b:1", 2)
    refusal = next(r.getMessage() for r in caplog.records if "no longer holds its claim" in r.getMessage())
    assert "host-a:1 (attempt 1)" in refusal and "claimed by host-b:1 (attempt 2)" in refusal
    assert engine == []  # A told no one the job ended: B's end is the job's

    finish_b.set()
    worker_b.join(30)
    assert outcome_b == {"value": "finished"}
    job.refresh_from_db()
    assert (job.status, job.result) == ("succeeded", {"from": "host-b"})

def test_a_stale_claim_of_the_same_worker_is_refused_and_cannot_defer_the_live_one(engine):
    job = jobs.job_create(kind=JobKind.SHADOW, enqueue=False)
    assert jobs.job_claim(job_id=job.id)
    first = jobs.job_claim_token(Job.objects.get(pk=job.id))
    assert _sweep_later() == [job.id]
    assert jobs.job_claim(job_id=job.id)  # the same process claims it again: a new attempt
    second = jobs.job_claim_token(Job.objects.get(pk=job.id))
    assert first.claimed_by == second.claimed_by and second.attempt == first.attempt + 1

    with pytest.raises(jobs.ClaimLost, match="attempt 1"):
        jobs.job_finish(job_id=job.id, claim=first, status=JobStatus.FAILED, started=0.0, error="stale")
    jobs._defer(job.id, first, jobs.JobDeferred("waits"))
    assert Job.objects.get(pk=job.id).status == JobStatus.RUNNING  # the live claim is untouched

    jobs.job_finish(job_id=job.id, claim=second, status=JobStatus.SUCCEEDED, started=0.0, result={"ok": 1})
    job.refresh_from_db()
    assert (job.status, job.result, job.error) == ("succeeded", {"ok": 1}, "")
    with pytest.raises(jobs.ClaimLost, match="the job is succeeded"):  # an ended job is not finished twice
        jobs.job_finish(job_id=job.id, claim=second, status=JobStatus.FAILED, started=0.0)
