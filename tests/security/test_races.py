"""Idempotency and races: 50 concurrent identical submissions make one request; of two claims on
one job, one wins; two real worker processes handed the same job run it once."""

import threading

import pytest
from django.db import connections

from deletion.models import DeletionRequest
from workers.jobs import job_claim, job_create
from workers.models import Job

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
    from workers.jobs import job_enqueue

    purge_broker()
    first = WorkerProcess(tmp_path / "a.log").start()
    second = WorkerProcess(tmp_path / "b.log").start()
    try:
        # A report job for no request fails fast but still goes through the claim; it is enough
        # to see how many processes ran it.
        job = job_create(kind="report", enqueue=False)
        job_enqueue(job_id=job.pk)
        job_enqueue(job_id=job.pk)  # delivered twice, as a redelivery would
        wait_for(lambda: Job.objects.get(pk=job.pk).status not in ("pending", "running"), timeout=120,
                 message="the job")
        wait_for(lambda: (first.log_text() + second.log_text()).count("succeeded in") >= 2, timeout=60,
                 message="both deliveries")
    finally:
        first.stop()
        second.stop()
    job.refresh_from_db()
    assert job.attempts == 1
    logs = first.log_text() + second.log_text()
    assert logs.count("'skipped'") == 1, logs[-2000:]
