"""Power of the per-record test: could it have detected membership at all?

"Not detected" on the unlearned model means something only if the same test detects the same
records on a model that did train on them. Two sources of such a model:

* ``original_model``: the model version before unlearning (it saw every forgotten record);
* ``canaries``: records planted in training for this purpose, scored on a model that saw them.

The same corrected test (:func:`audits.checks.membership.corrected_membership_test`) runs on
those scores; the detected fraction, with an exact binomial interval, is the demonstrated power.
When the shadow models give IN scores, the expected power under the IN Gaussian is reported
beside it. Low power is never a FAIL: it makes a "not detected" uninformative (INCONCLUSIVE).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from audits.checks.evidence import ClassifierEvidence
from audits.checks.membership import (
    DEFAULT_ALPHA,
    ShadowReference,
    corrected_membership_test,
    expected_power,
    p_value_rule,
)
from audits.checks.registry import CheckSpec, register_check
from audits.checks.result import CheckResult, Verdict, fmt, record_id_tuple
from audits.checks.stats import clopper_pearson

PowerSource = Literal["original_model", "canaries"]
# A claim about every forgotten record needs every record detected on the original model.
# Canaries stand in for the records statistically, so most (not all) of them must be detected.
DEFAULT_MIN_DETECTED_FRACTION: dict[str, float] = {"original_model": 1.0, "canaries": 0.8}
INTERVAL_LEVEL = 0.95


@dataclass(frozen=True, kw_only=True, eq=False)
class PowerResult(CheckResult):
    """Detection of records on a model that trained on them (arrays in ``record_ids`` order)."""

    source: str
    alpha: float
    n_tests: int
    min_detected_fraction: float
    record_ids: tuple[str, ...]
    detected: NDArray[np.bool_]
    adjusted_p_values: NDArray[np.float64]
    n_tested: int
    n_detected: int
    detected_fraction: float
    detected_fraction_interval: tuple[float, float]
    expected_power: NDArray[np.float64] | None
    powered_ids: tuple[str, ...]
    n_nonmembers: int = 0


def _classifier_inputs(evidence: ClassifierEvidence) -> dict[str, Any] | None:
    reference = evidence.shadow_reference
    if reference is None:
        return None
    calibrated = reference.nonmember_shadow_scores is not None
    return {
        "record_ids": evidence.record_ids,
        "seen_scores": evidence.original_forget_scores,
        "reference": reference,
        "source": "original_model",
        # The original model's own held-out scores: the same test as the unlearned model gets.
        "nonmember_scores": evidence.original_nonmember_null_scores if calibrated else None,
        "alpha": evidence.alpha_share("membership_lira"),
    }


@register_check(
    CheckSpec(
        name="membership_power",
        role="power",
        on_weights=True,
        needed_for_approximate_pass="the per-record test's power was not demonstrated (no power check)",
        applies_to=("classifier",),
        inputs=_classifier_inputs,
    )
)
def membership_power(
    *,
    record_ids: Sequence[str],
    seen_scores: ArrayLike,
    reference: ShadowReference,
    source: PowerSource,
    nonmember_scores: ArrayLike | None = None,
    alpha: float = DEFAULT_ALPHA,
    n_tests: int | None = None,
    min_detected_fraction: float | None = None,
) -> PowerResult:
    """Run the per-record test on scores from a model that saw the records.

    In: record (or canary) ids; their LiRA scores on the original model (or on the model the
    canaries were planted in); a :class:`ShadowReference` fitted for those same records;
    ``nonmember_scores``, that model's scores on the reference's held-out records, which calibrate
    the test as they do the forget-set test's; the ``alpha`` of the forget-set test; ``n_tests``,
    the Holm family size (defaults to the number of records given; for canaries pass the
    forget-set size so they face the same correction); ``min_detected_fraction`` (defaults per
    source: 1.0 for the original model, 0.8 for canaries). Out: :class:`PowerResult`, PASS when
    the detected fraction reaches the minimum, INCONCLUSIVE otherwise.
    """
    if source not in DEFAULT_MIN_DETECTED_FRACTION:
        raise ValueError(f"unknown power source {source!r}")
    minimum = (
        DEFAULT_MIN_DETECTED_FRACTION[source]
        if min_detected_fraction is None
        else float(min_detected_fraction)
    )
    if not 0.0 < minimum <= 1.0:
        raise ValueError("min_detected_fraction must lie in (0, 1]")
    ids = record_id_tuple(record_ids, reference.n_records)
    test = corrected_membership_test(seen_scores, reference, alpha=alpha, n_tests=n_tests,
                                     nonmember_scores=nonmember_scores)
    n_tested = int(test.tested.sum())
    n_detected = int(test.detected.sum())
    fraction = n_detected / n_tested if n_tested else 0.0
    interval = clopper_pearson(n_detected, n_tested, INTERVAL_LEVEL)
    what = "the original model" if source == "original_model" else "the model they were planted in"

    rule = (
        f"The per-record test ({p_value_rule(test, reference.variance)}; same alpha = "
        f"{fmt(alpha)}, Holm over {test.n_tests} tests) is run "
        f"on {what}, which trained on the records. PASS if at least {fmt(minimum)} of the "
        "tested records are detected (demonstrated power); otherwise INCONCLUSIVE, because a "
        "test that cannot detect a member cannot show that a record was forgotten."
    )
    if n_tested == 0:
        verdict, reason = Verdict.INCONCLUSIVE, "No record could be tested (too few OUT scores)."
    elif fraction >= minimum:
        verdict = Verdict.PASS
        reason = (
            f"{n_detected} of {n_tested} records detected on {what} "
            f"(fraction {fmt(fraction)}, {int(INTERVAL_LEVEL * 100)}% CI "
            f"{fmt(interval[0])}-{fmt(interval[1])})."
        )
    else:
        verdict = Verdict.INCONCLUSIVE
        reason = (
            f"Only {n_detected} of {n_tested} records detected on {what} "
            f"(fraction {fmt(fraction)} < {fmt(minimum)}): the test lacks the power to show "
            "forgetting for the others."
        )
    return PowerResult(
        check="membership_power",
        verdict=verdict,
        rule=rule,
        reason=reason,
        source=source,
        alpha=alpha,
        n_tests=test.n_tests,
        min_detected_fraction=minimum,
        record_ids=ids,
        detected=test.detected,
        adjusted_p_values=test.adjusted_p_values,
        n_tested=n_tested,
        n_detected=n_detected,
        detected_fraction=fraction,
        detected_fraction_interval=interval,
        expected_power=expected_power(reference, alpha, max(test.n_tests, 1),
                                      nonmember_scores=nonmember_scores),
        powered_ids=tuple(r for r, d in zip(ids, test.detected, strict=True) if d),
        n_nonmembers=test.n_nonmembers,
    )


def _canary_inputs(evidence: ClassifierEvidence) -> dict[str, Any] | None:
    canaries = evidence.canaries
    if canaries is None or not canaries.record_ids:
        return None
    calibrated = canaries.reference.nonmember_shadow_scores is not None
    return {
        "record_ids": canaries.record_ids,
        "seen_scores": canaries.original_scores,
        "reference": canaries.reference,
        "nonmember_scores": canaries.original_nonmember_null_scores if calibrated else None,
        "alpha": evidence.alpha_share("membership_lira"),
        # The canaries face the forget set's correction (or their own, when there are more of them).
        "n_tests": max(len(evidence.record_ids), len(canaries.record_ids)),
    }


@register_check(
    CheckSpec(
        name="canary_power",
        role="power",
        on_weights=True,
        applies_to=("classifier",),
        inputs=_canary_inputs,
    )
)
def canary_power(
    *,
    record_ids: Sequence[str],
    seen_scores: ArrayLike,
    reference: ShadowReference,
    nonmember_scores: ArrayLike | None = None,
    alpha: float = DEFAULT_ALPHA,
    n_tests: int | None = None,
    min_detected_fraction: float | None = None,
) -> PowerResult:
    """The pipeline's demonstrated power: the per-record test on canaries planted in training, on the
    original model (which trained on them). Same inputs as :func:`membership_power` for canary ids;
    out: a :class:`PowerResult` named ``canary_power`` (PASS when at least the minimum fraction is
    detected, INCONCLUSIVE otherwise). Reported beside the verdict, never needed for a PASS and never
    a stand-in for the forget records' own power (``membership_power``)."""
    result = membership_power(record_ids=record_ids, seen_scores=seen_scores, reference=reference,
                              source="canaries", nonmember_scores=nonmember_scores, alpha=alpha,
                              n_tests=n_tests, min_detected_fraction=min_detected_fraction)
    return dataclasses.replace(
        result, check="canary_power",
        rule=result.rule + " This is the pipeline's sensitivity on planted canaries, reported beside the "
        "verdict; it never stands in for the forget records' own power.")
