import math

import numpy as np
import pytest

from audits.checks.stats import attack_auc, clopper_pearson, holm_adjust, tpr_at_fpr


def test_holm_on_a_known_vector():
    # Sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> running max 0.06.
    adjusted = holm_adjust([0.01, 0.04, 0.03, 0.005])
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert list(adjusted <= 0.05) == [True, False, False, True]


def test_holm_with_a_larger_family_and_capping():
    # Two p-values of a family of five: the smallest is multiplied by 5, the next by 4.
    assert holm_adjust([0.01, 0.02], n_tests=5) == pytest.approx([0.05, 0.08])
    assert holm_adjust([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    with pytest.raises(ValueError):
        holm_adjust([0.1, 0.2], n_tests=1)
    with pytest.raises(ValueError):
        holm_adjust([0.1, float("nan")])


def test_clopper_pearson_edges():
    low, high = clopper_pearson(0, 10)
    assert low == 0.0
    assert high == pytest.approx(1 - 0.025 ** (1 / 10))
    low, high = clopper_pearson(10, 10)
    assert (low, high) == (pytest.approx(0.025 ** (1 / 10)), 1.0)


def test_auc_of_separable_reversed_and_identical_scores():
    members = np.arange(10, 20)
    nonmembers = np.arange(0, 10)
    assert attack_auc(members, nonmembers) == 1.0
    assert attack_auc(nonmembers, members) == 0.0
    assert attack_auc(members, members) == 0.5  # every pair ties
    # By hand: member 3 beats 1 and 2 (2 pairs); member 2 beats 1 and ties 2 (1.5): 3.5 of 4.
    assert attack_auc([3, 2], [1, 2]) == pytest.approx(3.5 / 4)


def test_auc_of_identical_distributions_is_near_chance():
    rng = np.random.default_rng(0)
    auc = attack_auc(rng.normal(size=5000), rng.normal(size=5000))
    assert abs(auc - 0.5) < 0.02


def test_tpr_at_fpr_by_hand():
    nonmembers = np.arange(100)  # 0..99
    # 1% FPR allows one false positive: threshold is the 2nd highest non-member (98).
    members = np.array([99.5, 98.5, 97.0, 50.0])
    assert tpr_at_fpr(members, nonmembers, 0.01) == pytest.approx(0.5)
    # 0.1% of 100 rounds down to zero false positives: threshold 99.
    assert tpr_at_fpr(members, nonmembers, 0.001) == pytest.approx(0.25)
    # Ties with the threshold never count as detections.
    assert tpr_at_fpr([98.0], nonmembers, 0.01) == 0.0


def test_tpr_at_fpr_identical_distributions_is_about_the_fpr():
    rng = np.random.default_rng(1)
    tpr = tpr_at_fpr(rng.normal(size=20000), rng.normal(size=20000), 0.01)
    assert math.isclose(tpr, 0.01, abs_tol=0.004)
