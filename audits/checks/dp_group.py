"""Differential-privacy class: what the accountant's (epsilon, delta) says about one subject.

A model trained with (epsilon, delta)-DP bounds the influence of any one record. A subject who
owns k records gets the group-privacy bound (k epsilon, k e^{(k-1) epsilon} delta) (Dwork & Roth,
"The Algorithmic Foundations of Differential Privacy", 2014, Theorem 2.2 and its (eps, delta)
extension). Nothing was deleted from the weights; the bound is the whole claim, so it must meet
the limits the policy declared, and its delta must stay meaningfully below 1.

Inputs: epsilon and delta from the training run's accountant (e.g. Opacus), the number of the
subject's records in the training set (from lineage), and the policy's limits. Where the run's
accountant figures are recorded (sampling rate, noise multiplier, steps), the group is also
accounted directly (:func:`accountant_group_bound`) and the smaller bound is reported, named.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

from audits.checks.registry import CheckSpec, register_check
from audits.checks.result import CheckResult, Verdict, fmt


@dataclass(frozen=True)
class GroupPrivacyBound:
    """(epsilon, delta) for a group of ``k`` records; ``vacuous`` when delta >= 1 (no guarantee)."""

    k: int
    epsilon: float
    delta: float
    vacuous: bool


def group_privacy_bound(epsilon: float, delta: float, k: int) -> GroupPrivacyBound:
    """Group privacy for ``k`` records: ``(k * epsilon, k * exp((k - 1) * epsilon) * delta)``.

    In: per-record ``epsilon >= 0`` and ``0 <= delta < 1`` from the accountant, ``k >= 1`` (an
    integer; k < 1 is refused: a subject with no records in the training set needs no bound, and
    a fractional record is a bug upstream). Out: :class:`GroupPrivacyBound`; the group delta may
    exceed 1 (or be infinite), which marks the bound vacuous.
    """
    if isinstance(k, bool) or not isinstance(k, int):
        raise ValueError(f"k must be an integer number of records, got {k!r}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not (math.isfinite(epsilon) and epsilon >= 0):
        raise ValueError(f"epsilon must be finite and >= 0, got {epsilon}")
    if not (math.isfinite(delta) and 0 <= delta < 1):
        raise ValueError(f"delta must lie in [0, 1), got {delta}")
    group_epsilon = k * epsilon
    if delta == 0:
        group_delta = 0.0
    else:
        # In logs: exp((k-1) eps) overflows long before the product stops being meaningful.
        log_delta = math.log(k) + (k - 1) * epsilon + math.log(delta)
        group_delta = math.exp(log_delta) if log_delta < 700 else math.inf
    return GroupPrivacyBound(
        k=k, epsilon=group_epsilon, delta=group_delta, vacuous=group_delta >= 1.0
    )


@dataclass(frozen=True, kw_only=True)
class DPGroupResult(CheckResult):
    """The subject's group bound and the policy limits it was held against."""

    per_record_epsilon: float
    per_record_delta: float
    bound: GroupPrivacyBound
    max_epsilon: float
    max_delta: float
    # How ``bound`` was computed: "generic" (k epsilon, k e^((k-1) epsilon) delta) or "accountant (rdp)"
    # etc. (the group accounted as one unit, :func:`accountant_group_bound`); both bounds where known.
    computed_by: str = "generic"
    generic_bound: GroupPrivacyBound | None = None
    accountant_bound: GroupPrivacyBound | None = None
    accountant_problem: str = ""


@dataclass(frozen=True)
class DPTrainingFigures:
    """What a DP-SGD run with Poisson sampling gave its accountant, as the run recorded it: the
    accountant's name (Opacus: rdp, prv, gdp), the per-step sampling rate q, the noise multiplier
    sigma (noise std / clipping norm C), the number of noised steps, delta, and the accountant's
    epsilon for one record at that delta."""

    accountant: str
    sample_rate: float
    noise_multiplier: float
    steps: int
    delta: float
    epsilon: float

    @classmethod
    def from_metrics(cls, metrics: dict) -> DPTrainingFigures | None:
        """From a DP training run's metrics (workers.training.dp); None when any figure is missing."""
        try:
            figures = cls(accountant=str(metrics["accountant"]), sample_rate=float(metrics["sample_rate"]),
                          noise_multiplier=float(metrics["noise_multiplier"]), steps=int(metrics["steps"]),
                          delta=float(metrics["delta"]), epsilon=float(metrics["epsilon"]))
        except (KeyError, TypeError, ValueError):
            return None
        ok = (0 < figures.sample_rate <= 1 and figures.noise_multiplier > 0 and figures.steps >= 1
              and 0 < figures.delta < 1 and math.isfinite(figures.epsilon) and figures.epsilon >= 0)
        return figures if ok else None


# The accountant that accounts a group of two or more records. PRV's discretised domain grows with the
# group's privacy loss (sigma / k shrinks): at q = 0.1, sigma = 1, 100 steps, a group of 10 took 28 s
# and gave inf; RDP is closed-form per order, a valid upper bound, and takes milliseconds.
GROUP_ACCOUNTANT = "rdp"


def accountant_group_bound(figures: DPTrainingFigures, k: int) -> GroupPrivacyBound:
    """The (epsilon, delta) of a group of ``k`` records, accounted by Opacus' own accountant.

    In Poisson-subsampled DP-SGD every record is in a step's batch independently with probability
    q, and its clipped gradient moves the noised sum by at most C. A group of k records is then in
    the batch (at least one of them) with probability q' = 1 - (1 - q)^k, and moves the sum by
    j C <= k C when j of them are in it. The step's output with the group is a mixture, over j, of
    the subsampled Gaussians ((1 - q') N(0, sigma^2 C^2) + q' N(j C, sigma^2 C^2)); the hockey-stick
    divergence is jointly convex, so the mixture's divergence from (and to) N(0, sigma^2 C^2) is at most
    the largest of its components', and a Gaussian's grows with its shift: the largest, k C,
    dominates. That is the subsampled Gaussian with rate q' and noise multiplier sigma / k (noise
    sigma C for a sensitivity k C), composed over the same number of steps, which is what the
    accountant is given here. For k = 1 it is the run's own accountant on the run's own history, so
    the result equals the epsilon the run recorded; for k >= 2 :data:`GROUP_ACCOUNTANT` accounts it.
    The group's delta is the run's delta.

    In: the run's recorded figures and ``k >= 1``. Out: :class:`GroupPrivacyBound` (``vacuous``
    when the epsilon is infinite). Raises ``ValueError`` when the accountant cannot compute one.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    # Imported here: Opacus imports torch, which the web side only loads when a plan needs it.
    from opacus.accountants import create_accountant

    name = figures.accountant if k == 1 else GROUP_ACCOUNTANT
    sample_rate = 1.0 - (1.0 - figures.sample_rate) ** k
    try:
        accountant = create_accountant(name)
        accountant.history = [(figures.noise_multiplier / k, sample_rate, figures.steps)]
        with warnings.catch_warnings():
            # RDP warns when the best order is at the end of its grid: the bound is still valid.
            warnings.simplefilter("ignore")
            epsilon = float(accountant.get_epsilon(delta=figures.delta))
    except (ValueError, ArithmeticError, RuntimeError) as exc:
        raise ValueError(f"the {name} accountant cannot account a group of {k}: {exc}") from exc
    if math.isnan(epsilon) or epsilon < 0:
        raise ValueError(f"the {name} accountant gave epsilon {epsilon} for a group of {k}")
    return GroupPrivacyBound(k=k, epsilon=epsilon, delta=figures.delta, vacuous=not math.isfinite(epsilon))


@dataclass(frozen=True)
class SubjectBound:
    """A subject's group bound for ``k`` records and how it was computed.

    ``bound`` is the smaller of the accountant's (``accountant``; None with ``accountant_problem``
    when it could not compute one) and the generic one (``generic``); ``computed_by`` names it.
    ``within_limits``: the bound meets the policy's ``max_epsilon`` and ``max_delta``. ``vacuous``: it
    does not (or its delta is >= 1): it is no meaningful guarantee for this person."""

    k: int
    bound: GroupPrivacyBound
    computed_by: str
    generic: GroupPrivacyBound
    accountant: GroupPrivacyBound | None
    accountant_problem: str
    max_epsilon: float
    max_delta: float
    within_limits: bool
    vacuous: bool


def subject_bound(*, figures: DPTrainingFigures, k: int, max_epsilon: float, max_delta: float) -> SubjectBound:
    """The subject's bound for their ``k`` records: both the accountant's group bound and the generic
    one, and the smaller of the two. The accountant's carries the run's delta, never more than the
    generic delta, so with an epsilon no larger it dominates; otherwise neither dominates, and the
    one that meets the limits (then the one with a delta below 1, then the smaller epsilon) is taken."""
    generic = group_privacy_bound(figures.epsilon, figures.delta, k)
    problem = ""
    try:
        accounted: GroupPrivacyBound | None = accountant_group_bound(figures, k)
    except ValueError as exc:
        accounted, problem = None, str(exc)

    def within(bound: GroupPrivacyBound) -> bool:
        return not bound.vacuous and bound.epsilon <= max_epsilon and bound.delta <= max_delta

    candidates = [(generic, "generic")] + ([(accounted, f"accountant ({figures.accountant if k == 1 else GROUP_ACCOUNTANT})")]
                                           if accounted is not None else [])
    bound, how = min(candidates, key=lambda c: (not within(c[0]), c[0].vacuous, c[0].epsilon, c[0].delta,
                                                c[1] == "generic"))
    return SubjectBound(k=k, bound=bound, computed_by=how, generic=generic, accountant=accounted,
                        accountant_problem=problem, max_epsilon=max_epsilon, max_delta=max_delta,
                        within_limits=within(bound), vacuous=not within(bound))


@register_check(CheckSpec(name="dp_group_privacy", role="dp_bound"))
def dp_group_privacy(
    *, epsilon: float, delta: float, k: int, max_epsilon: float, max_delta: float,
    figures: DPTrainingFigures | None = None,
) -> DPGroupResult:
    """Hold the subject's group-privacy bound against the policy's declared limits.

    In: accountant epsilon/delta, the subject's record count k, and the limits; ``figures``, the
    run's recorded accountant figures where known (then the group is also accounted directly and
    the smaller bound counts, :func:`subject_bound`). Out: :class:`DPGroupResult`: PASS when the
    bound's epsilon is ``<= max_epsilon`` and its delta ``<= max_delta`` and below 1; FAIL otherwise
    (the dp_bounded class cannot be claimed for this subject).
    """
    if not (max_epsilon >= 0 and 0 <= max_delta < 1):
        raise ValueError("max_epsilon must be >= 0 and max_delta in [0, 1)")
    generic = group_privacy_bound(epsilon, delta, k)
    rule = (
        f"Group privacy for k = {k} records: ({k} x {fmt(epsilon)}, {k} x e^({k - 1} x "
        f"{fmt(epsilon)}) x {fmt(delta)}) = ({fmt(generic.epsilon)}, {fmt(generic.delta)})"
    )
    bound, computed_by, accounted, problem = generic, "generic", None, ""
    if figures is not None:
        subject = subject_bound(figures=figures, k=k, max_epsilon=max_epsilon, max_delta=max_delta)
        bound, computed_by, accounted, problem = (subject.bound, subject.computed_by, subject.accountant,
                                                  subject.accountant_problem)
        if accounted is not None:
            rule += (f"; accounted as one group (sampling rate 1 - (1 - {fmt(figures.sample_rate)})^{k}, noise "
                     f"multiplier {fmt(figures.noise_multiplier)} / {k}, {figures.steps} steps): "
                     f"({fmt(accounted.epsilon)}, {fmt(accounted.delta)}); the smaller counts: {computed_by}")
        else:
            rule += f"; the accountant could not account the group ({problem})"
    rule += (f". PASS if epsilon <= {fmt(max_epsilon)} and delta <= {fmt(max_delta)} (and < 1); "
             "FAIL otherwise.")
    ok = bound.epsilon <= max_epsilon and bound.delta <= max_delta and not bound.vacuous
    if ok:
        reason = "The subject's records are covered by the declared differential-privacy limits."
    elif bound.vacuous:
        reason = (
            f"Group delta {fmt(bound.delta)} >= 1: the bound guarantees nothing for {k} records."
            if bound.delta >= 1 else f"Group epsilon {fmt(bound.epsilon)}: the bound guarantees nothing for {k} records."
        )
    else:
        reason = "The group bound exceeds the declared limits."
    return DPGroupResult(
        check="dp_group_privacy",
        verdict=Verdict.PASS if ok else Verdict.FAIL,
        rule=rule,
        reason=reason,
        per_record_epsilon=epsilon,
        per_record_delta=delta,
        bound=bound,
        max_epsilon=max_epsilon,
        max_delta=max_delta,
        computed_by=computed_by,
        generic_bound=generic,
        accountant_bound=accounted,
        accountant_problem=problem,
    )
