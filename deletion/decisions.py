"""What people decide on a request: verify, scope, approve (one unlearning job per affected version,
except those on legal hold), reject, extend, cancel; after the audits: escalate a failed audit to an
exact retrain, confirm a deployment, withdraw a model (GDPR Art. 18)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audits.checks.evidence import evidence_kind_of
from audits.checks.registry import audit_cannot_confirm
from audits.runner import older_copies_purge
from deletion.concept_erasers import (
    ERASER_DROP,
    carried_eraser,
    concept_eraser_plan,
    eraser_lost_on_the_chain,
    held_only_by_eraser,
)
from deletion.concept_requests import concept_job_config
from deletion.deadlines import CCPA_DAYS, GDPR_LIKE, GDPR_MAX_EXTENSION_MONTHS, add_months
from deletion.external_retrain import (
    EXTERNAL_RETRAIN,
    external_retrain_policy,
    external_retrain_start,
    external_retrains_cancel,
)
from deletion.models import (
    OPEN_STATES,
    REJECTIONS_BY_JURISDICTION,
    DeletionRequest,
    ModelOutcome,
    NoticeKind,
    OutcomeStatus,
    RequestKind,
)
from deletion.notices import notice_send
from deletion.planning import (
    DP_BOUNDED,
    approximate_alternatives,
    chain_note,
    derived_steps_planned,
    dp_bound_plan,
    equivalence_test_plan,
    estimated_cost,
    exact_alternative,
    method_card,
    one_job_per_chain,
    plan_method,
    plan_model_kind,
    policy_method_refused,
    replay_plan,
    request_scope,
    s3t_kept_data,
    shadow_evidence_shortfall,
    utility_bar_plan,
)
from deletion.transitions import S, actor_name, actor_person, transition
from deletion.workflow import REQUEST_FAILED_NEXT, advance, announce
from foundation.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from foundation.ledger.services import ledger_append
from models_registry.models import ModelVersion, VersionStatus
from workers.jobs import job_cancel, job_create, versions_audited, versions_held
from workers.mlflow_registry import mlflow_deployment_confirmed, mlflow_model_withdrawn
from workers.models import Job, JobKind, JobStatus
from workers.purge import version_purge
from workers.unlearning.catalogue import METHOD_SPECS


@transaction.atomic
def deletion_request_verify(*, request: DeletionRequest, actor, evidence: dict[str, Any]) -> DeletionRequest:
    """RECEIVED -> VERIFIED with identity-verification evidence, then scope and plan -> SCOPED."""
    request = transition(request, (S.RECEIVED,), S.VERIFIED, actor=actor_name(actor), event="request.verified",
                          verification=evidence)
    return deletion_request_scope(request=request, actor=actor)


def deletion_request_scope(*, request: DeletionRequest, actor) -> DeletionRequest:
    scope = request_scope(request)
    versions = {v.version_id: v for v in scope.versions}
    plan = []
    scoped = list(ModelVersion.objects.filter(id__in=versions).select_related("model").order_by("model__name", "version"))
    chains = one_job_per_chain(scoped)  # versions on one unlearning chain: one step, on the one nearest its head
    for version in (v for v in scoped if v.id in chains):
        record_ids = versions[version.id].record_ids
        method, guarantee = plan_method(version=version, record_ids=record_ids)
        if held_only_by_eraser(versions[version.id]):  # the weights never saw them: the eraser is taken off
            method, guarantee = ERASER_DROP, "exact"
        # What the model is (a regressor is named so), and the evidence its audit builds (a regressor's
        # is a classifier's, on its squared error): what the plan can count on is read off the latter.
        model_kind = plan_model_kind(version)
        evidence_kind = evidence_kind_of(model_kind)
        # S3T: how much of the kept data the served model would still learn from, and the retrain
        # of the switched-off adapters offered when that crosses the model's floor.
        kept_data, alternatives = s3t_kept_data(version=version, record_ids=record_ids) if method == "s3t" else (None, [])
        # DP-SGD-trained: the person's group-privacy bound, and dp_bounded offered as a risk decision.
        dp_bound, dp_alternatives = dp_bound_plan(version=version, records=len(record_ids))
        # The policy's approximate method when it cannot take this forget set (the plan is then a retrain).
        policy_refused = policy_method_refused(version=version, record_ids=record_ids)
        # Where the policy allows approximate methods: the others that apply to this model and forget set.
        approximate, not_offered = (approximate_alternatives(version=version, planned=method, record_ids=record_ids)
                                    if guarantee == "approximate" or policy_refused else ([], {}))
        carried = carried_eraser(version)
        eraser = concept_eraser_plan(carried, method=method, record_ids=record_ids)
        # An eraser the step's versions serve that the chain's newest version (the job's start) already lacks.
        lost = None if carried else eraser_lost_on_the_chain([version, *chains[version.id]], record_ids=record_ids)
        # Where the plan is not exact: the exact method an escalation would run, offered now.
        exact = exact_alternative(version=version, method=method, guarantee_class=guarantee)
        alternatives = alternatives + dp_alternatives + approximate + exact
        if eraser is not None:  # what each method the DPO may choose instead would do with the eraser
            alternatives = [{**alternative, "concept_eraser": concept_eraser_plan(
                carried, method=alternative["method"], record_ids=record_ids)} for alternative in alternatives]
        elif lost is not None:  # lost whichever method runs
            eraser, alternatives = lost, [{**alternative, "concept_eraser": lost} for alternative in alternatives]
        plan.append({
            "model_version_id": version.id, "model": version.model.name, "version": version.version,
            "status": version.status, "model_kind": model_kind, "method": method, "guarantee_class": guarantee,
            # Where the method applies and what it costs, as the catalogue declares them.
            "method_info": method_card(method),
            # The policy's approximate method when it cannot take this forget set (then a retrain).
            "policy_method_refused": policy_refused,
            "records": len(record_ids), "record_ids": record_ids,
            "estimated_seconds": estimated_cost(model_id=version.model_id, method=method),
            # Said before the method runs: where the audit cannot confirm erasure, the request will
            # wait for the DPO's decision whatever the method achieves.
            "audit_cannot_confirm": audit_cannot_confirm(guarantee_class=guarantee, model_kind=evidence_kind,
                                                         records=len(record_ids))
                                    or shadow_evidence_shortfall(version=version, method=method),
            # Declared now, before any score is seen; the audit job's config carries the margins.
            "equivalence_test": equivalence_test_plan(version=version, model_kind=evidence_kind,
                                                      records=len(record_ids)),
            # The utility check's bar, declared now too.
            "utility_bar": utility_bar_plan(version=version, model_kind=model_kind),
            # The independent replay of an exact result: when it runs and what it costs.
            "replay": replay_plan(version=version, method=method),
            "kept_data": kept_data,
            "dp_bound": dp_bound,
            # Methods the DPO may approve instead of ``method`` (deletion_request_approve's ``methods``).
            "alternatives": alternatives,
            # Methods of the model's task that were considered and not offered, and why.
            "not_offered": not_offered,
            # A concept eraser the version serves: fitted on how many of the records, kept or dropped.
            "concept_eraser": eraser,
            # Versions of the same unlearning chain this step's one job unlearns for (no step of their own).
            "covers_versions": chain_note(version, chains[version.id],
                                          {v.id: len(versions[v.id].record_ids) for v in chains[version.id]}),
        })
    plan = derived_steps_planned(plan)  # derived children: re-derived from their parent's new version
    summary = {
        "records": len(scope.record_ids), "records_by_dataset": scope.records_by_dataset,
        "model_versions": [{"id": p["model_version_id"], "model": p["model"], "version": p["version"]} for p in plan],
        "artifacts": [{"sha256": a.sha256, "kind": a.kind, "label": a.label} for a in scope.artifacts],
        "empty": scope.is_empty,
    }
    return transition(request, (S.VERIFIED,), S.SCOPED, actor=actor_name(actor), event="request.scoped",
                       scope=summary, plan=plan)


@transaction.atomic
def deletion_request_approve(*, request: DeletionRequest, actor, holds: dict[int, str] | None = None,
                             methods: dict[int, str] | None = None) -> DeletionRequest:
    """SCOPED -> APPROVED, then one job per affected version (except those on legal hold, which
    keep the data with the stated reason) -> EXECUTING; an empty scope completes at once.
    ``methods``: model version id -> a method the plan's step offers instead of its own (its
    ``alternatives``, e.g. s3t_retrain below an S3T model's kept-data floor); the choice is recorded
    in the ledger."""

    holds, methods = holds or {}, methods or {}
    planned = {p["model_version_id"]: p for p in request.plan}
    unknown = set(holds) - set(planned)
    if unknown:
        raise ValidationFailed(f"model version(s) {sorted(unknown)} are not in this request's plan", field="holds")
    chosen = {version_id: _chosen_step(planned, version_id, method) for version_id, method in methods.items()}
    request = transition(request, (S.SCOPED,), S.APPROVED, actor=actor_name(actor), event="request.approved",
                          decision_reason="partial: legal hold on some models" if holds else "")
    for version_id, step in planned.items():
        if version_id in chosen and chosen[version_id]["method"] != step["method"]:
            ledger_append(event_type="outcome.method_chosen", actor=actor_name(actor), request=str(request.public_id),
                          model_version=version_id, planned=step["method"], chosen=chosen[version_id]["method"])
            step = chosen[version_id]
        held = version_id in holds
        outcome = ModelOutcome.objects.create(
            request=request, model_version_id=version_id, method=step["method"],
            guarantee_class=step["guarantee_class"], record_ids=step["record_ids"],
            estimated_seconds=step["estimated_seconds"], status=OutcomeStatus.HELD if held else OutcomeStatus.PLANNED,
            hold_reason=holds.get(version_id, ""),
        )
        if held:
            ledger_append(event_type="outcome.held", actor=actor_name(actor), request=str(request.public_id),
                          model_version=version_id, reason=holds[version_id])
            continue
        if step["method"] == EXTERNAL_RETRAIN:  # the company's own pipeline retrains (its signed job goes out)
            external_retrain_start(outcome=outcome, actor=actor)
            continue
        if step["method"] == DP_BOUNDED:  # nothing is unlearned: the bound is audited, then the DPO decides
            _dp_bound_audit_start(request, outcome, step, actor)
            continue
        version = ModelVersion.objects.select_related("model").get(pk=version_id)
        job = _unlearning_job_for(request, version, step)
        outcome.job = job
        outcome.status = OutcomeStatus.EXECUTING
        outcome.save(update_fields=["job", "status"])
        ledger_append(event_type="job.created", actor=actor_name(actor), request=str(request.public_id),
                      job=job.id, model_version=version_id, method=step["method"])
    if not request.outcomes.exclude(status=OutcomeStatus.HELD).exists():
        # Nothing to unlearn (no model holds the data, or every one is on hold): straight to the
        # report, which erases the records and says what was (not) done.
        request = transition(request, (S.APPROVED,), S.AUDITING, actor="platform", event="request.auditing")
        return _advanced(request)
    request = transition(request, (S.APPROVED,), S.EXECUTING, actor="platform", event="request.executing")
    if not request.outcomes.filter(status__in=[OutcomeStatus.PLANNED, OutcomeStatus.EXECUTING]).exists():
        return _advanced(request)  # nothing to unlearn, only audits to run (dp_bounded): on to AUDITING
    return request


def _dp_bound_audit_start(request: DeletionRequest, outcome: ModelOutcome, step: dict, actor) -> None:
    """dp_bounded: no unlearning job and no new version. An audit job (guarantee class dp_bounded)
    recomputes the person's group-privacy bound from the version's recorded accountant figures and
    holds it against the limits the plan declared (audits.runner); the outcome then waits for the
    DPO's written risk acceptance whatever the bound (deletion.workflow.on_job_finished)."""
    version = outcome.model_version
    declared = step.get("dp_bound") or {}
    job = job_create(kind=JobKind.AUDIT, registered_model=version.model, source_version=version,
                     deletion_request=request, forget_record_ids=step["record_ids"], guarantee_class=DP_BOUNDED,
                     config={"audited_version": version.id,
                             "dp_limits": {"max_epsilon": declared.get("max_epsilon"),
                                           "max_delta": declared.get("max_delta")}})
    outcome.audit_job = job
    outcome.status = OutcomeStatus.AUDITING
    outcome.save(update_fields=["audit_job", "status"])
    ledger_append(event_type="job.created", actor=actor_name(actor), request=str(request.public_id),
                  job=job.id, model_version=version.id, method=DP_BOUNDED, kind=JobKind.AUDIT)


def _chosen_step(planned: dict[int, dict], version_id: int, method: str) -> dict:
    """The plan's step for ``version_id`` run with ``method``: its own method or one it offers."""
    step = planned.get(version_id)
    if step is None:
        covering = next((s for s in planned.values() if version_id in [
            v["model_version_id"] for v in (s.get("covers_versions") or {}).get("versions", [])]), None)
        if covering is not None:
            raise ValidationFailed(f"model version {version_id} has no step of its own: the step of {covering['model']} "
                                   f"v{covering['version']} (id {covering['model_version_id']}) covers it (one "
                                   "unlearning chain); choose the method there", field="methods")
        raise ValidationFailed(f"model version {version_id} is not in this request's plan", field="methods")
    if method == step["method"]:
        return step
    offered = {alternative["method"]: alternative for alternative in step.get("alternatives") or []}
    refused = (step.get("not_offered") or {}).get(method)
    if method not in offered and refused:
        raise ValidationFailed(f"{method!r} cannot unlearn this request's records from {step['model']} "
                               f"v{step['version']}: {refused}", field="methods", code="method_not_applicable")
    if method not in offered:
        allowed = ", ".join([step["method"], *offered])
        raise ValidationFailed(f"the plan does not offer {method!r} for {step['model']} v{step['version']}; "
                               f"it offers: {allowed}", field="methods")
    alternative = offered[method]
    return {**step, "method": method, "guarantee_class": alternative["guarantee_class"],
            "estimated_seconds": alternative.get("estimated_seconds"),
            "concept_eraser": alternative.get("concept_eraser", step.get("concept_eraser"))}


def _batch_window(version: ModelVersion) -> int:
    policy = version.model.unlearning_policy or {}
    return int(policy.get("batch_window_seconds", settings.UNLEARNING_BATCH_WINDOW_SECONDS))


def _unlearning_job_for(request: DeletionRequest, version: ModelVersion, step: dict):
    """Requests approved for the same version within the batching window share one job: a job
    still pending (enqueued with the window as its countdown) takes the new records in. A concept
    request's job is its own (its attribute's labels are in its config) and starts at once."""
    if request.kind == RequestKind.CONCEPT:
        return job_create(kind=JobKind.UNLEARN, registered_model=version.model, source_version=version,
                          deletion_request=request, method=step["method"], guarantee_class=step["guarantee_class"],
                          config=concept_job_config(request=request, step=step), forget_record_ids=[],
                          estimated_seconds=step["estimated_seconds"])
    window = _batch_window(version)
    if window > 0:
        pending = (Job.objects.select_for_update()
                   .filter(kind=JobKind.UNLEARN, status=JobStatus.PENDING, source_version=version, method=step["method"],
                           created_at__gte=timezone.now() - timedelta(seconds=window)).order_by("id").first())
        if pending is not None:
            pending.forget_record_ids = sorted(set(pending.forget_record_ids) | set(step["record_ids"]))
            pending.save(update_fields=["forget_record_ids"])
            return pending
    policy = version.model.unlearning_policy or {}
    # The policy's method_config configures the policy's method, not one the DPO chose instead.
    policy_config = policy.get("method_config", {}) if step["method"] == policy.get("approximate_method") else {}
    return job_create(kind=JobKind.UNLEARN, registered_model=version.model, source_version=version,
                      deletion_request=request, method=step["method"], guarantee_class=step["guarantee_class"],
                      config=step.get("method_config") or policy_config,
                      forget_record_ids=step["record_ids"], estimated_seconds=step["estimated_seconds"],
                      countdown=window)


@transaction.atomic
def deletion_request_reject(*, request: DeletionRequest, actor, ground: str, reason: str) -> DeletionRequest:
    """Refuse a person's request on a ground the jurisdiction allows (GDPR Art. 17(3), CCPA §1798.105(d));
    the person is told why. A concept request is no person's: it is cancelled, not refused."""
    if request.kind == RequestKind.CONCEPT:
        raise Conflict("a concept request is the company's own decision, not a person's request: there is no "
                       "person to refuse and no Art. 17(3) ground applies; cancel it instead", code="concept_request")
    allowed = REJECTIONS_BY_JURISDICTION[request.jurisdiction]
    if ground not in allowed:
        raise ValidationFailed(f"{ground!r} is not a ground for refusal under {request.jurisdiction}; "
                               f"allowed: {', '.join(allowed)}", field="ground")
    if not reason.strip():
        raise ValidationFailed("a reason is required", field="reason")
    request = transition(request, (S.RECEIVED, S.VERIFIED, S.SCOPED), S.REJECTED, actor=actor_name(actor),
                         event="request.rejected", rejection_ground=ground, decision_reason=reason,
                         completed_at=timezone.now(), identifier_digests=[])
    notice_send(request=request, kind=NoticeKind.REFUSAL)  # its grounds and the right to complain
    return request


@transaction.atomic
def deletion_request_extend(*, request: DeletionRequest, actor, reason: str, months: int | None = None,
                            days: int | None = None) -> DeletionRequest:
    """Extend the deadline once: GDPR Art. 12(3) by up to two further months; CCPA by 45 days."""
    if not reason.strip():
        raise ValidationFailed("a reason is required", field="reason")
    if request.extended_at is not None:
        raise Conflict("the deadline was already extended once", code="already_extended")
    now = timezone.now()
    if request.due_at <= now:
        # Art. 12(3): the person is told of an extension within one month of receipt, with the reasons;
        # a deadline already missed cannot be moved after the fact (it stays overdue, and says so).
        raise Conflict(f"the deadline passed on {request.due_at:%Y-%m-%d %H:%M} UTC: an extension must be decided "
                       "and given to the person before the deadline, not after it", code="deadline_passed")
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
    request = transition(request, OPEN_STATES, request.status, actor=actor_name(actor), event="request.extended",
                         due_at=new_due, extended_at=now, extension_reason=reason, overdue=False)
    notice_send(request=request, kind=NoticeKind.EXTENSION)  # Art. 12(3): the person is told, with the reasons
    return request


@transaction.atomic
def deletion_request_cancel(*, request: DeletionRequest, actor, reason: str = "") -> DeletionRequest:
    request = transition(request, (S.RECEIVED, S.VERIFIED, S.SCOPED), S.CANCELLED, actor=actor_name(actor),
                         event="request.cancelled", decision_reason=reason, completed_at=timezone.now(),
                         identifier_digests=[])
    notice_send(request=request, kind=NoticeKind.CANCELLATION)
    return request


# Outcomes whose audit did not pass: they wait for the DPO to escalate, withdraw or accept the risk.
DECIDABLE = (OutcomeStatus.AUDIT_FAILED, OutcomeStatus.AWAITING_DECISION)


@transaction.atomic
def outcome_risk_accept(*, request: DeletionRequest, actor, model_version_id: int, reason: str) -> DeletionRequest:
    """Accept the residual risk of a result whose audit did not pass: erasure is not confirmed for
    this model, and the request will end CLOSED_RISK_ACCEPTED, never COMPLETED. Two DPO users
    decide: the first call records the acceptance with its reason, a second call by another person
    confirms it. People are counted, not paths (deletion.transitions.actor_person): a user in the
    admin and an API token bound to that user are one person, and a token bound to no one
    (PermissionDenied, ``person_required``) takes no part. Confirmed, the older copies that still
    hold the records are purged (they waited for this decision) and the new version goes to the
    serving side like a passed one."""
    who, now = actor_name(actor), timezone.now().isoformat()
    person = actor_person(actor)
    if person is None:
        raise PermissionDenied(
            f"{who} is bound to no person, and accepting a residual risk takes two DPO users (people, not API "
            "tokens): decide in the admin as your DPO user, or with a token bound to you (python manage.py "
            "create_api_token --role dpo --name <name> --user <your username>)",
            code="person_required", details={"actor": who})
    outcome = _outcome_locked(request, model_version_id=model_version_id)
    if outcome.status not in DECIDABLE:
        raise Conflict(f"only the risk of an audit that did not pass can be accepted (this outcome is "
                       f"{outcome.status})", code="illegal_transition")
    accepted = dict(outcome.risk_acceptance)
    proposer = risk_acceptance_proposer(accepted)
    if proposer is None:  # nothing proposed yet, or only by a token of no one (before tokens named people)
        if not reason.strip():
            raise ValidationFailed("a reason is required", field="reason")
        replaced = {"replaces_proposal_by": accepted["proposed_by"]} if accepted else {}
        outcome.risk_acceptance = {"reason": reason.strip(), "proposed_by": who, "proposed_by_person": person,
                                   "proposed_at": now}
        outcome.save(update_fields=["risk_acceptance"])
        ledger_append(event_type="outcome.risk_acceptance_proposed", actor=who, request=str(request.public_id),
                      model_version=model_version_id, verdict=outcome.verdict, reason=reason.strip(), person=person,
                      **replaced)
        return request
    if proposer == person:
        paths = "" if who == accepted["proposed_by"] else f" (as {accepted['proposed_by']}, now as {who}: one person)"
        raise Conflict(f"{person} proposed accepting this risk{paths}; a second DPO user must confirm it",
                       code="second_dpo_required", details={"person": person})
    accepted.update(proposed_by_person=proposer, confirmed_by=who, confirmed_by_person=person, confirmed_at=now)
    outcome.risk_acceptance = accepted
    purge = {}
    if outcome.new_version is not None:
        purge = older_copies_purge(source=outcome.new_version.parent, record_ids=outcome.record_ids,
                                   keep_versions=versions_held(outcome.audit_job or outcome.job),
                                   audited=versions_audited(outcome.audit_job or outcome.job))
        outcome.audit = {**outcome.audit, **purge, "purge_waits_for_decision": False}
        outcome.status = OutcomeStatus.AWAITING_DEPLOYMENT
    else:  # the method could not make a version: the model as it is stays in service
        outcome.status = OutcomeStatus.CONFIRMED
    outcome.save(update_fields=["risk_acceptance", "audit", "status"])
    ledger_append(event_type="outcome.risk_accepted", actor=who, request=str(request.public_id),
                  model_version=model_version_id, verdict=outcome.verdict, reason=accepted["reason"],
                  proposed_by=accepted["proposed_by"], confirmed_by=who, proposed_by_person=proposer,
                  confirmed_by_person=person,
                  artifacts_purged=[p["sha256"] for p in purge.get("purged", [])])
    announce(outcome)
    return _advanced(request)


def risk_acceptance_proposer(accepted: dict) -> str | None:
    """The person who proposed a risk acceptance, or None when nothing was proposed or the proposal
    names no one. Proposals recorded before people were stored name theirs only in the actor:
    ``user:<username>`` is a person, an API token's name (``api:...``) is nobody."""
    if not accepted:
        return None
    if "proposed_by_person" in accepted:
        return accepted["proposed_by_person"]
    proposed_by = accepted.get("proposed_by", "")
    return proposed_by if proposed_by.startswith("user:") else None


@transaction.atomic
def outcome_escalate(*, request: DeletionRequest, actor, model_version_id: int,
                     method: str | None = None) -> DeletionRequest:
    """After an audit that did not pass (FAIL or INCONCLUSIVE): unlearn the same records again with
    an exact method: the model's own pipeline where its policy declares an external retrain (a signed
    job goes to it, deletion.external_retrain), else the platform's retrain of the model the result
    came from. ``method`` (``retrain`` or ``external_retrain``) chooses one explicitly."""
    outcome = _outcome_locked(request, model_version_id=model_version_id)
    if outcome.status not in DECIDABLE:
        raise Conflict(f"only an audit that did not pass can be escalated (this outcome is {outcome.status})",
                       code="illegal_transition")
    version = outcome.model_version
    if outcome.method in METHOD_SPECS and METHOD_SPECS.get(outcome.method).rederives:
        # Its recipe derives it from a parent: a retrain is the re-derivation that did not pass.
        raise Conflict(f"{version} is derived from another model and was re-derived from its parent's new version; "
                       "it cannot be retrained on its own: withdraw it from serving (GDPR Art. 18) or accept the "
                       "risk", code="escalation_impossible", details={"model_version": version.id})
    if request.kind == RequestKind.CONCEPT:
        # A retrain erases records; a concept request names none, so it would rebuild the same model.
        raise Conflict(f"a concept erasure of {version} has no exact method to escalate to: withdraw the model from "
                       "serving or accept the risk (or file a new concept request, e.g. with another layer)",
                       code="escalation_impossible", details={"model_version": version.id})
    method = method or (EXTERNAL_RETRAIN if external_retrain_policy(version.model) else "retrain")
    if method not in ("retrain", EXTERNAL_RETRAIN):
        raise ValidationFailed(f"escalation is to an exact method: retrain or {EXTERNAL_RETRAIN}, not {method!r}",
                               field="method")
    if method == "retrain" and version.status == VersionStatus.PURGED:
        # The retrain reads the version's stored run (its recipe, config and membership).
        raise Conflict(f"{version} was purged, so there is nothing to retrain from; withdraw the model from "
                       "serving instead (GDPR Art. 18)", code="escalation_impossible",
                       details={"model_version": version.id})
    failed = outcome.new_version
    purged: list[dict] = []
    if failed is not None:
        # The failed version may still hold the records: it is destroyed, not kept as a base.
        purged = version_purge(version=failed)
        ledger_append(event_type="version.purged", actor=actor_name(actor), request=str(request.public_id),
                      model_version=failed.id, reason=f"audit {outcome.verdict or 'failed'}, escalated",
                      artifacts=[p["sha256"] for p in purged])
    # The failed attempt stays on the record (and in the report): what was tried, what its audit
    # found, who escalated it and which files of it were destroyed.
    outcome.attempts = [*outcome.attempts, {
        "method": outcome.method, "guarantee_class": outcome.guarantee_class, "job_id": outcome.job_id,
        "new_version_id": failed.id if failed else None, "new_version": failed.version if failed else None,
        "new_artifact_sha256": failed.artifact_sha256 if failed else None, "verdict": outcome.verdict,
        "audit": outcome.audit, "escalated_at": timezone.now().isoformat(), "escalated_by": actor_name(actor),
        "purged_artifacts": [{"description": p.get("label") or p.get("kind", "artifact"), "sha256": p["sha256"]}
                             for p in purged],
    }]
    if method == EXTERNAL_RETRAIN:  # the company's pipeline retrains from its own data: its signed job goes out
        outcome.save(update_fields=["attempts"])
        retrain = external_retrain_start(outcome=outcome, actor=actor)
        ledger_append(event_type="outcome.escalated", actor=actor_name(actor), request=str(request.public_id),
                      model_version=model_version_id, method=EXTERNAL_RETRAIN,
                      external_retrain=str(retrain.public_id))
        return _back_to_executing(request)
    outcome.audit, outcome.audit_job = {}, None
    outcome.new_version = None
    outcome.method, outcome.guarantee_class = "retrain", "exact"
    outcome.status = OutcomeStatus.EXECUTING
    outcome.job = job_create(kind=JobKind.UNLEARN, registered_model=version.model, source_version=version,
                             deletion_request=request, method="retrain", guarantee_class="exact",
                             forget_record_ids=outcome.record_ids)
    outcome.verdict = ""
    outcome.save()
    ledger_append(event_type="outcome.escalated", actor=actor_name(actor), request=str(request.public_id),
                  model_version=model_version_id, method="retrain", job=outcome.job.id)
    return _back_to_executing(request)


def _back_to_executing(request: DeletionRequest) -> DeletionRequest:
    # Back to EXECUTING through the guarded transition (ledger, webhooks). The row is locked first:
    # another model's escalation or audit may move the request at the same time.
    request = DeletionRequest.objects.select_for_update().get(pk=request.pk)
    if request.status == S.AUDITING:
        request = transition(request, (S.AUDITING,), S.EXECUTING, actor="platform", event="request.executing")
    return request


@transaction.atomic
def deployment_confirm(*, request: DeletionRequest, actor, new_version_id: int, manual: bool) -> DeletionRequest:
    """The serving side (or a DPO, recorded as manual) confirms a new version is what now serves."""
    outcome = _outcome_locked(request, new_version_id=new_version_id)
    if outcome.status != OutcomeStatus.AWAITING_DEPLOYMENT:
        raise Conflict(f"this outcome is {outcome.status}, not awaiting deployment", code="illegal_transition")
    ModelVersion.objects.filter(pk=new_version_id).update(status=VersionStatus.SERVING)
    if request.kind == RequestKind.CONCEPT:
        # The version that still uses the attribute is replaced, not purged (it held no one's erasure);
        # retired, it is out of later requests' scope, whose unlearning builds on the new version.
        ModelVersion.objects.filter(pk=outcome.model_version_id, status__in=[
            VersionStatus.SERVING, VersionStatus.RETAINED]).update(status=VersionStatus.RETIRED)
    outcome.status = OutcomeStatus.CONFIRMED
    outcome.confirmed_by = actor_name(actor)
    outcome.confirmed_manually = manual
    outcome.confirmed_at = timezone.now()
    outcome.save()
    # A model from the company's MLflow registry: the new version goes there too, and the serving
    # alias moves to it (attempted after commit, retried while MLflow cannot be reached).
    mlflow = mlflow_deployment_confirmed(version=outcome.new_version, request=str(request.public_id),
                                         guarantee_class=outcome.guarantee_class)
    ledger_append(event_type="deployment.confirmed", actor=actor_name(actor), request=str(request.public_id),
                  model_version=new_version_id, manual=manual, **({"mlflow_sync": mlflow.id} if mlflow else {}))
    return _advanced(request)


@transaction.atomic
def model_withdraw(*, request: DeletionRequest, actor, model_version_id: int, reason: str) -> DeletionRequest:
    """Take an affected version out of serving (a GDPR Art. 18 restriction at once), then erase the
    model: the result an unlearning job made for it (a result that did not pass is never a source)
    and every copy of the model that still holds the records are destroyed, the version with them.
    A copy another open request still builds on waits (``withdrawal.purge_deferred``); the report
    lists what was destroyed."""
    outcome = _outcome_locked(request, model_version_id=model_version_id)
    if not reason.strip():
        raise ValidationFailed("a reason is required", field="reason")
    version = outcome.model_version
    ModelVersion.objects.filter(pk=model_version_id).update(status=VersionStatus.WITHDRAWN)
    if outcome.job is not None and outcome.job.status in (JobStatus.PENDING, JobStatus.RUNNING):
        job_cancel(job=outcome.job)  # nothing is unlearned from a model that is being erased
    external_retrains_cancel(outcome=outcome)  # an upload token of the company's pipeline opens nothing now
    destroyed = []
    if outcome.new_version is not None and outcome.new_version.status != VersionStatus.PURGED:
        destroyed += version_purge(version=outcome.new_version)
    version.refresh_from_db()
    purge = older_copies_purge(source=version, record_ids=outcome.record_ids,
                               keep_versions=versions_held(outcome.audit_job or outcome.job))
    destroyed += purge["purged"]
    outcome.status = OutcomeStatus.WITHDRAWN
    outcome.hold_reason = reason
    outcome.audit = {**outcome.audit, "purged": [*outcome.audit.get("purged", []), *destroyed],
                     "withdrawal": {"purge_deferred": purge["purge_deferred"],
                                    "copies_remain": bool(purge["purge_deferred"]) or purge["copies_remaining"] > 0}}
    outcome.save(update_fields=["status", "hold_reason", "audit"])
    mlflow = mlflow_model_withdrawn(version=version, request=str(request.public_id))  # its serving alias goes
    ledger_append(event_type="model.withdrawn", actor=actor_name(actor), request=str(request.public_id),
                  model_version=model_version_id, reason=reason, artifacts_purged=[p["sha256"] for p in destroyed],
                  purge_deferred=[p["sha256"] for p in purge["purge_deferred"]],
                  **({"mlflow_sync": mlflow.id} if mlflow else {}))
    return _advanced(request)


def _outcome_locked(request: DeletionRequest, **version: int) -> ModelOutcome:
    """The request's outcome for a model version (``model_version_id=``, the version affected, or
    ``new_version_id=``, the version its unlearning made), locked for this transaction."""
    outcome = ModelOutcome.objects.select_for_update().filter(request=request, **version).first()
    if outcome is None:
        (field, version_id), = version.items()
        relation = "is not a result of" if field == "new_version_id" else "is not affected by"
        raise NotFound(f"model version {version_id} {relation} this request")
    # Locked after the outcome, as _back_to_executing and the workers do: an ended request (failed,
    # completed, closed, rejected, cancelled) takes no more decisions, whatever its outcomes say; a
    # retrain or a deployment decided on it would run for a request nobody follows any more.
    status = DeletionRequest.objects.select_for_update().values_list("status", flat=True).get(pk=request.pk)
    if status not in OPEN_STATES:
        raise Conflict(f"this request is {status}: it has ended and takes no more decisions"
                       + (f" ({REQUEST_FAILED_NEXT})" if status == S.FAILED else ""),
                       code="request_ended", details={"status": status})
    return outcome


def _advanced(request: DeletionRequest) -> DeletionRequest:
    """The request after the workflow moved it on from what its outcomes now say."""
    request.refresh_from_db()
    advance(request)
    request.refresh_from_db()
    return request
