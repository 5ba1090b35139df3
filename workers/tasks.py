"""Celery tasks: thin (ids in, a service call). Delivery is at-least-once; the job claim makes
execution exactly-once."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from workers import artifact_gc, jobs, mlflow_registry


@shared_task(
    name=jobs.RUN_JOB_TASK,
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=settings.CELERY_TASK_SOFT_TIME_LIMIT,
    time_limit=settings.CELERY_TASK_TIME_LIMIT,
    autoretry_for=(jobs.TransientJobError,),
    retry_backoff=True,
    max_retries=5,
)
def run_job(job_id: int) -> str:
    return jobs.job_execute(job_id=job_id)


@shared_task(name="workers.sweep_stale_jobs", acks_late=True)
def sweep_stale_jobs() -> list[int]:
    return jobs.jobs_sweep_stale()


@shared_task(name="workers.collect_orphaned_artifacts", acks_late=True)
def collect_orphaned_artifacts() -> dict:
    return artifact_gc.artifact_store_gc().summary()


@shared_task(name=mlflow_registry.SYNC_TASK, acks_late=True, autoretry_for=(mlflow_registry.MlflowUnavailable,),
             retry_backoff=5, retry_backoff_max=3600, retry_jitter=True, max_retries=mlflow_registry.MAX_ATTEMPTS - 1)
def mlflow_sync(sync_id: int) -> str:
    return mlflow_registry.mlflow_sync_run(sync_id=sync_id)
