"""The NeurIPS 2023 unlearning challenge's forgetting score, exactly as the challenge scored it.

Source: Triantafillou et al., "Are we making progress in unlearning? Findings from the first
NeurIPS unlearning competition", arXiv:2406.09073, Sec. 3, and the challenge's evaluation code
(google-deepmind/unlearning_evaluation, ``metric.py`` at commit ffae0ff), reimplemented here in
NumPy (not copied) and held to that file's numbers by ``tests/audits/checks/test_challenge_metric.py``
to 1e-6.

For each forget example, N unlearned models (the method run N times) and N retrained models give
two samples of the example's logit-scaled confidence, ``log p_y - log(1 - p_y)``. Whichever side
has the larger median is "positive". Two families of attacks separate the samples:

* single threshold: "positive if confidence >= t", ``t`` on a float32 grid of 100 points per
  unit over the pooled range;
* double threshold: "the peakier side (smaller range) if l <= confidence <= r", ``r`` on a grid
  of 100 points per unit from ``min + width - 2`` to ``max + 2`` of the peakier side, ``l`` on 400
  points from ``r - width - 2`` to ``r - width + 2`` (``width``: the smaller range).

Every attack's error rates (float32, as the challenge computed them) give
``eps = max(log(1 - delta - FPR) - log(FNR), log(1 - delta - FNR) - log(FPR))`` clipped at 0,
with delta = 1e-5; an attack with FPR = FNR = 0 (and TPR = TNR = 1) gives infinity, one with
exactly one of them 0 is discarded. The example's epsilon is the largest, capped at 50; an
example whose smaller range is below 1% of the larger is given the cap outright (a collapsed
unlearned distribution). The score is the mean over examples of the points of the epsilon's
bucket: buckets of width 0.5 from 0 up to ``ceil(log(N - 1))``, worth 1, 1/2, 1/4, ...; an
epsilon beyond the last bucket scores 0.

The platform's own variant (:mod:`audits.checks.forgetting_quality`, check
``platform_forgetting_quality``) differs and says how; this module is the challenge's score and
nothing else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

CHALLENGE_DELTA = 1e-5
EPSILON_CAP = 50.0
THRESHOLDS_PER_UNIT = 100
BUFFER = 2.0
BUCKET_WIDTH = 0.5
PEAKY_RATIO = 0.01


def logit_scaled_confidence(logits: ArrayLike, targets: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """``(p_y, log p_y - log(1 - p_y))`` per row of ``logits`` (n, classes) for labels ``targets``
    (n,), computed stably from the logits (softmax after removing the row maximum, 1e-45 guards)."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(targets)
    if z.ndim != 2 or y.shape != (z.shape[0],):
        raise ValueError(f"logits must be (n, classes) and targets (n,): got {z.shape} and {y.shape}")
    probs = np.exp(z - z.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    rows = np.arange(z.shape[0])
    correct = probs[rows, y].copy()
    probs[rows, y] = 0.0
    wrong = probs.sum(axis=1)  # the other classes summed (not 1 - p_y, which loses precision)
    return correct, np.log(correct + 1e-45) - np.log(wrong + 1e-45)


def _float32_grid(start: float, end: float, steps: int) -> NDArray[np.float32]:
    """``steps`` float32 points from ``start`` to ``end``, the challenge's single-threshold grid
    (it called torch.linspace on float64 ends, which gives float32): step ``(end - start) /
    (steps - 1)`` in float32, the first half counted up from ``start``, the second half down from
    ``end``, as torch's scalar CPU kernel does. Torch's vectorised kernel rounds some points 1 ulp
    differently, depending on the CPU's vector width; that can change a rate only for a confidence
    within 1 ulp (about 1e-7 relative) of a grid point."""
    lo, hi = np.float32(start), np.float32(end)
    if steps == 1:
        return np.array([lo], dtype=np.float32)
    step = np.float32((hi - lo) / np.float32(steps - 1))
    index = np.arange(steps)
    half = steps // 2
    up = lo + step * index[:half].astype(np.float32)
    down = hi - step * (steps - 1 - index[half:]).astype(np.float32)
    return np.concatenate([up, down]).astype(np.float32)


def _counts_in(sorted_values: NDArray[np.float64], left: NDArray, right: NDArray) -> NDArray[np.int64]:
    """How many of ``sorted_values`` lie in ``[left, right]`` (0 where left > right)."""
    inside = (np.searchsorted(sorted_values, right, side="right")
              - np.searchsorted(sorted_values, left, side="left"))
    return np.maximum(inside, 0)


def _rate(count: NDArray, models: int) -> NDArray[np.float32]:
    return count.astype(np.float32) / np.float32(models)


def _single_threshold_rates(pos: NDArray[np.float64], neg: NDArray[np.float64]):
    pooled = np.concatenate([pos, neg])
    lo, hi = pooled.min(), pooled.max()
    grid = _float32_grid(lo, hi, int(math.ceil((hi - lo) * THRESHOLDS_PER_UNIT))).astype(np.float64)
    pos_above = pos.size - np.searchsorted(np.sort(pos), grid, side="left")  # pos >= t
    neg_above = neg.size - np.searchsorted(np.sort(neg), grid, side="left")
    tpr, fpr = _rate(pos_above, pos.size), _rate(neg_above, neg.size)
    fnr, tnr = _rate(pos.size - pos_above, pos.size), _rate(neg.size - neg_above, neg.size)
    return tpr, fnr, fpr, tnr


def _double_threshold_rates(pos: NDArray[np.float64], neg: NDArray[np.float64]):
    pos_range, neg_range = pos.max() - pos.min(), neg.max() - neg.min()
    width = neg_range if pos_range > neg_range else pos_range
    if pos_range >= neg_range:  # "positive" for this family: the peakier side
        pos, neg = neg, pos
    start, stop = pos.min() + width - BUFFER, pos.max() + BUFFER
    right = np.linspace(start, stop, num=int(np.ceil((stop - start) * THRESHOLDS_PER_UNIT)))
    per_right = int(np.ceil(2 * BUFFER * THRESHOLDS_PER_UNIT))
    left = np.concatenate([np.linspace(r - width - BUFFER, r - width + BUFFER, num=per_right) for r in right])
    right = np.repeat(right, per_right)
    pos_in = _counts_in(np.sort(pos), left, right)
    neg_in = _counts_in(np.sort(neg), left, right)
    tpr, fpr = _rate(pos_in, pos.size), _rate(neg_in, neg.size)
    fnr, tnr = _rate(pos.size - pos_in, pos.size), _rate(neg.size - neg_in, neg.size)
    return tpr, fnr, fpr, tnr


def _example_epsilon(pos: NDArray[np.float64], neg: NDArray[np.float64], delta: float) -> float:
    pos_range, neg_range = np.max(pos) - np.min(pos), np.max(neg) - np.min(neg)
    largest, smallest = max(pos_range, neg_range), min(pos_range, neg_range)
    if smallest / largest < PEAKY_RATIO:
        return EPSILON_CAP
    rates = [np.concatenate(parts) for parts in zip(_double_threshold_rates(pos, neg),
                                                    _single_threshold_rates(pos, neg), strict=True)]
    tpr, fnr, fpr, tnr = rates
    separated = (fpr + fnr == 0) & (tpr + tnr == 2)
    one_sided = ~separated & (fpr * fnr == 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        # float32 throughout, as the challenge's rates were.
        forward = np.log((1 - delta) - fpr) - np.log(fnr)
        backward = np.log((1 - delta) - fnr) - np.log(fpr)
        both = np.stack([forward, backward])
        best = np.where(np.isnan(both).all(axis=0), np.nan, np.nanmax(np.where(np.isnan(both), -np.inf, both), axis=0))
    eps = np.where(separated, np.inf, np.where(one_sided, np.nan, np.clip(best, 0, None)))
    kept = eps[~np.isnan(eps)]
    if kept.size == 0:
        raise ValueError("every attack gave an undefined epsilon (the samples are degenerate)")
    return float(min(max(float(kept.max()), 0.0), EPSILON_CAP))


def challenge_epsilons(unlearned: ArrayLike, retrained: ArrayLike, *, delta: float = CHALLENGE_DELTA) -> NDArray[np.float64]:
    """Per-example epsilons, as the challenge computed them.

    In: ``unlearned`` and ``retrained`` confidences, (models, examples) each, the same shape
    (the challenge ran N of each). Out: (examples,) epsilons in [0, 50]."""
    u, r = _checked(unlearned, retrained)
    retrain_positive = np.median(r, axis=0) > np.median(u, axis=0)
    pos = np.where(retrain_positive, r, u)
    neg = np.where(retrain_positive, u, r)
    return np.array([_example_epsilon(pos[:, i], neg[:, i], delta) for i in range(u.shape[1])], dtype=np.float64)


def bucket_points(models: int) -> list[tuple[float, float]]:
    """``(bucket start, points)`` for N models: width 0.5 up to ``ceil(log(N - 1))``, 1, 1/2, ..."""
    top = math.ceil(math.log(models - 1))
    buckets, start, points = [], 0.0, 1.0
    while start + BUCKET_WIDTH <= top:
        buckets.append((start, points))
        start, points = start + BUCKET_WIDTH, points / 2
    return buckets


@dataclass(frozen=True)
class ChallengeScore:
    """The challenge's forgetting score F with its per-example epsilons and the N it rests on."""

    models: int
    epsilons: NDArray[np.float64]
    score: float
    highest_scorable_epsilon: float

    def summary(self) -> str:
        return (f"challenge forgetting score F = {self.score:.4f} over {self.epsilons.size} example(s), "
                f"N = {self.models} unlearned and {self.models} retrained runs (delta = {CHALLENGE_DELTA:g}; "
                f"an epsilon of {self.highest_scorable_epsilon:g} or more scores 0 at this N)")


def challenge_forget_score(unlearned: ArrayLike, retrained: ArrayLike) -> ChallengeScore:
    """The challenge's forgetting score F of N unlearned against N retrained runs.

    In: confidences (models, examples), same shape, N >= 3 (the buckets need log(N - 1) > 0).
    Out: :class:`ChallengeScore`; F in [0, 1], 1 when every example's epsilon is below 0.5."""
    u, r = _checked(unlearned, retrained)
    if u.shape[0] < 3:
        raise ValueError(f"the challenge score needs at least 3 runs per side, got {u.shape[0]}")
    eps = challenge_epsilons(u, r)
    buckets = bucket_points(u.shape[0])
    total = 0.0
    for e in eps:
        total += next((points for start, points in buckets if e < start + BUCKET_WIDTH), 0.0)
    top = buckets[-1][0] + BUCKET_WIDTH if buckets else 0.0
    return ChallengeScore(models=u.shape[0], epsilons=eps, score=total / u.shape[1], highest_scorable_epsilon=top)


def _checked(unlearned: ArrayLike, retrained: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    u = np.asarray(unlearned, dtype=np.float64)
    r = np.asarray(retrained, dtype=np.float64)
    if u.ndim != 2 or u.shape != r.shape or u.shape[1] == 0:
        raise ValueError(f"unlearned and retrained confidences must be (models, examples) of the same shape: "
                         f"got {u.shape} and {r.shape}")
    if not (np.isfinite(u).all() and np.isfinite(r).all()):
        raise ValueError("confidences must be finite")
    return u, r
