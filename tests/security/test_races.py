"""Idempotency and races: 50 concurrent identical submissions make one request; of two claims on
one job, one wins; two real worker processes handed the same job run it once."""

import threading

import pytest
from django.db import connections

from deletion.models import DeletionRequest
from workers.jobs import job_claim, job_create

BODY = {"identifiers": {"email": "race@example.org"}, "jurisdiction": "GDPR", "legal_ground": "art17_1_a",
        "channel": "web"}


def _in_threads(count, target):
    barrier = threading.Barrier(count)
    results = [None] * count

    def run(index):
        try:
            barrier.wait()
            results[index] = target(index)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return results


@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_identical_submissions_create_one_request(api_client_for):
    client = api_client_for("intake")
    token = client.token_value

    def submit(_):
        from rest_framework.test import APIClient

        c = APIClient()
        c.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
        response = c.post("/api/v1/deletion-requests/", BODY, format="json", HTTP_IDEMPOTENCY_KEY="same-key")
        return response.status_code, response.json().get("id")

    results = _in_threads(50, submit)
    assert DeletionRequest.objects.count() == 1
    codes = sorted(code for code, _ in results)
    assert codes.count(201) == 1 and codes.count(200) == 49, codes
    assert len({request_id for _, request_id in results}) == 1


@pytest.mark.django_db(transaction=True)
def test_two_claims_one_winner():
    for _ in range(10):
        job = job_create(kind="unlearn", enqueue=False)
        wins = _in_threads(2, lambda _, j=job: job_claim(job_id=j.pk))
        assert sorted(wins) == [False, True]
        job.refresh_from_db()
        assert job.attempts == 1


@pytest.mark.worker
def test_two_worker_processes_handed_one_job_run_it_once(transactional_db, tmp_path):
    from tests.worker_process import WorkerProcess, purge_broker, wait_for
    from workers.tasks import run_job

    purge_broker()
    first = WorkerProcess(tmp_path / "a.log").start()
    second = WorkerProcess(tmp_path / "b.log").start()
    try:
        # A report job for no request fails fast but still goes through the claim; it is enough
        # to see how many processes ran it. Sent twice, as a redelivery would be; the two task ids
        # pick this job's deliveries out of the logs (a message restored from an earlier test's
        # stopped worker may also pass through).
        job = job_create(kind="report", enqueue=False)
        task_ids = [run_job.apply_async(args=[job.pk], queue=job.queue).id for _ in range(2)]

        def outcomes() -> list[str]:
            lines = (first.log_text() + second.log_text()).splitlines()
            return [line.rsplit(": ", 1)[-1] for line in lines
                    if "succeeded in" in line and any(task_id in line for task_id in task_ids)]

        wait_for(lambda: len(outcomes()) == 2, timeout=120, message="both deliveries")
    finally:
        first.stop()
        second.stop()
    job.refresh_from_db()
    assert job.attempts == 1
    assert sorted(outcomes()) == ["'failed'", "'skipped'"], (first.log_text() + second.log_text())[-2000:]
