"""The deletion-request workflow: one module owns every state change.

Each transition is a conditional UPDATE (so two racing callers cannot both move a request) and
writes its ledger event in the same transaction. Illegal transitions raise Conflict with the
machine-readable code ``illegal_transition``.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import uuid
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Avg
from django.utils import timezone

from deletion.models import (
    DeletionRequest,
    Jurisdiction,
    LegalGround,
    ModelOutcome,
    OutcomeStatus,
    RejectionGround,
    RequestStatus,
)
from deletion.selectors import timeline_entry
from foundation.access.models import ApiToken
from foundation.errors import Conflict, NotFound, ValidationFailed
from foundation.ledger.services import ledger_append
from foundation.strict_json import canonical_json
from models_registry import selectors
from models_registry.models import DataRecord, Dataset, ModelVersion, VersionStatus

S = RequestStatus
GDPR_LIKE = (Jurisdiction.GDPR, Jurisdiction.UK_GDPR)
GROUNDS_BY_JURISDICTION = {
    Jurisdiction.GDPR: [g for g in LegalGround.values if g.startswith("art17_1")],
    Jurisdiction.UK_GDPR: [g for g in LegalGround.values if g.startswith("art17_1")],
    Jurisdiction.CCPA: [LegalGround.CCPA_DELETE],
}
REJECTIONS_BY_JURISDICTION = {
    Jurisdiction.GDPR: [g for g in RejectionGround.values if g.startswith("art17_3")],
    Jurisdiction.UK_GDPR: [g for g in RejectionGround.values if g.startswith("art17_3")],
    Jurisdiction.CCPA: [g for g in RejectionGround.values if g.startswith("ccpa")],
}
CCPA_DAYS = 45
GDPR_MAX_EXTENSION_MONTHS = 2


# ---------------------------------------------------------------- deadlines


def add_months(moment: datetime, months: int) -> datetime:
    """Calendar months, clamped to the month's end (31 Jan + 1 month = 28/29 Feb)."""
    month_index = moment.month - 1 + months
    year, month = moment.year + month_index // 12, month_index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def due_date(*, jurisdiction: str, received_at: datetime) -> datetime:
    """GDPR/UK GDPR Art. 12(3): one month from receipt; CCPA §1798.130: 45 days."""
    if jurisdiction in GDPR_LIKE:
        return add_months(received_at, 1)
    return received_at + timedelta(days=CCPA_DAYS)


def days_left(request: DeletionRequest, now: datetime | None = None) -> int:
    now = now or timezone.now()
    return (request.due_at - now).days if request.due_at >= now else -((now - request.due_at).days + 1)


# ---------------------------------------------------------------- intake


def _actor(client) -> str:
    if client is None:
        return "platform"
    if isinstance(client, ApiToken):
        return f"api:{client.name}({client.role})"
    return f"user:{getattr(client, 'username', client)}"


def _body_fingerprint(body: dict[str, Any]) -> str:
    # Keyed: the body holds raw identifiers, and a plain hash of a short e-mail can be guessed.
    key = hmac.new(settings.SUBJECT_PEPPERS[settings.SUBJECT_PEPPER_VERSION].encode(), b"idempotency",
                   hashlib.sha256).digest()
    return hmac.new(key, canonical_json(body).encode(), hashlib.sha256).hexdigest()


def _resolve_record_keys(record_keys: list[dict[str, str]]) -> list[int]:
    ids = []
    for index, item in enumerate(record_keys):
        name, _, version = item["dataset"].partition("@")
        dataset = Dataset.objects.filter(name=name, version=version or "1").first()
        if dataset is None:
            raise ValidationFailed(f"unknown dataset {item['dataset']!r}", field=f"record_keys[{index}].dataset")
        record = DataRecord.objects.filter(dataset=dataset, external_key=item["record_key"]).first()
        if record is not None:  # an unknown key is not an error: it simply holds nothing
            ids.append(record.id)
    return ids


def deletion_request_create(*, client, body: dict[str, Any], idempotency_key: str = "") -> tuple[DeletionRequest, bool]:
    """Take in a request. Returns (request, created). The same Idempotency-Key with the same body
    returns the original; with another body it is a Conflict. Raw identifiers are pseudonymised
    here and dropped.

    A new key is the common case, so the insert comes first and the unique (client, key)
    constraint finds repeats; a repeat costs one failed insert and one read."""
    from models_registry.services import subjects_find

    fingerprint = _body_fingerprint(body)
    created_by = client if isinstance(client, ApiToken) else None
    if body["legal_ground"] not in GROUNDS_BY_JURISDICTION[body["jurisdiction"]]:
        raise ValidationFailed(
            f"legal_ground {body['legal_ground']} does not apply under {body['jurisdiction']}; "
            f"allowed: {', '.join(GROUNDS_BY_JURISDICTION[body['jurisdiction']])}", field="legal_ground")
    identifiers = [(kind, value) for kind, value in body.get("identifiers", {}).items() if value]
    subjects = subjects_find(identifiers=identifiers) if identifiers else []
    record_ids = _resolve_record_keys(body.get("record_keys", []))
    now = timezone.now()
    try:
        with transaction.atomic():
            request = DeletionRequest.objects.create(
                public_id=uuid.uuid4(), jurisdiction=body["jurisdiction"], legal_ground=body["legal_ground"],
                channel=body["channel"], subject=subjects[0] if subjects else None,
                identifier_kinds=sorted(kind for kind, _ in identifiers), record_ids=record_ids,
                verification=body.get("verification") or {}, created_by=created_by,
                idempotency_key=idempotency_key, body_fingerprint=fingerprint, received_at=now,
                due_at=due_date(jurisdiction=body["jurisdiction"], received_at=now),
            )
            if subjects[1:]:
                request.linked_subjects.add(*subjects[1:])
            received = ledger_append(
                event_type="request.received", actor=_actor(client), request=str(request.public_id),
                jurisdiction=request.jurisdiction, legal_ground=request.legal_ground, channel=request.channel,
                subject=request.subject.reference if request.subject else None,
                linked_subjects=[x.reference for x in subjects[1:]], due_at=request.due_at.isoformat())
    except IntegrityError:
        existing = DeletionRequest.objects.filter(created_by=created_by, idempotency_key=idempotency_key).first()
        if not idempotency_key or existing is None:
            raise
        return _same_body_or_conflict(existing, fingerprint), False
    # What a reader of the new request would find, known without reading it back: no outcomes yet,
    # and one ledger event.
    request._prefetched_objects_cache = {"outcomes": ModelOutcome.objects.none()}
    request.known_timeline = [timeline_entry(seq=received.seq, event=received.event)]
    return request, True


def _same_body_or_conflict(existing: DeletionRequest, fingerprint: str) -> DeletionRequest:
    if not hmac.compare_digest(existing.body_fingerprint, fingerprint):
        raise Conflict("this Idempotency-Key was used with a different body", code="idempotency_key_reused")
    return existing


# ---------------------------------------------------------------- transitions


def _transition(request: DeletionRequest, allowed_from: tuple[str, ...], to: str, *, actor: str, event: str,
                **fields: Any) -> DeletionRequest:
    changed = DeletionRequest.objects.filter(pk=request.pk, status__in=allowed_from).update(status=to, **fields)
    if changed != 1:
        current = DeletionRequest.objects.values_list("status", flat=True).get(pk=request.pk)
        raise Conflict(f"cannot go from {current} to {to}", code="illegal_transition",
                       details={"status": current, "allowed_from": list(allowed_from)})
    ledger_append(event_type=event, actor=actor, request=str(request.public_id), to=to,
                  **{k: v for k, v in fields.items() if isinstance(v, (str, int, float, bool, type(None)))})
    request.refresh_from_db()
    from deletion.webhooks import webhooks_notify

    webhooks_notify(request=request, event=event)
    return request


@transaction.atomic
def deletion_request_verify(*, request: DeletionRequest, actor, evidence: dict[str, Any]) -> DeletionRequest:
    """RECEIVED -> VERIFIED with identity-verification evidence, then scope and plan -> SCOPED."""
    request = _transition(request, (S.RECEIVED,), S.VERIFIED, actor=_actor(actor), event="request.verified",
                          verification=evidence)
    return deletion_request_scope(request=request, actor=actor)


def request_subjects(request: DeletionRequest) -> list:
    """The request's subject and every subject its verified identifiers linked to it."""
    return ([request.subject] if request.subject else []) + list(request.linked_subjects.all())


def request_scope(request: DeletionRequest):
    """The merged scope of every subject of the request and the records it named."""
    scope = selectors.subject_scope(subject=None)
    for subject in request_subjects(request):
        scope = _merge_scopes(scope, selectors.subject_scope(subject=subject))
    if request.record_ids:
        scope = _merge_scopes(scope, selectors.records_scope(record_ids=request.record_ids))
    return scope


def deletion_request_scope(*, request: DeletionRequest, actor) -> DeletionRequest:
    scope = request_scope(request)
    versions = {v.version_id: v for v in scope.versions}
    plan = []
    for version in ModelVersion.objects.filter(id__in=versions).select_related("model").order_by("model__name", "version"):
        method, guarantee = plan_method(version=version)
        record_ids = versions[version.id].record_ids
        plan.append({
            "model_version_id": version.id, "model": version.model.name, "version": version.version,
            "status": version.status, "method": method, "guarantee_class": guarantee,
            "records": len(record_ids), "record_ids": record_ids,
            "estimated_seconds": estimated_cost(model_id=version.model_id, method=method),
        })
    summary = {
        "records": len(scope.record_ids), "records_by_dataset": scope.records_by_dataset,
        "model_versions": [{"id": p["model_version_id"], "model": p["model"], "version": p["version"]} for p in plan],
        "artifacts": [{"sha256": a.sha256, "kind": a.kind, "label": a.label} for a in scope.artifacts],
        "empty": scope.is_empty,
    }
    return _transition(request, (S.VERIFIED,), S.SCOPED, actor=_actor(actor), event="request.scoped",
                       scope=summary, plan=plan)


def _merge_scopes(a, b):
    versions = {v.version_id: v for v in a.all_versions}
    for v in b.all_versions:
        if v.version_id in versions:
            versions[v.version_id].placements += [p for p in v.placements if p.record_id not in versions[v.version_id].record_ids]
        else:
            versions[v.version_id] = v
    by_dataset = dict(a.records_by_dataset)
    for name, count in b.records_by_dataset.items():
        by_dataset[name] = by_dataset.get(name, 0) + count
    artifacts = {x.id: x for x in a.artifacts + b.artifacts}
    return selectors.Scope(sorted(set(a.record_ids) | set(b.record_ids)), by_dataset, list(versions.values()),
                           sorted(artifacts.values(), key=lambda x: x.id), a.subject_id)


EXACT_RECIPES = {"sisa": "sisa", "s3t": "s3t"}


def plan_method(*, version: ModelVersion) -> tuple[str, str]:
    """What the model's unlearning policy allows for this version: exact for sharded recipes,
    else the configured approximate method (an exact retrain after ``exact_after`` approximate
    deletions), else a full retrain."""
    model = version.model
    policy = model.unlearning_policy or {}
    if model.training_recipe in EXACT_RECIPES:
        return EXACT_RECIPES[model.training_recipe], "exact"
    method = policy.get("approximate_method")
    if method and not policy.get("prefer_exact"):
        limit = policy.get("exact_after")
        done = ModelOutcome.objects.filter(model_version__model=model, guarantee_class="approximate",
                                           status__in=[OutcomeStatus.CONFIRMED, OutcomeStatus.AWAITING_DEPLOYMENT]).count()
        if limit is None or done < limit:
            return method, ("suppressed" if method == "verifier_guard" else "approximate")
    return "retrain", "exact"


def estimated_cost(*, model_id: int, method: str) -> float | None:
    """Mean wall seconds of past successful jobs of this model and method (None without history)."""
    from workers.models import Job

    mean = Job.objects.filter(registered_model_id=model_id, method=method, status="succeeded").aggregate(
        mean=Avg("wall_seconds"))["mean"]
    return round(mean, 1) if mean is not None else None


@transaction.atomic
def deletion_request_approve(*, request: DeletionRequest, actor, holds: dict[int, str] | None = None) -> DeletionRequest:
    """SCOPED -> APPROVED, then one job per affected version (except those on legal hold, which
    keep the data with the stated reason) -> EXECUTING; an empty scope completes at once."""

    holds = holds or {}
    planned = {p["model_version_id"]: p for p in request.plan}
    unknown = set(holds) - set(planned)
    if unknown:
        raise ValidationFailed(f"model version(s) {sorted(unknown)} are not in this request's plan", field="holds")
    request = _transition(request, (S.SCOPED,), S.APPROVED, actor=_actor(actor), event="request.approved",
                          decision_reason="partial: legal hold on some models" if holds else "")
    for version_id, step in planned.items():
        held = version_id in holds
        outcome = ModelOutcome.objects.create(
            request=request, model_version_id=version_id, method=step["method"],
            guarantee_class=step["guarantee_class"], record_ids=step["record_ids"],
            estimated_seconds=step["estimated_seconds"], status=OutcomeStatus.HELD if held else OutcomeStatus.PLANNED,
            hold_reason=holds.get(version_id, ""),
        )
        if held:
            ledger_append(event_type="outcome.held", actor=_actor(actor), request=str(request.public_id),
                          model_version=version_id, reason=holds[version_id])
            continue
        version = ModelVersion.objects.select_related("model").get(pk=version_id)
        job = _unlearning_job_for(request, version, step)
        outcome.job = job
        outcome.status = OutcomeStatus.EXECUTING
        outcome.save(update_fields=["job", "status"])
        ledger_append(event_type="job.created", actor=_actor(actor), request=str(request.public_id),
                      job=job.id, model_version=version_id, method=step["method"])
    if not request.outcomes.exclude(status=OutcomeStatus.HELD).exists():
        # Nothing to unlearn (no model holds the data, or every one is on hold): straight to the
        # report, which erases the records and says what was (not) done.
        request = _transition(request, (S.APPROVED,), S.AUDITING, actor="platform", event="request.auditing")
        _advance(request)
        request.refresh_from_db()
        return request
    return _transition(request, (S.APPROVED,), S.EXECUTING, actor="platform", event="request.executing")


def _batch_window(version: ModelVersion) -> int:
    policy = version.model.unlearning_policy or {}
    return int(policy.get("batch_window_seconds", settings.UNLEARNING_BATCH_WINDOW_SECONDS))


def _unlearning_job_for(request: DeletionRequest, version: ModelVersion, step: dict):
    """Requests approved for the same version within the batching window share one job: a job
    still pending (enqueued with the window as its countdown) takes the new records in."""
    from datetime import timedelta as _td

    from workers.jobs import job_create
    from workers.models import Job

    window = _batch_window(version)
    if window > 0:
        pending = (Job.objects.select_for_update()
                   .filter(kind="unlearn", status="pending", source_version=version, method=step["method"],
                           created_at__gte=timezone.now() - _td(seconds=window)).order_by("id").first())
        if pending is not None:
            pending.forget_record_ids = sorted(set(pending.forget_record_ids) | set(step["record_ids"]))
            pending.save(update_fields=["forget_record_ids"])
            return pending
    return job_create(kind="unlearn", registered_model=version.model, source_version=version,
                      deletion_request=request, method=step["method"], guarantee_class=step["guarantee_class"],
                      config=(version.model.unlearning_policy or {}).get("method_config", {}),
                      forget_record_ids=step["record_ids"], estimated_seconds=step["estimated_seconds"],
                      countdown=window)


@transaction.atomic
def deletion_request_reject(*, request: DeletionRequest, actor, ground: str, reason: str) -> DeletionRequest:
    allowed = REJECTIONS_BY_JURISDICTION[request.jurisdiction]
    if ground not in allowed:
        raise ValidationFailed(f"{ground!r} is not a ground for refusal under {request.jurisdiction}; "
                               f"allowed: {', '.join(allowed)}", field="ground")
    if not reason.strip():
        raise ValidationFailed("a reason is required", field="reason")
    return _transition(request, (S.RECEIVED, S.VERIFIED, S.SCOPED), S.REJECTED, actor=_actor(actor),
                       event="request.rejected", rejection_ground=ground, decision_reason=reason,
                       completed_at=timezone.now())


@transaction.atomic
def deletion_request_extend(*, request: DeletionRequest, actor, reason: str, months: int | None = None,
                            days: int | None = None) -> DeletionRequest:
    """Extend the deadline once: GDPR Art. 12(3) by up to two further months; CCPA by 45 days."""
    if not reason.strip():
        raise ValidationFailed("a reason is required", field="reason")
    if request.extended_at is not None:
        raise Conflict("the deadline was already extended once", code="already_extended")
    if request.jurisdiction in GDPR_LIKE:
        months = GDPR_MAX_EXTENSION_MONTHS if months is None else months
        if days is not None or not 1 <= months <= GDPR_MAX_EXTENSION_MONTHS:
            raise ValidationFailed("GDPR extensions are 1 or 2 months", field="months")
        new_due = add_months(request.due_at, months)
    else:
        days = CCPA_DAYS if days is None else days
        if months is not None or not 1 <= days <= CCPA_DAYS:
            raise ValidationFailed(f"CCPA extensions are up to {CCPA_DAYS} days", field="days")
        new_due = request.due_at + timedelta(days=days)
    open_states = (S.RECEIVED, S.VERIFIED, S.SCOPED, S.APPROVED, S.EXECUTING, S.AUDITING)
    return _transition(request, open_states, request.status, actor=_actor(actor), event="request.extended",
                       due_at=new_due, extended_at=timezone.now(), extension_reason=reason, overdue=False)


@transaction.atomic
def deletion_request_cancel(*, request: DeletionRequest, actor, reason: str = "") -> DeletionRequest:
    return _transition(request, (S.RECEIVED, S.VERIFIED, S.SCOPED), S.CANCELLED, actor=_actor(actor),
                       event="request.cancelled", decision_reason=reason, completed_at=timezone.now())


# ---------------------------------------------------------------- after the workers


@transaction.atomic
def on_job_finished(*, job_id: int) -> None:
    """A job ended: move its outcome (and then the request) on.

    unlearn succeeded -> the outcome is audited (an audit job); failed -> the request fails.
    audit done -> PASS/INCONCLUSIVE await deployment, FAIL needs escalation or withdrawal.
    report done -> the request completes (done by the report job itself)."""
    from workers.jobs import job_create
    from workers.models import Job

    job = Job.objects.get(pk=job_id)
    if job.kind == "unlearn":
        for outcome in ModelOutcome.objects.select_for_update().filter(job=job).select_related("request"):
            not_met = (job.result or {}).get("guarantee_not_met")
            if job.status == "succeeded":
                outcome.new_version = job.result_version
                outcome.status = OutcomeStatus.AUDITING
                outcome.audit_job = job_create(kind="audit", registered_model=job.registered_model,
                                               source_version=outcome.model_version,
                                               deletion_request=outcome.request,
                                               config={"outcome_id": outcome.id})
            elif not_met:
                # The method ran but could not establish its guarantee: a failed audit with no new
                # version, for the DPO to escalate (exact retrain) or withdraw the model.
                outcome.status, outcome.verdict = OutcomeStatus.AUDIT_FAILED, "FAIL"
                outcome.audit = {"verdict": {
                    "verdict": "FAIL", "reasons": [not_met["reason"]],
                    "rule": f"FAIL when the method ({not_met['method']}) cannot establish its guarantee; "
                            "no new version was made"}, "guarantee_not_met": not_met}
            else:
                outcome.status = OutcomeStatus.FAILED
            outcome.save(update_fields=["new_version", "status", "audit_job", "verdict", "audit"])
            ledger_append(event_type="job.finished", actor="worker", request=str(outcome.request.public_id),
                          job=job.id, kind=job.kind, status=job.status, new_version=job.result_version_id,
                          **({"guarantee_not_met": not_met["reason"]} if not_met else {}))
            _advance(outcome.request)
            _announce(outcome)
    elif job.kind == "audit":
        for outcome in ModelOutcome.objects.select_for_update().filter(audit_job=job).select_related("request"):
            if job.status != "succeeded":
                outcome.status = OutcomeStatus.FAILED
            elif outcome.verdict == "FAIL":
                outcome.status = OutcomeStatus.AUDIT_FAILED
            else:
                outcome.status = OutcomeStatus.AWAITING_DEPLOYMENT
            outcome.save(update_fields=["status"])
            ledger_append(event_type="audit.finished", actor="worker", request=str(outcome.request.public_id),
                          job=job.id, model_version=outcome.new_version_id, verdict=outcome.verdict,
                          status=job.status)
            _advance(outcome.request)
            _announce(outcome)
    elif job.kind == "report" and job.status != "succeeded" and job.deletion_request_id:
        request = DeletionRequest.objects.get(pk=job.deletion_request_id)
        _transition(request, (S.AUDITING,), S.FAILED, actor="platform", event="request.failed",
                    failure=f"the report could not be made: {job.error[:500]}")


def _announce(outcome: ModelOutcome) -> None:
    """Webhooks for outcome states no request transition announces: a failed audit (the request
    stays AUDITING until the DPO escalates or withdraws) and a new version ready for the serving
    side to deploy and confirm (POST .../confirm-deployment/ with new_version_id). ``outcome.request``
    is current: _advance refreshed it."""
    from deletion.webhooks import webhooks_notify

    if outcome.status == OutcomeStatus.AUDIT_FAILED:
        webhooks_notify(request=outcome.request, event="outcome.audit_failed", model_version=outcome.model_version_id,
                        decision="escalate or withdraw")
    elif outcome.status == OutcomeStatus.AWAITING_DEPLOYMENT:
        webhooks_notify(request=outcome.request, event="deployment.requested", audience="serving",
                        model=outcome.model_version.model.name, model_version=outcome.model_version_id,
                        new_version=outcome.new_version_id, verdict=outcome.verdict)


def _advance(request: DeletionRequest) -> None:
    from workers.jobs import job_create

    request.refresh_from_db()
    statuses = {o.status for o in request.outcomes.all()}
    if OutcomeStatus.FAILED in statuses and request.status in (S.EXECUTING, S.AUDITING):
        _transition(request, (S.EXECUTING, S.AUDITING), S.FAILED, actor="platform", event="request.failed",
                    failure="a job failed; see the jobs (the request can be retried by a new approval)")
        return
    if request.status == S.EXECUTING and not statuses & {OutcomeStatus.EXECUTING, OutcomeStatus.PLANNED}:
        request = _transition(request, (S.EXECUTING,), S.AUDITING, actor="platform", event="request.auditing")
    done = {OutcomeStatus.CONFIRMED, OutcomeStatus.WITHDRAWN, OutcomeStatus.HELD}
    if request.status == S.AUDITING and statuses <= done:
        if not request.jobs.filter(kind="report").exclude(status__in=["failed", "cancelled"]).exists():
            job_create(kind="report", deletion_request=request)
            ledger_append(event_type="report.queued", actor="platform", request=str(request.public_id))


def request_finalize(*, request_id: int, progress=None) -> dict:
    """The last step (report job): erase the request's data, build and sign its report, and
    complete the request. Returns the report's summary."""
    from audits.report_builder import report_build_and_sign

    request = DeletionRequest.objects.get(pk=request_id)
    if request.status == S.COMPLETED:
        return {"skipped": "already completed"}
    with transaction.atomic():
        _erase_request_data(request)
    summary = report_build_and_sign(request=request)
    with transaction.atomic():
        _transition(request, (S.AUDITING,), S.COMPLETED, actor="platform", event="request.completed",
                    completed_at=timezone.now())
    return summary


@transaction.atomic
def outcome_escalate(*, request: DeletionRequest, actor, model_version_id: int) -> DeletionRequest:
    """After an audit FAIL: unlearn the same records again with an exact retrain of the model
    the failed version came from."""
    from workers.jobs import job_create

    outcome = ModelOutcome.objects.select_for_update().filter(request=request, model_version_id=model_version_id).first()
    if outcome is None:
        raise NotFound(f"model version {model_version_id} is not affected by this request")
    if outcome.status != OutcomeStatus.AUDIT_FAILED:
        raise Conflict(f"only a failed audit can be escalated (this outcome is {outcome.status})",
                       code="illegal_transition")
    version = outcome.model_version
    if version.status == VersionStatus.PURGED:
        # The retrain reads the version's stored run (its recipe, config and membership).
        raise Conflict(f"{version} was purged, so there is nothing to retrain from; withdraw the model from "
                       "serving instead (GDPR Art. 18)", code="escalation_impossible",
                       details={"model_version": version.id})
    failed = outcome.new_version
    purged: list[dict] = []
    if failed is not None:
        # The failed version may still hold the records: it is destroyed, not kept as a base.
        from workers.purge import version_purge

        purged = version_purge(version=failed)
        ledger_append(event_type="version.purged", actor=_actor(actor), request=str(request.public_id),
                      model_version=failed.id, reason="audit failed", artifacts=[p["sha256"] for p in purged])
    # The failed attempt stays on the record (and in the report): what was tried, what its audit
    # found, who escalated it and which files of it were destroyed.
    outcome.attempts = [*outcome.attempts, {
        "method": outcome.method, "guarantee_class": outcome.guarantee_class, "job_id": outcome.job_id,
        "new_version_id": failed.id if failed else None, "new_version": failed.version if failed else None,
        "new_artifact_sha256": failed.artifact_sha256 if failed else None, "verdict": outcome.verdict,
        "audit": outcome.audit, "escalated_at": timezone.now().isoformat(), "escalated_by": _actor(actor),
        "purged_artifacts": [{"description": p.get("label") or p.get("kind", "artifact"), "sha256": p["sha256"]}
                             for p in purged],
    }]
    outcome.audit, outcome.audit_job = {}, None
    outcome.new_version = None
    outcome.method, outcome.guarantee_class = "retrain", "exact"
    outcome.status = OutcomeStatus.EXECUTING
    outcome.job = job_create(kind="unlearn", registered_model=version.model, source_version=version,
                             deletion_request=request, method="retrain", guarantee_class="exact",
                             forget_record_ids=outcome.record_ids)
    outcome.verdict = ""
    outcome.save()
    ledger_append(event_type="outcome.escalated", actor=_actor(actor), request=str(request.public_id),
                  model_version=model_version_id, method="retrain", job=outcome.job.id)
    # Back to EXECUTING through the guarded transition (ledger, webhooks). The row is locked first:
    # another model's escalation or audit may move the request at the same time.
    request = DeletionRequest.objects.select_for_update().get(pk=request.pk)
    if request.status == S.AUDITING:
        request = _transition(request, (S.AUDITING,), S.EXECUTING, actor="platform", event="request.executing")
    return request


def _erase_request_data(request: DeletionRequest) -> None:
    """Once every model has been unlearned: mark the request's records erased, suppress them and
    the subject, and rewrite the dataset files that hold them. Records still held by a version
    under legal hold are kept (the hold is the legal ground for keeping them)."""
    from workers.purge import request_data_erase

    scoped = set(request_scope(request).record_ids)
    held = {rid for o in request.outcomes.filter(status=OutcomeStatus.HELD) for rid in o.record_ids}
    to_erase = sorted(scoped - held)
    if not to_erase:
        return
    purged = request_data_erase(record_ids=to_erase, subjects=[] if held else request_subjects(request),
                                reason=f"deletion request {request.public_id}")
    ledger_append(event_type="data.erased", actor="platform", request=str(request.public_id),
                  records=len(to_erase), dataset_files_purged=[p["sha256"] for p in purged])


@transaction.atomic
def deployment_confirm(*, request: DeletionRequest, actor, new_version_id: int, manual: bool) -> DeletionRequest:
    """The serving side (or a DPO, recorded as manual) confirms a new version is what now serves."""
    outcome = ModelOutcome.objects.select_for_update().filter(request=request, new_version_id=new_version_id).first()
    if outcome is None:
        raise NotFound(f"model version {new_version_id} is not a result of this request")
    if outcome.status != OutcomeStatus.AWAITING_DEPLOYMENT:
        raise Conflict(f"this outcome is {outcome.status}, not awaiting deployment", code="illegal_transition")
    ModelVersion.objects.filter(pk=new_version_id).update(status=VersionStatus.SERVING)
    outcome.status = OutcomeStatus.CONFIRMED
    outcome.confirmed_by = _actor(actor)
    outcome.confirmed_manually = manual
    outcome.confirmed_at = timezone.now()
    outcome.save()
    ledger_append(event_type="deployment.confirmed", actor=_actor(actor), request=str(request.public_id),
                  model_version=new_version_id, manual=manual)
    request.refresh_from_db()
    _advance(request)
    request.refresh_from_db()
    return request


@transaction.atomic
def model_withdraw(*, request: DeletionRequest, actor, model_version_id: int, reason: str) -> DeletionRequest:
    """Restrict processing (GDPR Art. 18): take an affected version out of serving instead."""
    outcome = ModelOutcome.objects.select_for_update().filter(request=request, model_version_id=model_version_id).first()
    if outcome is None:
        raise NotFound(f"model version {model_version_id} is not affected by this request")
    if not reason.strip():
        raise ValidationFailed("a reason is required", field="reason")
    ModelVersion.objects.filter(pk=model_version_id).update(status=VersionStatus.WITHDRAWN)
    outcome.status = OutcomeStatus.WITHDRAWN
    outcome.hold_reason = reason
    outcome.save(update_fields=["status", "hold_reason"])
    ledger_append(event_type="model.withdrawn", actor=_actor(actor), request=str(request.public_id),
                  model_version=model_version_id, reason=reason)
    request.refresh_from_db()
    _advance(request)
    request.refresh_from_db()
    return request


def deadlines_mark(*, now: datetime | None = None, soon_days: int = 7) -> tuple[int, int]:
    """Beat task: flag open requests due within ``soon_days`` and those overdue."""
    now = now or timezone.now()
    open_states = [S.RECEIVED, S.VERIFIED, S.SCOPED, S.APPROVED, S.EXECUTING, S.AUDITING]
    base = DeletionRequest.objects.filter(status__in=open_states)
    overdue = base.filter(due_at__lt=now).update(overdue=True, due_soon=False)
    soon = base.filter(due_at__gte=now, due_at__lt=now + timedelta(days=soon_days)).update(due_soon=True)
    return soon, overdue
