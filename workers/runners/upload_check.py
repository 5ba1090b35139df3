"""Upload-check jobs: a worker builds the module of an upload whose family the web process must not
build (a company's own package), checks the weights against it, and registers the version only when
they fit. The web side and the pending file: workers.upload_checks."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from foundation.errors import ValidationFailed
from workers.models import Job
from workers.upload_checks import pending_upload_name, pending_uploads


def run_upload_check_job(job: Job, progress) -> dict[str, Any]:
    """The runner of ``upload_check`` jobs (worker side: this builds the company's module). Returns
    ``{"version": id, "artifact": sha256}`` or ``{"refused": {"code", "message"}}``; the pending file
    is removed in every outcome but a transient error (which is retried and needs it)."""
    from workers.jobs import TransientJobError

    if job.result_version_id:  # registered before a crash lost the job's last update
        return {"skipped": "result already recorded", "version": job.result_version_id}
    files, name = pending_uploads(), pending_upload_name(job.config["pending_upload"])
    data = files.get(name)
    if data is None:
        return {"refused": {"code": "upload_missing",
                            "message": "the uploaded file is no longer kept (an earlier run of this check ended); "
                                       "upload it again"}}
    try:
        outcome = _check_and_register(job, data, progress)
    except TransientJobError:
        raise
    except BaseException:
        files.delete(name)  # every version, and its data key (object store)
        raise
    files.delete(name)
    return outcome


def _check_and_register(job: Job, data: bytes, progress) -> dict[str, Any]:
    from models_registry.models import TrainingRun
    from workers.model_families import family_of
    from workers.model_families.base import UploadRefused
    from workers.services import uploaded_version_store

    model = job.registered_model
    run = TrainingRun.objects.get(pk=job.config["training_run"])
    try:
        family = family_of(model.architecture)
        progress("building the module and checking the weights", 0.1)
        checked = family.check_upload(data, architecture=model.architecture, task=model.task,
                                      run_config=run.config or {})
        progress("storing the version", 0.8)
        with transaction.atomic():
            locked = Job.objects.select_for_update().get(pk=job.pk)
            if locked.result_version_id:
                return {"skipped": "result already recorded", "version": locked.result_version_id}
            version = uploaded_version_store(model=model, training_run=run, family=family, checked=checked,
                                             size_bytes=len(data))
            Job.objects.filter(pk=job.pk).update(result_version=version)
    except UploadRefused as exc:
        return {"refused": {"code": exc.code, "message": str(exc)}}
    except ValidationFailed as exc:  # the run's membership is gone meanwhile
        return {"refused": {"code": exc.code, "message": exc.message}}
    return {"version": version.id, "artifact": version.artifact_sha256}

