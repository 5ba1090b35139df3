"""Per-example signals computed from a classifier's logits: the inputs of every attack.

Both functions take ``logits`` of shape ``(..., n_classes)`` and integer ``labels`` of shape
``(...)`` (so one model's ``(n_records, C)`` or a stack of shadow models' ``(n_models, n_records,
C)`` both work) and return one float per example, computed in float64 without forming
probabilities, because members' probabilities round to exactly 1.0 in float32 and the LiRA
statistic would become infinite.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import logsumexp


def _validated(
    logits: ArrayLike, labels: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.intp]]:
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels)
    if z.ndim < 1 or z.shape[-1] < 2:
        raise ValueError(f"logits need a last axis of at least 2 classes, got shape {z.shape}")
    if y.shape != z.shape[:-1]:
        raise ValueError(f"labels shape {y.shape} does not match logits shape {z.shape[:-1]}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be integers, got {y.dtype}")
    if y.size and (y.min() < 0 or y.max() >= z.shape[-1]):
        raise ValueError(f"labels must lie in [0, {z.shape[-1]})")
    if not np.all(np.isfinite(z)):
        raise ValueError("logits contain NaN or infinite values")
    return z, y.astype(np.intp)


def logit_scaled_confidence(logits: ArrayLike, labels: ArrayLike) -> NDArray[np.float64]:
    """LiRA's statistic ``log(p / (1 - p))`` of the true class's softmax probability ``p``.

    In: logits ``(..., C)``, labels ``(...)``. Out: float64 array ``(...)``; higher means more
    member-like. Computed as ``z_y - logsumexp(z_j, j != y)``, which is exactly
    ``log p - log(1 - p)`` and stays finite however confident the model is.
    """
    z, y = _validated(logits, labels)
    true_logit = np.take_along_axis(z, y[..., None], axis=-1)[..., 0]
    others = z.copy()
    np.put_along_axis(others, y[..., None], -np.inf, axis=-1)
    return true_logit - logsumexp(others, axis=-1)


def per_example_loss(logits: ArrayLike, labels: ArrayLike) -> NDArray[np.float64]:
    """Cross-entropy ``-log p_y`` per example. In: logits ``(..., C)``, labels ``(...)``.

    Out: float64 array ``(...)``; lower means more member-like (negate it for attacks that
    treat higher as member).
    """
    z, y = _validated(logits, labels)
    true_logit = np.take_along_axis(z, y[..., None], axis=-1)[..., 0]
    return logsumexp(z, axis=-1) - true_logit


def accuracy(logits: ArrayLike, labels: ArrayLike) -> float:
    """Fraction of examples whose arg-max class equals the label. In: ``(n, C)``, ``(n,)``."""
    z, y = _validated(logits, labels)
    if y.size == 0:
        raise ValueError("accuracy of an empty set is undefined")
    return float(np.mean(np.argmax(z, axis=-1) == y))


# Fewer held-out records than this give no usable median and interquartile range: scores stay raw.
MIN_HELD_OUT_FOR_STANDARDISING = 10


def standardise_on_held_out(
    scores: ArrayLike, held_out: ArrayLike
) -> tuple[NDArray[np.float64], dict[str, float]]:
    """One model's scores on the scale of its own held-out records: median 0, interquartile range 1.

    Shadow models train on half the data and the audited model on all of it, so the audited model
    is more (and differently) confident on everything, members or not; each model's scores are put
    on the scale of records that no model trained on. In: the model's scores to rescale and its
    scores on held-out records. Out: the rescaled scores and ``{"median", "iqr"}`` used (rounded
    for the record); unchanged scores and median 0, IQR 1 with fewer than
    ``MIN_HELD_OUT_FOR_STANDARDISING`` held-out records. An IQR of 0 counts as 1.
    """
    values = np.asarray(scores, dtype=np.float64)
    reference = np.asarray(held_out, dtype=np.float64)
    if len(reference) < MIN_HELD_OUT_FOR_STANDARDISING:
        return values, {"median": 0.0, "iqr": 1.0}
    median = float(np.median(reference))
    iqr = float(np.subtract(*np.percentile(reference, [75, 25]))) or 1.0
    return (values - median) / iqr, {"median": round(median, 4), "iqr": round(iqr, 4)}


# Squared errors below this (in the target's unit squared) count as this: a perfect fit gives a finite score.
SQUARED_ERROR_FLOOR = 1e-6


def squared_error_signal(predictions: ArrayLike, targets: ArrayLike) -> NDArray[np.float64]:
    """A regression model's membership signal per example: ``-log(max(e^2, floor))`` of its squared
    error ``e^2`` (the per-example loss of an MSE-trained model, log-scaled: a member the model
    memorised has a small error and a high score, like a classifier's confident true class).

    The logarithm makes the per-record spread over shadow models closer to the Gaussian LiRA fits
    than the squared error's own (a chi-square-like skew). In: predictions and real targets of one
    shape ``(...)``. Out: float64 ``(...)``; higher = more member-like.
    """
    p = np.asarray(predictions, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    if p.shape != y.shape:
        raise ValueError(f"predictions shape {p.shape} does not match targets shape {y.shape}")
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(y))):
        raise ValueError("predictions or targets contain NaN or infinite values")
    return -np.log(np.maximum((p - y) ** 2, SQUARED_ERROR_FLOOR))
