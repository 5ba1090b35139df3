"""Reads for deletion requests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from django.db import connection
from django.db.models import Count, Prefetch, Q, QuerySet
from django.db.models.functions import TruncWeek
from django.utils import timezone

from audits.models import Report
from deletion.models import OPEN_STATES, DeletionRequest, ModelOutcome, OutcomeStatus, RequestStatus
from foundation.ledger.models import LedgerEvent
from models_registry.models import ModelVersion, VersionStatus
from workers.models import Job


def request_timeline(*, request: DeletionRequest) -> list[dict]:
    """The request's ledger events, oldest first (the ledger is the timeline's source of truth)."""
    events = LedgerEvent.objects.filter(request_ref=request.public_id).order_by("seq")
    return [timeline_entry(seq=event.seq, event=json.loads(event.payload)) for event in events]


def timeline_entry(*, seq: int, event: dict) -> dict:
    """One ledger event as the API's timeline shows it (the request's own id left out)."""
    return {"seq": seq, "at": event["at"], "event": event["type"], "actor": event["actor"],
            "data": {k: v for k, v in event["data"].items() if k != "request"}}


# ---------------------------------------------------------------- the DPO workspace (admin)

DUE_SOON_DAYS = 7


def requests_open() -> QuerySet[DeletionRequest]:
    """Requests that have not ended (completed, rejected, cancelled or failed)."""
    return DeletionRequest.objects.filter(status__in=OPEN_STATES)


def requests_overdue(*, now: datetime | None = None) -> QuerySet[DeletionRequest]:
    """Open requests past their due date."""
    return requests_open().filter(due_at__lt=now or timezone.now())


def requests_due_soon(*, days: int = DUE_SOON_DAYS, now: datetime | None = None) -> QuerySet[DeletionRequest]:
    """Open requests due within ``days`` from now and not yet overdue."""
    now = now or timezone.now()
    return requests_open().filter(due_at__gte=now, due_at__lt=now + timedelta(days=days))


def requests_for_model(*, model_name: str) -> QuerySet[DeletionRequest]:
    """Requests that touch a registered model: by an outcome, or (before approval) by their plan."""
    return DeletionRequest.objects.filter(
        Q(outcomes__model_version__model__name=model_name) | Q(plan__contains=[{"model": model_name}])
    ).distinct()


def request_outcomes(*, request: DeletionRequest) -> list[ModelOutcome]:
    """The request's outcomes with their version, model, job and new version, ordered by model."""
    return list(request.outcomes.select_related("model_version__model", "job", "new_version")
                .order_by("model_version__model__name", "model_version__version"))


def request_jobs(*, request: DeletionRequest) -> list[Any]:
    """Every job of the request (unlearning, audit, report), oldest first, with its model version."""
    return list(Job.objects.filter(Q(deletion_request=request) | Q(outcomes__request=request)).distinct()
                .select_related("source_version__model").order_by("id"))


def request_jobs_progress(*, request: DeletionRequest) -> list[dict[str, Any]]:
    """The request's jobs as plain dicts: id, kind, status, stage, percent (what progress bars poll)."""
    return [{"id": job.id, "kind": job.kind, "status": job.status, "stage": job.progress_stage,
             "percent": round(job.progress_percent, 1)} for job in request_jobs(request=request)]


def request_reports(*, request: DeletionRequest) -> list[Report]:
    """The request's signed reports, newest first."""
    return list(Report.objects.filter(request=request).order_by("-pk"))


def requests_touching_version(*, version_id: int) -> list[dict[str, Any]]:
    """Open requests that act on a model version: its outcome rows, and scoped requests whose plan
    names it (no outcome yet). Each item: request, outcome status (or "planned" from the plan)."""
    touching = []
    outcomes = (ModelOutcome.objects.filter(model_version_id=version_id, request__status__in=OPEN_STATES)
                .select_related("request").order_by("request__due_at"))
    seen = set()
    for outcome in outcomes:
        seen.add(outcome.request_id)
        touching.append({"request": outcome.request, "outcome_status": outcome.status})
    planned = (requests_open().filter(plan__contains=[{"model_version_id": version_id}])
               .exclude(pk__in=seen).order_by("due_at"))
    touching += [{"request": request, "outcome_status": "in plan"} for request in planned]
    return touching


# What a person has to do next on an open request, by key: the queue filters on these and the
# dashboard counts them.
DECISIONS = {
    "verify": "Verify the requester's identity",
    "approve": "Approve the scope and plan",
    "audit_failed": "Audit failed: escalate, withdraw or accept the risk",
    "inconclusive": "Erasure not confirmed (inconclusive, or suppression only): escalate, withdraw or accept",
    "confirm": "Confirm the new version is serving",
}


def requests_awaiting(*, decision: str) -> QuerySet[DeletionRequest]:
    """Open requests waiting for ``decision`` (a key of DECISIONS): received and not verified,
    scoped and not approved, with an outcome whose audit failed or was inconclusive, or with a new
    version waiting for deployment confirmation. A request may wait for more than one decision."""
    if decision == "verify":
        return requests_open().filter(status=RequestStatus.RECEIVED)
    if decision == "approve":
        return requests_open().filter(status=RequestStatus.SCOPED)
    outcome_status = {"audit_failed": OutcomeStatus.AUDIT_FAILED, "inconclusive": OutcomeStatus.AWAITING_DECISION,
                      "confirm": OutcomeStatus.AWAITING_DEPLOYMENT}
    if decision not in outcome_status:
        raise ValueError(f"unknown decision {decision!r}; one of {', '.join(DECISIONS)}")
    waiting = ModelOutcome.objects.filter(status=outcome_status[decision]).values("request_id")
    return requests_open().filter(pk__in=waiting)


def outcome_utility(outcome: ModelOutcome) -> dict | None:
    """The audit's utility check on ``outcome``'s new version, for whoever deploys it: the verdict
    (PASS or FAIL against the bar the plan declared), the retain and test ratios to the original
    (1 = as good), the bar, the metric and the check's reason; None where the audit ran none."""
    check = next((c for c in (outcome.audit or {}).get("checks") or [] if c.get("check") == "utility"), None)
    if check is None:
        return None
    return {key: check.get(key) for key in ("verdict", "metric", "retain_ratio", "test_ratio", "min_ratio", "retain",
                                            "test", "original_retain", "original_test", "reason")}


def outcome_deployment_warnings(outcome: ModelOutcome) -> list[str]:
    """What whoever deploys ``outcome``'s new version must know: the audit verdict's warnings, and, for a
    class-conditional concept eraser (pef_coupling), that the version refuses every input served without
    its attribute (the plan's step says so; without this line the serving side learns it from the error)."""
    warnings = [str(w) for w in ((outcome.audit or {}).get("verdict") or {}).get("warnings") or []]
    step = next((s for s in outcome.request.plan or [] if s.get("model_version_id") == outcome.model_version_id), {})
    concept = step.get("concept") or {}
    if concept.get("needs_attribute_at_inference"):
        warnings.append(f"serving needs the attribute {concept.get('attribute')!r} of every input at inference: "
                        f"the {step.get('method')} eraser is class-conditional and refuses inputs without it "
                        "(AttributeNeeded)")
    return warnings


def deployments_pending() -> QuerySet[ModelOutcome]:
    """New versions that passed their audit (or whose residual risk two DPO users accepted) and wait for the serving
    side to deploy them and confirm: the most urgent request first."""
    return (ModelOutcome.objects.filter(status=OutcomeStatus.AWAITING_DEPLOYMENT, request__status__in=OPEN_STATES)
            .select_related("request", "model_version__model", "new_version")
            .prefetch_related(Prefetch("model_version__model__versions", to_attr="serving",
                                       queryset=ModelVersion.objects.filter(status=VersionStatus.SERVING)))
            .order_by("request__due_at", "id"))


@dataclass(frozen=True)
class RequestStats:
    """Figures for the dashboard. Durations are seconds from receipt to completion."""

    open_by_status: dict[str, int]
    open_total: int
    due_this_week: int
    overdue: int
    completed: int
    median_seconds: float | None
    p95_seconds: float | None
    awaiting: dict[str, int]  # open requests per DECISIONS key


def request_stats(*, now: datetime | None = None) -> RequestStats:
    """Open requests by status, due within a week, overdue, and the median and 95th percentile
    of receipt-to-completion time over completed requests (computed in PostgreSQL)."""
    now = now or timezone.now()
    counts = dict(requests_open().values_list("status").annotate(n=Count("id")).values_list("status", "n"))
    open_by_status = {status: counts.get(status, 0) for status in OPEN_STATES}
    table = DeletionRequest._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""SELECT count(*),
                       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM completed_at - received_at)),
                       percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM completed_at - received_at))
                FROM {table} WHERE status = %s AND completed_at IS NOT NULL""",
            [RequestStatus.COMPLETED],
        )
        completed, median, p95 = cursor.fetchone()
    return RequestStats(
        open_by_status=open_by_status, open_total=sum(open_by_status.values()),
        due_this_week=requests_due_soon(now=now).count(), overdue=requests_overdue(now=now).count(),
        completed=completed, median_seconds=None if median is None else float(median),
        p95_seconds=None if p95 is None else float(p95),
        awaiting={key: requests_awaiting(decision=key).count() for key in DECISIONS},
    )


@dataclass(frozen=True)
class WeekCount:
    week: date  # the Monday the week starts on
    received: int
    completed: int


def requests_per_week(*, weeks: int = 12, now: datetime | None = None) -> list[WeekCount]:
    """Requests received and completed in each of the last ``weeks`` calendar weeks, oldest first
    (weeks without any are included with zeros)."""
    now = now or timezone.now()
    this_monday = now.date() - timedelta(days=now.weekday())
    first = this_monday - timedelta(weeks=weeks - 1)
    start = datetime.combine(first, time.min, tzinfo=now.tzinfo)

    def by_week(queryset: QuerySet, field: str) -> dict[date, int]:
        rows = (queryset.filter(**{f"{field}__gte": start}).annotate(week=TruncWeek(field))
                .values("week").annotate(n=Count("id")).values_list("week", "n"))
        return {week.date(): n for week, n in rows}

    received = by_week(DeletionRequest.objects.all(), "received_at")
    completed = by_week(DeletionRequest.objects.filter(status=RequestStatus.COMPLETED), "completed_at")
    return [WeekCount(week, received.get(week, 0), completed.get(week, 0))
            for week in (first + timedelta(weeks=i) for i in range(weeks))]


def open_request_counts_by_version(*, version_ids: list[int]) -> dict[int, int]:
    """For each version id, how many open requests act on it (by an outcome or by their plan)."""
    wanted = set(version_ids)
    touching: dict[int, set[int]] = {v: set() for v in wanted}
    for version_id, request_id in ModelOutcome.objects.filter(
            model_version_id__in=wanted, request__status__in=OPEN_STATES).values_list("model_version_id", "request_id"):
        touching[version_id].add(request_id)
    # Plans before approval have no outcome rows; open requests are few, so read their plans.
    for request_id, plan in requests_open().filter(outcomes__isnull=True).exclude(plan=[]).values_list("id", "plan"):
        for step in plan:
            if step.get("model_version_id") in wanted:
                touching[step["model_version_id"]].add(request_id)
    return {version_id: len(requests) for version_id, requests in touching.items()}
