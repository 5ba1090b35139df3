"""Reads that plan a request: its subjects, its merged scope (subjects and named records), the
method and guarantee class the model's policy allows for each affected version, and the cost
expected from past jobs. Nothing here writes."""

from __future__ import annotations

from django.db.models import Avg

from deletion.models import (
    DeletionRequest,
    ModelOutcome,
    OutcomeStatus,
    RequestStatus,
)
from models_registry import selectors
from models_registry.models import ModelVersion
from workers.models import Job, JobStatus
from workers.unlearning.catalogue import METHOD_SPECS, exact_method_for


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


def plan_method(*, version: ModelVersion) -> tuple[str, str]:
    """What the model's unlearning policy allows for this version: the exact method the method
    catalogue declares for the model's recipe (sisa, s3t), else the configured approximate method
    (an exact retrain after ``exact_after`` approximate deletions), else a full retrain. Returns
    ``(method, guarantee_class)``, the guarantee class as the catalogue declares it."""
    model = version.model
    policy = model.unlearning_policy or {}
    exact = exact_method_for(model.training_recipe)
    if exact is not None:
        return exact.name, exact.guarantee_class
    method = policy.get("approximate_method")
    if method and not policy.get("prefer_exact"):
        limit = policy.get("exact_after")
        done = ModelOutcome.objects.filter(model_version__model=model, guarantee_class="approximate",
                                           status__in=[OutcomeStatus.CONFIRMED, OutcomeStatus.AWAITING_DEPLOYMENT]).count()
        if limit is None or done < limit:
            # The policy was checked against the same catalogue when it was saved.
            return method, METHOD_SPECS.get(method).guarantee_class
    return "retrain", "exact"


def estimated_cost(*, model_id: int, method: str) -> float | None:
    """Mean wall seconds of past successful jobs of this model and method (None without history)."""
    mean = Job.objects.filter(registered_model_id=model_id, method=method, status=JobStatus.SUCCEEDED).aggregate(
        mean=Avg("wall_seconds"))["mean"]
    return round(mean, 1) if mean is not None else None


def request_end_state(request: DeletionRequest) -> str:
    """How a request whose every outcome is settled ends: COMPLETED when erasure is confirmed for
    every affected model (PASS, a withdrawn model, a legal hold that the report names), and
    CLOSED_RISK_ACCEPTED when two DPO users accepted the residual risk of a result that did not pass."""
    if any(o.risk_acceptance.get("confirmed_by") for o in request.outcomes.all()):
        return RequestStatus.CLOSED_RISK_ACCEPTED
    return RequestStatus.COMPLETED
