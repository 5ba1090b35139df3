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

A member x dominates most z; a non-member is like one more z. The p-value of x is its score's
rank among the scores the held-out records get with x added to them (full conformal,
:func:`conformal_p_values`), valid whenever a forgotten record and a held-out record are alike to
the models. It cannot go below ``1 / (1 + m)`` with m held-out records, so Holm's correction over
k records (which holds the chance of flagging any truly forgotten record at ``alpha``) can detect
nothing unless ``m >= k / alpha - 1``: the power check then says so. ``gamma`` 1 (the default)
makes the score the rank of x's likelihood ratio among the population's; the paper's larger
gamma sharpens a threshold-free score, which the calibrated p-value does not need.

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
from audits.checks.registry import CheckSpec, register_check
from audits.checks.result import CheckResult, Verdict, fmt, record_id_tuple
from audits.checks.stats import holm_adjust

DEFAULT_ALPHA = 0.05
DEFAULT_GAMMA = 1.0
DEFAULT_OFFLINE_A = 0.3
MIN_OUT_MODELS = 1
MIN_POPULATION = 20


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


def rmia_scores(target_ratio: NDArray[np.float64], population_ratio: NDArray[np.float64], *,
                gamma: float) -> NDArray[np.float64]:
    """Share of population records each target dominates by ``gamma``: ``ratio_x / ratio_z >= gamma``."""
    z = np.sort(population_ratio)
    # ratio_x / ratio_z >= gamma  <=>  ratio_z <= ratio_x / gamma (ratios are positive)
    return np.searchsorted(z, target_ratio / gamma, side="right") / z.size


def conformal_p_values(target_ratio: NDArray[np.float64], population_ratio: NDArray[np.float64], *,
                       gamma: float) -> NDArray[np.float64]:
    """Full-conformal p-value of each target's RMIA score among the population's.

    For target x, every population record j is scored against the other population records and
    x (``(#{z != j dominated by j} + [j dominates x]) / m``) and x against the population; then
    ``p = (1 + #{j: score_j >= score_x}) / (1 + m)``. If x is exchangeable with the population (a
    non-member), this p-value is valid at every level; it cannot go below ``1 / (1 + m)``."""
    m = population_ratio.size
    z = np.sort(population_ratio)
    base = np.searchsorted(z, population_ratio / gamma, side="right").astype(np.float64)
    base -= population_ratio <= population_ratio / gamma  # j itself, only when gamma <= 1
    x_score = rmia_scores(target_ratio, population_ratio, gamma=gamma)
    p = np.full(target_ratio.shape, np.nan)
    for i, ratio in enumerate(target_ratio):
        if not np.isfinite(ratio):
            continue
        null = (base + (population_ratio >= gamma * ratio)) / m
        p[i] = (1 + np.count_nonzero(null >= x_score[i])) / (1 + m)
    return p


@dataclass(frozen=True)
class RMIATest:
    """Per-record scores and p-values of one model against the held-out population."""

    scores: NDArray[np.float64]
    p_values: NDArray[np.float64]
    adjusted: NDArray[np.float64]


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
    ratio_z = _probabilities(pop_target) / marginal_probability(pop_ref, np.ones_like(pop_ref, dtype=bool), a=a)
    scores = rmia_scores(ratio_x, ratio_z, gamma=gamma)
    p = conformal_p_values(ratio_x, ratio_z, gamma=gamma)
    adjusted = np.full_like(p, np.nan)
    testable = np.isfinite(p)
    if testable.any():
        adjusted[testable] = holm_adjust(p[testable])
    return RMIATest(scores=scores, p_values=p, adjusted=adjusted)


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
    rule = (f"RMIA (offline, a = {fmt(a)}, gamma = {fmt(gamma)}) against {np.asarray(population_unlearned_conf).size} "
            f"held-out records and {ref.shape[0]} reference models, conformal p-values, Holm at {fmt(alpha)}. Power "
            "per record: the same test on the original model. FAIL if a record detected on the original is still "
            "detected; INCONCLUSIVE if no record is detected on the original; PASS otherwise.")
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
