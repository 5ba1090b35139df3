"""Synthetic shadow-model scores for the membership tests.

Record i has a baseline difficulty mu_i; an OUT model scores it mu_i + N(0, 1), an IN model
mu_i + gap + N(0, 1). Each shadow model trains on a random half of the records, so every record
has IN and OUT models, as the platform's shadow runs do. Held-out records (no model trained on
them) calibrate the test; the tested model may deviate from a baseline more than a shadow does.
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


def held_out_population(
    rng: np.random.Generator, n_shadow: int, n_held_out: int, *, target_spread: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Held-out records no model trained on: (the tested model's scores (m,), the shadow models'
    (n_shadow, m)). The tested model deviates from a record's baseline with ``target_spread``,
    a shadow model with 1 (a model trained on more data than its shadows spreads differently)."""
    baselines = rng.normal(0.0, 2.0, n_held_out)
    shadow = baselines + rng.normal(0.0, 1.0, (n_shadow, n_held_out))
    return baselines + rng.normal(0.0, target_spread, n_held_out), shadow


def record_ids(n: int) -> list[str]:
    return [f"rec-{i:04d}" for i in range(n)]
