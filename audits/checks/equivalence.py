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

In the audit (classifiers): the paired design on the forgotten records, each record's
standardised LiRA score on the unlearned model against the mean of its OUT shadow models' scores
(:func:`_classifier_inputs`). The margins come from the plan (:class:`DeclaredMargins`, carried
by the audit job's config), never from the scores; the plan also states the test's power
(:func:`equivalence_plan`), and the result states it again for the records actually tested
(:func:`tost_power`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy import integrate, stats

from audits.checks.evidence import ClassifierEvidence
from audits.checks.registry import CheckSpec, register_check
from audits.checks.result import CheckResult, Verdict, fmt

DEFAULT_ALPHA = 0.05
Design = Literal["paired", "two_sample"]
MemberSide = Literal["higher", "lower"]
# A paired t-test needs a standard deviation of the differences: two pairs at least.
MIN_PAIRS = 2

# The audit's default margin, symmetric, in units of the held-out IQR-standardised LiRA score
# (the runner puts every model's scores on the scale of its own held-out records). Measured on
# breast_cancer through the audit job path (plain MLP, 8 shadow models, 20-30 forgotten records,
# four model/forget-set set-ups; tests/audits/test_equivalence_audit.py is the memorised one):
# * the spread of the forgotten records' OUT-shadow means: sd 0.43-0.59, IQR 0.49-0.74;
# * a model retrained without the records (what forgetting should look like) sits at a mean
#   difference of +0.11, +0.11, -0.26 and -0.55 from them (the last two: mislabelled canaries
#   whose correctly labelled source stays in the kept data, which every retrain sees and only
#   half the shadow models do): the reference itself is off by up to about 0.5;
# * the original model sits at +1.08 and +1.09 on canaries it memorised (IN-OUT gaps 1.59 and
#   1.11), and at +0.08 and +0.02 where it memorised nothing (IN-OUT gaps 0.02 and 0.08).
# 0.5 is under half the memorised member effect, so an unchanged model on records it memorised
# FAILs on the member side, and above the reference's own offset in three retrains of four.
DEFAULT_MARGIN = 0.5
TARGET_POWER = 0.8
# The plan states the power before any model is scored, so it assumes a spread of the paired
# differences: 0.6, the widest measured in the runs above (sd 0.20-0.60 for retrained and unlearned
# models; the OUT shadow models' own predictive spread was 0.15-0.83). Measuring it for the model
# at hand would mean scoring the shadow models at plan time, in the web process. At +-0.5 it asks
# for 14 records for 80% power at alpha 0.05, and 22 at 0.01, the alpha the plan declares for a
# classifier (the test's share of the audit's family-wise 0.05: audits.checks.verdict).
PLANNING_SPREAD = 0.6


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
    margins_declared_by: str = ""
    # Paired design with a stated spread only: the power to show equivalence when the true
    # difference is 0 and one difference spreads ``difference_spread`` (for the audit, that of a
    # model that behaves as its OUT shadow models), the pairs that reach TARGET_POWER, and the
    # power again at the spread the differences actually show.
    difference_spread: float | None = None
    power: float | None = None
    records_for_target_power: int | None = None
    observed_spread: float | None = None
    power_at_observed_spread: float | None = None


@dataclass(frozen=True)
class DeclaredMargins:
    """What the equivalence test compares against, fixed before the audit sees a score: the
    margins on the difference unlearned - reference, the level, which side members lie on, and
    who declared them (the model's policy or the platform default). The plan declares them and
    the audit job's config carries them (:meth:`to_config` / :meth:`from_config`)."""

    lower_margin: float
    upper_margin: float
    alpha: float = DEFAULT_ALPHA
    member_side: MemberSide = "higher"
    declared_by: str = "the platform default"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lower_margin) and math.isfinite(self.upper_margin)
                and self.lower_margin < self.upper_margin):
            raise ValueError(
                f"margins [{self.lower_margin}, {self.upper_margin}] must be finite, lower < upper"
            )
        if not 0.0 < self.alpha < 0.5:
            raise ValueError("alpha must lie in (0, 0.5)")
        if self.member_side not in ("higher", "lower"):
            raise ValueError("member_side must be 'higher' or 'lower'")

    @classmethod
    def symmetric(cls, margin: float, *, declared_by: str, alpha: float = DEFAULT_ALPHA) -> DeclaredMargins:
        """Margins ``[-margin, +margin]`` on the standardised LiRA score (members higher), tested at
        ``alpha`` (the plan gives the test's share of the audit's family-wise level)."""
        if not margin > 0:
            raise ValueError(f"margin must be > 0, got {margin}")
        return cls(-float(margin), float(margin), float(alpha), declared_by=declared_by)

    def to_config(self) -> dict[str, Any]:
        return {
            "lower_margin": self.lower_margin,
            "upper_margin": self.upper_margin,
            "alpha": self.alpha,
            "member_side": self.member_side,
            "declared_by": self.declared_by,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> DeclaredMargins | None:
        """The margins a job's config carries, or None when it carries none."""
        if not config:
            return None
        return cls(
            float(config["lower_margin"]),
            float(config["upper_margin"]),
            float(config["alpha"]),
            config["member_side"],
            str(config.get("declared_by", "")),
        )


def tost_power(
    *, n: int, spread: float, lower_margin: float, upper_margin: float, alpha: float,
    true_difference: float = 0.0,
) -> float:
    """Power of the paired TOST: the chance that it shows equivalence with ``n`` pairs whose
    differences are normal with mean ``true_difference`` and standard deviation ``spread``.

    Exact for normal differences: the mean ``m`` and the standard deviation ``s`` of the sample are
    independent (``m ~ N(theta, spread^2 / n)``, ``(n - 1) s^2 / spread^2 ~ chi2(n - 1)``), and the
    test shows equivalence when ``lower + t s / sqrt(n) < m < upper - t s / sqrt(n)`` (``t`` the
    one-sided t quantile), so the power is one integral over ``s`` (Owen's Q), done numerically.
    0 below :data:`MIN_PAIRS`.
    """
    if not lower_margin < upper_margin:
        raise ValueError(f"lower margin {lower_margin} must be below upper margin {upper_margin}")
    if spread < 0 or not math.isfinite(spread):
        raise ValueError("spread must be finite and >= 0")
    if n < MIN_PAIRS:
        return 0.0
    if spread == 0:
        return 1.0 if lower_margin < true_difference < upper_margin else 0.0
    df = n - 1
    t = float(stats.t.isf(alpha, df))
    se = spread / math.sqrt(n)
    # Above q_max (the chi-square value of s) the interval is wider than the margins; outside ten
    # standard deviations of the chi-square (sd sqrt(2 df)) its density is negligible, and the
    # integral has to be told where the mass is once it is a narrow peak (many pairs).
    q_max = df * ((upper_margin - lower_margin) / (2 * t * se)) ** 2
    q_low = max(0.0, df - 10 * math.sqrt(2 * df))
    q_high = min(q_max, df + 10 * math.sqrt(2 * df) + 10)
    if q_high <= q_low:
        return 0.0

    def shown_given(q: float) -> float:
        half_width = t * se * math.sqrt(q / df)
        high = (upper_margin - half_width - true_difference) / se
        low = (lower_margin + half_width - true_difference) / se
        inside = stats.norm.cdf(high) - stats.norm.cdf(low)
        return float(inside * stats.chi2.pdf(q, df))

    power, _ = integrate.quad(shown_given, q_low, q_high, limit=200)
    return min(1.0, max(0.0, float(power)))


@functools.lru_cache(maxsize=256)
def tost_records_needed(
    *, spread: float, lower_margin: float, upper_margin: float, alpha: float,
    power: float = TARGET_POWER, true_difference: float = 0.0, limit: int = 100_000,
) -> int | None:
    """The fewest pairs for which :func:`tost_power` reaches ``power``; None if ``limit`` pairs
    do not (a true difference outside the margins never does). The power grows with the pairs,
    so a doubling then a bisection find it."""

    def enough(n: int) -> bool:
        reached = tost_power(n=n, spread=spread, lower_margin=lower_margin,
                             upper_margin=upper_margin, alpha=alpha,
                             true_difference=true_difference)
        return reached >= power

    if not enough(limit):
        return None
    low, high = MIN_PAIRS - 1, MIN_PAIRS  # enough(low) is False: power is 0 below MIN_PAIRS
    while not enough(high):
        low, high = high, min(2 * high, limit)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if enough(middle) else (middle, high)
    return high


def equivalence_plan(
    margins: DeclaredMargins, *, records: int, spread: float = PLANNING_SPREAD
) -> dict[str, Any]:
    """What the plan says about the equivalence test before the method runs: the declared
    margins, its power with ``records`` forgotten records at an assumed ``spread`` of the paired
    differences, how many records reach :data:`TARGET_POWER`, and a sentence saying so."""
    power = tost_power(n=records, spread=spread, lower_margin=margins.lower_margin,
                       upper_margin=margins.upper_margin, alpha=margins.alpha)
    needed = tost_records_needed(spread=spread, lower_margin=margins.lower_margin,
                                 upper_margin=margins.upper_margin, alpha=margins.alpha)
    where = (f"margins [{fmt(margins.lower_margin)}, {fmt(margins.upper_margin)}] declared by "
             f"{margins.declared_by}")
    if records < MIN_PAIRS:
        statement = (
            f"the equivalence test (TOST, {where}) needs at least {MIN_PAIRS} forgotten "
            f"records; this request has {records}, so it will not run"
        )
    else:
        statement = (
            f"the equivalence test (TOST, {where}, alpha {fmt(margins.alpha)}) has a power of "
            f"about {power:.2f} with {records} forgotten records if their differences spread "
            f"{fmt(spread)} (assumed before any score is seen); it needs at least {needed} "
            f"records to reach {TARGET_POWER:.0%}"
        )
    return {
        "declared": margins.to_config(),
        "records": records,
        "assumed_spread": spread,
        "planned_power": round(power, 4),
        "target_power": TARGET_POWER,
        "records_for_target_power": needed,
        "statement": statement,
    }


def _classifier_inputs(evidence: ClassifierEvidence) -> dict[str, Any] | None:
    """Each testable forgotten record's standardised score on the unlearned model against the mean
    of its OUT shadow scores, within the margins the plan declared. None without declared margins,
    without a shadow reference, or with fewer than :data:`MIN_PAIRS` testable records."""
    reference, margins = evidence.shadow_reference, evidence.equivalence_margins
    if reference is None or margins is None:
        return None
    testable = reference.testable
    if int(testable.sum()) < MIN_PAIRS:
        return None
    # A fresh OUT model's score minus the mean of n_out others has variance
    # out_std^2 (1 + 1/n_out) = out_scale^2: one difference's spread if the model behaves as OUT.
    spread = float(np.sqrt(np.mean(reference.out_scale[testable] ** 2)))
    return {
        "metric": "standardised LiRA score of each forgotten record",
        "unlearned": np.asarray(evidence.forget_scores)[testable],
        "reference": reference.out_mean[testable],
        "lower_margin": margins.lower_margin,
        "upper_margin": margins.upper_margin,
        "member_side": margins.member_side,
        "design": "paired",
        "reference_name": "the mean of its OUT shadow models",
        # The declared alpha, or less where it exceeded this test's share of the family-wise level.
        "alpha": (evidence.check_alpha or {}).get("equivalence_tost", margins.alpha),
        "difference_spread": spread,
        "spread_source": "as if the unlearned model scored them like a fresh OUT shadow model",
        "margins_declared_by": margins.declared_by,
    }


@register_check(
    CheckSpec(
        name="equivalence_tost",
        role="forget",
        on_weights=True,
        needed_for_approximate_pass="no aggregate metric was tested for equivalence (TOST)",
        applies_to=("classifier",),
        inputs=_classifier_inputs,
        min_records=MIN_PAIRS,
        false_fail="level",
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
    difference_spread: float | None = None,
    spread_source: str = "assumed",
    margins_declared_by: str = "",
) -> EquivalenceResult:
    """TOST for ``metric`` of the unlearned model against the reference within declared margins.

    In: the metric's values for the unlearned model and for the reference, the margins on the
    difference unlearned - reference (declared in advance, ``lower < upper``), which direction
    members lie (``higher`` for accuracy/confidence, ``lower`` for loss), the design and alpha;
    for the paired design optionally ``difference_spread``, the standard deviation one
    difference has under equivalence, from which the test states its power (:func:`tost_power`),
    with ``spread_source`` saying where that spread comes from; who declared the margins.
    Out: :class:`EquivalenceResult`: PASS when equivalent; FAIL when the ``1 - 2 alpha``
    interval lies wholly outside one margin (``side`` says which); INCONCLUSIVE otherwise.
    """
    if member_side not in ("higher", "lower"):
        raise ValueError("member_side must be 'higher' or 'lower'")
    if difference_spread is not None and design != "paired":
        raise ValueError("the power is stated for the paired design only")
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
        + (f" Margins declared by: {margins_declared_by}." if margins_declared_by else "")
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

    power = needed = observed = power_observed = None
    if difference_spread is not None:
        def power_at(spread: float) -> float:
            return tost_power(n=u, spread=spread, lower_margin=lower_margin,
                              upper_margin=upper_margin, alpha=alpha)

        power = power_at(difference_spread)
        needed = tost_records_needed(spread=difference_spread, lower_margin=lower_margin,
                                     upper_margin=upper_margin, alpha=alpha)
        observed = outcome.standard_error * math.sqrt(u)
        power_observed = power_at(observed)
        reason += (
            f" Power {power:.2f} to show equivalence with {u} pairs if the true difference is 0 "
            f"and one difference spreads {fmt(difference_spread)} ({spread_source}); "
            f"{TARGET_POWER:.0%} needs {needed if needed is not None else 'more than 100000'} pairs"
        )
        if observed > difference_spread:
            reason += (
                f"; the differences spread {fmt(observed)}, which leaves a power of "
                f"{power_observed:.2f}"
            )
        reason += "."
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
        margins_declared_by=margins_declared_by,
        difference_spread=difference_spread,
        power=power,
        records_for_target_power=needed,
        observed_spread=observed,
        power_at_observed_spread=power_observed,
    )
