"""A regression model's audit inputs: the per-example squared-error membership signal and the
utility check on errors (lower is better), with hand-made numbers."""

from __future__ import annotations

import numpy as np
import pytest

from audits.checks.signals import SQUARED_ERROR_FLOOR, squared_error_signal
from audits.checks.utility import utility, utility_ratio


def test_a_smaller_error_scores_as_more_member_like():
    scores = squared_error_signal([10.0, 12.0, 30.0, 10.0], [10.5, 10.0, 10.0, 10.0])
    assert scores[0] > scores[1] > scores[2]
    assert scores[0] == pytest.approx(-np.log(0.25)) and scores[2] == pytest.approx(-np.log(400.0))
    assert scores[3] == pytest.approx(-np.log(SQUARED_ERROR_FLOOR))  # a perfect fit stays finite


def test_the_signal_works_on_stacks_of_shadow_models_and_refuses_bad_input():
    stacked = squared_error_signal(np.zeros((3, 5)), np.ones((3, 5)))
    assert stacked.shape == (3, 5) and np.allclose(stacked, 0.0)
    with pytest.raises(ValueError, match="does not match"):
        squared_error_signal([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="NaN or infinite"):
        squared_error_signal([np.nan], [1.0])


def test_error_utility_is_original_over_unlearned():
    assert utility_ratio(20.0, 10.0, "rmse") == pytest.approx(0.5)
    assert utility_ratio(10.0, 20.0, "mae") == pytest.approx(2.0)
    worse = utility(retain=40.0, test=60.0, original_retain=30.0, original_test=57.0, metric="rmse")
    assert worse.verdict.value == "FAIL" and worse.retain_ratio == pytest.approx(0.75)
    assert "root mean squared error ratio (original / unlearned" in worse.rule
    same = utility(retain=30.0, test=57.0, original_retain=30.0, original_test=57.0, metric="rmse")
    assert same.verdict.value == "PASS"
    with pytest.raises(ValueError, match="rmse must be > 0"):
        utility_ratio(0.0, 1.0, "rmse")
