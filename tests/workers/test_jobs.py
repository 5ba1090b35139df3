"""Job lifecycle without a worker: claim, cancel, sweep."""

from datetime import timedelta

import pytest
from django.utils import timezone

from foundation.errors import Conflict
from workers import jobs
from workers.models import Job

pytestmark = pytest.mark.django_db


@pytest.fixture
def sent(monkeypatch):
    calls = []
    monkeypatch.setattr(jobs, "job_enqueue", lambda *, job_id, countdown=0: calls.append(job_id))
    return calls


def test_claim_once_then_refused():
    job = jobs.job_create(kind="unlearn", enqueue=False)
    assert jobs.job_claim(job_id=job.pk) is True
    assert jobs.job_claim(job_id=job.pk) is False
    job.refresh_from_db()
    assert job.status == "running" and job.attempts == 1 and job.claimed_by


def test_cancel_pending_and_ended(sent):
    job = jobs.job_create(kind="unlearn", enqueue=False)
    assert jobs.job_cancel(job=job).status == "cancelled"
    assert jobs.job_claim(job_id=job.pk) is False
    with pytest.raises(Conflict):
        jobs.job_cancel(job=job)


def test_sweeper_requeues_lost_running_and_lost_pending_jobs(settings, sent):
    settings.JOB_STALE_AFTER_SECONDS = 60
    now = timezone.now()
    lost_worker = jobs.job_create(kind="unlearn", enqueue=False)
    jobs.job_claim(job_id=lost_worker.pk)
    Job.objects.filter(pk=lost_worker.pk).update(heartbeat_at=now - timedelta(minutes=5))
    alive = jobs.job_create(kind="unlearn", enqueue=False)
    jobs.job_claim(job_id=alive.pk)
    lost_message = jobs.job_create(kind="unlearn", enqueue=False)
    Job.objects.filter(pk=lost_message.pk).update(created_at=now - timedelta(minutes=5))
    fresh = jobs.job_create(kind="unlearn", enqueue=False)
    assert sorted(jobs.jobs_sweep_stale(now=now)) == sorted([lost_worker.pk, lost_message.pk])
    assert sorted(sent) == sorted([lost_worker.pk, lost_message.pk])
    assert Job.objects.get(pk=lost_worker.pk).status == "pending"
    assert Job.objects.get(pk=alive.pk).status == "running" and fresh.pk not in sent
    # Not re-sent again within the same stale period.
    assert jobs.jobs_sweep_stale(now=now + timedelta(seconds=10)) == []


def test_retry_runs_a_failed_job_again_but_not_a_request_job_or_one_that_did_not_fail(sent, django_capture_on_commit_callbacks):
    import uuid

    from deletion.models import DeletionRequest

    failed = jobs.job_create(kind="shadow", enqueue=False)
    Job.objects.filter(pk=failed.pk).update(status="failed", error="UnsafeArtifactError: ...")
    with django_capture_on_commit_callbacks(execute=True):
        retried = jobs.job_retry(job=failed)
    assert (retried.status, retried.error, sent) == ("pending", "", [failed.pk])
    with pytest.raises(Conflict, match="only a failed job is retried"):
        jobs.job_retry(job=retried)

    now = timezone.now()
    request = DeletionRequest.objects.create(public_id=uuid.uuid4(), jurisdiction="GDPR", legal_ground="art17_1_b",
                                             channel="test", received_at=now, due_at=now, body_fingerprint="x")
    in_request = jobs.job_create(kind="unlearn", enqueue=False, deletion_request=request)
    Job.objects.filter(pk=in_request.pk).update(status="failed")
    with pytest.raises(Conflict, match="submit the request again"):
        jobs.job_retry(job=in_request)
    assert Job.objects.get(pk=in_request.pk).status == "failed"
