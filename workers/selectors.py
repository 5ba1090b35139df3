"""Reads of the job engine's rows for the API and the admin."""

from __future__ import annotations

from typing import Any

from workers.models import Job, JobKind, JobStatus

ENDED = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


def job_state(*, job: Job) -> dict[str, Any]:
    """What the job API and the admin's job page show of ``job``: kind, status, the model and
    ``method`` (a training or shadow job's recipe, an unlearning job's method), what it trains on
    (``dataset`` id of a training job; ``source_version`` and ``count`` of a shadow set), progress
    (stage, percent, fraction), the error of a failed or cancelled job, the version it made
    (``result_version``: id, model name, version number) and its timestamps."""
    source = job.source_version
    result = job.result_version
    return {
        "id": job.id, "kind": job.kind, "status": job.status,
        "model": job.registered_model.name if job.registered_model_id else None,
        "method": job.method,
        "dataset": job.config.get("dataset_id") if job.kind == JobKind.TRAIN else None,
        "source_version": {"id": source.id, "model": source.model.name, "version": source.version} if source else None,
        "count": job.config.get("count") if job.kind == JobKind.SHADOW else None,
        "progress": {"stage": job.progress_stage, "percent": job.progress_percent,
                     "fraction": round(job.progress_percent / 100, 3)},
        "cancel_requested": job.cancel_requested,
        "error": job.error if job.status in (JobStatus.FAILED, JobStatus.CANCELLED) else "",
        "result_version": {"id": result.id, "model": result.model.name, "version": result.version} if result else None,
        "created_at": job.created_at, "started_at": job.started_at, "finished_at": job.finished_at,
    }


def job_with_state(*, job_id: int) -> Job | None:
    """The job ``job_id`` with what :func:`job_state` reads of it, or None."""
    return (Job.objects.select_related("registered_model", "source_version__model", "result_version__model",
                                       "deletion_request").filter(pk=job_id).first())
