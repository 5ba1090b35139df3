import math

import numpy as np
import pytest

from audits.checks.signals import accuracy, logit_scaled_confidence, per_example_loss


def test_lira_statistic_matches_hand_computation():
    # p = e^2 / (e^2 + 1), so log(p / (1 - p)) = 2 exactly.
    assert logit_scaled_confidence([[2.0, 0.0]], [0])[0] == pytest.approx(2.0)
    # Three classes: log(p / (1 - p)) = z_y - log(sum of the other exps).
    expected = 3.0 - math.log(math.exp(1.0) + math.exp(2.0))
    assert logit_scaled_confidence([[1.0, 2.0, 3.0]], [2])[0] == pytest.approx(expected)


def test_lira_statistic_stays_finite_where_float32_softmax_saturates():
    logits = np.array([[60.0, 0.0, 0.0]], dtype=np.float32)
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert p[0, 0] == 1.0  # the naive route gives log(1 / 0) = inf
    score = logit_scaled_confidence(logits, [0])[0]
    assert score == pytest.approx(60.0 - math.log(2.0))


def test_loss_matches_hand_computation_and_broadcasts_over_models():
    assert per_example_loss([[0.0, 0.0]], [1])[0] == pytest.approx(math.log(2.0))
    stacked = np.zeros((3, 4, 5))  # (models, records, classes)
    labels = np.zeros((3, 4), dtype=int)
    assert per_example_loss(stacked, labels).shape == (3, 4)
    assert np.allclose(per_example_loss(stacked, labels), math.log(5.0))


def test_accuracy():
    assert accuracy([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], [0, 1, 1]) == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    ("logits", "labels"),
    [
        ([[1.0, 0.0]], [2]),  # label out of range
        ([[1.0, 0.0]], [0.5]),  # not an integer
        ([[1.0, np.nan]], [0]),
        ([[1.0]], [0]),  # one class
        ([[1.0, 0.0]], [0, 1]),  # shape mismatch
    ],
)
def test_bad_inputs_raise(logits, labels):
    with pytest.raises(ValueError):
        logit_scaled_confidence(logits, labels)
