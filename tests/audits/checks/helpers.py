"""Synthetic shadow-model scores for the membership tests.

Record i has a baseline difficulty mu_i; an OUT model scores it mu_i + N(0, 1), an IN model
mu_i + gap + N(0, 1). Each shadow model trains on a random half of the records, so every record
has IN and OUT models, as the platform's shadow runs do.
"""

from __future__ import annotations

import numpy as np


def shadow_population(
    rng: np.random.Generator, n_shadow: int, n_records: int, gap: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (baselines (n_records,), shadow scores (n_shadow, n_records), IN mask)."""
    baselines = rng.normal(0.0, 2.0, n_records)
    is_in = np.zeros((n_shadow, n_records), dtype=bool)
    for j in range(n_records):
        is_in[rng.permutation(n_shadow)[: n_shadow // 2], j] = True
    scores = baselines + rng.normal(0.0, 1.0, (n_shadow, n_records)) + gap * is_in
    return baselines, scores, is_in


def record_ids(n: int) -> list[str]:
    return [f"rec-{i:04d}" for i in range(n)]
