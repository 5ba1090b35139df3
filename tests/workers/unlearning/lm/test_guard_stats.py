"""The guard's pure statistics against hand-checked numbers."""

from __future__ import annotations

import math

import pytest

from workers.unlearning.guard.stats import (
    binomial_p_value,
    clopper_pearson_upper,
    minimum_calibration_size,
)


def test_minimum_calibration_size_is_299_for_one_percent_at_five_percent():
    # ln(0.05) / ln(0.99) = 298.07 -> 299.
    assert minimum_calibration_size(0.01, 0.05) == 299
    assert minimum_calibration_size(0.05, 0.05) == 59  # 58.40 -> 59
    assert minimum_calibration_size(0.10, 0.10) == 22  # 21.85 -> 22


def test_minimum_size_is_exactly_where_zero_leaks_start_to_certify():
    for alpha, delta in [(0.01, 0.05), (0.05, 0.05), (0.02, 0.01), (0.1, 0.1)]:
        n = minimum_calibration_size(alpha, delta)
        assert clopper_pearson_upper(0, n, delta) <= alpha < clopper_pearson_upper(0, n - 1, delta)


def test_clopper_pearson_upper_hand_checked():
    # Zero leaks: 1 - delta ** (1/n).
    assert clopper_pearson_upper(0, 10, 0.05) == pytest.approx(1 - 0.05**0.1)  # 0.2589
    assert clopper_pearson_upper(0, 299, 0.05) == pytest.approx(0.009969, abs=1e-6)
    # One leak in ten, 95% one-sided: the tabulated 0.3942.
    assert clopper_pearson_upper(1, 10, 0.05) == pytest.approx(0.39416, abs=1e-5)
    assert clopper_pearson_upper(10, 10, 0.05) == 1.0


def test_binomial_p_value_hand_checked():
    # P(Bin(100, 0.05) <= 1) = 0.95^100 + 100 * 0.05 * 0.95^99.
    expected = 0.95**100 + 100 * 0.05 * 0.95**99
    assert binomial_p_value(1, 100, 0.05) == pytest.approx(expected)
    assert expected == pytest.approx(0.037081, abs=1e-6)
    assert binomial_p_value(0, 299, 0.01) == pytest.approx(0.99**299)
    assert binomial_p_value(100, 100, 0.05) == 1.0


@pytest.mark.parametrize("leaks,n", [(0, 50), (2, 300), (5, 400), (12, 400), (30, 1000)])
@pytest.mark.parametrize("alpha,delta", [(0.01, 0.05), (0.05, 0.05), (0.05, 0.1)])
def test_bound_and_test_agree(leaks, n, alpha, delta):
    """The bound is below alpha exactly when the test rejects H0: rate >= alpha."""
    certified_by_test = binomial_p_value(leaks, n, alpha) <= delta
    certified_by_bound = clopper_pearson_upper(leaks, n, delta) <= alpha
    assert certified_by_test == certified_by_bound


@pytest.mark.parametrize(
    "call",
    [
        lambda: binomial_p_value(5, 4, 0.1),
        lambda: binomial_p_value(-1, 4, 0.1),
        lambda: clopper_pearson_upper(0, 0, 0.05),
        lambda: clopper_pearson_upper(0, 10, 1.0),
        lambda: minimum_calibration_size(0.0, 0.05),
        lambda: minimum_calibration_size(0.01, math.nan),
    ],
)
def test_out_of_range_arguments_raise(call):
    with pytest.raises(ValueError):
        call()
