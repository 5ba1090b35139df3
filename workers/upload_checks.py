"""Uploads that a worker checks before they become a version (a model family ``checked_in_worker``:
a PyTorch module from the company's own installed package).

The web process must not import the company's package nor build its module, so an upload of such a
model goes in two steps:

1. The request (``POST /api/v1/models/<name>/versions/?training_run=ID``): the web side checks what it
   can without building: the run belongs to the model and has imported membership, the entry point is
   installed (package metadata), the body is a well-formed safetensors file (a pickle, a zip, a lying
   header are refused here, 4xx, nothing kept). It then keeps the bytes as a pending upload,
   ``<token>.safetensors`` in the shared files' ``pending-uploads`` area (workers.shared_files:
   ``<ARTIFACT_ROOT>/pending-uploads/`` locally, sealed objects in the bucket with ARTIFACT_STORE=s3;
   outside the content-addressed store and its garbage collector, on the storage every worker shares), and queues an ``upload_check`` job; the
   answer is 202 with the check (``GET /api/v1/upload-checks/<id>/``).
2. The job (a worker, queue ``default``; workers.runners.upload_check): builds the module, checks
   that the weights fit it (names, shapes, a strict load) and that the run's configuration fits the
   recipe; only then stores the artifact and registers the version, in the transaction that records
   it on the job. A refusal is the check's outcome, not a crash: the job succeeds with
   ``result["refused"] = {code, message}`` and nothing is stored or registered. The pending file is
   removed in every outcome but a transient error (which retries).
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from django.db import transaction

from foundation.errors import ValidationFailed
from models_registry.models import RegisteredModel, TrainingMembership
from workers.jobs import job_create
from workers.models import Job, JobKind, JobStatus

PENDING_UPLOADS_DIR = "pending-uploads"


def pending_upload_name(token: str) -> str:
    """The shared file (area ``pending-uploads``) where the bytes of a pending upload wait for the
    worker (``token``: hex, from the job's config)."""
    if not isinstance(token, str) or not re.fullmatch(r"[0-9a-f]{32}", token):
        raise ValueError(f"bad pending upload token {token!r}")
    return f"{token}.safetensors"


def pending_uploads():
    """The shared files of pending uploads (workers.runners.storage.shared_files)."""
    from workers.runners.storage import shared_files

    return shared_files(PENDING_UPLOADS_DIR)


def upload_check_queue(*, model: RegisteredModel, training_run, family, data: bytes) -> Job:
    """Check what the web side can (see the module docstring), keep the bytes, queue the check job
    (enqueued after commit). ValidationFailed naming the problem; then nothing is kept."""
    from workers.model_families.base import UploadRefused
    from workers.services import training_run_without_membership

    try:
        family.precheck_upload(data, architecture=model.architecture)
    except UploadRefused as exc:
        raise ValidationFailed(str(exc), field="body", code=exc.code) from None
    if not TrainingMembership.objects.filter(run=training_run).exists():
        raise training_run_without_membership(training_run)
    token = uuid.uuid4().hex
    files = pending_uploads()
    files.put(pending_upload_name(token), data)
    try:  # the file goes again if its job row does not commit: it never outlives the row
        with transaction.atomic():
            return job_create(kind=JobKind.UPLOAD_CHECK, registered_model=model, method=family.name,
                              config={"training_run": training_run.id, "pending_upload": token, "bytes": len(data)})
    except BaseException:
        files.delete(pending_upload_name(token))
        raise


def upload_check_state(job: Job) -> dict[str, Any]:
    """What a client reads of an upload check: ``status`` is pending, running, registered (with the
    version), refused (with ``refused``: code and message; nothing was stored), failed (the check
    itself crashed: ``error``) or cancelled."""
    result = job.result or {}
    status = job.status
    if job.status == JobStatus.SUCCEEDED:
        status = "refused" if "refused" in result else "registered"
    return {"id": job.id, "model": job.registered_model.name, "training_run": job.config.get("training_run"),
            "status": status, "progress": {"stage": job.progress_stage, "percent": job.progress_percent},
            "version": job.result_version, "refused": result.get("refused"),
            "error": job.error if job.status == JobStatus.FAILED else "",
            "created_at": job.created_at, "finished_at": job.finished_at}
