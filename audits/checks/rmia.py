"""RMIA: the relative membership inference attack, per forgotten record, with the LiRA shadows.

Source: Zarifzadeh, Liu, Shokri, "Low-Cost High-Power Membership Inference Attacks", ICML 2024
(offline variant, Sec. 3 and App. B.2). Reimplemented here from the paper.

A record x is compared with population records z that no model trained on. With ``Pr(x|m)``
the probability a model m gives x's true label:

* ``Pr(x)``: what a model that may or may not have trained on x gives it. Offline (only OUT
  reference models): ``Pr(x) = ((1 + a) Pr_OUT(x) + (1 - a)) / 2``, ``Pr_OUT(x)`` the mean over
  the reference models that did not train on x, ``a`` the paper's offline correction (how much
  an IN model would raise the probability; 0 < a <= 1).
* the likelihood ratio of x against z on the tested model m:
  ``LR(x, z) = (Pr(x|m) / Pr(x)) / (Pr(z|m) / Pr(z))``;
* the score of x: the share of population records z with ``LR(x, z) >= gamma``.

A member x dominates most z; a non-member is like one more z. For a fixed population the score at
any gamma is a non-decreasing function of x's own ratio ``Pr(x|m) / Pr(x)``, so the test ranks that
ratio among the held-out records' (:func:`rmia_p_values`: the full-conformal p-value of the score at
gamma 1, the reference code's choice); gamma changes the reported score, not what is flagged. Each
held-out record's ``Pr(z)`` comes from the same reference models as the record's ``Pr(x)`` (those
that did not train on it: :func:`population_ratios`), so that a forgotten record and the held-out
records are alike (exchangeable) when the tested model trained on neither.

Ranks alone cannot go below ``1 / (1 + m)`` with m held-out records, and Holm's correction over k
records at ``alpha`` needs ``alpha / k`` for its first step. Issue 23's planted benchmark (497
held-out records, 20 forgotten, RMIA's share of the family-wise level 0.0133) needs 0.00067 where
ranks give 0.0020: RMIA detected none of the 20 on any model, the original included, and was
INCONCLUSIVE (no power) in every seed of every case with 20 or more records, where LiRA FAILed the
original presented as unlearned in 20 of 20. Beyond the largest held-out ratio the log ratio's tail is now taken as
exponential, fitted to the largest tenth of the held-out log ratios as LiRA's held-out calibration
fits its tail (:mod:`audits.checks.membership`): an assumption, which a non-member reaches with
probability at most ``1 / (1 + m)``, and the rule counts the records that rely on it. On synthetic
non-members (the generator of tests/audits/checks/test_rmia.py, 20,000 per setting, m = 100 and 497)
0.0004 to 0.0014 of the p-values were at or below 0.001. On the planted benchmark's cached models
RMIA then FAILed the original presented as unlearned in 20 of 20 seeds (7.4 of its 20 records
detected on average, 2 to 13; LiRA 5.1, 1 to 8) and no model retrained without the records (0 of
20). Taking every held-out record's ``Pr(z)`` from all the reference models instead (a mean over
twice as many models as a forget record's ``Pr(x)``: less noisy, so not exchangeable with it)
detected 7.85 records on average (3 to 14) with the same verdicts. The offline ``Pr(x)`` is at
least ``(1 - a) / 2``, so no ratio exceeds ``2 / (1 - a)`` (2.9 at the default a): a memorised
record whose OUT models give it about 0 reaches at most that, which a few hard held-out records
approach; that, not the score, bounds RMIA's power on such records.

The held-out records' tail says nothing of forgotten records unlike them. In a memorised setting
(noise images with random labels among digits, width-1024 MLP, label smoothing 0.1, 32 shadows;
benchmarks/audit_memorised_settings.py) the tail alone FAILed models retrained without the records
in 2 of 20 seeds with 30 forgotten records and 1 of 20 with 10 (1-2 records each time, far beyond
every held-out ratio). So, as LiRA's (:data:`audits.checks.membership.PREDICTIVE_FLOOR`), each
p-value is floored by the record's own Student-t predictive tail among the reference models that
did not train on it (:func:`predictive_p_values`): a maximum of two p-values is valid wherever
either is. On the synthetic memorised outliers of tests/audits/checks/test_rmia.py the tail alone
FAILed 6 of 10 retrained models, the floored test none, while still FAILing every original.

Power, both ways: the same test run on the ORIGINAL model (which trained on the records) says
for which records the test can detect a member at all. A record it cannot detect on the original
cannot FAIL the unlearned model either (a flag from a test that could not detect the record where
it was a member is noise), and its not being detected proves nothing: it is reported as untested.

Signals: the logit-scaled confidence ``c = log p - log(1 - p)`` the audit runner computes for
LiRA, unstandardised; ``Pr = sigmoid(c)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from audits.checks.evidence import ClassifierEvidence
from audits.checks.membership import TAIL_FRACTION, TAIL_MIN_POINTS
from audits.checks.registry import CheckSpec, register_check
from audits.checks.result import CheckResult, Verdict, fmt, record_id_tuple
from audits.checks.stats import holm_adjust

DEFAULT_ALPHA = 0.05
DEFAULT_GAMMA = 1.0
DEFAULT_OFFLINE_A = 0.3
MIN_OUT_MODELS = 1
MIN_POPULATION = 20
# Forget records whose (records x held-out) likelihood ratios are computed at once.
_RATIO_CHUNK = 1024


def _probabilities(confidences: ArrayLike) -> NDArray[np.float64]:
    c = np.asarray(confidences, dtype=np.float64)
    return 1.0 / (1.0 + np.exp(-np.clip(c, -700, 700)))


def marginal_probability(reference_conf: ArrayLike, out_mask: ArrayLike, *, a: float) -> NDArray[np.float64]:
    """``Pr(x)`` per column from the reference models that did not train on it (offline RMIA).
    NaN where a column has no OUT reference model."""
    p = _probabilities(reference_conf)
    mask = np.asarray(out_mask, dtype=bool)
    count = mask.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out_mean = np.where(mask, p, 0.0).sum(axis=0) / count
    return np.where(count >= MIN_OUT_MODELS, ((1 + a) * out_mean + (1 - a)) / 2, np.nan)


def population_ratios(population_target_conf: ArrayLike, population_reference_conf: ArrayLike,
                      reference_out: ArrayLike, *, a: float) -> NDArray[np.float64]:
    """Each held-out record's likelihood ratio ``Pr(z|m) / Pr(z)``, one row per forget record.

    In: the tested model's confidences on the m held-out records (m,), the reference models' (n_ref, m),
    and which reference models did not train on which forget record (n_ref, k). Row i takes ``Pr(z)``
    from the reference models that did not train on forget record i, the ones its own ``Pr(x)`` comes
    from: a forgotten record's ratio and row i are then alike (exchangeable) when the tested model
    trained on neither, whatever the number of those models (fewer models, a noisier ``Pr``). Out:
    (k, m); a row of NaN where no reference model left the record out."""
    target = _probabilities(population_target_conf)
    reference = _probabilities(population_reference_conf)
    weights = np.asarray(reference_out, dtype=np.float64)
    count = weights.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out_mean = (weights.T @ reference) / count[:, None]
    marginal = ((1 + a) * out_mean + (1 - a)) / 2
    ratios = target[None, :] / marginal
    ratios[count < MIN_OUT_MODELS] = np.nan
    return ratios


def _rows(target_ratio: NDArray[np.float64], population_ratio: NDArray[np.float64]) -> NDArray[np.float64]:
    """The population's ratios as one row per target: a shared (m,) population is repeated."""
    z = np.asarray(population_ratio, dtype=np.float64)
    return np.broadcast_to(z, (target_ratio.size, z.shape[-1])) if z.ndim == 1 else z


def rmia_scores(target_ratio: NDArray[np.float64], population_ratio: NDArray[np.float64], *,
                gamma: float) -> NDArray[np.float64]:
    """Share of population records each target dominates by ``gamma``: ``ratio_x / ratio_z >= gamma``
    (the paper's score). ``population_ratio``: (m,) shared, or (k, m), one row per target. NaN for a
    target without a ratio."""
    rows = _rows(target_ratio, population_ratio)
    # ratio_x / ratio_z >= gamma  <=>  ratio_z <= ratio_x / gamma (ratios are positive)
    share = np.mean(rows <= (target_ratio / gamma)[:, None], axis=1)
    return np.where(np.isfinite(target_ratio), share, np.nan)


def _tail_points(m: int) -> int:
    """How many of the largest population statistics the exponential tail is fitted to (as LiRA's
    held-out calibration, :mod:`audits.checks.membership`)."""
    return max(TAIL_MIN_POINTS, int(np.ceil(TAIL_FRACTION * m)))


def population_tail_scale(population_ratio: NDArray[np.float64]) -> NDArray[np.float64]:
    """Scale of the exponential tail of the population's log likelihood ratios, per row of (k, m)
    (a (m,) population gives one value): the mean excess of the largest ``k`` (:func:`_tail_points`)
    over the next one. NaN where there are too few population records for a tail (``m <= k``) or the
    largest ``k + 1`` are all equal."""
    z = np.atleast_2d(np.asarray(population_ratio, dtype=np.float64))
    m = z.shape[1]
    k = _tail_points(m)
    if m <= k:
        return np.full(z.shape[0], np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        top = -np.sort(-np.log(z), axis=1)[:, : k + 1]
        excess = np.mean(top[:, :k] - top[:, [k]], axis=1)
    return np.where(np.isfinite(excess) & (excess > 0), excess, np.nan)


def rmia_p_values(target_ratio: NDArray[np.float64], population_ratio: NDArray[np.float64]) -> NDArray[np.float64]:
    """One-sided p-value of each target's likelihood ratio among the population's.

    ``p = (1 + #{z: ratio_z >= ratio_x}) / (1 + m)``: the full-conformal p-value of RMIA's score
    at gamma 1 (the share of the population x dominates), valid at every level when x is
    exchangeable with the m population records (a non-member; :func:`population_ratios`). Beyond
    the largest population ratio it would stop at ``1 / (1 + m)``; there the log ratio's tail is
    taken as exponential (:func:`population_tail_scale`):
    ``p = exp(-(log ratio_x - max log ratio_z) / scale) / (1 + m)``, an assumption that a non-member
    reaches with probability at most ``1 / (1 + m)``. ``population_ratio``: (m,) shared, or (k, m),
    one row per target. NaN for a target without a ratio (no OUT reference model)."""
    target = np.asarray(target_ratio, dtype=np.float64)
    rows = _rows(target, population_ratio)
    m = rows.shape[1]
    ok = np.isfinite(target) & ~np.any(np.isnan(rows), axis=1)
    exceed = np.sum(rows >= target[:, None], axis=1)
    p = np.where(ok, (1.0 + exceed) / (1.0 + m), np.nan)
    beyond = ok & (exceed == 0)
    if beyond.any():
        scale = population_tail_scale(rows[beyond])
        with np.errstate(divide="ignore"):
            excess = np.log(target[beyond]) - np.log(np.max(rows[beyond], axis=1))
        tail = np.exp(-excess / scale) / (1.0 + m)
        p[beyond] = np.where(np.isfinite(scale), tail, p[beyond])
    return p


def predictive_p_values(target_conf: ArrayLike, reference_conf: ArrayLike, out_mask: ArrayLike) -> NDArray[np.float64]:
    """One-sided Student-t predictive p-value of each target confidence among its record's OUT
    reference models' (logit-scaled confidences; per record: mean, sample deviation over n OUT
    models, scale ``sd * sqrt(1 + 1/n)``, ``n - 1`` degrees of freedom): how likely one more model
    that did not train on the record gives it at least that confidence, were the OUT confidences
    normal. NaN with fewer than 2 OUT models or no spread. The record's own null, which the
    held-out population's is not where the forgotten records differ from the held-out ones
    (memorised outliers: module docstring)."""
    from scipy import stats

    c = np.asarray(reference_conf, dtype=np.float64)
    mask = np.asarray(out_mask, dtype=bool)
    n = mask.sum(axis=0).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(mask, c, 0.0).sum(axis=0) / n
        var = np.where(mask, (c - mean) ** 2, 0.0).sum(axis=0) / (n - 1)
        scale = np.sqrt(var * (1.0 + 1.0 / n))
        z = (np.asarray(target_conf, dtype=np.float64) - mean) / scale
    ok = (n >= 2) & np.isfinite(z) & (scale > 0)
    p = np.full(z.shape, np.nan)
    p[ok] = stats.t.sf(z[ok], df=n[ok] - 1)
    return p


@dataclass(frozen=True)
class RMIATest:
    """Per-record scores and p-values of one model against the held-out population.

    ``n_extrapolated``: records beyond every population ratio, whose p-value (below ``1 / (1 + m)``)
    comes from the assumed exponential tail of the held-out log ratios (:func:`rmia_p_values`)."""

    scores: NDArray[np.float64]
    p_values: NDArray[np.float64]
    adjusted: NDArray[np.float64]
    n_extrapolated: int = 0


def rmia_test(*, target_conf: ArrayLike, reference_conf: ArrayLike, reference_out: ArrayLike,
              population_target_conf: ArrayLike, population_reference_conf: ArrayLike,
              gamma: float = DEFAULT_GAMMA, a: float = DEFAULT_OFFLINE_A) -> RMIATest:
    """The RMIA test of one model (the unlearned or the original) on the forget records.

    In: the model's confidences on the k forget records (k,) and on m held-out records (m,); the
    reference models' confidences on the same (n_ref, k) and (n_ref, m); which reference models
    did not train on which forget record (n_ref, k) (none trained on a held-out record).
    Out: :class:`RMIATest` with Holm-adjusted p-values (NaN for a record no reference model left
    out)."""
    if not (0 < a <= 1) or gamma <= 0:
        raise ValueError("RMIA needs 0 < a <= 1 and gamma > 0")
    ref = np.asarray(reference_conf, dtype=np.float64)
    pop_ref = np.asarray(population_reference_conf, dtype=np.float64)
    target = np.asarray(target_conf, dtype=np.float64)
    pop_target = np.asarray(population_target_conf, dtype=np.float64)
    out = np.asarray(reference_out, dtype=bool)
    if ref.shape != out.shape or ref.shape[1:] != target.shape or pop_ref.shape[1:] != pop_target.shape \
            or ref.shape[0] != pop_ref.shape[0]:
        raise ValueError(f"RMIA inputs disagree in shape: reference {ref.shape}, OUT mask {out.shape}, target "
                         f"{target.shape}, population reference {pop_ref.shape}, population target {pop_target.shape}")
    if pop_target.size < MIN_POPULATION:
        raise ValueError(f"RMIA needs at least {MIN_POPULATION} held-out records, got {pop_target.size}")
    ratio_x = _probabilities(target) / marginal_probability(ref, out, a=a)
    scores, p = np.full(ratio_x.shape, np.nan), np.full(ratio_x.shape, np.nan)
    # Row blocks bound the memory of the (records x held-out) ratios for large forget sets.
    for start in range(0, ratio_x.size, _RATIO_CHUNK):
        rows = slice(start, start + _RATIO_CHUNK)
        ratio_z = population_ratios(pop_target, pop_ref, out[:, rows], a=a)
        scores[rows] = rmia_scores(ratio_x[rows], ratio_z, gamma=gamma)
        p[rows] = rmia_p_values(ratio_x[rows], ratio_z)
    # Never below the record's own Student-t predictive tail (a maximum of two p-values is valid
    # wherever either is), as LiRA's: the held-out tail alone FAILed models retrained without
    # memorised outliers (module docstring).
    floor = predictive_p_values(target, ref, out)
    p = np.where(np.isfinite(p) & np.isfinite(floor), np.fmax(p, floor), p)
    adjusted = np.full_like(p, np.nan)
    testable = np.isfinite(p)
    if testable.any():
        adjusted[testable] = holm_adjust(p[testable])
    extrapolated = int(np.sum(p[testable] < 1.0 / (1 + pop_target.size)))
    return RMIATest(scores=scores, p_values=p, adjusted=adjusted, n_extrapolated=extrapolated)


@dataclass(frozen=True, kw_only=True, eq=False)
class RMIAResult(CheckResult):
    """RMIA on the unlearned model, with the same test on the original as its per-record power."""

    record_ids: tuple[str, ...]
    alpha: float
    gamma: float
    a: float
    population: int
    reference_models: int
    unlearned: RMIATest
    original: RMIATest
    detected: tuple[str, ...]
    powered: tuple[str, ...]
    unpowered_flags: tuple[str, ...]


def _classifier_inputs(evidence: ClassifierEvidence) -> dict[str, Any] | None:
    raw = evidence.raw_confidences
    if raw is None or evidence.shadow_reference is None:
        return None
    return {"record_ids": evidence.record_ids, **raw, "reference_out": evidence.shadow_reference.shadow_out,
            "alpha": evidence.alpha_share("membership_rmia")}


@register_check(CheckSpec(name="membership_rmia", role="forget", on_weights=True, applies_to=("classifier",),
                          inputs=_classifier_inputs, false_fail="level"))
def membership_rmia(*, record_ids: Sequence[str], unlearned_conf: ArrayLike, original_conf: ArrayLike,
                    reference_conf: ArrayLike, reference_out: ArrayLike, population_unlearned_conf: ArrayLike,
                    population_original_conf: ArrayLike, population_reference_conf: ArrayLike,
                    alpha: float = DEFAULT_ALPHA, gamma: float = DEFAULT_GAMMA,
                    a: float = DEFAULT_OFFLINE_A) -> RMIAResult:
    """RMIA on every forgotten record, on the unlearned model and (its power) on the original.

    FAIL when a record the test detects on the original is still detected on the unlearned model
    (Holm-adjusted p <= alpha); PASS when no powered record is detected and at least one record
    was powered; INCONCLUSIVE when the test detects none of the records on the original (no power:
    it could not have failed); a record detected on the unlearned model but not on the original is
    reported, not counted."""
    ids = record_id_tuple(record_ids, np.asarray(unlearned_conf).shape[0])
    common = dict(target_conf=None, reference_conf=reference_conf, reference_out=reference_out,
                  population_reference_conf=population_reference_conf, gamma=gamma, a=a)
    after = rmia_test(**{**common, "target_conf": unlearned_conf, "population_target_conf": population_unlearned_conf})
    before = rmia_test(**{**common, "target_conf": original_conf, "population_target_conf": population_original_conf})
    powered_mask = np.nan_to_num(before.adjusted, nan=1.0) <= alpha
    detected_mask = np.nan_to_num(after.adjusted, nan=1.0) <= alpha
    detected = tuple(i for i, d, w in zip(ids, detected_mask, powered_mask, strict=True) if d and w)
    unpowered = tuple(i for i, d, w in zip(ids, detected_mask, powered_mask, strict=True) if d and not w)
    powered = tuple(i for i, w in zip(ids, powered_mask, strict=True) if w)
    ref = np.asarray(reference_conf)
    m = np.asarray(population_unlearned_conf).size
    rule = (f"RMIA (offline, a = {fmt(a)}, gamma = {fmt(gamma)}) against {m} held-out records and {ref.shape[0]} "
            "reference models: p = (1 + #{held-out likelihood ratios >= the record's}) / (1 + "
            f"{m}), each held-out ratio's Pr(z) from the record's own OUT reference models (valid if a forgotten and "
            f"a held-out record are alike to the models); below 1/{m + 1} = {fmt(1.0 / (m + 1))}, "
            + (f"an exponential tail fitted to the largest {_tail_points(m)} held-out log ratios (an assumption; "
               f"{after.n_extrapolated} record(s) there on the unlearned model, {before.n_extrapolated} on the "
               "original)" if m > _tail_points(m) else "nothing (too few held-out records to fit a tail)")
            + f". Holm over the records at {fmt(alpha)}. Power per record: the same test on the original "
            "model. FAIL if a record detected on the original is still detected; INCONCLUSIVE if no record is "
            "detected on the original; PASS otherwise.")
    if detected:
        verdict = Verdict.FAIL
        reason = (f"{len(detected)} of {len(powered)} record(s) the test detects on the original model are still "
                  f"detected after unlearning.")
    elif not powered:
        verdict = Verdict.INCONCLUSIVE
        reason = (f"The test detects none of the {len(ids)} record(s) on the original model, which trained on them: "
                  "it has no power for these records and could not have failed.")
    else:
        verdict = Verdict.PASS
        reason = (f"None of the {len(powered)} record(s) the test detects on the original model is detected after "
                  f"unlearning ({len(ids) - len(powered)} record(s) without power, untested).")
    if unpowered:
        reason += (f" {len(unpowered)} record(s) flagged on the unlearned model but not detectable on the original "
                   "are not counted.")
    return RMIAResult(check="membership_rmia", verdict=verdict, rule=rule, reason=reason, record_ids=ids, alpha=alpha,
                      gamma=gamma, a=a, population=int(np.asarray(population_unlearned_conf).size),
                      reference_models=int(ref.shape[0]), unlearned=after, original=before, detected=detected,
                      powered=powered, unpowered_flags=unpowered)
