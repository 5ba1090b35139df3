import numpy as np
import pytest

from audits.checks.klom import (
    averaged_klom,
    klom,
    klom_over_splits,
    klom_per_example,
    margins,
    random_splits,
)


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


def test_the_averaged_floor_is_each_examples_mean_over_splits_of_the_retrained_runs():
    rng = np.random.default_rng(1)
    retrained, unlearned = rng.normal(0, 1, (8, 3)), rng.normal(2, 1, (4, 3))
    splits = random_splits(8, 5, seed=3)
    assert splits.shape == (5, 8) and all(sorted(order) == list(range(8)) for order in splits.tolist())
    assert (random_splits(8, 5, seed=3) == splits).all()
    floor = klom_over_splits(None, retrained, splits, bins=4)
    first = splits[0]
    np.testing.assert_allclose(floor[0], klom_per_example(retrained[first[:4]], retrained[first[4:]], bins=4))
    against = klom_over_splits(unlearned, retrained, splits, bins=4)
    np.testing.assert_allclose(against[2], klom_per_example(unlearned, retrained[splits[2][4:]], bins=4))
    averaged = averaged_klom(unlearned, retrained, splits, bins=4)
    np.testing.assert_allclose(averaged.per_example, against.mean(axis=0))
    assert (averaged.unlearned_runs, averaged.retrained_runs, averaged.splits) == (4, 4, 5)
    assert "averaged over 5 splits" in averaged.summary()
    assert averaged_klom(None, retrained, splits, bins=4).unlearned_runs == 4


@pytest.mark.parametrize("runs, splits", [(7, 3), (2, 3), (8, 0)])
def test_splits_need_an_even_number_of_runs(runs, splits):
    with pytest.raises(ValueError, match="even number"):
        random_splits(runs, splits)
    with pytest.raises(ValueError, match="orders of the retrained runs"):
        klom_over_splits(None, np.zeros((8, 2)), np.zeros((3, 6), dtype=int))
