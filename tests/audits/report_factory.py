"""A realistic erasure report dict for tests (see audits.report_schema).

Three affected model versions, one per kind of result: an exact SISA retrain that passes, an
approximate unlearning whose test power was not shown (INCONCLUSIVE), and a suppressed language
model whose guard bound exceeds its target (FAIL). Verdicts come from the real
``final_verdict``; ROC curves and histograms from seeded synthetic scores.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import numpy as np

from audits.checks.result import CheckResult, Verdict
from audits.checks.verdict import LineageProof, SuppressionBound, final_verdict
from audits.report_schema import STANDARD_LIMITATIONS, guarantee_entry, verdict_entry


def fake_sha256(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()


def _roc(member_scores: np.ndarray, non_member_scores: np.ndarray, points: int = 60) -> dict[str, Any]:
    thresholds = np.quantile(np.concatenate([member_scores, non_member_scores]),
                             np.linspace(1, 0, points))
    fpr = [float((non_member_scores >= t).mean()) for t in thresholds]
    tpr = [float((member_scores >= t).mean()) for t in thresholds]
    fpr, tpr = [0.0] + fpr + [1.0], [0.0] + tpr + [1.0]
    auc = float(np.trapezoid(tpr, fpr))
    return {"false_positive_rate": fpr, "true_positive_rate": tpr, "auc": round(auc, 4)}


def _histograms(forget: np.ndarray, retain: np.ndarray, test: np.ndarray, score: str) -> dict[str, Any]:
    edges = np.linspace(-4, 6, 31)
    return {
        "score": score,
        "bin_edges": [round(float(e), 4) for e in edges],
        "forget": np.histogram(np.clip(forget, -4, 6), edges)[0].tolist(),
        "retain": np.histogram(np.clip(retain, -4, 6), edges)[0].tolist(),
        "test": np.histogram(np.clip(test, -4, 6), edges)[0].tolist(),
    }


def _check(name: str, verdict: Verdict, reason: str) -> CheckResult:
    return CheckResult(check=name, verdict=verdict, rule=f"{name} rule", reason=reason)


def _exact_entry(rng: np.random.Generator) -> dict[str, Any]:
    old_members = rng.normal(2.0, 1.0, 40)
    new_forget, retain, test = rng.normal(0.1, 1.0, 40), rng.normal(2.0, 1.0, 2000), rng.normal(0.0, 1.0, 2000)
    verdict = final_verdict(
        guarantee_class="exact",
        checks=[_check("membership_lira", Verdict.PASS, "no forgotten record detected (0 of 40)")],
        lineage=LineageProof(new_version_holds_none=True, older_copies_purged=True),
    )
    return {
        "model": "credit-risk", "version": 3, "new_version": 4, "outcome": "confirmed",
        "method": "sisa_retrain", "guarantee": guarantee_entry("exact"),
        "old_artifact_sha256": fake_sha256("credit-risk v3"),
        "new_artifact_sha256": fake_sha256("credit-risk v4"),
        "code_version": "71f7627", "shadow_model_count": 16,
        "metrics": [
            {"name": "Test accuracy", "description": "Share of unseen records classified correctly",
             "before": 0.8712, "after": 0.8698, "reference": 0.8701, "result": "PASS"},
            {"name": "Membership attack AUC on the erased records", "before": 0.7421, "after": 0.5113,
             "reference": 0.5, "result": "PASS"},
        ],
        "roc_curves": [
            {"label": "Old model", **_roc(old_members, test)},
            {"label": "New model", **_roc(new_forget, test)},
        ],
        "score_histograms": _histograms(new_forget, retain, test, "Membership score (LiRA)"),
        "cost": {"estimated_seconds": 1260.0, "actual_seconds": 1104.5, "device": "cuda:0"},
        "verdict": verdict_entry(verdict),
    }


def _approximate_entry(rng: np.random.Generator) -> dict[str, Any]:
    old_members = rng.normal(1.2, 1.0, 12)
    new_forget, retain, test = rng.normal(0.4, 1.0, 12), rng.normal(1.2, 1.0, 2000), rng.normal(0.0, 1.0, 2000)
    verdict = final_verdict(
        guarantee_class="approximate",
        checks=[
            _check("membership_lira", Verdict.PASS, "no forgotten record detected (0 of 12)"),
            _check("membership_power", Verdict.INCONCLUSIVE,
                   "power 0.41 at alpha 0.05 is below the required 0.80 with 12 records"),
            _check("equivalence_tost", Verdict.PASS, "forget-set accuracy within +/-0.03 of the reference"),
            _check("utility", Verdict.PASS, "test accuracy dropped 0.4 points (limit 1.0)"),
        ],
    )
    return {
        "model": "churn-predictor", "version": 7, "new_version": 8, "outcome": "confirmed",
        "method": "scrub", "guarantee": guarantee_entry("approximate"),
        "old_artifact_sha256": fake_sha256("churn v7"), "new_artifact_sha256": fake_sha256("churn v8"),
        "code_version": "71f7627", "shadow_model_count": 32,
        "metrics": [
            {"name": "Test accuracy", "before": 0.912, "after": 0.908, "reference": 0.9101, "result": "PASS"},
            {"name": "Accuracy on the erased records", "before": 1.0, "after": 0.9167,
             "reference": 0.9083, "result": "PASS (TOST)"},
            {"name": "Power of the membership test",
             "description": "Chance the test detects a record that is still in the model",
             "before": None, "after": 0.41, "reference": 0.8, "result": "INCONCLUSIVE"},
        ],
        "roc_curves": [
            {"label": "Old model", **_roc(old_members, test)},
            {"label": "New model", **_roc(new_forget, test)},
        ],
        "score_histograms": _histograms(new_forget, retain, test, "Membership score (LiRA)"),
        "cost": {"estimated_seconds": 540.0, "actual_seconds": 611.0, "device": "cuda:0"},
        "verdict": verdict_entry(verdict),
    }


def _suppressed_entry(rng: np.random.Generator) -> dict[str, Any]:
    verdict = final_verdict(
        guarantee_class="suppressed", checks=[],
        suppression=SuppressionBound(alpha=0.01, delta=0.05, n=400, upper_bound=0.0186),
    )
    retain, test = rng.normal(2.5, 1.0, 1500), rng.normal(0.0, 1.0, 1500)
    forget = rng.normal(2.5, 1.0, 25)
    return {
        "model": "support-assistant", "version": 2, "new_version": None, "outcome": "withdrawn",
        "method": "verifier_guard", "guarantee": guarantee_entry("suppressed"),
        "old_artifact_sha256": fake_sha256("assistant v2"), "new_artifact_sha256": None,
        "code_version": "71f7627", "shadow_model_count": 0,
        "metrics": [
            {"name": "Leak rate upper bound (95% confidence)", "before": None, "after": 0.0186,
             "reference": 0.01, "result": "FAIL"},
        ],
        "roc_curves": [],
        "score_histograms": _histograms(forget, retain, test, "Log-likelihood of the record's text"),
        "cost": {"estimated_seconds": 300.0, "actual_seconds": 280.0},
        "verdict": verdict_entry(verdict),
    }


def build_report(*, request_id: str | None = None, subject_reference: str = "subj_4f9c2a7be01d55c3a9e2",
                 seed: int = 0) -> dict[str, Any]:
    """A complete report dict that passes ``validate_report`` (ledger head and signer are
    placeholders; ``report_create`` overwrites them)."""
    rng = np.random.default_rng(seed)
    entries = [_exact_entry(rng), _approximate_entry(rng), _suppressed_entry(rng)]
    return {
        "schema_version": 1,
        "request_id": request_id or str(uuid.uuid4()),
        "subject_reference": subject_reference,
        "jurisdiction": "GDPR",
        "legal_ground": {"code": "art17_1_b", "text": "Art. 17(1)(b): consent withdrawn"},
        "generated_at": "2025-03-28T16:40:00+00:00",
        "timeline": {
            "received": "2025-03-03T09:12:00+00:00",
            "verified": "2025-03-03T11:30:00+00:00",
            "approved": "2025-03-05T08:02:00+00:00",
            "due": "2025-04-03T09:12:00+00:00",
            "extended": None,
            "extension_reason": "",
            "completed": "2025-03-28T16:35:00+00:00",
        },
        "scope": {
            "records": 77,
            "datasets": [
                {"name": "loan-applications", "version": "2024-q4", "records": 40},
                {"name": "crm-events", "version": "7", "records": 12},
                {"name": "support-transcripts", "version": "3", "records": 25},
            ],
            "model_versions": [
                {"model": e["model"], "version": e["version"], "status": "serving"} for e in entries
            ],
            "purged_artifacts": [
                {"description": "credit-risk v3 weights", "sha256": fake_sha256("credit-risk v3")},
                {"description": "credit-risk v3 SISA checkpoints, shard 5, slices 2 to 4",
                 "sha256": fake_sha256("credit-risk ckpt")},
                {"description": "churn-predictor v7 weights", "sha256": fake_sha256("churn v7")},
                {"description": "16 reference models of credit-risk that saw the records",
                 "sha256": fake_sha256("shadows")},
                {"description": "cached training split of loan-applications 2024-q4",
                 "sha256": fake_sha256("cache")},
            ],
        },
        "model_versions": entries,
        "limitations": list(STANDARD_LIMITATIONS),
        "ledger_head": {"seq": 1284, "hash": fake_sha256("ledger head")},
        "signer": {"name": "Development report signer", "organisation": "Data-deletion platform (development)",
                   "certificate_sha256": fake_sha256("signing certificate")},
    }
