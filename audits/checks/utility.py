"""Utility: the unlearned model must still do its job.

Classifiers: retain and test accuracy, each as a ratio to the original model's. Language models:
perplexity, and regression models: root mean squared error (``rmse``; ``mae`` also accepted), with
the ratio taken as original / unlearned so that for every metric a ratio of 1 means "as good as
before" and below 1 means worse.

Inputs from models: accuracy (or per-token negative log-likelihoods for perplexity) of the
original and the unlearned model on the retain set and the test set.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from audits.checks.evidence import DEFAULT_MIN_UTILITY_RATIO, Evidence
from audits.checks.registry import CheckSpec, register_check
from audits.checks.result import CheckResult, Verdict, fmt

UtilityMetric = Literal["accuracy", "perplexity", "rmse", "mae"]
# Lower is better: the ratio is original / unlearned (perplexity, a regression model's errors).
LOWER_IS_BETTER = ("perplexity", "rmse", "mae")
# Five per cent relative loss where the model's policy declares no bar (audits.checks.evidence); the
# plan declares the bar before any score is seen and the audit job carries it.
DEFAULT_MIN_RATIO = DEFAULT_MIN_UTILITY_RATIO


def perplexity(token_nll: ArrayLike) -> float:
    """``exp(mean negative log-likelihood)`` over all scored tokens (natural log). In: ``(n,)``."""
    nll = np.asarray(token_nll, dtype=np.float64).ravel()
    if nll.size == 0 or not np.all(np.isfinite(nll)):
        raise ValueError("perplexity needs at least one finite token log-likelihood")
    return float(math.exp(nll.mean()))


def utility_ratio(unlearned: float, original: float, metric: UtilityMetric) -> float:
    """How good the unlearned model is relative to the original; 1.0 = as good, < 1 = worse."""
    if metric == "accuracy":
        if original <= 0:
            raise ValueError("the original accuracy must be > 0 for a ratio")
        return unlearned / original
    if metric in LOWER_IS_BETTER:
        if unlearned <= 0:
            raise ValueError(f"{metric} must be > 0 for a ratio")
        return original / unlearned
    raise ValueError(f"unknown utility metric {metric!r}")


@dataclass(frozen=True, kw_only=True)
class UtilityResult(CheckResult):
    """Retain and test utility of the unlearned model against the original."""

    metric: str
    min_ratio: float
    retain: float
    test: float
    original_retain: float
    original_test: float
    retain_ratio: float
    test_ratio: float


def _utility_inputs(evidence: Evidence) -> dict[str, Any]:
    return asdict(evidence.utility)


@register_check(
    CheckSpec(
        name="utility",
        role="utility",
        applies_to=("classifier", "language_model"),
        inputs=_utility_inputs,
    )
)
def utility(
    *,
    retain: float,
    test: float,
    original_retain: float,
    original_test: float,
    metric: UtilityMetric = "accuracy",
    min_ratio: float = DEFAULT_MIN_RATIO,
) -> UtilityResult:
    """Compare retain and test utility with the original model's.

    In: the unlearned model's retain and test accuracy (or perplexity), the original model's,
    the metric name and the minimum acceptable ratio. Out: :class:`UtilityResult`, PASS when
    both ratios are at least ``min_ratio``, FAIL otherwise. Utility says nothing about
    forgetting; the final verdict reports it as a warning.
    """
    values = {
        "retain": retain,
        "test": test,
        "original_retain": original_retain,
        "original_test": original_test,
    }
    if not 0 < min_ratio <= 1:
        raise ValueError(f"min_ratio must be in (0, 1] (1 = no loss allowed), got {min_ratio}")
    for name, value in values.items():
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite non-negative number, got {value}")
        if metric == "accuracy" and value > 1:
            raise ValueError(f"{name} accuracy must lie in [0, 1], got {value}")
    retain_ratio = utility_ratio(retain, original_retain, metric)
    test_ratio = utility_ratio(test, original_test, metric)
    direction = "unlearned / original" if metric == "accuracy" else "original / unlearned"
    named = {"rmse": "root mean squared error", "mae": "mean absolute error"}.get(metric, metric)
    rule = (
        f"{named} ratio ({direction}; 1 = as good as the original) on the retain and the test "
        f"set. PASS if both ratios >= {fmt(min_ratio)}, FAIL otherwise."
    )
    summary = f"retain ratio {fmt(retain_ratio)}, test ratio {fmt(test_ratio)}"
    ok = retain_ratio >= min_ratio and test_ratio >= min_ratio
    return UtilityResult(
        check="utility",
        verdict=Verdict.PASS if ok else Verdict.FAIL,
        rule=rule,
        reason=summary + ("." if ok else f": below the minimum {fmt(min_ratio)}."),
        metric=metric,
        min_ratio=min_ratio,
        retain_ratio=retain_ratio,
        test_ratio=test_ratio,
        **values,
    )
