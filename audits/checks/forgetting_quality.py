"""Platform forgetting quality (check ``platform_forgetting_quality``): a variant of the NeurIPS
2023 unlearning challenge's per-example epsilon estimator, NOT the challenge's score.

The challenge's score itself, exactly as its ``metric.py`` computes it, is
:mod:`audits.checks.challenge_metric`; this variant differs from it in the ways listed below and
must never be reported under the challenge's name. Measured on the same inputs, its F is higher
(more lenient) than the challenge's by 0.06-0.12 at 16-64 models and by up to 0.70 at 512 models
with a few examples (issue 23's review).

Source of the estimator: Triantafillou et al., "Are we making progress in unlearning? Findings
from the first NeurIPS unlearning competition", arXiv:2406.09073, Sec. 3.

For each forget example, N unlearned models (unlearning run N times with different seeds) and N
retrained models give two samples of a scalar output signal. Every threshold attack on those
samples gives an (FPR, FNR) pair; an (epsilon, delta)-unlearning algorithm forces
``FPR + e^eps FNR >= 1 - delta`` and ``FNR + e^eps FPR >= 1 - delta`` for every attack, so
``eps_hat = max over attacks of max(log((1 - delta - FPR) / FNR), log((1 - delta - FNR) / FPR))``.
As in the challenge: an attack with FPR = FNR = 0 gives infinity, an attack with exactly one of
them zero is discarded, and the estimate starts at 0. Per-example epsilons are binned with width
0.5 over 13 bins (``np.digitize`` on ``0, 0.5, ..., 6``, so bin indices run 1..13) and the score
is the mean over examples of ``2 / 2**bin`` (1.0 = indistinguishable, ~0 = fully separable).

Differences from the challenge's ``metric.py``:
* single-threshold attacks only, at the observed values: the challenge adds a double-threshold
  family ("between l and r") that catches a collapsed or peaky unlearned distribution inside a
  wide retrained one, and gives the cap (50) outright to a distribution whose range is below 1%
  of the other's;
* delta = 0.01 here, 1e-5 in the challenge (a larger delta gives smaller epsilons);
* 13 fixed bins (0 to 6.5) here; the challenge's buckets stop at ceil(log(N - 1)) and an epsilon
  beyond them scores 0;
* thresholds run in both directions ("unlearned if above" and "unlearned if below"): the
  challenge's threshold attack only used "above" and relied on a logistic-regression attack for
  the other side; without the reverse test an unlearned model whose loss stays *below* the
  retrained models' (not forgotten) would go unnoticed;
* the two sample sizes may differ;
* the score comes with its noise floor: with finitely many models even identical distributions
  give epsilons above 0. The threshold attacks depend only on ranks, so the score's distribution
  under "identical distributions" is the same for any continuous signal and is simulated
  exactly; the check FAILs when the observed score is below that null's ``alpha`` quantile.

Inputs from models: the signal (e.g. loss, or the LiRA statistic) of each forget example on each
of the N unlearned models and each of the N retrained models.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from audits.checks.registry import CheckSpec, register_check
from audits.checks.result import CheckResult, Verdict, fmt, record_id_tuple

PLATFORM_DELTA = 0.01  # the challenge scored with 1e-5 (audits.checks.challenge_metric)
BIN_WIDTH = 0.5
N_BINS = 13
# Below 16 models per side the smallest non-zero error rate exceeds 6% and a finite epsilon
# cannot exceed about log(16) = 2.8, so half of the bins are unreachable and the score is mostly
# noise. (The challenge used 512 models per side.)
MIN_MODELS_PER_SIDE = 16
DEFAULT_ALPHA = 0.05
DEFAULT_NULL_EXAMPLES = 4000
DEFAULT_NULL_REPLICATES = 4000
_CHUNK_ELEMENTS = 1_000_000


def _threshold_error_rates(
    unlearned: NDArray[np.float64], retrained: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_]]:
    """FPR and FNR of "unlearned if signal > t" at every observed value t, per example.

    In: ``(n_u, S)`` and ``(n_r, S)``. Out: FPR, FNR ``(n_u + n_r, S)`` and a mask of the
    thresholds to keep (the last occurrence of tied values, so every kept threshold is a
    distinct cut, as the challenge's loop over sorted values gives).
    """
    n_u, n_r = unlearned.shape[0], retrained.shape[0]
    values = np.concatenate([retrained, unlearned], axis=0)
    is_unlearned = np.concatenate(
        [np.zeros(retrained.shape, dtype=bool), np.ones(unlearned.shape, dtype=bool)], axis=0
    )
    order = np.argsort(values, axis=0, kind="stable")
    sorted_values = np.take_along_axis(values, order, axis=0)
    sorted_labels = np.take_along_axis(is_unlearned, order, axis=0)
    unlearned_at_or_below = np.cumsum(sorted_labels, axis=0)
    retrained_at_or_below = np.cumsum(~sorted_labels, axis=0)
    fnr = unlearned_at_or_below / n_u
    fpr = (n_r - retrained_at_or_below) / n_r
    keep = np.ones(sorted_values.shape, dtype=bool)
    keep[:-1] = sorted_values[1:] != sorted_values[:-1]
    return fpr, fnr, keep


def epsilon_from_error_rates(
    fpr: ArrayLike, fnr: ArrayLike, delta: float, keep: ArrayLike | None = None
) -> NDArray[np.float64]:
    """Per-example epsilon from the attacks' (FPR, FNR) pairs (attacks along axis 0).

    Implements the challenge's ``compute_epsilon_s`` rules: both rates zero -> infinity; exactly
    one zero -> the attack is discarded; both log-ratios undefined -> infinity; the estimate is
    the maximum over attacks and at least 0. ``keep`` masks attacks out. Out: ``(S,)``.
    """
    fpr = np.asarray(fpr, dtype=np.float64)
    fnr = np.asarray(fnr, dtype=np.float64)
    usable = np.ones(fpr.shape, dtype=bool) if keep is None else np.asarray(keep, dtype=bool)
    both_zero = (fpr == 0) & (fnr == 0)
    one_zero = (fpr == 0) ^ (fnr == 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        eps1 = np.log(1.0 - delta - fpr) - np.log(fnr)
        eps2 = np.log(1.0 - delta - fnr) - np.log(fpr)
    both_nan = np.isnan(eps1) & np.isnan(eps2)
    per_attack = np.fmax(eps1, eps2)  # fmax ignores a NaN when the other is a number
    per_attack = np.where(both_zero | both_nan, np.inf, per_attack)
    per_attack = np.where(one_zero | ~usable, -np.inf, per_attack)
    return np.maximum(per_attack.max(axis=0, initial=-np.inf), 0.0)


def per_example_epsilons(
    unlearned_signals: ArrayLike, retrained_signals: ArrayLike, *, delta: float = PLATFORM_DELTA
) -> NDArray[np.float64]:
    """Epsilon of every forget example from threshold attacks in both directions.

    In: ``(n_unlearned_models, S)`` and ``(n_retrained_models, S)`` signals. Out: ``(S,)``.
    """
    u = np.asarray(unlearned_signals, dtype=np.float64)
    r = np.asarray(retrained_signals, dtype=np.float64)
    if u.ndim != 2 or r.ndim != 2 or u.shape[1] != r.shape[1]:
        raise ValueError(
            f"signals must be (models, examples) with equal examples: {u.shape} {r.shape}"
        )
    if not (np.all(np.isfinite(u)) and np.all(np.isfinite(r))):
        raise ValueError("signals contain NaN or infinite values")
    if not 0.0 <= delta < 1.0:
        raise ValueError("delta must lie in [0, 1)")
    out = np.empty(u.shape[1])
    # Chunks over examples bound the memory of the (models x examples) intermediate arrays.
    step = max(1, _CHUNK_ELEMENTS // (u.shape[0] + r.shape[0]))
    for start in range(0, u.shape[1], step):
        cols = slice(start, start + step)
        fpr, fnr, keep = _threshold_error_rates(u[:, cols], r[:, cols])
        above = epsilon_from_error_rates(fpr, fnr, delta, keep)
        # The reverse test "unlearned if signal <= t" errs exactly where the forward one is right.
        below = epsilon_from_error_rates(1.0 - fpr, 1.0 - fnr, delta, keep)
        out[cols] = np.maximum(above, below)
    return out


def bin_indices(epsilons: ArrayLike) -> NDArray[np.int64]:
    """The challenge's bin index: ``np.digitize`` on ``0, 0.5, ..., 6`` (1..13 for eps >= 0)."""
    return np.digitize(np.asarray(epsilons, dtype=np.float64), np.arange(N_BINS) * BIN_WIDTH)


def example_scores(epsilons: ArrayLike) -> NDArray[np.float64]:
    """Per-example contribution ``2 / 2**bin`` (1.0 for eps < 0.5, halving every 0.5)."""
    return 2.0 / 2.0 ** bin_indices(epsilons)


def forgetting_quality_score(epsilons: ArrayLike) -> float:
    """The challenge's forgetting-quality score F: mean of :func:`example_scores`."""
    return float(np.mean(example_scores(epsilons)))


@dataclass(frozen=True)
class NullDistribution:
    """Forgetting-quality score when unlearned and retrained outputs are identically distributed."""

    n_unlearned: int
    n_retrained: int
    n_examples: int
    mean: float
    quantiles: dict[str, float]


def null_distribution(
    n_unlearned: int,
    n_retrained: int,
    n_examples: int,
    *,
    delta: float = PLATFORM_DELTA,
    n_simulated_examples: int = DEFAULT_NULL_EXAMPLES,
    n_replicates: int = DEFAULT_NULL_REPLICATES,
    seed: int = 0,
) -> tuple[NullDistribution, NDArray[np.float64]]:
    """Simulate the score under identical distributions (the noise floor) for these sizes.

    Threshold attacks use only ranks, so uniform draws stand for any continuous signal. Per-example
    scores take at most 13 values; the mean over ``n_examples`` is drawn from the multinomial of
    their simulated frequencies. Out: a summary and the ``n_replicates`` simulated scores.
    """
    rng = np.random.default_rng(seed)
    eps = per_example_epsilons(
        rng.random((n_unlearned, n_simulated_examples)),
        rng.random((n_retrained, n_simulated_examples)),
        delta=delta,
    )
    values = 2.0 / 2.0 ** np.arange(1, N_BINS + 1)
    frequencies = np.bincount(bin_indices(eps), minlength=N_BINS + 1)[1:] / eps.size
    counts = rng.multinomial(n_examples, frequencies, size=n_replicates)
    scores = counts @ values / n_examples
    summary = NullDistribution(
        n_unlearned=n_unlearned,
        n_retrained=n_retrained,
        n_examples=n_examples,
        mean=float(scores.mean()),
        quantiles={f"{q:g}": float(np.quantile(scores, q)) for q in (0.01, 0.05, 0.5, 0.95)},
    )
    return summary, scores


@dataclass(frozen=True, kw_only=True, eq=False)
class ForgettingQualityResult(CheckResult):
    """Challenge forgetting quality with per-example epsilons and the noise floor."""

    signal: str
    delta: float
    alpha: float
    n_unlearned_models: int
    n_retrained_models: int
    record_ids: tuple[str, ...]
    epsilons: NDArray[np.float64] | None
    score: float | None
    null: NullDistribution | None
    null_p_value: float | None
    side: str | None


# Needs several unlearned and retrained models: run by the benchmark, not by the audit runner.
@register_check(CheckSpec(name="platform_forgetting_quality", role="diagnostic", on_weights=True))
def forgetting_quality(
    *,
    record_ids: Sequence[str],
    unlearned_signals: ArrayLike,
    retrained_signals: ArrayLike,
    higher_is_member: bool,
    signal: str = "loss",
    delta: float = PLATFORM_DELTA,
    alpha: float = DEFAULT_ALPHA,
    seed: int = 0,
) -> ForgettingQualityResult:
    """Challenge forgetting-quality score of N unlearned against N retrained models.

    In: forget-record ids; signals ``(n_unlearned_models, S)`` and ``(n_retrained_models, S)``;
    whether a higher signal means member (False for loss); delta (the challenge's 0.01), alpha
    for the noise-floor test, the simulation seed. Out: :class:`ForgettingQualityResult`:
    NOT_APPLICABLE below ``MIN_MODELS_PER_SIDE`` models per side; FAIL when the score is below
    the ``alpha`` quantile of the identical-distribution null (``side`` says whether the unlearned
    models lean to the member side); PASS otherwise (indistinguishable at this many models).
    """
    u = np.asarray(unlearned_signals, dtype=np.float64)
    r = np.asarray(retrained_signals, dtype=np.float64)
    if u.ndim != 2 or r.ndim != 2 or u.shape[1] != r.shape[1]:
        raise ValueError(
            f"signals must be (models, examples) with equal examples: {u.shape} {r.shape}"
        )
    ids = record_id_tuple(record_ids, u.shape[1])
    n_u, n_r = u.shape[0], r.shape[0]
    rule = (
        f"Platform forgetting quality (a variant of the NeurIPS 2023 challenge score, not that score) on "
        f"{signal}: per-example epsilon "
        f"from threshold attacks (both directions) with delta = {fmt(delta)}, bins of width "
        f"{BIN_WIDTH}, score = mean of 2 / 2^bin. FAIL if the score is below the {fmt(alpha)} "
        "quantile of its simulated distribution for identically distributed outputs at the same "
        f"sizes (the noise floor); NOT_APPLICABLE below {MIN_MODELS_PER_SIDE} models per side; "
        "PASS otherwise."
    )
    common = {
        "check": "platform_forgetting_quality",
        "rule": rule,
        "signal": signal,
        "delta": delta,
        "alpha": alpha,
        "n_unlearned_models": n_u,
        "n_retrained_models": n_r,
        "record_ids": ids,
    }
    if min(n_u, n_r) < MIN_MODELS_PER_SIDE:
        return ForgettingQualityResult(
            verdict=Verdict.NOT_APPLICABLE,
            reason=(
                f"Needs at least {MIN_MODELS_PER_SIDE} unlearned and {MIN_MODELS_PER_SIDE} "
                f"retrained models; got {n_u} and {n_r}."
            ),
            epsilons=None,
            score=None,
            null=None,
            null_p_value=None,
            side=None,
            **common,
        )
    if len(ids) == 0:
        raise ValueError("forgetting quality needs at least one forget example")

    eps = per_example_epsilons(u, r, delta=delta)
    score = forgetting_quality_score(eps)
    null, null_scores = null_distribution(n_u, n_r, len(ids), delta=delta, seed=seed)
    # P(null score <= observed): small when the unlearned models are more distinguishable
    # from the retrained ones than identical distributions would ever make them.
    p_value = float((np.sum(null_scores <= score) + 1) / (null_scores.size + 1))
    gap = np.median(u, axis=0) - np.median(r, axis=0)
    leaning = float(np.mean(gap if higher_is_member else -gap))
    side = "member" if leaning > 0 else "non_member"
    summary = (
        f"score {fmt(score)} (noise floor: median {fmt(null.quantiles['0.5'])}, "
        f"{fmt(alpha)} quantile {fmt(float(np.quantile(null_scores, alpha)))}), "
        f"p = {fmt(p_value)}"
    )
    if p_value <= alpha:
        where = "member" if side == "member" else "over-forgetting (non-member)"
        verdict = Verdict.FAIL
        reason = (
            f"{summary}: unlearned models are distinguishable from retrained ones, {where} side."
        )
    else:
        verdict = Verdict.PASS
        reason = f"{summary}: not distinguishable from retrained models at {n_u}+{n_r} models."
    return ForgettingQualityResult(
        verdict=verdict,
        reason=reason,
        epsilons=eps,
        score=score,
        null=null,
        null_p_value=p_value,
        side=side if verdict == Verdict.FAIL else None,
        **common,
    )
