"""The per-record membership test: is a forgotten record still detectably a member?

This is the core check, and the only one that works when a subject owns a single record.

Method: LiRA (Carlini et al., "Membership Inference Attacks From First Principles", S&P 2022).
Every record has shadow models that trained on it (IN) and shadow models that did not (OUT).
The statistic is the logit-scaled confidence of the true class (:mod:`audits.checks.signals`).

* Offline LiRA (the test that decides): fit a Gaussian to the record's OUT scores and ask how
  likely a score at least as high as the unlearned model's would be under it. We use the
  Student-t *predictive* distribution of a new draw (scale ``s * sqrt(1 + 1/n)``, ``n - 1``
  degrees of freedom) rather than a plug-in normal, because with ~8 OUT models per record the
  plug-in normal understates the tails and would flag non-members.
* Online LiRA (when IN scores exist): the log likelihood ratio ``log N(x; IN) - log N(x; OUT)``
  is reported per record, and the IN Gaussian is the alternative under which the power of the
  offline test is computed (:func:`expected_power`).
* Holm's correction over the forget set keeps the chance of flagging any truly forgotten record
  at most ``alpha``, whatever the dependence between records.

Inputs from models: the unlearned model's score per forgotten record, and every shadow model's
score on the same records with a boolean mask saying which shadow models trained on which
record (from the shadow runs' membership rows).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from audits.checks.evidence import ClassifierEvidence
from audits.checks.registry import CheckSpec, register_check
from audits.checks.result import CheckResult, Verdict, fmt, record_id_tuple
from audits.checks.stats import holm_adjust

DEFAULT_ALPHA = 0.05
# A variance needs two values; a record with fewer OUT shadow scores cannot be tested.
MIN_OUT_MODELS_PER_RECORD = 2
# The LiRA paper reports that with few shadow models (below about 64) one global variance beats
# per-example variances, which are too noisy from a handful of scores; with 16 shadow models
# (~8 OUT per record) we pool. "auto" switches to per-record variances at this many OUT scores.
MIN_OUT_MODELS_FOR_PER_RECORD_VARIANCE = 32
# Known non-members that reject at more than nominal with this significance mark the test as
# anti-conservative (shadow models differ from the target; detections may be false alarms).
CALIBRATION_SIGNIFICANCE = 0.01

VarianceMode = Literal["auto", "per_record", "global"]


@dataclass(frozen=True, eq=False)
class ShadowReference:
    """Per-record Gaussian fits of shadow-model scores (all arrays have shape ``(n_records,)``).

    ``out_scale`` and ``out_df`` describe the Student-t predictive distribution of one new OUT
    score; ``out_std`` is the fitted standard deviation itself. IN fields are ``None`` when no
    shadow model trained on the records. Untestable records (too few OUT scores) hold NaN.
    """

    out_mean: NDArray[np.float64]
    out_std: NDArray[np.float64]
    out_scale: NDArray[np.float64]
    out_df: NDArray[np.float64]
    n_out: NDArray[np.int64]
    in_mean: NDArray[np.float64] | None
    in_std: NDArray[np.float64] | None
    n_in: NDArray[np.int64]
    variance: Literal["per_record", "global"]

    @property
    def n_records(self) -> int:
        return int(self.out_mean.shape[0])

    @property
    def testable(self) -> NDArray[np.bool_]:
        return np.isfinite(self.out_scale) & (self.out_scale > 0)


def _masked_moments(
    values: NDArray[np.float64], mask: NDArray[np.bool_]
) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]]:
    """Count, mean and unbiased variance per column over the rows where ``mask`` is true."""
    counts = mask.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(mask, values, 0.0).sum(axis=0) / counts
        squares = np.where(mask, (values - means) ** 2, 0.0).sum(axis=0)
        variances = squares / (counts - 1)
    means = np.where(counts >= 1, means, np.nan)
    variances = np.where(counts >= 2, variances, np.nan)
    return counts.astype(np.int64), means, variances


def _pooled(variances: NDArray[np.float64], counts: NDArray[np.int64]) -> tuple[float, int]:
    """Variance pooled over records (weights n - 1) and its degrees of freedom."""
    usable = counts >= 2
    df = int(np.sum(counts[usable] - 1))
    if df == 0:
        return (np.nan, 0)
    return (float(np.sum((counts[usable] - 1) * variances[usable]) / df), df)


def fit_shadow_reference(
    shadow_scores: ArrayLike, shadow_in: ArrayLike, *, variance: VarianceMode = "auto"
) -> ShadowReference:
    """Fit OUT (and IN) Gaussians per record from the shadow models.

    In: ``shadow_scores`` ``(n_shadow, n_records)`` LiRA statistics of every shadow model on
    every record; ``shadow_in`` boolean, same shape, true where that shadow model trained on
    that record. ``variance``: ``per_record``, ``global`` (pooled over records, LiRA's "fixed
    variance"), or ``auto`` (per-record once every record has
    ``MIN_OUT_MODELS_FOR_PER_RECORD_VARIANCE`` OUT scores). Out: a :class:`ShadowReference`.
    """
    scores = np.asarray(shadow_scores, dtype=np.float64)
    is_in = np.asarray(shadow_in, dtype=bool)
    if scores.ndim != 2 or scores.shape != is_in.shape:
        raise ValueError(
            f"shadow_scores {scores.shape} and shadow_in {is_in.shape} must both be "
            "(n_shadow, n_records)"
        )
    if not np.all(np.isfinite(scores)):
        raise ValueError("shadow_scores contain NaN or infinite values")
    if variance not in ("auto", "per_record", "global"):
        raise ValueError(f"unknown variance mode {variance!r}")

    n_out, out_mean, out_var = _masked_moments(scores, ~is_in)
    n_in, in_mean, in_var = _masked_moments(scores, is_in)
    if variance == "auto":
        per_record = n_out.size > 0 and n_out.min() >= MIN_OUT_MODELS_FOR_PER_RECORD_VARIANCE
        mode: Literal["per_record", "global"] = "per_record" if per_record else "global"
    else:
        mode = variance

    if mode == "per_record":
        out_df = (n_out - 1).astype(np.float64)
        in_var_used = in_var
    else:
        pooled_var, pooled_df = _pooled(out_var, n_out)
        out_var = np.full(n_out.shape, pooled_var)
        out_df = np.full(n_out.shape, float(pooled_df))
        pooled_in, _ = _pooled(in_var, n_in)
        in_var_used = np.where(n_in >= 1, pooled_in, np.nan)

    testable = n_out >= MIN_OUT_MODELS_PER_RECORD
    out_std = np.where(testable, np.sqrt(out_var), np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        out_scale = np.where(testable, out_std * np.sqrt(1.0 + 1.0 / n_out), np.nan)
    has_in = bool(np.any(n_in >= 1))
    return ShadowReference(
        out_mean=np.where(testable, out_mean, np.nan),
        out_std=out_std,
        out_scale=out_scale,
        out_df=np.where(testable, out_df, np.nan),
        n_out=n_out,
        in_mean=in_mean if has_in else None,
        in_std=np.sqrt(in_var_used) if has_in else None,
        n_in=n_in,
        variance=mode,
    )


def lira_p_values(scores: ArrayLike, reference: ShadowReference) -> NDArray[np.float64]:
    """One-sided offline-LiRA p-values: P(an OUT model scores >= the observed score).

    In: observed scores ``(n_records,)`` in the reference's record order. Out: p-values, NaN
    for untestable records. A small p-value means the record still looks like a member.
    """
    x = np.asarray(scores, dtype=np.float64)
    if x.shape != (reference.n_records,):
        raise ValueError(f"scores shape {x.shape} != ({reference.n_records},)")
    if not np.all(np.isfinite(x)):
        raise ValueError("scores contain NaN or infinite values")
    p = np.full(x.shape, np.nan)
    ok = reference.testable
    z = (x[ok] - reference.out_mean[ok]) / reference.out_scale[ok]
    p[ok] = stats.t.sf(z, df=reference.out_df[ok])
    return p


def lira_log_likelihood_ratio(
    scores: ArrayLike, reference: ShadowReference
) -> NDArray[np.float64] | None:
    """Online LiRA: ``log N(x; IN) - log N(x; OUT)`` per record; ``None`` without IN scores.

    Positive values favour membership. NaN where a record lacks an IN or OUT fit.
    """
    if reference.in_mean is None or reference.in_std is None:
        return None
    x = np.asarray(scores, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return stats.norm.logpdf(x, reference.in_mean, reference.in_std) - stats.norm.logpdf(
            x, reference.out_mean, reference.out_std
        )


def expected_power(
    reference: ShadowReference, alpha: float, n_tests: int
) -> NDArray[np.float64] | None:
    """Probability that the offline test flags a record on a model that trained on it.

    The alternative is the record's IN Gaussian (online LiRA's); the level is ``alpha / n_tests``,
    the first and strictest step of Holm's procedure, so this never overstates the power of the
    corrected test. ``None`` without IN scores; NaN for records without an IN or OUT fit.
    """
    if reference.in_mean is None or reference.in_std is None:
        return None
    level = alpha / max(n_tests, 1)
    with np.errstate(invalid="ignore"):
        threshold = reference.out_mean + reference.out_scale * stats.t.isf(level, reference.out_df)
        return stats.norm.sf((threshold - reference.in_mean) / reference.in_std)


@dataclass(frozen=True, eq=False)
class CorrectedTest:
    """Outcome of the corrected per-record test (arrays in record order)."""

    p_values: NDArray[np.float64]
    adjusted_p_values: NDArray[np.float64]
    detected: NDArray[np.bool_]
    tested: NDArray[np.bool_]
    n_tests: int


def corrected_membership_test(
    scores: ArrayLike, reference: ShadowReference, *, alpha: float, n_tests: int | None = None
) -> CorrectedTest:
    """Offline-LiRA p-values with Holm's correction; ``detected`` where adjusted p <= alpha.

    ``n_tests`` defaults to the number of testable records; pass a larger family size to test a
    subset as strictly as the whole (the power check does, for canaries).
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError("alpha must lie in (0, 1)")
    p = lira_p_values(scores, reference)
    tested = np.isfinite(p)
    family = int(tested.sum()) if n_tests is None else int(n_tests)
    adjusted = np.full(p.shape, np.nan)
    if tested.any():
        adjusted[tested] = holm_adjust(p[tested], n_tests=family)
    detected = np.zeros(p.shape, dtype=bool)
    detected[tested] = adjusted[tested] <= alpha
    return CorrectedTest(p, adjusted, detected, tested, family)


@dataclass(frozen=True)
class CalibrationDiagnostic:
    """How often the uncorrected test flags records that no model trained on.

    ``empirical_fpr`` should be close to ``alpha``; ``anti_conservative`` when it is
    significantly higher (one-sided binomial test at ``CALIBRATION_SIGNIFICANCE``), which means
    the shadow models do not describe the target model and detections may be false alarms.
    """

    n_nonmembers: int
    alpha: float
    empirical_fpr: float
    binomial_p_value: float
    anti_conservative: bool


def calibration_diagnostic(
    nonmember_scores: ArrayLike, nonmember_reference: ShadowReference, *, alpha: float
) -> CalibrationDiagnostic:
    """Run the uncorrected test on known non-members (e.g. test-set records: OUT for every model).

    In: the target model's scores on those records and a reference fitted on the shadow models'
    scores for them. Out: a :class:`CalibrationDiagnostic`.
    """
    p = lira_p_values(nonmember_scores, nonmember_reference)
    p = p[np.isfinite(p)]
    if p.size == 0:
        raise ValueError("no testable non-member records for the calibration diagnostic")
    flagged = int(np.sum(p <= alpha))
    binom_p = float(stats.binomtest(flagged, p.size, alpha, alternative="greater").pvalue)
    return CalibrationDiagnostic(
        n_nonmembers=int(p.size),
        alpha=alpha,
        empirical_fpr=flagged / p.size,
        binomial_p_value=binom_p,
        anti_conservative=binom_p < CALIBRATION_SIGNIFICANCE,
    )


# eq=False: results hold arrays, whose == is element-wise.
@dataclass(frozen=True, kw_only=True, eq=False)
class MembershipTestResult(CheckResult):
    """Per-record offline-LiRA test on the unlearned model (arrays in ``record_ids`` order)."""

    alpha: float
    variance: str
    record_ids: tuple[str, ...]
    scores: NDArray[np.float64]
    out_mean: NDArray[np.float64]
    out_scale: NDArray[np.float64]
    n_out: NDArray[np.int64]
    p_values: NDArray[np.float64]
    adjusted_p_values: NDArray[np.float64]
    detected: NDArray[np.bool_]
    log_likelihood_ratio: NDArray[np.float64] | None
    expected_power: NDArray[np.float64] | None
    n_records: int
    n_tested: int
    n_detected: int
    detected_ids: tuple[str, ...]
    untestable_ids: tuple[str, ...]
    calibration: CalibrationDiagnostic | None


def _classifier_inputs(evidence: ClassifierEvidence) -> dict[str, Any] | None:
    if evidence.shadow_reference is None:
        return None
    return {
        "record_ids": evidence.record_ids,
        "unlearned_scores": evidence.forget_scores,
        "reference": evidence.shadow_reference,
    }


@register_check(
    CheckSpec(
        name="membership_lira",
        role="forget",
        on_weights=True,
        needed_for_approximate_pass="the per-record membership test was not run",
        applies_to=("classifier",),
        inputs=_classifier_inputs,
    )
)
def membership_test(
    *,
    record_ids: Sequence[str],
    unlearned_scores: ArrayLike,
    reference: ShadowReference,
    alpha: float = DEFAULT_ALPHA,
    calibration: CalibrationDiagnostic | None = None,
) -> MembershipTestResult:
    """Test every forgotten record on the unlearned model against its OUT shadow distribution.

    In: record ids and the unlearned model's LiRA scores on them, a :class:`ShadowReference`
    fitted for the same records, ``alpha`` (family-wise, Holm), optionally a calibration
    diagnostic on known non-members. Out: :class:`MembershipTestResult`. FAIL if any record is
    detected after correction; INCONCLUSIVE if some record could not be tested; PASS otherwise,
    which means only "not detected" (the power check says whether detection was possible).
    """
    scores = np.asarray(unlearned_scores, dtype=np.float64)
    ids = record_id_tuple(record_ids, reference.n_records)
    test = corrected_membership_test(scores, reference, alpha=alpha)
    n_tested = int(test.tested.sum())
    detected_ids = tuple(r for r, d in zip(ids, test.detected, strict=True) if d)
    untestable_ids = tuple(r for r, t in zip(ids, test.tested, strict=True) if not t)

    rule = (
        "Offline LiRA per record: p = P(OUT score >= observed) under a Student-t predictive fit "
        f"of the record's OUT shadow scores ({reference.variance} variance); Holm correction "
        f"over the {n_tested} tested records at family-wise alpha = {fmt(alpha)}. "
        "FAIL if any Holm-adjusted p <= alpha; INCONCLUSIVE if a record has fewer than "
        f"{MIN_OUT_MODELS_PER_RECORD} OUT shadow scores; otherwise PASS, meaning no record is "
        "detected (whether one could have been is the membership_power check)."
    )
    if test.detected.any():
        verdict = Verdict.FAIL
        reason = (
            f"{len(detected_ids)} of {n_tested} forgotten records are still detected as members "
            f"(smallest adjusted p = {fmt(float(np.nanmin(test.adjusted_p_values)))})."
        )
        if calibration is not None and calibration.anti_conservative:
            reason += (
                f" Note: the test flags known non-members at {fmt(calibration.empirical_fpr)} "
                f"against a nominal {fmt(calibration.alpha)}, so some detections may be false "
                "alarms; the FAIL stands until the shadow models are fixed."
            )
    elif n_tested == 0 or untestable_ids:
        verdict = Verdict.INCONCLUSIVE
        reason = (
            f"{len(untestable_ids)} record(s) have too few OUT shadow scores to be tested: "
            + ", ".join(untestable_ids[:10])
            + (" ..." if len(untestable_ids) > 10 else "")
        )
    else:
        verdict = Verdict.PASS
        reason = f"None of the {n_tested} forgotten records is detected as a member."

    return MembershipTestResult(
        check="membership_lira",
        verdict=verdict,
        rule=rule,
        reason=reason,
        alpha=alpha,
        variance=reference.variance,
        record_ids=ids,
        scores=scores,
        out_mean=reference.out_mean,
        out_scale=reference.out_scale,
        n_out=reference.n_out,
        p_values=test.p_values,
        adjusted_p_values=test.adjusted_p_values,
        detected=test.detected,
        log_likelihood_ratio=lira_log_likelihood_ratio(scores, reference),
        expected_power=expected_power(reference, alpha, max(n_tested, 1)),
        n_records=len(ids),
        n_tested=n_tested,
        n_detected=len(detected_ids),
        detected_ids=detected_ids,
        untestable_ids=untestable_ids,
        calibration=calibration,
    )
