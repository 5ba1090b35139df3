"""Assembling a request's erasure report from the registry, the ledger and the audits.

Django side: reads the request, its outcomes (with their audit JSON written by the audit job),
jobs and purges, and produces the dict that audits/report_schema.py describes; report_create
(audits/reports.py) adds the ledger head and the signer, renders, signs and stores it.
"""

from __future__ import annotations

from django.utils import timezone

from audits.report_schema import SCHEMA_VERSION, STANDARD_LIMITATIONS, guarantee_entry
from deletion.models import DeletionRequest, LegalGround, OutcomeStatus
from deletion.selectors import request_timeline

_METRIC_LABELS = {
    "forget_accuracy": "Accuracy on the erased records",
    "retain_accuracy": "Accuracy on kept training records",
    "test_accuracy": "Accuracy on held-out records",
}
_NOT_UNLEARNED = {
    OutcomeStatus.HELD: "Not unlearned: the model is under a legal hold ({reason}).",
    OutcomeStatus.WITHDRAWN: "Not unlearned: the model was withdrawn from serving (GDPR Art. 18) ({reason}).",
}


def _event_time(timeline: list[dict], event: str) -> str | None:
    return next((e["at"] for e in timeline if e["event"] == event), None)


def _iso(value) -> str | None:
    return value.isoformat() if value else None


def _metrics(audit: dict) -> list[dict]:
    rows = []
    for key, label in _METRIC_LABELS.items():
        values = audit.get("metrics", {}).get(key)
        if values:
            rows.append({"name": label, "before": _num(values.get("original")), "after": _num(values.get("unlearned")),
                         "reference": None})
    for check in audit.get("checks", []):
        rows.append({"name": check.get("check", "check"), "description": str(check.get("rule", ""))[:300],
                     "before": None, "after": None, "reference": None, "result": str(check.get("verdict"))})
    return rows


def _num(value):
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if value == value and abs(value) != float("inf") else None


def _model_entry(outcome) -> dict:
    audit = outcome.audit or {}
    version, new = outcome.model_version, outcome.new_version
    job = outcome.job
    verdict_data = audit.get("verdict") or {}
    if outcome.status in _NOT_UNLEARNED:
        verdict = {"verdict": "INCONCLUSIVE", "rule": _NOT_UNLEARNED[outcome.status].format(reason=outcome.hold_reason),
                   "reasons": ["the data were not removed from this model"], "warnings": [], "notes": []}
    else:
        verdict = {"verdict": str(verdict_data.get("verdict", "INCONCLUSIVE")),
                   "rule": str(verdict_data.get("rule") or "no audit result was recorded"),
                   "reasons": [str(r) for r in verdict_data.get("reasons", [])],
                   "warnings": [str(w) for w in verdict_data.get("warnings", [])],
                   "notes": [str(n) for n in verdict_data.get("notes", [])]}
    roc = audit.get("roc") or {}
    roc_curves = []
    if len(roc.get("fpr", [])) >= 2:
        population = next((c for c in audit.get("checks", []) if c.get("check") == "population_attack"), {})
        auc = next((f.get("value") for f in population.get("figures", []) if f.get("name") == "auc"), None)
        roc_curves.append({"label": "Attack on the new model: erased vs held-out records",
                           "false_positive_rate": roc["fpr"], "true_positive_rate": roc["tpr"], "auc": _num(auc)})
    histograms = audit.get("histograms")
    return {
        "model": version.model.name,
        "version": version.version,
        "new_version": new.version if new else None,
        "outcome": outcome.status,
        "method": outcome.method,
        "guarantee": guarantee_entry(outcome.guarantee_class),
        "old_artifact_sha256": version.artifact_sha256,
        "new_artifact_sha256": new.artifact_sha256 if new else None,
        "code_version": (job.result.get("code_version") if job and job.result else None) or _code_version(),
        "shadow_model_count": int(audit.get("shadow_models", 0)),
        "metrics": _metrics(audit),
        "roc_curves": roc_curves,
        "score_histograms": None if not histograms else {
            "score": "LiRA score: log-odds of the model's confidence in the true label (higher looks more like a member)",
            "bin_edges": histograms["edges"], "forget": histograms["counts"]["forget"],
            "retain": histograms["counts"]["retain"], "test": histograms["counts"]["test"]},
        "cost": {"estimated_seconds": outcome.estimated_seconds,
                 "actual_seconds": round(job.wall_seconds, 2) if job and job.wall_seconds else None,
                 "device": (job.device or "unknown") if job else "none"},
        "verdict": verdict,
    }


def _code_version() -> str:
    from workers.artifacts import code_version

    return code_version() or "unknown"


def report_data(*, request: DeletionRequest) -> dict:
    """The report dict (without ledger head and signer, which report_create adds)."""
    timeline = request_timeline(request=request)
    outcomes = list(request.outcomes.select_related("model_version__model", "new_version", "job")
                    .order_by("model_version__model__name", "model_version__version"))
    purged = []
    for outcome in outcomes:
        for item in (outcome.audit or {}).get("purged", []):
            purged.append({"description": item.get("label") or item.get("kind", "artifact"), "sha256": item["sha256"]})
    for event in timeline:
        if event["event"] == "data.erased":
            purged += [{"description": "dataset file holding the erased records", "sha256": sha}
                       for sha in event["data"].get("dataset_files_purged", [])]
    scope = request.scope or {}
    datasets = []
    for label, count in (scope.get("records_by_dataset") or {}).items():
        name, _, version = label.partition("@")
        datasets.append({"name": name, "version": version, "records": count})
    subjects = [s.reference for s in ([request.subject] if request.subject else [])] + [
        s.reference for s in request.linked_subjects.all()]
    return {
        "schema_version": SCHEMA_VERSION,
        "request_id": str(request.public_id),
        "subject_reference": ", ".join(subjects) or "no registered subject matched the identifiers",
        "jurisdiction": request.jurisdiction,
        "legal_ground": {"code": request.legal_ground, "text": LegalGround(request.legal_ground).label},
        "generated_at": timezone.now().isoformat(),
        "timeline": {
            "received": request.received_at.isoformat(),
            "verified": _event_time(timeline, "request.verified"),
            "approved": _event_time(timeline, "request.approved"),
            "due": request.due_at.isoformat(),
            "extended": _iso(request.extended_at),
            "extension_reason": request.extension_reason,
            "completed": timezone.now().isoformat(),
        },
        "scope": {
            "records": int(scope.get("records", 0)),
            "datasets": datasets,
            "model_versions": [{"model": o.model_version.model.name, "version": o.model_version.version,
                                "status": o.model_version.status} for o in outcomes],
            "purged_artifacts": purged,
        },
        "model_versions": [_model_entry(o) for o in outcomes],
        "limitations": list(STANDARD_LIMITATIONS),
    }


def report_build_and_sign(*, request: DeletionRequest) -> dict:
    """Build, render, sign and store the request's report; returns {id, pdf_path, pdf_sha256}."""
    from audits.reports import report_create

    report = report_create(request=request, report=report_data(request=request))
    return {"id": report.id, "pdf_path": str(report.pdf_path), "pdf_sha256": report.pdf_sha256}
