"""The job-driven part of the workflow: what happens when the workers finish a job. An unlearning
job's result is audited; an audit's verdict moves its outcome on; when every outcome is settled the
report job erases the request's data, signs the report and completes the request. The engine calls
in through the registries it offers (registered in deletion.apps): job-finished hook, the report
runner, a start gate and the versions open requests still build on."""

from __future__ import annotations

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from audits.runner import shadow_models_replenish
from deletion import report_data
from deletion.models import (
    OPEN_STATES,
    DeletionRequest,
    ModelOutcome,
    NoticeKind,
    OutcomeStatus,
    RequestKind,
)
from deletion.notices import notice_send, recipients_notify
from deletion.planning import request_end_state, request_scope, request_subjects
from deletion.selectors import outcome_deployment_warnings, outcome_utility
from deletion.transitions import S, transition
from deletion.webhooks import webhooks_notify
from foundation.ledger.services import ledger_append
from models_registry.importing import erasure_lock
from models_registry.models import DataRecord, ModelVersion, RecordStatus, VersionStatus
from models_registry.selectors import artifacts_holding, current_source, unlearning_path
from models_registry.services import identifiers_suppress
from workers.jobs import job_create
from workers.models import Job, JobKind, JobStatus
from workers.purge import (
    request_data_erase,
    shadow_models_holding,
    shadow_models_purge,
    version_purge,
)
from workers.unlearning.catalogue import counts_as_erasure


@transaction.atomic
def on_job_finished(*, job_id: int) -> None:
    """A job ended: move its outcome (and then the request) on.

    unlearn succeeded -> the outcome is audited (an audit job); failed -> the request fails.
    audit done -> PASS awaits deployment, FAIL needs escalation or withdrawal, INCONCLUSIVE (and any
    suppressed or dp_bounded result: nothing was deleted from the weights) awaits the DPO's decision.
    report done -> the request completes (done by the report job itself)."""
    job = Job.objects.get(pk=job_id)
    if job.kind == JobKind.UNLEARN:
        # An outcome decided meanwhile (the model withdrawn, its job cancelled) is not moved back.
        for outcome in (ModelOutcome.objects.select_for_update().filter(job=job, status=OutcomeStatus.EXECUTING)
                        .select_related("request")):
            not_met = (job.result or {}).get("guarantee_not_met")
            if job.status == JobStatus.SUCCEEDED:
                outcome.new_version = job.result_version
                # A derived child's class is its method's capped at its parent's new version's, known
                # only once it ran (workers.runners.derived); other jobs name none.
                outcome.guarantee_class = (job.result or {}).get("guarantee_class") or outcome.guarantee_class
                outcome.status = OutcomeStatus.AUDITING
                outcome.audit_job = job_create(kind=JobKind.AUDIT, registered_model=job.registered_model,
                                               source_version=outcome.model_version,
                                               deletion_request=outcome.request,
                                               forget_record_ids=outcome.record_ids,
                                               guarantee_class=outcome.guarantee_class,
                                               config={"audited_version": job.result_version_id,
                                                       **declared_for_audit(outcome)})
            elif not_met:
                # The method ran but could not establish its guarantee: a failed audit with no new
                # version, for the DPO to escalate (exact retrain) or withdraw the model.
                outcome.status, outcome.verdict = OutcomeStatus.AUDIT_FAILED, "FAIL"
                outcome.audit = {"verdict": {
                    "verdict": "FAIL", "reasons": [not_met["reason"]],
                    "rule": f"FAIL when the method ({not_met['method']}) cannot establish its guarantee; "
                            "no new version was made"}, "guarantee_not_met": not_met}
            elif job.status == JobStatus.CANCELLED:
                # Stopped on request before it recorded a version: nothing was unlearned or tested.
                # Back to the DPO, who escalates (a new job), withdraws the model or accepts the risk.
                outcome.status, outcome.verdict = OutcomeStatus.AWAITING_DECISION, "INCONCLUSIVE"
                outcome.audit = {"cancelled": {"job": job.id, "at": timezone.now().isoformat()}, "verdict": {
                    "verdict": "INCONCLUSIVE",
                    "reasons": [f"the unlearning job ({job.method}) was cancelled before it made a new version: "
                                "nothing was unlearned and nothing was tested; the model still serves the "
                                "version that holds the records"],
                    "rule": "INCONCLUSIVE when the job was cancelled: no new version, no evidence"}}
            else:
                outcome.status = OutcomeStatus.FAILED
            outcome.save(update_fields=["new_version", "guarantee_class", "status", "audit_job", "verdict", "audit"])
            ledger_append(event_type="job.finished", actor="worker", request=str(outcome.request.public_id),
                          job=job.id, kind=job.kind, status=job.status, new_version=job.result_version_id,
                          **({"guarantee_not_met": not_met["reason"]} if not_met else {}))
            advance(outcome.request)
            announce(outcome)
    elif job.kind == JobKind.AUDIT:
        for outcome in (ModelOutcome.objects.select_for_update().filter(audit_job=job, status=OutcomeStatus.AUDITING)
                        .select_related("request")):
            if job.status == JobStatus.SUCCEEDED:
                # The audit runner returns its evidence; the outcome is written here, and only here.
                outcome.audit = job.result["audit"]
                outcome.verdict = outcome.audit["verdict"]["verdict"]
            if job.status != JobStatus.SUCCEEDED:
                outcome.status = OutcomeStatus.FAILED
            elif outcome.guarantee_class == "dp_bounded":
                # Nothing was deleted from the weights: whatever the bound, only the DPO's written
                # acceptance of the risk (two DPO users) settles it, or an escalation or withdrawal.
                outcome.status = OutcomeStatus.AWAITING_DECISION
            elif outcome.verdict == "PASS" and (counts_as_erasure(outcome.guarantee_class)
                                                or outcome.request.kind == RequestKind.CONCEPT):
                # A concept request asked for the attribute's erasure, not a person's: its PASS is
                # what it asked for (its report says it is no one's erasure).
                outcome.status = OutcomeStatus.AWAITING_DEPLOYMENT
            elif outcome.verdict == "FAIL":
                outcome.status = OutcomeStatus.AUDIT_FAILED
            else:
                # INCONCLUSIVE, or a guard that holds its bound (a PASS of the guard, not of erasure:
                # the weights still hold the data): the request waits for the DPO's decision.
                outcome.status = OutcomeStatus.AWAITING_DECISION
            outcome.save(update_fields=["status", "audit", "verdict"])
            ledger_append(event_type="audit.finished", actor="worker", request=str(outcome.request.public_id),
                          job=job.id, model_version=outcome.new_version_id, verdict=outcome.verdict,
                          status=job.status)
            if outcome.request.status == S.FAILED:  # its audit ended after the request failed
                undecidable_result_purge(outcome)
            advance(outcome.request)
            announce(outcome)
    elif job.kind == JobKind.REPORT and job.status != JobStatus.SUCCEEDED and job.deletion_request_id:
        request = DeletionRequest.objects.get(pk=job.deletion_request_id)
        transition(request, (S.AUDITING,), S.FAILED, actor="platform", event="request.failed",
                    failure=f"the report could not be made: {job.error[:500]}")


def declared_for_audit(outcome: ModelOutcome) -> dict:
    """What the request's plan declared for this outcome's audit before anything ran, for the audit
    job's config: the equivalence test's margins (``{"equivalence": ...}``) and the utility bar
    (``{"utility": {"min_ratio": ...}}``), each left out where the plan declared none."""
    step = next((p for p in outcome.request.plan or [] if p["model_version_id"] == outcome.model_version_id), {})
    declared = (step.get("equivalence_test") or {}).get("declared")
    bar = step.get("utility_bar")
    return {**({"equivalence": declared} if declared else {}),
            **({"utility": {"min_ratio": bar["min_ratio"], "declared_by": bar["declared_by"]}} if bar else {})}


def announce(outcome: ModelOutcome) -> None:
    """Webhooks for outcome states no request transition announces: a failed audit (the request
    stays AUDITING until the DPO escalates or withdraws) and a new version ready for the serving
    side to deploy and confirm (POST .../confirm-deployment/ with new_version_id). ``outcome.request``
    is current: advance refreshed it. Nothing for an ended request: it takes no decision or
    deployment any more (a FAILED one's failure says what the DPO can do)."""
    if outcome.request.status not in OPEN_STATES:
        return
    if outcome.status == OutcomeStatus.AUDIT_FAILED:
        webhooks_notify(request=outcome.request, event="outcome.audit_failed", model_version=outcome.model_version_id,
                        decision=DECISIONS_OPEN)
    elif outcome.status == OutcomeStatus.AWAITING_DECISION:
        webhooks_notify(request=outcome.request, event="outcome.awaiting_decision",
                        model_version=outcome.model_version_id, verdict=outcome.verdict, decision=DECISIONS_OPEN)
    elif outcome.status == OutcomeStatus.AWAITING_DEPLOYMENT:
        utility = outcome_utility(outcome)
        # The same warnings the pending-deployments list gives (a coupling eraser's attribute need, ...).
        webhooks_notify(request=outcome.request, event="deployment.requested", audience="serving",
                        model=outcome.model_version.model.name, model_version=outcome.model_version_id,
                        new_version=outcome.new_version_id, verdict=outcome.verdict,
                        warnings=outcome_deployment_warnings(outcome),
                        **({"utility": {k: utility[k] for k in ("verdict", "metric", "retain_ratio", "test_ratio",
                                                                "min_ratio")}} if utility else {}))


# Results that wait for the DPO's decision, which a FAILED request no longer takes, and those whose
# audit job failed (never audited).
UNDECIDABLE_ONCE_FAILED = (OutcomeStatus.AUDIT_FAILED, OutcomeStatus.AWAITING_DECISION, OutcomeStatus.FAILED)


def undecidable_result_purge(outcome: ModelOutcome) -> None:
    """For an outcome of a FAILED request whose result did not pass its audit (FAIL or INCONCLUSIVE,
    or a guard) or was never audited (its audit job failed): destroy that result, as an escalation would. Nobody can decide on it any more, and
    left in place it would stay the head of its model's unlearning chain, which the next request's
    job would build on (the records it failed to forget included) or wait behind for good
    (:func:`unsettled_source_reason`); the next request builds on the version the result came from."""
    failed = outcome.new_version
    if outcome.status not in UNDECIDABLE_ONCE_FAILED or failed is None or failed.status == VersionStatus.PURGED:
        return
    purged = version_purge(version=failed)
    outcome.audit = {**outcome.audit, "purged": [*outcome.audit.get("purged", []), *purged]}
    outcome.save(update_fields=["audit"])
    ledger_append(event_type="version.purged", actor="platform", request=str(outcome.request.public_id),
                  model_version=failed.id, artifacts=[p["sha256"] for p in purged],
                  reason="its audit did not pass and the request failed: no decision can follow")


def advance(request: DeletionRequest) -> None:
    """Move the request on from what its outcomes say: a failed job fails it, all unlearned ->
    AUDITING, all settled (confirmed, withdrawn, held) -> the report job."""
    request.refresh_from_db()
    statuses = {o.status for o in request.outcomes.all()}
    if OutcomeStatus.FAILED in statuses and request.status in (S.EXECUTING, S.AUDITING):
        request = transition(request, (S.EXECUTING, S.AUDITING), S.FAILED, actor="platform", event="request.failed",
                             failure=f"a job failed; see the jobs. {REQUEST_FAILED_NEXT}")
        for outcome in request.outcomes.select_for_update().filter(status__in=UNDECIDABLE_ONCE_FAILED):
            undecidable_result_purge(outcome)
        return
    if request.status == S.EXECUTING and not statuses & {OutcomeStatus.EXECUTING, OutcomeStatus.PLANNED}:
        request = transition(request, (S.EXECUTING,), S.AUDITING, actor="platform", event="request.auditing")
    done = {OutcomeStatus.CONFIRMED, OutcomeStatus.WITHDRAWN, OutcomeStatus.HELD}
    if request.status == S.AUDITING and statuses <= done:
        if not request.jobs.filter(kind=JobKind.REPORT).exclude(
                status__in=[JobStatus.FAILED, JobStatus.CANCELLED]).exists():
            job_create(kind=JobKind.REPORT, deletion_request=request)
            ledger_append(event_type="report.queued", actor="platform", request=str(request.public_id))


DECISIONS_OPEN = "escalate, withdraw or accept the residual risk"
# What the DPO can do once a job failed the request. A FAILED request has ended: it takes no
# approval or decision again, and its records were not erased (that is the report's last step), so
# the models still hold them and a new request for the same person or records scopes them afresh.
REQUEST_FAILED_NEXT = ("This request has ended and takes no further decision or approval; its records were not "
                       "erased and the models still hold them: file a new request for the same person or records, "
                       "which is scoped and planned afresh")


def request_finalize(*, request_id: int, progress=None) -> dict:
    """The last step (report job): erase the request's data, build and sign its report, and end the
    request in the state its evidence supports (:func:`request_end_state`, which the report's first
    page states too). Returns the report's summary."""
    request = DeletionRequest.objects.get(pk=request_id)
    if request.status in (S.COMPLETED, S.CLOSED_RISK_ACCEPTED):
        return {"skipped": f"already ended ({request.status})"}
    with transaction.atomic():
        _erase_request_data(request)
        # Art. 19: whoever holds a copy of a changed model is told, before the report that lists them.
        # A concept request erased no one's data: there is no erasure to tell them of.
        if request.kind != RequestKind.CONCEPT:
            recipients_notify(request=request)
    summary = report_data.report_build_and_sign(request=request)
    with transaction.atomic():
        end = request_end_state(request)
        transition(request, (S.AUDITING,), end, actor="platform",
                   event="request.completed" if end == S.COMPLETED else "request.closed_risk_accepted",
                   completed_at=timezone.now())
        # The person's address is under a key of its own, not the subject's destroyed above.
        notice_send(request=request, kind=NoticeKind.COMPLETION)
    return summary


def _erase_request_data(request: DeletionRequest) -> None:
    """Once every model has been unlearned: mark the request's records erased, suppress them and
    the subject, and rewrite the dataset files that hold them. Records still held by a version
    under legal hold are kept (the hold is the legal ground for keeping them)."""
    scoped = set(request_scope(request).record_ids)
    held = {rid for o in request.outcomes.filter(status=OutcomeStatus.HELD) for rid in o.record_ids}
    to_erase = sorted(scoped - held)
    if not held and request.identifier_digests:
        # The identifiers the person gave go on the suppression list, data or not: what is
        # imported of them later is refused (the subjects' own identifiers follow below).
        added = identifiers_suppress(digests=request.identifier_digests, reason=f"deletion request {request.public_id}")
        DeletionRequest.objects.filter(pk=request.pk).update(identifier_digests=[])
        ledger_append(event_type="identifiers.suppressed", actor="platform", request=str(request.public_id),
                      kinds=sorted({d["kind"] for d in request.identifier_digests}), entries=added)
    if not to_erase:
        return
    erased = request_data_erase(record_ids=to_erase, subjects=[] if held else request_subjects(request),
                                reason=f"deletion request {request.public_id}")
    # Shadow models that still held the records (e.g. trained after an audit's purge while they were still
    # active; the report lists them): their sets are replenished from what the lineage holds now.
    replenished = [shadow_models_replenish(version=version)
                   for version in ModelVersion.objects.filter(id__in=erased["shadow_roots"]).order_by("id")]
    ledger_append(event_type="data.erased", actor="platform", request=str(request.public_id),
                  records=len(to_erase), dataset_files_purged=[p["sha256"] for p in erased["purged"]],
                  shadow_models_purged=[{"sha256": p["sha256"], "label": p["label"]} for p in erased["shadow_models"]],
                  shadow_replenish_jobs=replenished, source_still_holds=erased["source_still_holds"])


@transaction.atomic
def erased_shadows_purge(*, actor: str, dry_run: bool = False) -> dict:
    """Shadow models that still hold records already erased: a data folder from before request erasures
    destroyed them (before d0bf208, a purge's replacement shadows could train on another request's
    records while they were still active) holds such shadows, and an audit that reruns a method on
    them fails (``KeyError: record key(s) not in this dataset``). They are destroyed like the request's
    erasure destroys them, their sets replenished from what each lineage holds now, and the ledger says
    so. ``dry_run``: list them only. Returns ``{"erased_records", "shadow_models": [{sha256, label}],
    "purged": bool, "replenish_jobs": [job ids]}``."""
    if not dry_run:
        erasure_lock(exclusive=True)  # as a request's erasure: no shadow registers meanwhile
    erased = list(DataRecord.objects.filter(status=RecordStatus.ERASED).values_list("id", flat=True))
    shadows = shadow_models_holding(artifacts_holding(record_ids=erased))
    found = {"erased_records": len(erased), "shadow_models": [{"sha256": a.sha256, "label": a.label} for a in shadows],
             "purged": False, "replenish_jobs": []}
    if dry_run or not shadows:
        return found
    purged, roots = shadow_models_purge(shadows)
    replenished = [shadow_models_replenish(version=version)
                   for version in ModelVersion.objects.filter(id__in=roots).order_by("id")]
    ledger_append(event_type="shadow_models.purged", actor=actor, reason="they held records already erased",
                  shadow_models_purged=[{"sha256": p["sha256"], "label": p["label"]} for p in purged],
                  shadow_replenish_jobs=replenished)
    return {**found, "purged": True, "replenish_jobs": replenished}


def run_report_job(job: Job, progress) -> dict:
    """The runner of report jobs: erase the request's data, sign its report; the request completes."""
    return {"report": request_finalize(request_id=job.deletion_request_id, progress=progress)}


# ---------------------------------------------------------------- what the engine asks the workflow


def unsettled_source_reason(job: Job) -> str:
    """A start gate for unlearning jobs: the version ``job`` would build on is still being audited
    (it may yet fail and be destroyed by an escalation), has failed its audit or awaits the DPO's
    decision on an inconclusive one, and a version built on it would carry what it failed to
    forget. It waits until the DPO escalates (which destroys that version), accepts the risk or
    withdraws the model."""
    if job.kind != JobKind.UNLEARN or job.source_version_id is None:
        return ""
    head = current_source(job.source_version)
    unsettled = (ModelOutcome.objects.filter(new_version=head,
                                             status__in=[OutcomeStatus.AUDITING, OutcomeStatus.AUDIT_FAILED,
                                                         OutcomeStatus.AWAITING_DECISION])
                 .select_related("request").first())
    if unsettled is None:
        return ""
    state = {OutcomeStatus.AUDITING: "being audited", OutcomeStatus.AUDIT_FAILED: "failed its audit",
             OutcomeStatus.AWAITING_DECISION: "inconclusive, awaiting the DPO's decision"}[unsettled.status]
    return f"version {head.version} ({unsettled.request.public_id}) is {state}"


def unsettled_parent_reason(job: Job) -> str:
    """A start gate for the unlearning job of a derived child (a method that re-derives it from its
    parent, workers.runners.derived): it waits while the parent version it was derived from is being
    unlearned and that outcome is not settled, that is until the parent's new version passed its
    audit or the DPO decided (accepted the risk, withdrew the parent, which the job then reports as
    nothing to re-derive from). The parent is the one the plan named (``config.parent``)."""
    from workers.unlearning.catalogue import METHOD_SPECS

    if job.kind != JobKind.UNLEARN or job.method not in METHOD_SPECS or not METHOD_SPECS.get(job.method).rederives:
        return ""
    parent_id = ((job.config or {}).get("parent") or {}).get("version_id")
    parent = ModelVersion.objects.filter(pk=parent_id).first()
    # The parent's own outcomes, or in the child's request that of the step on the parent's unlearning
    # chain that covers it (deletion.planning.one_job_per_chain).
    chain = [v.id for v in unlearning_path(parent)] if parent is not None else []
    unsettled = (ModelOutcome.objects.filter(Q(model_version_id=parent_id) | Q(
        request_id=job.deletion_request_id, model_version_id__in=chain), status__in=[
        OutcomeStatus.PLANNED, OutcomeStatus.EXECUTING, OutcomeStatus.AUDITING, OutcomeStatus.AUDIT_FAILED,
        OutcomeStatus.AWAITING_DECISION]).select_related("request", "model_version__model").order_by("id").first())
    if unsettled is None:
        return ""
    parent = unsettled.model_version
    return f"its parent {parent.model.name} v{parent.version} is being unlearned ({unsettled.status})"


def versions_open_requests_use(job: Job | None) -> set[int]:
    """Versions another open request still unlearns from (its copies wait), for a purge done for
    the outcome whose audit or unlearning job is ``job``: every other open outcome, and the parents
    of their results."""
    open_outcomes = (ModelOutcome.objects.exclude(Q(audit_job=job) | Q(job=job)) if job is not None
                     else ModelOutcome.objects.all())
    open_outcomes = (open_outcomes
                     .filter(status__in=[OutcomeStatus.PLANNED, OutcomeStatus.EXECUTING, OutcomeStatus.AUDITING,
                                         OutcomeStatus.AUDIT_FAILED, OutcomeStatus.AWAITING_DECISION]))
    versions = set(open_outcomes.values_list("model_version_id", flat=True))
    versions |= set(open_outcomes.exclude(new_version=None).values_list("new_version__parent_id", flat=True))
    return {v for v in versions if v}
