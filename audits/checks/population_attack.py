"""Population membership attack: can a threshold on a score tell forgotten records from records
the model never saw?

Figures: AUC, and TPR at 1% and 0.1% FPR (the low-FPR regime is where a membership attack is a
real privacy threat: it confidently exposes a few records; Carlini et al. 2022), each with a
two-sample percentile bootstrap interval. Scores must be oriented "higher = more member-like":
pass the LiRA statistic (logit-scaled confidence) as is, or a loss negated.

Inputs from models: the unlearned model's scores on the forget set and on a non-member set
(test records no model trained on). Optionally the same attack's AUC on a reference model
(retrained, or shadow OUT models) when forget and test records differ in distribution.

A figure computed on too few records means nothing, so each figure has a minimum sample size;
below it the figure is NOT_APPLICABLE with the reason.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from audits.checks.evidence import ClassifierEvidence
from audits.checks.registry import CheckSpec, register_check
from audits.checks.result import CheckResult, Verdict, fmt
from audits.checks.stats import (
    attack_auc,
    bootstrap_attack_figures,
    percentile_interval,
    tpr_at_fpr,
)

DEFAULT_SIGNAL = "logit_scaled_confidence"
LOW_FPRS: tuple[float, ...] = (0.01, 0.001)
# AUC: with 20 members and 20 non-members the null standard error of the AUC is about 0.09
# (Mann-Whitney: sqrt((n1 + n2 + 1) / (12 n1 n2))), so a 95% interval spans roughly +-0.18; with
# fewer records the interval covers most of [0, 1] and the figure says nothing.
MIN_MEMBERS_FOR_AUC = 20
MIN_NONMEMBERS_FOR_AUC = 20
# TPR at FPR x: the threshold sits at the (floor(x n) + 1)-th highest non-member score, so at
# least 1/x non-members are needed before one false positive is even possible (100 for 1%,
# 1000 for 0.1%); with fewer, the figure is the TPR at zero false positives, not at x.
# On the member side, 20 records resolve the TPR in steps of 5%.
MIN_MEMBERS_FOR_TPR = 20
DEFAULT_N_BOOTSTRAP = 1000
DEFAULT_LEVEL = 0.95


def min_nonmembers_for_fpr(fpr: float) -> int:
    """Non-members needed before the empirical FPR can take the value ``fpr`` (``ceil(1/fpr)``)."""
    return int(math.ceil(1.0 / fpr - 1e-9))


@dataclass(frozen=True)
class AttackFigure:
    """One attack figure with its bootstrap interval, or why it is not applicable."""

    name: str
    applicable: bool
    value: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    chance: float | None = None
    not_applicable_reason: str = ""

    @property
    def member_side(self) -> bool:
        """True when the whole interval lies above chance: significantly member-like."""
        return bool(self.applicable and self.ci_low is not None and self.ci_low > self.chance)


def applicable_figures(n_members: int, n_nonmembers: int) -> int:
    """How many of the figures (AUC, TPR at each of ``LOW_FPRS``) the minimum sizes allow."""
    auc = n_members >= MIN_MEMBERS_FOR_AUC and n_nonmembers >= MIN_NONMEMBERS_FOR_AUC
    tprs = sum(n_members >= MIN_MEMBERS_FOR_TPR and n_nonmembers >= min_nonmembers_for_fpr(fpr) for fpr in LOW_FPRS)
    return int(auc) + int(tprs)


def interval_level(alpha: float, figures: int) -> float:
    """The two-sided interval level that holds the check's false-FAIL rate at ``alpha`` over
    ``figures`` figures: each FAILs when its interval lies wholly above chance, a one-sided error of
    (1 - level) / 2, and any of them FAILs the check (Bonferroni): level = 1 - 2 alpha / figures."""
    if not 0.0 < alpha < 0.5:
        raise ValueError(f"alpha must lie in (0, 0.5), got {alpha}")
    return 1.0 - 2.0 * alpha / max(int(figures), 1)


def attack_figures(
    member_scores: ArrayLike,
    nonmember_scores: ArrayLike,
    *,
    reference_auc: float = 0.5,
    reference_tprs: Mapping[float, float] | None = None,
    n_bootstrap: int = DEFAULT_N_BOOTSTRAP,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
) -> tuple[AttackFigure, ...]:
    """AUC and TPR at each of ``LOW_FPRS``, with intervals, minimum sizes applied.

    In: member-side scores ``(n_m,)`` and non-member scores ``(n_n,)``, higher = member.
    ``reference_auc`` is the AUC to count as chance (0.5 unless a reference model says the two
    sets differ anyway), ``reference_tprs`` the same for each TPR (default: the FPR itself).
    Out: ``(auc, tpr@1%, tpr@0.1%)`` figures.
    """
    members = np.asarray(member_scores, dtype=np.float64)
    nonmembers = np.asarray(nonmember_scores, dtype=np.float64)
    if not (np.all(np.isfinite(members)) and np.all(np.isfinite(nonmembers))):
        raise ValueError("attack scores contain NaN or infinite values")
    n_m, n_n = members.size, nonmembers.size

    figures: list[AttackFigure] = []
    auc_ok = n_m >= MIN_MEMBERS_FOR_AUC and n_n >= MIN_NONMEMBERS_FOR_AUC
    tpr_ok = [n_m >= MIN_MEMBERS_FOR_TPR and n_n >= min_nonmembers_for_fpr(fpr) for fpr in LOW_FPRS]
    aucs, tprs = (None, None)
    if auc_ok or any(tpr_ok):
        aucs, tprs = bootstrap_attack_figures(
            members, nonmembers, LOW_FPRS, n_bootstrap=n_bootstrap, seed=seed
        )

    if auc_ok:
        low, high = percentile_interval(aucs, level)
        figures.append(
            AttackFigure("auc", True, attack_auc(members, nonmembers), low, high, reference_auc)
        )
    else:
        figures.append(
            AttackFigure(
                "auc",
                False,
                not_applicable_reason=(
                    f"AUC needs at least {MIN_MEMBERS_FOR_AUC} forget-set and "
                    f"{MIN_NONMEMBERS_FOR_AUC} non-member records; got {n_m} and {n_n}."
                ),
            )
        )
    for j, fpr in enumerate(LOW_FPRS):
        name = f"tpr_at_fpr_{fpr:g}"
        if tpr_ok[j]:
            low, high = percentile_interval(tprs[:, j], level)
            chance = fpr if reference_tprs is None else float(reference_tprs.get(fpr, fpr))
            figures.append(
                AttackFigure(name, True, tpr_at_fpr(members, nonmembers, fpr), low, high, chance)
            )
        else:
            figures.append(
                AttackFigure(
                    name,
                    False,
                    not_applicable_reason=(
                        f"TPR at {fpr:g} FPR needs at least {MIN_MEMBERS_FOR_TPR} forget-set and "
                        f"{min_nonmembers_for_fpr(fpr)} non-member records; got {n_m} and {n_n}."
                    ),
                )
            )
    return tuple(figures)


@dataclass(frozen=True, kw_only=True)
class PopulationAttackResult(CheckResult):
    """Threshold-attack figures for the forget set against non-members."""

    signal: str
    n_members: int
    n_nonmembers: int
    level: float
    n_bootstrap: int
    figures: tuple[AttackFigure, ...]

    def false_fail_level(self) -> float | None:
        """Each applicable figure FAILs when its interval lies wholly above chance, a one-sided
        error of (1 - level) / 2; any of them FAILs the check (Bonferroni over the figures)."""
        applicable = sum(1 for f in self.figures if f.applicable)
        return applicable * (1.0 - self.level) / 2 if applicable else None


def _classifier_inputs(evidence: ClassifierEvidence) -> dict[str, Any]:
    return {
        "forget_scores": evidence.attack_forget_scores,
        "nonmember_scores": evidence.attack_nonmember_scores,
        "signal": evidence.attack_signal,
        # Its share of the family-wise level where the runner split it; else its own interval level.
        "alpha": (evidence.check_alpha or {}).get("population_attack"),
    }


@register_check(
    CheckSpec(
        name="population_attack",
        role="forget",
        on_weights=True,
        applies_to=("classifier",),
        inputs=_classifier_inputs,
        false_fail="level",
    )
)
def population_attack(
    *,
    forget_scores: ArrayLike,
    nonmember_scores: ArrayLike,
    signal: str = DEFAULT_SIGNAL,
    reference_auc: float = 0.5,
    reference_tprs: Mapping[float, float] | None = None,
    n_bootstrap: int = DEFAULT_N_BOOTSTRAP,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
    alpha: float | None = None,
) -> PopulationAttackResult:
    """Threshold attack of forget-set scores against non-member scores on the unlearned model.

    In: forget-set and non-member scores (higher = member), the name of the signal for the
    report, the chance levels (``reference_auc``, ``reference_tprs`` keyed by FPR: the same
    attack's figures on a reference model such as the retrained one, for when forget and test
    records differ in distribution), bootstrap size, interval level and seed. Out:
    :class:`PopulationAttackResult`. FAIL if any applicable figure's interval lies wholly above
    chance (AUC above ``reference_auc``, TPR above its FPR); NOT_APPLICABLE if the AUC is not
    applicable; PASS otherwise, which means "not significantly member-like", not "forgotten".
    ``alpha`` (the check's share of the audit's family-wise level), when given, sets the interval
    level instead of ``level`` so that the check FAILs a model that forgot with chance at most
    ``alpha`` (:func:`interval_level`).
    """
    members = np.asarray(forget_scores, dtype=np.float64)
    nonmembers = np.asarray(nonmember_scores, dtype=np.float64)
    if alpha is not None:
        level = interval_level(alpha, applicable_figures(members.size, nonmembers.size))
    figures = attack_figures(
        members,
        nonmembers,
        reference_auc=reference_auc,
        reference_tprs=reference_tprs,
        n_bootstrap=n_bootstrap,
        level=level,
        seed=seed,
    )
    pct = f"{level * 100:g}%"
    rule = (
        f"Threshold attack on {signal} (higher = member), forget set vs non-members, "
        f"{pct} percentile bootstrap intervals ({n_bootstrap} resamples). FAIL if an applicable "
        f"figure's interval lies wholly above chance (AUC > {fmt(reference_auc)}, TPR at x FPR > "
        f"{'x' if reference_tprs is None else 'its reference TPR'}). NOT_APPLICABLE below {MIN_MEMBERS_FOR_AUC} forget / {MIN_NONMEMBERS_FOR_AUC} "
        f"non-member records (TPR at x FPR needs {MIN_MEMBERS_FOR_TPR} forget and 1/x "
        "non-member records). Otherwise PASS: not significantly member-like."
    )
    auc = figures[0]
    failing = [f for f in figures if f.member_side]
    if failing:
        verdict = Verdict.FAIL
        reason = "; ".join(
            f"{f.name} = {fmt(f.value)} ({pct} CI {fmt(f.ci_low)}-{fmt(f.ci_high)}) "
            f"above chance {fmt(f.chance)}"
            for f in failing
        )
    elif not auc.applicable:
        verdict, reason = Verdict.NOT_APPLICABLE, auc.not_applicable_reason
    else:
        verdict = Verdict.PASS
        reason = (
            f"AUC = {fmt(auc.value)} ({pct} CI {fmt(auc.ci_low)}-{fmt(auc.ci_high)}); no figure "
            "is significantly above chance."
        )
    return PopulationAttackResult(
        check="population_attack",
        verdict=verdict,
        rule=rule,
        reason=reason,
        signal=signal,
        n_members=int(members.size),
        n_nonmembers=int(nonmembers.size),
        level=level,
        n_bootstrap=n_bootstrap,
        figures=figures,
    )


def shadow_calibrated_scores(scores: ArrayLike, out_scores: ArrayLike) -> np.ndarray:
    """Each record's score on the model, in units of its own OUT distribution: ``(s - mean) / sd``
    of the scores shadow models that never trained on it give it (offline LiRA's calibration).

    A population threshold on raw scores confuses "memorised" with "easy": a held-out record that
    every model gets confidently right (or, relabelled, confidently wrong) scores like a member.
    Calibrated per record, only what this model does beyond what models without the record do
    counts. In: ``scores`` ``(n_records,)``; ``out_scores`` ``(n_out_models, n_records)`` with NaN
    where that shadow model trained on the record. Out: calibrated scores; NaN for a record with
    fewer than two OUT scores. The spread has a floor (a tenth of the median spread) so that a
    record every OUT model scores alike does not get an infinite score.
    """
    s = np.asarray(scores, dtype=np.float64)
    out = np.asarray(out_scores, dtype=np.float64)
    if out.ndim != 2 or out.shape[1] != s.shape[0]:
        raise ValueError(f"out_scores must be (models, {s.shape[0]}), got {out.shape}")
    seen = np.isfinite(out)
    n = seen.sum(axis=0)
    filled = np.where(seen, out, 0.0)
    mean = filled.sum(axis=0) / np.maximum(n, 1)
    var = np.where(seen, (out - mean) ** 2, 0.0).sum(axis=0) / np.maximum(n - 1, 1)
    sd = np.sqrt(var)
    testable = n >= 2
    floor = max(0.1 * float(np.median(sd[testable])), 1e-6) if testable.any() else 1.0
    return np.where(testable, (s - mean) / np.maximum(sd, floor), np.nan)
