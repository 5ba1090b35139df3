"""Equivalence: is an aggregate metric of the unlearned model within declared margins of the
reference (a retrained model, or the shadow models' OUT distribution)?

"No significant difference" is not evidence of sameness; an equivalence test is. TOST (Schuirmann
1987) runs two one-sided t-tests, H0: difference <= lower margin and H0: difference >= upper
margin; rejecting both at ``alpha`` shows the difference lies inside the margins, which is the
same as the ``1 - 2 alpha`` confidence interval lying inside them. The margins are inputs, fixed
before the data are seen, and printed in the rule.

Designs:
* ``paired``: one value per forgotten record on each side (e.g. the record's loss on the
  unlearned model and its mean loss over OUT shadow models); the test is on the differences.
* ``two_sample``: independent values (e.g. forget-set accuracy of several unlearned runs against
  that of several retrained models), Welch's t. With a single unlearned value, only the
  reference mean is uncertain: the test asks whether this one model's value lies within the
  margins of the reference mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from audits.checks.registry import CheckSpec, register_check
from audits.checks.result import CheckResult, Verdict, fmt

DEFAULT_ALPHA = 0.05
Design = Literal["paired", "two_sample"]
MemberSide = Literal["higher", "lower"]


@dataclass(frozen=True)
class TOSTOutcome:
    """TOST on the difference unlearned - reference."""

    estimate: float
    standard_error: float
    df: float
    ci_low: float
    ci_high: float
    p_lower: float
    p_upper: float
    p_value: float
    equivalent: bool


def tost(
    estimate: float, standard_error: float, df: float, lower: float, upper: float, alpha: float
) -> TOSTOutcome:
    """TOST from an estimate, its standard error and t degrees of freedom.

    ``p_lower`` tests H0: difference <= ``lower``; ``p_upper`` H0: difference >= ``upper``.
    The interval is the ``1 - 2 alpha`` t interval. Equivalent when both p-values < alpha.
    """
    if not lower < upper:
        raise ValueError(f"lower margin {lower} must be below upper margin {upper}")
    if not 0.0 < alpha < 0.5:
        raise ValueError("alpha must lie in (0, 0.5)")
    if standard_error < 0 or df <= 0:
        raise ValueError("standard error must be >= 0 and degrees of freedom > 0")
    if standard_error == 0:
        # No sampling variation at all: the comparison is exact.
        p_lower = 0.0 if estimate > lower else 1.0
        p_upper = 0.0 if estimate < upper else 1.0
        ci_low = ci_high = estimate
    else:
        p_lower = float(stats.t.sf((estimate - lower) / standard_error, df))
        p_upper = float(stats.t.cdf((estimate - upper) / standard_error, df))
        half_width = float(stats.t.isf(alpha, df)) * standard_error
        ci_low, ci_high = estimate - half_width, estimate + half_width
    p_value = max(p_lower, p_upper)
    return TOSTOutcome(
        estimate=float(estimate),
        standard_error=float(standard_error),
        df=float(df),
        ci_low=float(ci_low),
        ci_high=float(ci_high),
        p_lower=p_lower,
        p_upper=p_upper,
        p_value=p_value,
        equivalent=p_value < alpha,
    )


def _values(name: str, values: ArrayLike) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64).ravel()
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return v


def tost_paired(
    unlearned: ArrayLike, reference: ArrayLike, lower: float, upper: float, alpha: float
) -> TOSTOutcome:
    """TOST on paired values (one-sample t on ``unlearned - reference``); needs two pairs."""
    u, r = _values("unlearned", unlearned), _values("reference", reference)
    if u.shape != r.shape:
        raise ValueError(f"paired design needs equal lengths, got {u.size} and {r.size}")
    if u.size < 2:
        raise ValueError("paired TOST needs at least two pairs")
    d = u - r
    return tost(
        float(d.mean()), float(d.std(ddof=1) / math.sqrt(d.size)), d.size - 1, lower, upper, alpha
    )


def tost_two_sample(
    unlearned: ArrayLike, reference: ArrayLike, lower: float, upper: float, alpha: float
) -> TOSTOutcome:
    """Welch TOST on ``mean(unlearned) - mean(reference)``.

    With one unlearned value the standard error is the reference mean's alone (``s / sqrt(n)``,
    ``n - 1`` degrees of freedom). Needs at least two reference values.
    """
    u, r = _values("unlearned", unlearned), _values("reference", reference)
    if u.size < 1 or r.size < 2:
        raise ValueError("two-sample TOST needs >= 1 unlearned and >= 2 reference values")
    estimate = float(u.mean() - r.mean())
    var_r = float(r.var(ddof=1)) / r.size
    if u.size == 1:
        return tost(estimate, math.sqrt(var_r), r.size - 1, lower, upper, alpha)
    var_u = float(u.var(ddof=1)) / u.size
    se = math.sqrt(var_u + var_r)
    if se == 0:
        return tost(estimate, 0.0, u.size + r.size - 2, lower, upper, alpha)
    # Welch-Satterthwaite degrees of freedom.
    df = (var_u + var_r) ** 2 / (var_u**2 / (u.size - 1) + var_r**2 / (r.size - 1))
    return tost(estimate, se, df, lower, upper, alpha)


@dataclass(frozen=True, kw_only=True)
class EquivalenceResult(CheckResult):
    """TOST of one metric against its reference; ``side`` says where a significant difference lies.

    ``side`` is ``"member"`` when the interval lies beyond the margin on the side where members
    sit (the record still looks learned), ``"non_member"`` when beyond the other margin
    (over-forgetting, which also makes the deletion detectable), ``None`` otherwise.
    """

    metric: str
    reference_name: str
    design: str
    member_side: str
    lower_margin: float
    upper_margin: float
    alpha: float
    n_unlearned: int
    n_reference: int
    outcome: TOSTOutcome
    side: str | None


# Not run by the audit runner (no inputs): its margins must be declared before the audit, and
# nothing declares them yet.
@register_check(
    CheckSpec(
        name="equivalence_tost",
        role="forget",
        on_weights=True,
        needed_for_approximate_pass="no aggregate metric was tested for equivalence (TOST)",
    )
)
def equivalence(
    *,
    metric: str,
    unlearned: ArrayLike,
    reference: ArrayLike,
    lower_margin: float,
    upper_margin: float,
    member_side: MemberSide,
    design: Design,
    reference_name: str = "shadow OUT models",
    alpha: float = DEFAULT_ALPHA,
) -> EquivalenceResult:
    """TOST for ``metric`` of the unlearned model against the reference within declared margins.

    In: the metric's values for the unlearned model and for the reference, the margins on the
    difference unlearned - reference (declared in advance, ``lower < upper``), which direction
    members lie (``higher`` for accuracy/confidence, ``lower`` for loss), the design and alpha.
    Out: :class:`EquivalenceResult`: PASS when equivalent; FAIL when the ``1 - 2 alpha`` interval
    lies wholly outside one margin (``side`` says which); INCONCLUSIVE otherwise.
    """
    if member_side not in ("higher", "lower"):
        raise ValueError("member_side must be 'higher' or 'lower'")
    if design == "paired":
        outcome = tost_paired(unlearned, reference, lower_margin, upper_margin, alpha)
    elif design == "two_sample":
        outcome = tost_two_sample(unlearned, reference, lower_margin, upper_margin, alpha)
    else:
        raise ValueError(f"unknown design {design!r}")

    side: str | None = None
    if outcome.ci_low > upper_margin:
        side = "member" if member_side == "higher" else "non_member"
    elif outcome.ci_high < lower_margin:
        side = "member" if member_side == "lower" else "non_member"
    pct = f"{(1 - 2 * alpha) * 100:g}%"
    rule = (
        f"TOST ({design}) of {metric}: difference unlearned - {reference_name} must lie within "
        f"the margins [{fmt(lower_margin)}, {fmt(upper_margin)}] declared before the audit, each "
        f"one-sided test at alpha = {fmt(alpha)} (the {pct} interval inside the margins). "
        "PASS if equivalent; FAIL if the interval lies wholly outside a margin; INCONCLUSIVE "
        f"otherwise. Members lie on the {member_side} side."
    )
    summary = (
        f"difference {fmt(outcome.estimate)} ({pct} CI {fmt(outcome.ci_low)} to "
        f"{fmt(outcome.ci_high)}), TOST p = {fmt(outcome.p_value)}"
    )
    if outcome.equivalent:
        verdict, reason = Verdict.PASS, f"{summary}: equivalent within the margins."
    elif side is not None:
        where = "on the member side" if side == "member" else "on the over-forgetting side"
        verdict, reason = Verdict.FAIL, f"{summary}: significantly outside the margins {where}."
    else:
        verdict, reason = Verdict.INCONCLUSIVE, f"{summary}: equivalence not shown."
    u = np.asarray(unlearned).size
    r = np.asarray(reference).size
    return EquivalenceResult(
        check="equivalence_tost",
        verdict=verdict,
        rule=rule,
        reason=reason,
        metric=metric,
        reference_name=reference_name,
        design=design,
        member_side=member_side,
        lower_margin=lower_margin,
        upper_margin=upper_margin,
        alpha=alpha,
        n_unlearned=int(u),
        n_reference=int(r),
        outcome=outcome,
        side=side,
    )
