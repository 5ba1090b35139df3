"""Job lifecycle services: create (enqueue after commit), claim exactly once, report progress,
finish, cancel, and sweep jobs whose worker died. Heavy ML code is imported only by the runners."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from foundation.errors import Conflict
from foundation.registry import Hooks, Registry
from workers.file_formats import FOREIGN_FORMATS
from workers.models import QUEUE_OF_KIND, Job, JobKind, JobStatus
from workers.unlearning.base import JobCancelled

logger = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 5.0


def job_create(*, kind: str, enqueue: bool = True, countdown: float = 0, **fields: Any) -> Job:
    """Create a job row and enqueue it once the surrounding transaction commits (after
    ``countdown`` seconds: the batching window in which later requests may join the job)."""
    job = Job.objects.create(kind=kind, queue=job_queue(kind=kind, fields=fields), **fields)
    if enqueue:
        transaction.on_commit(lambda: job_enqueue(job_id=job.id, countdown=countdown))
    return job


def job_queue(*, kind: str, fields: dict[str, Any]) -> str:
    """The queue a new job goes to: its kind's (QUEUE_OF_KIND), except an audit of a language
    model, which goes to LM_AUDIT_QUEUE ("gpu" where GPU workers run; "audit", the CPU workers, by
    default)."""
    if kind == JobKind.AUDIT:
        model = fields.get("registered_model") or getattr(fields.get("source_version"), "model", None)
        if model is not None and model.task == "language_modeling":
            return settings.LM_AUDIT_QUEUE
    return QUEUE_OF_KIND.get(kind, "default")


RUN_JOB_TASK = "workers.run_job"  # workers/tasks.py, which imports this module: sent by name


def job_enqueue(*, job_id: int, countdown: float = 0) -> None:
    job = Job.objects.only("queue").get(pk=job_id)
    current_app.send_task(RUN_JOB_TASK, args=[job_id], queue=job.queue, countdown=countdown or None)


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def job_claim(*, job_id: int) -> bool:
    """Claim a pending job for this process; True only for the one caller whose UPDATE changed it."""
    now = timezone.now()
    changed = Job.objects.filter(pk=job_id, status=JobStatus.PENDING, cancel_requested=False).update(
        status=JobStatus.RUNNING, claimed_by=worker_identity(), claimed_at=now, heartbeat_at=now,
        started_at=now, attempts=F("attempts") + 1, progress_stage="starting", progress_percent=0.0,
    )
    return changed == 1


class ProgressReporter:
    """The progress callback given to recipes and methods: writes stage and percent to the job row
    at most every HEARTBEAT_SECONDS (that write is also the heartbeat) and raises JobCancelled when
    a cancel was requested."""

    def __init__(self, job_id: int, *, base: float = 0.0, span: float = 100.0) -> None:
        self.job_id = job_id
        self.base, self.span = base, span
        self._last = 0.0

    def scaled(self, base: float, span: float) -> ProgressReporter:
        """A reporter for one phase of a job, mapping its 0..1 onto base..base+span percent."""
        child = ProgressReporter(self.job_id, base=base, span=span)
        return child

    def __call__(self, stage: str, fraction: float) -> None:
        now = time.monotonic()
        if now - self._last < HEARTBEAT_SECONDS and fraction < 1.0:
            return
        self._last = now
        percent = self.base + self.span * max(0.0, min(1.0, fraction))
        Job.objects.filter(pk=self.job_id).update(
            progress_stage=stage[:100], progress_percent=round(percent, 1), heartbeat_at=timezone.now()
        )
        if Job.objects.filter(pk=self.job_id, cancel_requested=True).exists():
            raise JobCancelled(f"job {self.job_id} was cancelled")


class ClaimLost(Exception):
    """This worker no longer holds the job's claim: the sweeper released it (its heartbeat went
    stale) and another worker claimed it, or it ended. What this worker would have written is
    dropped, so that it cannot overwrite the new holder's result."""


@dataclass(frozen=True)
class JobClaimToken:
    """Which claim of a job a worker holds: its identity and the attempt number its claim made.
    A later claim of the same job, even by the same process, has a higher attempt."""

    claimed_by: str
    attempt: int


def job_claim_token(job: Job) -> JobClaimToken:
    """The claim ``job`` (a row read after this worker's claim) records."""
    return JobClaimToken(claimed_by=job.claimed_by, attempt=job.attempts)


def _holding(job_id: int, claim: JobClaimToken):
    """The job's row while ``claim`` still holds it (running, same worker, same attempt)."""
    return Job.objects.filter(pk=job_id, status=JobStatus.RUNNING, claimed_by=claim.claimed_by,
                              attempts=claim.attempt)


def _claim_lost(job_id: int, claim: JobClaimToken, doing: str) -> ClaimLost:
    """The refusal, logged, naming who holds the job now."""
    now = Job.objects.filter(pk=job_id).values("status", "claimed_by", "attempts").first() or {}
    message = (f"job {job_id}: {claim.claimed_by} (attempt {claim.attempt}) no longer holds its claim, so it may "
               f"not {doing}; the job is {now.get('status', 'gone')}"
               + (f", claimed by {now['claimed_by']} (attempt {now['attempts']})" if now.get("claimed_by") else "")
               + "; this worker's outcome is dropped")
    logger.warning("%s", message)
    return ClaimLost(message)


def job_finish(*, job_id: int, claim: JobClaimToken, status: str, started: float, device: str = "",
               result: dict | None = None, error: str = "", **fields: Any) -> None:
    """Write the job's end (status, result, error) while ``claim`` still holds it. Raises ClaimLost
    (logged, nothing written) when the claim was released and taken by another worker, or the job
    has ended: a worker the sweeper took for dead must not overwrite the new holder's result."""
    changed = _holding(job_id, claim).update(
        status=status, finished_at=timezone.now(), wall_seconds=time.perf_counter() - started,
        device=device, result=result or {}, error=error[:10000],
        progress_percent=100.0 if status == JobStatus.SUCCEEDED else F("progress_percent"),
        progress_stage=status, **fields,
    )
    if changed != 1:
        raise _claim_lost(job_id, claim, f"finish it as {status}")


def job_cancel(*, job: Job) -> Job:
    """Ask a job to stop: a pending one is cancelled at once, a running one at its next progress."""
    if job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED):
        raise Conflict(f"job {job.id} has already ended ({job.status})", code="job_ended")
    Job.objects.filter(pk=job.pk).update(cancel_requested=True)
    stopped = Job.objects.filter(pk=job.pk, status=JobStatus.PENDING).update(
        status=JobStatus.CANCELLED, finished_at=timezone.now(), progress_stage="cancelled"
    )
    if stopped:  # it never ran: whoever follows jobs hears it ended, as a running one's end is heard
        transaction.on_commit(lambda: _after_job(job.pk))
    job.refresh_from_db()
    return job


def jobs_failed_on_foreign_looking_files() -> list[Job]:
    """Failed jobs whose error is the store calling a file a pickle or a zip. Before 2026-12-06 the
    store judged files by their first bytes, so valid weights whose header length reads like one
    were refused (workers/file_formats.py); those jobs may now succeed when run again."""
    refused = Q()
    for _, sentence in FOREIGN_FORMATS:
        refused |= Q(error__contains=sentence)
    return list(Job.objects.filter(refused, status=JobStatus.FAILED)
                .select_related("registered_model", "source_version", "deletion_request").order_by("id"))


@transaction.atomic
def job_retry(*, job: Job) -> Job:
    """Run a failed job outside any request again: back to pending, enqueued after commit. A job
    of a deletion request is refused: its request has ended FAILED, and the request is what is
    submitted again."""
    if job.deletion_request_id is not None:
        raise Conflict(f"job {job.id} belongs to deletion request {job.deletion_request_id}; "
                       "submit the request again instead", code="job_in_request")
    changed = Job.objects.filter(pk=job.pk, status=JobStatus.FAILED).update(
        status=JobStatus.PENDING, error="", result={}, finished_at=None, claimed_by="", claimed_at=None,
        heartbeat_at=None, progress_stage="retry requested", progress_percent=0.0,
    )
    if not changed:
        raise Conflict(f"job {job.id} is not failed; only a failed job is retried", code="job_not_failed")
    transaction.on_commit(lambda: job_enqueue(job_id=job.pk))
    job.refresh_from_db()
    return job


def jobs_sweep_stale(*, now=None) -> list[int]:
    """Put running jobs whose worker stopped sending heartbeats back to pending and enqueue them,
    and re-send pending jobs whose message was lost. The conditional UPDATE (and the claim) make
    two sweepers, or a sweeper and a redelivery, safe. Returns the ids re-enqueued."""
    now = now or timezone.now()
    released = []
    # A running job whose heartbeat is older than this is taken to have lost its worker.
    stale_after = timedelta(seconds=settings.JOB_STALE_AFTER_SECONDS)
    for job in Job.objects.filter(status=JobStatus.RUNNING, heartbeat_at__lt=now - stale_after):
        # claimed_at cleared and the heartbeat set: if this message is lost too (a worker that takes
        # it is killed before acknowledging, and the broker keeps it unacknowledged for hours), the
        # pending-job pass below sends it again after a stale period; before, it never did.
        changed = Job.objects.filter(pk=job.pk, status=JobStatus.RUNNING, heartbeat_at=job.heartbeat_at).update(
            status=JobStatus.PENDING, claimed_by="", claimed_at=None, heartbeat_at=now,
            progress_stage="requeued after worker loss"
        )
        if changed:
            logger.warning("job %s lost its worker %s; re-enqueued", job.pk, job.claimed_by)
            job_enqueue(job_id=job.pk)
            released.append(job.pk)
    # A job whose message never reached the broker (Redis down at commit time) or was lost with a
    # Redis that had not yet written it to disk: pending long after it was due, enqueue it again.
    # Duplicates are harmless: only one claim can succeed.
    for job in Job.objects.filter(status=JobStatus.PENDING, cancel_requested=False, claimed_at__isnull=True,
                                  created_at__lt=now - stale_after):
        if _overdue_in_queue(job, now, stale_after):
            try:
                job_enqueue(job_id=job.pk)
            except Exception:  # the broker is still down: the next sweep tries again
                logger.warning("could not re-enqueue pending job %s", job.pk)
                continue
            Job.objects.filter(pk=job.pk).update(progress_stage="re-enqueued (message lost)")
            released.append(job.pk)
    return released


def _overdue_in_queue(job: Job, now, stale_after) -> bool:
    """Pending jobs are re-sent at most once per stale period (tracked in progress_stage time)."""
    last = job.heartbeat_at or job.created_at
    if now - last < stale_after:
        return False
    Job.objects.filter(pk=job.pk).update(heartbeat_at=now)
    return True


# ---------------------------------------------------------------- what the apps above plug in
# The engine names no app above it. Each app registers, from its AppConfig.ready():
# - JOB_RUNNERS: the function that runs a job kind (workers: train, unlearn, shadow; audits: audit;
#   deletion: report). A runner module that needs torch is imported inside the registered function,
#   so the web process, which registers runners too, never imports torch.
# - JOB_FINISHED: called with the job id after a job ended (succeeded, failed, cancelled): the
#   request workflow moves its outcomes on.
# - JOB_GATES: why a job must wait before it starts ("" = it may start), e.g. while the version it
#   builds on is still being audited.
# - VERSIONS_HELD: versions whose copies a purge must keep for now, because work above the engine
#   (an open request) still builds on them.
Runner = Callable[[Job, ProgressReporter], dict]
JOB_RUNNERS: Registry[Runner] = Registry("job runner")
JOB_FINISHED: Hooks[Callable[[int], None]] = Hooks("job-finished hook")
JOB_GATES: Hooks[Callable[[Job], str]] = Hooks("job gate")
VERSIONS_HELD: Hooks[Callable[[Job], set[int]]] = Hooks("held-versions hook")


def job_runner_register(kind: str, runner: Runner) -> None:
    """Register the runner of job kind ``kind`` (a JobKind value); twice raises."""
    if kind not in JobKind.values:
        raise ValueError(f"unknown job kind {kind!r}; kinds: {', '.join(JobKind.values)}")
    JOB_RUNNERS.register(kind)(runner)


def job_gate_reason(job: Job) -> str:
    """The first reason a registered gate gives for ``job`` to wait, or ""."""
    for gate in JOB_GATES:
        reason = gate(job)
        if reason:
            return reason
    return ""


def versions_held(job: Job | None) -> set[int]:
    """Versions whose copies must stay while ``job`` (or the work it belongs to) purges: what other
    pending or running unlearning jobs start from, and what the registered hooks name."""
    held = set(Job.objects.filter(kind=JobKind.UNLEARN, status__in=[JobStatus.PENDING, JobStatus.RUNNING])
               .exclude(pk=getattr(job, "pk", None)).values_list("source_version_id", flat=True))
    for hook in VERSIONS_HELD:
        held |= hook(job)
    return {v for v in held if v}


def versions_audited(job: Job | None) -> set[int]:
    """Versions that other pending or running audits compare against (their source version): its
    files must stay whole, the source's own included. Requests batched into one unlearning job
    each have their own audit of the same source; the first audit or decision to purge destroyed
    it under the others (tests/workers/test_multi_host.py)."""
    return {v for v in Job.objects.filter(kind=JobKind.AUDIT, status__in=[JobStatus.PENDING, JobStatus.RUNNING])
            .exclude(pk=getattr(job, "pk", None)).values_list("source_version_id", flat=True) if v}


class TransientJobError(Exception):
    """A failure worth retrying (a lost connection, a full disk being cleaned); others are permanent."""


class GuaranteeNotMet(Exception):
    """The method ran but could not establish its guarantee (a guard whose calibration cannot
    certify the bound), so no new version was made. Not a crash: the request treats it as a
    failed audit, which the DPO escalates (exact retrain) or answers by withdrawing the model."""

    def __init__(self, reason: str, *, details: dict | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.details = details or {}


class JobDeferred(Exception):
    """The job cannot start yet (it must build on a result that is not ready): it goes back to
    pending, says why in its progress stage, and is sent again after ``countdown`` seconds."""

    def __init__(self, reason: str, *, countdown: float = 10.0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.countdown = countdown


def _defer(job_id: int, claim: JobClaimToken, deferred: JobDeferred) -> None:
    # claimed_at is cleared and heartbeat_at set, so that the sweeper re-sends the job if this
    # message is lost, but not before a stale period has passed. Only while this claim holds it.
    now = timezone.now()
    changed = _holding(job_id, claim).update(
        status=JobStatus.PENDING, claimed_by="", claimed_at=None, heartbeat_at=now,
        progress_stage=f"waiting: {deferred.reason}"[:100], progress_percent=0.0,
    )
    if changed:
        logger.info("job %s deferred %.0f s: %s", job_id, deferred.countdown, deferred.reason)
        job_enqueue(job_id=job_id, countdown=deferred.countdown)


class ClaimHeartbeat:
    """While a job runs, a thread of this process writes its heartbeat every HEARTBEAT_SECONDS, so
    that only a worker that died (SIGKILL, OOM, a lost host) goes stale, never one in a long step
    that reports no progress (loading a model, an audit check, signing): the sweeper released such
    a live claim and a second worker ran the job again. The write is conditional on the claim
    still being this worker's."""

    def __init__(self, job_id: int, claimed_by: str, *, every: float = HEARTBEAT_SECONDS) -> None:
        self.job_id, self.claimed_by, self.every = job_id, claimed_by, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"job-{job_id}-heartbeat", daemon=True)

    def _beat(self) -> None:
        from django.db import connection

        try:
            while not self._stop.wait(self.every):
                try:
                    Job.objects.filter(pk=self.job_id, status=JobStatus.RUNNING, claimed_by=self.claimed_by).update(
                        heartbeat_at=timezone.now())
                except Exception:  # the database is away for a moment: the next beat tries again
                    logger.warning("heartbeat of job %s not written", self.job_id, exc_info=True)
        finally:
            connection.close()  # this thread's own connection

    def __enter__(self) -> ClaimHeartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()


def job_execute(*, job_id: int) -> str:
    """Claim and run one job. Returns the job's final status, 'skipped' when another worker holds
    it (a redelivered task) or it has ended, or 'claim lost' when this worker's claim was released
    and taken by another worker while it ran (its outcome is dropped: ClaimLost)."""
    if not job_claim(job_id=job_id):
        return "skipped"
    job = Job.objects.get(pk=job_id)
    claim = job_claim_token(job)
    started = time.perf_counter()
    reporter = ProgressReporter(job_id)
    try:
        with ClaimHeartbeat(job_id, job.claimed_by):
            outcome = JOB_RUNNERS.get(job.kind)(job, reporter)
    except JobCancelled as exc:
        return _end(job_id, claim, status=JobStatus.CANCELLED, started=started, error=str(exc))
    except JobDeferred as deferred:
        _defer(job_id, claim, deferred)
        return "deferred"
    except GuaranteeNotMet as exc:
        return _end(job_id, claim, status=JobStatus.FAILED, started=started,
                    error=f"guarantee not met: {exc.reason}",
                    result={"guarantee_not_met": {"method": job.method, "reason": exc.reason,
                                                  "details": exc.details}})
    except TransientJobError:
        # Let Celery retry: the job goes back to pending so the retry can claim it.
        _holding(job_id, claim).update(status=JobStatus.PENDING, claimed_by="")
        raise
    except Exception as exc:
        logger.exception("job %s failed", job_id)
        return _end(job_id, claim, status=JobStatus.FAILED, started=started, error=f"{type(exc).__name__}: {exc}")
    return _end(job_id, claim, status=JobStatus.SUCCEEDED, started=started, device=outcome.pop("device", ""),
                result=outcome)


def _end(job_id: int, claim: JobClaimToken, *, status: str, **finish: Any) -> str:
    """Finish the job under ``claim`` and tell the registered hooks; a lost claim ends here
    (job_finish logged the refusal): the job's new holder finishes it and tells them."""
    try:
        job_finish(job_id=job_id, claim=claim, status=status, **finish)
    except ClaimLost:
        return "claim lost"
    _after_job(job_id)
    return status


def _after_job(job_id: int) -> None:
    """Tell whoever registered (the request workflow) that a job ended."""
    for hook in JOB_FINISHED:
        hook(job_id)
