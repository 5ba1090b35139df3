import numpy as np
import pytest

from audits.checks.klom import klom, klom_per_example, margins


def test_margin_is_correct_logit_minus_logsumexp_of_the_others():
    logits = np.array([[2.0, 0.0, 1.0], [0.0, 3.0, -1.0]])
    expected = [2.0 - np.log(np.exp(0.0) + np.exp(1.0)), -1.0 - np.log(np.exp(0.0) + np.exp(3.0))]
    np.testing.assert_allclose(margins(logits, np.array([0, 2])), expected)


def test_klom_is_small_for_one_distribution_and_large_for_separated_ones():
    rng = np.random.default_rng(0)
    same = klom_per_example(rng.normal(0, 1, (200, 5)), rng.normal(0, 1, (200, 5)))
    apart = klom_per_example(rng.normal(4, 1, (200, 5)), rng.normal(0, 1, (200, 5)))
    assert same.max() < 0.3
    assert apart.min() > 3.0
    result = klom(rng.normal(0, 1, (50, 4)), rng.normal(0, 1, (40, 4)))
    assert (result.unlearned_runs, result.retrained_runs) == (50, 40)
    assert "95th percentile" in result.summary()


def test_constant_margins_are_identical_distributions():
    assert klom_per_example(np.ones((3, 2)), np.ones((4, 2))).tolist() == [0.0, 0.0]


@pytest.mark.parametrize("u, r", [(np.zeros((1, 2)), np.zeros((3, 2))), (np.zeros((3, 2)), np.zeros((3, 3)))])
def test_bad_inputs_are_refused(u, r):
    with pytest.raises(ValueError):
        klom_per_example(u, r)
