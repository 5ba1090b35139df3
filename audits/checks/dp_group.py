"""Differential-privacy class: what the accountant's (epsilon, delta) says about one subject.

A model trained with (epsilon, delta)-DP bounds the influence of any one record. A subject who
owns k records gets the group-privacy bound (k epsilon, k e^{(k-1) epsilon} delta) (Dwork & Roth,
"The Algorithmic Foundations of Differential Privacy", 2014, Theorem 2.2 and its (eps, delta)
extension). Nothing was deleted from the weights; the bound is the whole claim, so it must meet
the limits the policy declared, and its delta must stay meaningfully below 1.

Inputs: epsilon and delta from the training run's accountant (e.g. Opacus), the number of the
subject's records in the training set (from lineage), and the policy's limits.
"""

from __future__ import annotations

import math
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


@register_check(CheckSpec(name="dp_group_privacy", role="dp_bound"))
def dp_group_privacy(
    *, epsilon: float, delta: float, k: int, max_epsilon: float, max_delta: float
) -> DPGroupResult:
    """Hold the subject's group-privacy bound against the policy's declared limits.

    In: accountant epsilon/delta, the subject's record count k, and the limits. Out:
    :class:`DPGroupResult`: PASS when ``k eps <= max_epsilon`` and the group delta is
    ``<= max_delta`` and below 1; FAIL otherwise (the dp_bounded class cannot be claimed for
    this subject).
    """
    if not (max_epsilon >= 0 and 0 <= max_delta < 1):
        raise ValueError("max_epsilon must be >= 0 and max_delta in [0, 1)")
    bound = group_privacy_bound(epsilon, delta, k)
    rule = (
        f"Group privacy for k = {k} records: ({k} x {fmt(epsilon)}, {k} x e^({k - 1} x "
        f"{fmt(epsilon)}) x {fmt(delta)}) = ({fmt(bound.epsilon)}, {fmt(bound.delta)}). PASS if "
        f"epsilon <= {fmt(max_epsilon)} and delta <= {fmt(max_delta)} (and < 1); FAIL otherwise."
    )
    ok = bound.epsilon <= max_epsilon and bound.delta <= max_delta and not bound.vacuous
    if ok:
        reason = "The subject's records are covered by the declared differential-privacy limits."
    elif bound.vacuous:
        reason = (
            f"Group delta {fmt(bound.delta)} >= 1: the bound guarantees nothing for {k} records."
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
    )
