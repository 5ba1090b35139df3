"""KLoM: per-example KL divergence of margins between unlearned and retrained models.

Source: Georgiev et al., "Attribute-to-Delete: Machine Unlearning via Datamodel Matching",
arXiv:2410.23232 (2024), Sec. 5 ("KL divergence of margins"). Where the unlearning method was run
several times (benchmarks; the U-LiRA shadow runs of an audit), each example has a distribution of
its margin over the unlearned runs and one over models retrained without the forget set; KLoM is
the KL divergence between the two, per example, after binning both on a common grid. 0 means the
unlearned runs put the example exactly where retraining does; it grows as they differ, in either
direction (KLoM is not a membership test and says nothing about the side).

The margin of an example is the correct class's logit minus the log-sum-exp of the other classes'
logits (:func:`margins`), the quantity the paper bins.

Binning, as here: ``bins`` equal-width bins over the range the two samples span together, each
histogram smoothed by ``smoothing`` (added to every bin's probability before renormalising) so
that a bin empty on one side gives a large but finite divergence. The figure depends on the bin
count and on the number of runs, so it is always printed with both.

With few runs a side, one split of the retrained runs into a floor and a reference is itself a noisy
draw. :func:`averaged_klom` estimates the same quantity (KLoM at the same run counts) with less
variance and no extra training: each example's KLoM averaged over random splits of the retrained
runs into two halves, the second half the reference; the floor sets the first half against it, an
unlearned method its own runs against the same reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

DEFAULT_BINS = 20
DEFAULT_SMOOTHING = 1e-5
PERCENTILES = (50, 95, 99)


def margins(logits: ArrayLike, targets: ArrayLike) -> NDArray[np.float64]:
    """Correct-class logit minus the log-sum-exp of the other logits, per row."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(targets)
    if z.ndim != 2 or y.shape != (z.shape[0],) or z.shape[1] < 2:
        raise ValueError(f"logits must be (n, classes >= 2) and targets (n,): got {z.shape} and {y.shape}")
    rows = np.arange(z.shape[0])
    correct = z[rows, y]
    others = z.copy()
    others[rows, y] = -np.inf
    top = others.max(axis=1)
    return correct - (top + np.log(np.exp(others - top[:, None]).sum(axis=1)))


def klom_per_example(unlearned: ArrayLike, retrained: ArrayLike, *, bins: int = DEFAULT_BINS,
                     smoothing: float = DEFAULT_SMOOTHING) -> NDArray[np.float64]:
    """KL(unlearned || retrained) of each example's binned margins.

    In: margins (unlearned runs, examples) and (retrained runs, examples), at least 2 runs a side;
    the run counts may differ. Out: (examples,) divergences in nats, >= 0."""
    u = np.asarray(unlearned, dtype=np.float64)
    r = np.asarray(retrained, dtype=np.float64)
    if u.ndim != 2 or r.ndim != 2 or u.shape[1] != r.shape[1]:
        raise ValueError(f"margins must be (runs, examples) with the same examples: got {u.shape} and {r.shape}")
    if min(u.shape[0], r.shape[0]) < 2:
        raise ValueError(f"KLoM needs at least 2 runs a side, got {u.shape[0]} and {r.shape[0]}")
    if not (np.isfinite(u).all() and np.isfinite(r).all()):
        raise ValueError("margins must be finite")
    if bins < 2 or not 0 < smoothing < 1:
        raise ValueError("bins must be >= 2 and smoothing in (0, 1)")
    out = np.empty(u.shape[1])
    for i in range(u.shape[1]):
        lo = min(u[:, i].min(), r[:, i].min())
        hi = max(u[:, i].max(), r[:, i].max())
        if hi <= lo:  # every run gives the same margin: identical distributions
            out[i] = 0.0
            continue
        edges = np.linspace(lo, hi, bins + 1)
        p = np.histogram(u[:, i], edges)[0] / u.shape[0] + smoothing
        q = np.histogram(r[:, i], edges)[0] / r.shape[0] + smoothing
        p, q = p / p.sum(), q / q.sum()
        out[i] = float(np.sum(p * np.log(p / q)))
    return out


@dataclass(frozen=True)
class KLoM:
    """Per-example KLoM over a forget (or retain) set, with what it rests on."""

    per_example: NDArray[np.float64]
    unlearned_runs: int
    retrained_runs: int
    bins: int
    splits: int = 1  # reference draws each example's figure is averaged over (:func:`averaged_klom`)

    @property
    def percentiles(self) -> dict[str, float]:
        return {f"p{q}": float(np.percentile(self.per_example, q)) for q in PERCENTILES}

    def summary(self) -> str:
        p = self.percentiles
        averaged = f", averaged over {self.splits} splits of the retrained runs" if self.splits > 1 else ""
        return (f"KLoM over {self.per_example.size} example(s): median {p['p50']:.3f}, 95th percentile "
                f"{p['p95']:.3f}, 99th {p['p99']:.3f} nats ({self.unlearned_runs} unlearned and "
                f"{self.retrained_runs} retrained runs, {self.bins} bins{averaged})")


def klom(unlearned: ArrayLike, retrained: ArrayLike, *, bins: int = DEFAULT_BINS,
         smoothing: float = DEFAULT_SMOOTHING) -> KLoM:
    """:func:`klom_per_example` with its run counts and percentiles."""
    u, r = np.asarray(unlearned), np.asarray(retrained)
    values = klom_per_example(u, r, bins=bins, smoothing=smoothing)
    return KLoM(per_example=values, unlearned_runs=u.shape[0], retrained_runs=r.shape[0], bins=bins)


def random_splits(runs: int, splits: int, *, seed: int = 0) -> NDArray[np.int_]:
    """(splits, runs) random orders of ``range(runs)`` from a seeded generator; in each row the first
    ``runs // 2`` indices are one half of the split, the last ``runs // 2`` the other (the reference).
    ``runs`` even, >= 4."""
    if runs < 4 or runs % 2 or splits < 1:
        raise ValueError(f"random_splits needs an even number of runs >= 4 and splits >= 1, got {runs} and {splits}")
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(runs) for _ in range(splits)])


def klom_over_splits(unlearned: ArrayLike | None, retrained: ArrayLike, splits: ArrayLike, *,
                     bins: int = DEFAULT_BINS, smoothing: float = DEFAULT_SMOOTHING) -> NDArray[np.float64]:
    """(splits, examples) KLoM of each split: ``unlearned`` margins (runs, examples) against the split's
    reference half of ``retrained`` (runs, examples); with ``unlearned`` None, the split's other half
    against its reference half (the retrained-vs-retrained floor). ``splits`` as :func:`random_splits`."""
    r = np.asarray(retrained, dtype=np.float64)
    orders = np.asarray(splits)
    if orders.ndim != 2 or orders.shape[1] != r.shape[0] or orders.shape[1] % 2:
        raise ValueError(f"splits must be (splits, {r.shape[0]}) orders of the retrained runs (an even number), "
                         f"got {orders.shape}")
    half = orders.shape[1] // 2
    return np.stack([klom_per_example(r[order[:half]] if unlearned is None else unlearned, r[order[half:]],
                                      bins=bins, smoothing=smoothing) for order in orders])


def averaged_klom(unlearned: ArrayLike | None, retrained: ArrayLike, splits: ArrayLike, *,
                  bins: int = DEFAULT_BINS, smoothing: float = DEFAULT_SMOOTHING) -> KLoM:
    """Each example's KLoM averaged over ``splits`` of the retrained runs (:func:`klom_over_splits`;
    ``unlearned`` None gives the floor), then summarised as :func:`klom` summarises one split: the
    percentiles are over the examples of their mean per-split figure."""
    per_split = klom_over_splits(unlearned, retrained, splits, bins=bins, smoothing=smoothing)
    half = np.asarray(splits).shape[1] // 2
    return KLoM(per_example=per_split.mean(axis=0),
                unlearned_runs=half if unlearned is None else np.asarray(unlearned).shape[0],
                retrained_runs=half, bins=bins, splits=per_split.shape[0])
