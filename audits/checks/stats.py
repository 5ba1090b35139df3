"""Small statistical building blocks shared by the checks: multiple testing, binomial intervals,
threshold-attack figures (AUC, TPR at a fixed FPR) and their bootstrap.

Pure functions on NumPy arrays; every check module builds on these.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats


def holm_adjust(p_values: ArrayLike, n_tests: int | None = None) -> NDArray[np.float64]:
    """Holm step-down adjusted p-values (reject where adjusted <= alpha).

    In: p-values ``(m,)``; ``n_tests`` (>= m) is the size of the family when some of its tests
    are not in the vector (they count as p = 1). Out: adjusted p-values, same order, capped at 1.
    Holm controls the family-wise error rate under any dependence between the tests, which the
    per-record tests have (they share shadow models).
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError("p_values must be one-dimensional")
    if np.any(np.isnan(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError("p_values must lie in [0, 1] (drop untestable entries first)")
    m = len(p) if n_tests is None else int(n_tests)
    if m < len(p):
        raise ValueError(f"n_tests={m} is smaller than the number of p-values {len(p)}")
    order = np.argsort(p, kind="stable")
    factors = m - np.arange(len(p))
    stepped = np.maximum.accumulate(factors * p[order])
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted


def clopper_pearson(successes: int, trials: int, level: float = 0.95) -> tuple[float, float]:
    """Exact two-sided binomial confidence interval for a proportion. ``(nan, nan)`` if no trials."""
    if trials <= 0:
        return (math.nan, math.nan)
    if not 0 <= successes <= trials:
        raise ValueError("successes must lie in [0, trials]")
    tail = (1.0 - level) / 2.0
    low = 0.0 if successes == 0 else float(stats.beta.ppf(tail, successes, trials - successes + 1))
    high = (
        1.0
        if successes == trials
        else float(stats.beta.isf(tail, successes + 1, trials - successes))
    )
    return (low, high)


def attack_auc(member_scores: ArrayLike, nonmember_scores: ArrayLike) -> float:
    """Area under the ROC curve of the threshold attack "member if score is high".

    In: scores of members ``(n_m,)`` and non-members ``(n_n,)``, higher = more member-like.
    Out: P(member score > non-member score) + 0.5 P(tie); 0.5 is chance, 1.0 perfect separation.
    """
    members = np.asarray(member_scores, dtype=np.float64)
    nonmembers = np.sort(np.asarray(nonmember_scores, dtype=np.float64))
    if members.size == 0 or nonmembers.size == 0:
        raise ValueError("AUC needs at least one member and one non-member score")
    below = np.searchsorted(nonmembers, members, side="left")
    not_above = np.searchsorted(nonmembers, members, side="right")
    return float(np.mean(below + 0.5 * (not_above - below)) / nonmembers.size)


def tpr_at_fpr(member_scores: ArrayLike, nonmember_scores: ArrayLike, fpr: float) -> float:
    """Best true-positive rate of a threshold attack whose empirical FPR is at most ``fpr``.

    The threshold is the ``(k+1)``-th highest non-member score with ``k = floor(fpr * n_n)``
    false positives allowed; a score must lie strictly above it, so ties never add false
    positives. With fewer than ``1/fpr`` non-members this is the TPR at zero false positives.
    """
    if not 0.0 < fpr < 1.0:
        raise ValueError("fpr must lie in (0, 1)")
    members = np.asarray(member_scores, dtype=np.float64)
    nonmembers = np.sort(np.asarray(nonmember_scores, dtype=np.float64))[::-1]
    if members.size == 0 or nonmembers.size == 0:
        raise ValueError("TPR at FPR needs at least one member and one non-member score")
    allowed = int(math.floor(fpr * nonmembers.size + 1e-9))
    threshold = nonmembers[allowed] if allowed < nonmembers.size else -np.inf
    return float(np.mean(members > threshold))


def bootstrap_attack_figures(
    member_scores: ArrayLike,
    nonmember_scores: ArrayLike,
    fprs: tuple[float, ...],
    *,
    n_bootstrap: int,
    seed: int,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Bootstrap replicates of AUC and of TPR at each FPR.

    Members and non-members are resampled independently (two-sample bootstrap). Out: AUC
    replicates ``(n_bootstrap,)`` and TPR replicates ``(n_bootstrap, len(fprs))``.
    """
    members = np.asarray(member_scores, dtype=np.float64)
    nonmembers = np.asarray(nonmember_scores, dtype=np.float64)
    rng = np.random.default_rng(seed)
    aucs = np.empty(n_bootstrap)
    tprs = np.empty((n_bootstrap, len(fprs)))
    for b in range(n_bootstrap):
        m = members[rng.integers(0, members.size, members.size)]
        n = nonmembers[rng.integers(0, nonmembers.size, nonmembers.size)]
        aucs[b] = attack_auc(m, n)
        for j, fpr in enumerate(fprs):
            tprs[b, j] = tpr_at_fpr(m, n, fpr)
    return aucs, tprs


def percentile_interval(replicates: ArrayLike, level: float) -> tuple[float, float]:
    """Two-sided percentile bootstrap interval at ``level`` (e.g. 0.95)."""
    r = np.asarray(replicates, dtype=np.float64)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(r, [tail, 1.0 - tail])
    return (float(low), float(high))
