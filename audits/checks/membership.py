"""The per-record membership test: is a forgotten record still detectably a member?

This is the core check, and the only one that works when a subject owns a single record.

Method: LiRA (Carlini et al., "Membership Inference Attacks From First Principles", S&P 2022).
Every record has shadow models that trained on it (IN) and shadow models that did not (OUT).
The score is the logit-scaled confidence of the true class (:mod:`audits.checks.signals`).

* Offline LiRA statistic: the tested model's score minus the mean of the record's OUT scores,
  in units of the OUT spread (``(x - mean) / (s * sqrt(1 + 1/n))``; one variance pooled over the
  records with few shadow models, as the LiRA paper advises, per record with many).
* Its p-value, calibrated on known non-members (the audit's way): held-out records that no model
  trained on are scored by the tested model and by the same OUT shadow models, and their
  statistics form the record's empirical null; ``p = (1 + #{null >= observed}) / (1 + m)`` over
  the ``m`` held-out records (a conformal p-value: valid whatever the shadow models get wrong, as
  long as a forgotten record and a held-out record are alike to the models, which a random
  train/test split gives). The shadow models train on half the data and the tested model on all
  of it; a Student-t fit of the OUT scores alone assumes the tested model deviates from a record's
  OUT mean no more than a shadow model does, which the exact-deletion benchmark measured to be
  false (9.5% of provably forgotten MNIST records at p <= 0.05). Beyond the largest held-out
  statistic (p below ``1 / (1 + m)``, which Holm's thresholds need for many records) the tail is
  extrapolated as exponential from the largest tenth of the null: an assumption, reached by a
  non-member with probability at most ``1 / (1 + m)``.
* The calibrated p-value is floored by the Student-t predictive p-value of the record's own OUT
  fit (below): ``p = max(p_held_out, p_t)``. The held-out null stands for records as easy as the
  held-out ones, and forgotten records need not be: issue 23's planted benchmark (sklearn digits,
  20 seeds, forgotten records mislabelled) found their OUT means at -2.5 to -6.3 (standardised
  scores) where no held-out record lies (held-out minimum about -2.3), their OUT spread 1.5 to 3
  times the held-out records', and a model retrained without them deviating from their OUT means
  1.96 times as widely (in pooled units: sd 0.98 against the held-out null's 0.50), so the
  held-out null falsely FAILed the retrained model in 4 of 20 seeds. On those hard records the
  Student-t predictive model holds (sd 0.98 against its 1); on easy records the held-out null
  holds where the t fit does not (the exact-deletion figure above). A maximum of two p-values is
  valid wherever either is, so the floor keeps the held-out calibration's guarantee and adds the
  t fit's: the planted benchmark's retrained model was then FAILed in 1 of 20 seeds and the
  original (as if unlearned) in 20 of 20, with fewer records powered (mean 5.0 of 20 against
  14.8: much of the old power came from comparing hard records with an easy null). Rejected on
  the same data: held-out records matched in OUT mean (k = 50 nearest: 1 of 20 false FAILs, but
  no held-out record is as hard as the forgotten ones, so the match cannot reach them), and
  per-record variances (1 of 20 false FAILs, original FAILed in 15 of 20).
* Without held-out scores the p-value is the Student-t *predictive* tail of the OUT fit (scale
  ``s * sqrt(1 + 1/n)``, ``n - 1`` degrees of freedom), exact only if the tested model scores
  like one more shadow model.
* Online LiRA (when IN scores exist): the log likelihood ratio ``log N(x; IN) - log N(x; OUT)``
  is reported per record, and the IN Gaussian is the alternative under which the power of the
  offline test is computed (:func:`expected_power`).
* Holm's correction over the forget set keeps the chance of flagging any truly forgotten record
  at most ``alpha``, whatever the dependence between records.

Inputs from models: the tested model's score per forgotten record, every shadow model's score on
the same records with a boolean mask saying which shadow models trained on which record (from the
shadow runs' membership rows), and for the calibration every model's scores on held-out records,
all on one scale (the audit runner standardises each model on its own held-out records).
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
# Beyond the largest held-out statistic the null's tail is taken as exponential, its scale the mean
# excess of the largest TAIL_FRACTION of the held-out statistics (at least TAIL_MIN_POINTS of them)
# over the next one; with fewer held-out records than that, p-values stop at 1 / (1 + m).
TAIL_FRACTION = 0.1
TAIL_MIN_POINTS = 10
# The calibrated p-value is floored by the Student-t predictive p-value (module docstring): a
# maximum of two p-values is valid wherever either is. False only to reproduce the old calibration.
PREDICTIVE_FLOOR = True
# Rows of the (records x held-out) null computed at once (bounds the memory of large forget sets).
_NULL_CHUNK = 1024

VarianceMode = Literal["auto", "per_record", "global"]


@dataclass(frozen=True, eq=False)
class ShadowReference:
    """Per-record Gaussian fits of shadow-model scores (per-record arrays have shape ``(n_records,)``).

    ``out_scale`` and ``out_df`` describe the Student-t predictive distribution of one new OUT
    score; ``out_std`` is the fitted standard deviation itself. IN fields are ``None`` when no
    shadow model trained on the records. Untestable records (too few OUT scores) hold NaN.
    ``shadow_out`` ``(n_shadow, n_records)`` says which shadow models did not train on which
    record; ``nonmember_shadow_scores`` ``(n_shadow, m)`` are the shadow models' scores on held-out
    records that no model trained on (None when not given), which calibrate the test.
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
    shadow_out: NDArray[np.bool_]
    nonmember_shadow_scores: NDArray[np.float64] | None = None

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
    shadow_scores: ArrayLike,
    shadow_in: ArrayLike,
    *,
    variance: VarianceMode = "auto",
    nonmember_shadow_scores: ArrayLike | None = None,
) -> ShadowReference:
    """Fit OUT (and IN) Gaussians per record from the shadow models.

    In: ``shadow_scores`` ``(n_shadow, n_records)`` LiRA statistics of every shadow model on
    every record; ``shadow_in`` boolean, same shape, true where that shadow model trained on
    that record. ``variance``: ``per_record``, ``global`` (pooled over records, LiRA's "fixed
    variance"), or ``auto`` (per-record once every record has
    ``MIN_OUT_MODELS_FOR_PER_RECORD_VARIANCE`` OUT scores). ``nonmember_shadow_scores``
    ``(n_shadow, m)``: the same shadow models' scores on held-out records no model trained on,
    on the same scale; with them the test can be calibrated on the tested model's scores of those
    records (``nonmember_scores`` of :func:`lira_p_values`). Out: a :class:`ShadowReference`.
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
    held_out = None
    if nonmember_shadow_scores is not None:
        held_out = np.asarray(nonmember_shadow_scores, dtype=np.float64)
        if held_out.ndim != 2 or held_out.shape[0] != scores.shape[0] or held_out.shape[1] == 0:
            raise ValueError(
                f"nonmember_shadow_scores {held_out.shape} must be (n_shadow={scores.shape[0]}, m >= 1)"
            )
        if not np.all(np.isfinite(held_out)):
            raise ValueError("nonmember_shadow_scores contain NaN or infinite values")
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
        shadow_out=~is_in,
        nonmember_shadow_scores=held_out,
    )


def _checked_scores(scores: ArrayLike, n: int, what: str = "scores") -> NDArray[np.float64]:
    x = np.asarray(scores, dtype=np.float64)
    if x.shape != (n,):
        raise ValueError(f"{what} shape {x.shape} != ({n},)")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{what} contain NaN or infinite values")
    return x


def lira_statistic(scores: ArrayLike, reference: ShadowReference) -> NDArray[np.float64]:
    """Offline LiRA's statistic per record: ``(x - OUT mean) / OUT scale``; NaN where untestable."""
    x = _checked_scores(scores, reference.n_records)
    with np.errstate(invalid="ignore"):
        return np.where(reference.testable, (x - reference.out_mean) / reference.out_scale, np.nan)


@dataclass(frozen=True, eq=False)
class EmpiricalNull:
    """Each record's statistic computed for held-out records no model trained on.

    ``statistics`` ``(n_records, m)``, sorted in decreasing order along each row: held-out record
    ``j``'s score on the tested model against the mean of record ``i``'s own OUT shadow models'
    scores of ``j``, scaled as record ``i``'s statistic is (the pooled scale; with per-record
    variances, the spread of those shadow scores of ``j``). ``tail_scale``: the exponential
    tail's scale beyond the largest, NaN where there are too few held-out records for one.
    Rows of untestable records hold NaN.
    """

    statistics: NDArray[np.float64]
    tail_scale: NDArray[np.float64]

    @property
    def n_nonmembers(self) -> int:
        return int(self.statistics.shape[1])


def _tail_points(m: int) -> int:
    """How many of the largest held-out statistics the exponential tail is fitted to."""
    return max(TAIL_MIN_POINTS, int(np.ceil(TAIL_FRACTION * m)))


def empirical_null(reference: ShadowReference, nonmember_scores: ArrayLike) -> EmpiricalNull:
    """The records' null statistics from held-out records (see :class:`EmpiricalNull`).

    In: a reference fitted with ``nonmember_shadow_scores`` and the tested model's scores on the
    same held-out records ``(m,)``, on the same scale. Using each record's own OUT shadow models
    makes a held-out record's statistic exchangeable with a forgotten record's when the tested
    model and those shadows trained on neither.
    """
    shadow = reference.nonmember_shadow_scores
    if shadow is None:
        raise ValueError("the shadow reference was fitted without nonmember_shadow_scores")
    m = shadow.shape[1]
    x0 = _checked_scores(nonmember_scores, m, "nonmember_scores")
    testable = reference.testable
    weights = reference.shadow_out.astype(np.float64)
    n_out = np.maximum(weights.sum(axis=0), 1.0)
    statistics = np.full((reference.n_records, m), np.nan)
    for start in range(0, reference.n_records, _NULL_CHUNK):
        rows = slice(start, start + _NULL_CHUNK)
        w, n = weights[:, rows], n_out[rows, None]
        means = w.T @ shadow / n
        if reference.variance == "per_record":
            squares = w.T @ shadow**2 - n * means**2
            with np.errstate(invalid="ignore", divide="ignore"):
                scale = np.sqrt(np.maximum(squares, 0.0) / (n - 1)) * np.sqrt(1.0 + 1.0 / n)
        else:
            scale = reference.out_scale[rows, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            z = (x0[None, :] - means) / scale
        # A held-out record whose OUT shadows all score it alike has no spread: it counts as
        # exceeding every record (the conservative side).
        z = np.where(np.isfinite(z), z, np.inf)
        statistics[rows] = -np.sort(-z, axis=1)
    statistics[~testable] = np.nan

    k = _tail_points(m)
    tail_scale = np.full(reference.n_records, np.nan)
    if m > k:
        top = statistics[:, : k + 1]
        with np.errstate(invalid="ignore"):
            excess = np.mean(top[:, :k] - top[:, [k]], axis=1)
        usable = testable & np.isfinite(excess) & (excess > 0)
        tail_scale[usable] = excess[usable]
    return EmpiricalNull(statistics=statistics, tail_scale=tail_scale)


def _calibrated_p_values(z: NDArray[np.float64], null: EmpiricalNull) -> NDArray[np.float64]:
    """``(1 + #{null >= z}) / (1 + m)`` per record; beyond the largest, the exponential tail."""
    m = null.n_nonmembers
    p = np.full(z.shape, np.nan)
    ok = np.isfinite(z)
    rows = null.statistics[ok]
    exceed = np.sum(rows >= z[ok, None], axis=1)
    p[ok] = (1.0 + exceed) / (1.0 + m)
    beyond = np.zeros(z.shape, dtype=bool)
    beyond[ok] = exceed == 0
    beyond &= np.isfinite(null.tail_scale)
    if beyond.any():
        excess = z[beyond] - null.statistics[beyond, 0]
        p[beyond] = np.exp(-excess / null.tail_scale[beyond]) / (1.0 + m)
    return p


def lira_p_values(
    scores: ArrayLike,
    reference: ShadowReference,
    *,
    nonmember_scores: ArrayLike | None = None,
    predictive_floor: bool | None = None,
) -> NDArray[np.float64]:
    """One-sided offline-LiRA p-values: how likely a non-member scores at least as high.

    In: observed scores ``(n_records,)`` in the reference's record order; ``nonmember_scores``
    ``(m,)``, the same model's scores on the held-out records whose shadow scores the reference
    holds. With them the p-value is calibrated on those records (:func:`empirical_null`) and,
    with ``predictive_floor`` (default :data:`PREDICTIVE_FLOOR`), never below the Student-t
    predictive tail of the OUT fit; without them it is that tail. Out: p-values, NaN for
    untestable records. A small p-value means the record still looks like a member.
    """
    z = lira_statistic(scores, reference)
    p = np.full(z.shape, np.nan)
    ok = np.isfinite(z)
    p[ok] = stats.t.sf(z[ok], df=reference.out_df[ok])
    if nonmember_scores is None:
        return p
    calibrated = _calibrated_p_values(z, empirical_null(reference, nonmember_scores))
    floor = PREDICTIVE_FLOOR if predictive_floor is None else predictive_floor
    return np.fmax(calibrated, p) if floor else calibrated


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


def _null_threshold(null: EmpiricalNull, level: float) -> NDArray[np.float64]:
    """Per record, the smallest statistic whose calibrated p-value is at most ``level`` (inf when
    none is: the held-out records resolve no p-value that small and there is no tail)."""
    m = null.n_nonmembers
    # (1 + c) / (1 + m) <= level for c values at or above: the (c + 1)-th largest must be passed.
    allowed = int(np.floor(level * (1 + m) - 1 + 1e-9))
    if allowed >= 0:
        return np.nextafter(null.statistics[:, min(allowed, m - 1)], np.inf)
    with np.errstate(invalid="ignore", divide="ignore"):
        beyond = null.statistics[:, 0] + null.tail_scale * np.log(1.0 / (level * (1 + m)))
    return np.where(np.isfinite(null.tail_scale), beyond, np.inf)


def expected_power(
    reference: ShadowReference,
    alpha: float,
    n_tests: int,
    *,
    nonmember_scores: ArrayLike | None = None,
    predictive_floor: bool | None = None,
) -> NDArray[np.float64] | None:
    """Probability that the offline test flags a record on a model that trained on it.

    The alternative is the record's IN Gaussian (online LiRA's); the level is ``alpha / n_tests``,
    the first and strictest step of Holm's procedure, so this never overstates the power of the
    corrected test. With ``nonmember_scores`` (the tested model's held-out scores), the threshold
    is the calibrated test's (:func:`lira_p_values`, with the same ``predictive_floor``: the larger
    of the two thresholds). ``None`` without IN scores; NaN for records without an IN or OUT fit.
    """
    if reference.in_mean is None or reference.in_std is None:
        return None
    level = alpha / max(n_tests, 1)
    floor = PREDICTIVE_FLOOR if predictive_floor is None else predictive_floor
    with np.errstate(invalid="ignore"):
        statistic = stats.t.isf(level, reference.out_df)
        if nonmember_scores is not None:
            calibrated = _null_threshold(empirical_null(reference, nonmember_scores), level)
            statistic = np.fmax(calibrated, statistic) if floor else calibrated
        threshold = reference.out_mean + reference.out_scale * statistic
        return stats.norm.sf((threshold - reference.in_mean) / reference.in_std)


@dataclass(frozen=True, eq=False)
class CorrectedTest:
    """Outcome of the corrected per-record test (arrays in record order).

    ``n_nonmembers``: held-out records the p-values were calibrated on (0: the Student-t fit of
    the shadow scores alone); ``n_extrapolated``: tested records beyond every held-out statistic,
    whose p-value (below ``1 / (1 + n_nonmembers)``) comes from the assumed exponential tail.
    """

    p_values: NDArray[np.float64]
    adjusted_p_values: NDArray[np.float64]
    detected: NDArray[np.bool_]
    tested: NDArray[np.bool_]
    n_tests: int
    n_nonmembers: int = 0
    n_extrapolated: int = 0


def corrected_membership_test(
    scores: ArrayLike,
    reference: ShadowReference,
    *,
    alpha: float,
    n_tests: int | None = None,
    nonmember_scores: ArrayLike | None = None,
) -> CorrectedTest:
    """Offline-LiRA p-values with Holm's correction; ``detected`` where adjusted p <= alpha.

    ``n_tests`` defaults to the number of testable records; pass a larger family size to test a
    subset as strictly as the whole (the power check does, for canaries). ``nonmember_scores``:
    the tested model's held-out scores, which calibrate the p-values (:func:`lira_p_values`).
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError("alpha must lie in (0, 1)")
    p = lira_p_values(scores, reference, nonmember_scores=nonmember_scores)
    tested = np.isfinite(p)
    family = int(tested.sum()) if n_tests is None else int(n_tests)
    adjusted = np.full(p.shape, np.nan)
    if tested.any():
        adjusted[tested] = holm_adjust(p[tested], n_tests=family)
    detected = np.zeros(p.shape, dtype=bool)
    detected[tested] = adjusted[tested] <= alpha
    m = 0 if nonmember_scores is None else int(np.size(nonmember_scores))
    extrapolated = int(np.sum(p[tested] < 1.0 / (1 + m))) if m else 0
    return CorrectedTest(p, adjusted, detected, tested, family, m, extrapolated)


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
    n_nonmembers: int = 0
    n_extrapolated: int = 0
    # Power per record, both ways: the same corrected test on the original model (which trained on
    # the records). None when the original's scores were not given (power then unknown per record).
    original_adjusted_p_values: NDArray[np.float64] | None = None
    powered_ids: tuple[str, ...] | None = None
    unpowered_ids: tuple[str, ...] = ()
    # Detections on the unlearned model of records the test cannot detect on the original: reported,
    # not counted (a flag from a test that could not detect the record where it was a member).
    unpowered_flags: tuple[str, ...] = ()


def p_value_rule(test: CorrectedTest, variance: str) -> str:
    """How ``test``'s p-values were computed, for a check's rule: calibrated on held-out records
    (with the resolution and tail they give) or the Student-t fit of the shadow scores alone."""
    statistic = (
        "offline LiRA's statistic (observed minus the mean of the record's OUT shadow scores, "
        f"in units of their spread, {variance} variance)"
    )
    if not test.n_nonmembers:
        return (
            f"p = the Student-t predictive tail of {statistic}, not calibrated on held-out "
            "records (valid only if the tested model scores like one more shadow model)"
        )
    m = test.n_nonmembers
    below = (
        f"an exponential tail fitted to the largest {_tail_points(m)} held-out statistics (an "
        f"assumption; {test.n_extrapolated} record(s) there)"
        if m > _tail_points(m)
        else "nothing (too few held-out records to fit a tail)"
    )
    return (
        f"p = (1 + #{{held-out statistics >= observed}}) / (1 + {m}), {statistic} compared with "
        f"the same statistic of {m} held-out records no model trained on, scored by the tested "
        "model and the same OUT shadow models (valid if a forgotten and a held-out record are "
        f"alike to the models); below 1/{m + 1} = {fmt(1.0 / (m + 1))}, {below}"
        + ("; and p never below the Student-t predictive tail of the record's OUT fit (valid if "
           "either model holds: a held-out null of easy records understates a hard record's spread)"
           if PREDICTIVE_FLOOR else "")
    )


def _classifier_inputs(evidence: ClassifierEvidence) -> dict[str, Any] | None:
    reference = evidence.shadow_reference
    if reference is None:
        return None
    calibrated = reference.nonmember_shadow_scores is not None
    return {
        "record_ids": evidence.record_ids,
        "unlearned_scores": evidence.forget_scores,
        "reference": reference,
        "nonmember_scores": evidence.nonmember_null_scores if calibrated else None,
        "original_scores": evidence.original_forget_scores,
        "original_nonmember_scores": evidence.original_nonmember_null_scores if calibrated else None,
        "alpha": evidence.alpha_share("membership_lira"),
    }


@register_check(
    CheckSpec(
        name="membership_lira",
        role="forget",
        on_weights=True,
        needed_for_approximate_pass="the per-record membership test was not run",
        applies_to=("classifier",),
        inputs=_classifier_inputs,
        false_fail="level",
    )
)
def membership_test(
    *,
    record_ids: Sequence[str],
    unlearned_scores: ArrayLike,
    reference: ShadowReference,
    nonmember_scores: ArrayLike | None = None,
    alpha: float = DEFAULT_ALPHA,
    calibration: CalibrationDiagnostic | None = None,
    original_scores: ArrayLike | None = None,
    original_nonmember_scores: ArrayLike | None = None,
) -> MembershipTestResult:
    """Test every forgotten record on the unlearned model against its OUT shadow distribution.

    In: record ids and the unlearned model's LiRA scores on them, a :class:`ShadowReference`
    fitted for the same records, ``nonmember_scores`` (the unlearned model's scores on the
    held-out records whose shadow scores the reference holds: they calibrate the p-values; the
    audit always gives them), ``alpha`` (family-wise, Holm), optionally a calibration diagnostic
    of the shadow fit on known non-members, and ``original_scores`` (with
    ``original_nonmember_scores``): the original model's scores on the same records, on which the
    same corrected test gives the power per record. Out: :class:`MembershipTestResult`.

    Power enters both ways (when the original's scores are given): FAIL only if a record the test
    detects on the original is still detected; a detection of a record the test cannot detect on
    the original is reported, not counted; INCONCLUSIVE if some record could not be tested or has
    no power (its non-detection shows nothing); PASS only when every record is powered and none is
    detected. Without the original's scores every detection counts and PASS means only "not
    detected" (the membership_power check then says whether detection was possible).
    """
    scores = np.asarray(unlearned_scores, dtype=np.float64)
    ids = record_id_tuple(record_ids, reference.n_records)
    test = corrected_membership_test(scores, reference, alpha=alpha, nonmember_scores=nonmember_scores)
    n_tested = int(test.tested.sum())
    untestable_ids = tuple(r for r, t in zip(ids, test.tested, strict=True) if not t)
    before = None
    if original_scores is not None:
        # The same test at the same corrected level (the same family size) on the original model.
        before = corrected_membership_test(original_scores, reference, alpha=alpha, n_tests=max(n_tested, 1),
                                           nonmember_scores=original_nonmember_scores)
        powered = before.detected & test.tested
    else:
        powered = test.tested
    counted = test.detected & powered
    detected_ids = tuple(r for r, d in zip(ids, counted, strict=True) if d)
    unpowered_flags = tuple(r for r, d, w in zip(ids, test.detected, powered, strict=True) if d and not w)
    powered_ids = None if before is None else tuple(r for r, w in zip(ids, powered, strict=True) if w)
    unpowered_ids = () if before is None else tuple(
        r for r, t, w in zip(ids, test.tested, powered, strict=True) if t and not w)

    power_rule = (
        "Power per record, both ways: the same test at the same level on the original model, which "
        "trained on the records; a record it does not detect there has no power: its detection on the "
        "unlearned model is reported, not counted, and its non-detection shows nothing. FAIL if a "
        "powered record is still detected; INCONCLUSIVE if a record has fewer than "
        f"{MIN_OUT_MODELS_PER_RECORD} OUT shadow scores or no power; PASS only if every record is "
        "powered and none is detected."
        if before is not None else
        "FAIL if any Holm-adjusted p <= alpha; INCONCLUSIVE if a record has fewer than "
        f"{MIN_OUT_MODELS_PER_RECORD} OUT shadow scores; otherwise PASS, meaning no record is "
        "detected (whether one could have been is the membership_power check)."
    )
    rule = (
        f"Offline LiRA per record: {p_value_rule(test, reference.variance)}; Holm correction "
        f"over the {n_tested} tested records at family-wise alpha = {fmt(alpha)}. " + power_rule
    )
    if detected_ids:
        verdict = Verdict.FAIL
        of = n_tested if powered_ids is None else len(powered_ids)
        reason = (
            f"{len(detected_ids)} of {of} {'' if powered_ids is None else 'powered '}forgotten records "
            f"are still detected as members (smallest adjusted p = "
            f"{fmt(float(np.nanmin(test.adjusted_p_values[counted])))})."
        )
        if not test.n_nonmembers and calibration is not None and calibration.anti_conservative:
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
    elif unpowered_ids:
        verdict = Verdict.INCONCLUSIVE
        reason = (
            f"{len(unpowered_ids)} of {len(ids)} forgotten record(s) are not detected even on the original "
            "model, which trained on them: the test has no power for them, so not detecting them after "
            f"unlearning shows nothing ({len(powered_ids or ())} powered record(s), none detected)."
        )
    else:
        verdict = Verdict.PASS
        reason = f"None of the {n_tested} forgotten records is detected as a member" + (
            "." if before is None else ", and the test detects every one of them on the original model.")
    if unpowered_flags:
        reason += (
            f" {len(unpowered_flags)} record(s) flagged on the unlearned model but not detectable on the "
            "original are reported, not counted: " + ", ".join(unpowered_flags[:10])
            + (" ..." if len(unpowered_flags) > 10 else "") + "."
        )

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
        expected_power=expected_power(reference, alpha, max(n_tested, 1),
                                      nonmember_scores=nonmember_scores),
        n_records=len(ids),
        n_tested=n_tested,
        n_detected=len(detected_ids),
        detected_ids=detected_ids,
        untestable_ids=untestable_ids,
        calibration=calibration,
        n_nonmembers=test.n_nonmembers,
        n_extrapolated=test.n_extrapolated,
        original_adjusted_p_values=None if before is None else before.adjusted_p_values,
        powered_ids=powered_ids,
        unpowered_ids=unpowered_ids,
        unpowered_flags=unpowered_flags,
    )
