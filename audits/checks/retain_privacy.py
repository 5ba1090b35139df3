"""Retain-set privacy: unlearning must not expose the records that stay.

Removing some records can make others more vulnerable to membership inference (the "privacy
onion" effect, Carlini et al. 2022). The same threshold attack as the population check runs on
retain records against non-members, on the original model (before) and the unlearned model
(after); the AUC difference after - before gets a paired bootstrap interval (the same records
are resampled for both models).

Rule (a non-inferiority test): PASS when the upper end of the interval is within the declared
tolerance; FAIL when the lower end exceeds it (significantly worse); INCONCLUSIVE between.

Inputs from models: the original and the unlearned model's scores on the same retain records
and on the same non-member records, in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from audits.checks.evidence import ClassifierEvidence
from audits.checks.population_attack import (
    DEFAULT_LEVEL,
    DEFAULT_N_BOOTSTRAP,
    MIN_MEMBERS_FOR_AUC,
    MIN_NONMEMBERS_FOR_AUC,
)
from audits.checks.registry import CheckSpec, register_check
from audits.checks.result import CheckResult, Verdict, fmt
from audits.checks.stats import attack_auc, percentile_interval

# Two AUC points: below what the bootstrap can resolve on a few hundred records, so a PASS
# needs a few hundred records at least, and a real degradation still shows.
DEFAULT_AUC_TOLERANCE = 0.02


@dataclass(frozen=True, kw_only=True)
class RetainPrivacyResult(CheckResult):
    """Attack AUC on retain records before and after unlearning, and its change."""

    signal: str
    tolerance: float
    level: float
    n_retain: int
    n_nonmembers: int
    auc_before: float | None
    auc_after: float | None
    auc_change: float | None
    auc_change_ci: tuple[float, float] | None


def _paired(name: str, before: ArrayLike, after: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    b = np.asarray(before, dtype=np.float64)
    a = np.asarray(after, dtype=np.float64)
    if b.shape != a.shape or b.ndim != 1:
        raise ValueError(f"{name}: before {b.shape} and after {a.shape} must be equal 1-D shapes")
    if not (np.all(np.isfinite(b)) and np.all(np.isfinite(a))):
        raise ValueError(f"{name}: scores contain NaN or infinite values")
    return b, a


def _classifier_inputs(evidence: ClassifierEvidence) -> dict[str, Any]:
    return {
        "retain_scores_before": evidence.original_retain_scores,
        "retain_scores_after": evidence.retain_scores,
        "nonmember_scores_before": evidence.original_nonmember_scores,
        "nonmember_scores_after": evidence.nonmember_scores,
    }


@register_check(
    CheckSpec(
        name="retain_privacy",
        role="retain",
        applies_to=("classifier",),
        inputs=_classifier_inputs,
    )
)
def retain_privacy(
    *,
    retain_scores_before: ArrayLike,
    retain_scores_after: ArrayLike,
    nonmember_scores_before: ArrayLike,
    nonmember_scores_after: ArrayLike,
    signal: str = "logit_scaled_confidence",
    tolerance: float = DEFAULT_AUC_TOLERANCE,
    n_bootstrap: int = DEFAULT_N_BOOTSTRAP,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
) -> RetainPrivacyResult:
    """Compare the attack AUC on retain records before and after unlearning.

    In: scores (higher = member) of the same retain records and the same non-members on the
    original and on the unlearned model; ``tolerance`` in AUC units, declared before the audit.
    Out: :class:`RetainPrivacyResult` (NOT_APPLICABLE below the population check's minimum sizes).
    """
    if tolerance < 0:
        raise ValueError("tolerance must be >= 0")
    retain_b, retain_a = _paired("retain", retain_scores_before, retain_scores_after)
    non_b, non_a = _paired("non-member", nonmember_scores_before, nonmember_scores_after)
    pct = f"{level * 100:g}%"
    rule = (
        f"Threshold attack on {signal}, retain records vs non-members, AUC after unlearning minus "
        f"AUC before, paired {pct} percentile bootstrap ({n_bootstrap} resamples). PASS if the "
        f"interval's upper end <= tolerance {fmt(tolerance)}; FAIL if its lower end > "
        f"{fmt(tolerance)}; INCONCLUSIVE otherwise. NOT_APPLICABLE below "
        f"{MIN_MEMBERS_FOR_AUC} retain / {MIN_NONMEMBERS_FOR_AUC} non-member records."
    )
    common = {
        "check": "retain_privacy",
        "rule": rule,
        "signal": signal,
        "tolerance": tolerance,
        "level": level,
        "n_retain": int(retain_b.size),
        "n_nonmembers": int(non_b.size),
    }
    if retain_b.size < MIN_MEMBERS_FOR_AUC or non_b.size < MIN_NONMEMBERS_FOR_AUC:
        return RetainPrivacyResult(
            verdict=Verdict.NOT_APPLICABLE,
            reason=(
                f"Needs at least {MIN_MEMBERS_FOR_AUC} retain and {MIN_NONMEMBERS_FOR_AUC} "
                f"non-member records; got {retain_b.size} and {non_b.size}."
            ),
            auc_before=None,
            auc_after=None,
            auc_change=None,
            auc_change_ci=None,
            **common,
        )

    auc_before = attack_auc(retain_b, non_b)
    auc_after = attack_auc(retain_a, non_a)
    rng = np.random.default_rng(seed)
    changes = np.empty(n_bootstrap)
    for b in range(n_bootstrap):
        r = rng.integers(0, retain_b.size, retain_b.size)
        n = rng.integers(0, non_b.size, non_b.size)
        changes[b] = attack_auc(retain_a[r], non_a[n]) - attack_auc(retain_b[r], non_b[n])
    low, high = percentile_interval(changes, level)
    change = auc_after - auc_before
    summary = (
        f"AUC {fmt(auc_before)} -> {fmt(auc_after)}, change {fmt(change)} "
        f"({pct} CI {fmt(low)} to {fmt(high)})"
    )
    if high <= tolerance:
        verdict, reason = Verdict.PASS, f"{summary}: not worse beyond the tolerance."
    elif low > tolerance:
        verdict, reason = Verdict.FAIL, f"{summary}: retain records became more exposed."
    else:
        verdict, reason = Verdict.INCONCLUSIVE, f"{summary}: the interval straddles the tolerance."
    return RetainPrivacyResult(
        verdict=verdict,
        reason=reason,
        auc_before=auc_before,
        auc_after=auc_after,
        auc_change=change,
        auc_change_ci=(low, high),
        **common,
    )
