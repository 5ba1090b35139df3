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

The same question for the METHOD, where U-LiRA re-ran it on shadow models
(:func:`retain_privacy_ulira`): on each unlearned shadow, the attack AUC of the kept records it
trained on before and after the method, the mean change over the runs with a t interval, the same
non-inferiority rule. Both only warn.
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


# Two runs of the method at least: the change's spread across runs is the interval's.
MIN_ULIRA_RUNS = 2


@dataclass(frozen=True, kw_only=True)
class ULiRARetainPrivacyResult(CheckResult):
    """The attack AUC on kept records before and after the method, over the U-LiRA runs."""

    tolerance: float
    level: float
    runs: int
    retain_records: tuple[int, ...]
    auc_before: tuple[float, ...]
    auc_after: tuple[float, ...]
    mean_change: float | None
    change_ci: tuple[float, float] | None


def _ulira_inputs(evidence: ClassifierEvidence) -> dict[str, Any] | None:
    """The retain figures of the runner's U-LiRA runs (``evidence.ulira_retain``); None when U-LiRA
    did not run or measured none."""
    figures = evidence.ulira_retain
    if not figures:
        return None
    return {"auc_before": figures["auc_before"], "auc_after": figures["auc_after"],
            "retain_records": figures["retain_records"]}


@register_check(
    CheckSpec(
        name="retain_privacy_ulira",
        role="retain",
        applies_to=("classifier",),
        inputs=_ulira_inputs,
    )
)
def retain_privacy_ulira(
    *,
    auc_before: ArrayLike,
    auc_after: ArrayLike,
    retain_records: ArrayLike,
    tolerance: float = DEFAULT_AUC_TOLERANCE,
    level: float = DEFAULT_LEVEL,
) -> ULiRARetainPrivacyResult:
    """The change in the kept records' privacy that the audited METHOD causes, measured where it can
    be repeated: on the shadow models U-LiRA unlearned (each run is one draw of "trained, then this
    method"), not on the one audited model alone (:func:`retain_privacy`).

    In: per unlearned shadow, the threshold attack's AUC of the kept records it trained on (a sample
    of the audited model's retain set) against held-out records, on the shadow as trained
    (``auc_before``) and after the method (``auc_after``), and how many kept records each run
    scored. Out: :class:`ULiRARetainPrivacyResult`: the mean change after - before with a t
    interval over the runs at ``level``; PASS if its upper end is within ``tolerance`` (AUC units,
    as :func:`retain_privacy`), FAIL if its lower end exceeds it (the method exposes the records that
    stay: the "privacy onion"), INCONCLUSIVE between; NOT_APPLICABLE with fewer than
    :data:`MIN_ULIRA_RUNS` runs. Role ``retain``: it warns, never decides the verdict."""
    from scipy import stats

    if tolerance < 0:
        raise ValueError("tolerance must be >= 0")
    before, after = _paired("U-LiRA retain AUC", auc_before, auc_after)
    counts = tuple(int(c) for c in np.asarray(retain_records).ravel())
    if len(counts) != before.size:
        raise ValueError(f"{len(counts)} retain-record counts for {before.size} runs")
    pct = f"{level * 100:g}%"
    rule = (
        f"Over the U-LiRA runs (the method run on shadow models that trained on the records): the threshold "
        f"attack's AUC on kept records each shadow trained on against held-out records, after the method minus "
        f"before, mean over the runs with a {pct} t interval. PASS if its upper end <= tolerance "
        f"{fmt(tolerance)}; FAIL if its lower end > {fmt(tolerance)} (a warning: kept records became more "
        f"exposed); INCONCLUSIVE otherwise; NOT_APPLICABLE below {MIN_ULIRA_RUNS} runs."
    )
    common = {"check": "retain_privacy_ulira", "rule": rule, "tolerance": tolerance, "level": level,
              "runs": int(before.size), "retain_records": counts, "auc_before": tuple(before.tolist()),
              "auc_after": tuple(after.tolist())}
    if before.size < MIN_ULIRA_RUNS:
        return ULiRARetainPrivacyResult(
            verdict=Verdict.NOT_APPLICABLE, mean_change=None, change_ci=None,
            reason=f"Needs at least {MIN_ULIRA_RUNS} U-LiRA runs; got {before.size}.", **common)
    change = after - before
    mean = float(change.mean())
    spread = float(change.std(ddof=1)) / np.sqrt(change.size)
    half = float(stats.t.isf((1 - level) / 2, change.size - 1)) * spread
    low, high = mean - half, mean + half
    summary = (f"attack AUC on kept records {fmt(float(before.mean()))} -> {fmt(float(after.mean()))} on average over "
               f"{before.size} run(s) of the method ({min(counts)}-{max(counts)} kept records each), change "
               f"{fmt(mean)} ({pct} CI {fmt(low)} to {fmt(high)})")
    if high <= tolerance:
        verdict, reason = Verdict.PASS, f"{summary}: the method does not expose the kept records beyond the tolerance."
    elif low > tolerance:
        verdict, reason = Verdict.FAIL, f"{summary}: the method makes the kept records more exposed."
    else:
        verdict, reason = Verdict.INCONCLUSIVE, f"{summary}: the interval straddles the tolerance."
    return ULiRARetainPrivacyResult(verdict=verdict, reason=reason, mean_change=mean, change_ci=(low, high),
                                    **common)
