import math

import numpy as np
import pytest

from audits.checks.equivalence import equivalence, tost, tost_paired, tost_two_sample
from audits.checks.result import Verdict


def _t4_cdf(t: float) -> float:
    """CDF of Student's t with 4 degrees of freedom, in closed form."""
    x = t / math.sqrt(t * t + 4.0)
    return 0.5 + 0.75 * x - 0.25 * x**3


REFERENCE = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
DIFFS = np.array([0.1, -0.1, 0.2, 0.0, -0.2])  # mean 0, sd sqrt(0.025), se 0.0707107


def test_paired_tost_by_hand():
    se = math.sqrt(0.025 / 5)
    narrow = tost_paired(REFERENCE + DIFFS, REFERENCE, -0.1, 0.1, alpha=0.05)
    assert narrow.estimate == pytest.approx(0.0, abs=1e-12)
    assert narrow.standard_error == pytest.approx(se)
    assert narrow.p_lower == pytest.approx(1 - _t4_cdf(0.1 / se))  # = 0.1151
    assert narrow.p_upper == pytest.approx(narrow.p_lower)
    assert narrow.p_value == pytest.approx(0.11510, abs=1e-4)
    assert not narrow.equivalent
    wide = tost_paired(REFERENCE + DIFFS, REFERENCE, -0.5, 0.5, alpha=0.05)
    assert wide.p_value == pytest.approx(1 - _t4_cdf(0.5 / se))  # = 0.00106
    assert wide.equivalent
    # The 90% interval: t_{0.95, 4} = 2.131847.
    assert wide.ci_high == pytest.approx(2.131847 * se, rel=1e-5)


def test_welch_tost_by_hand():
    outcome = tost_two_sample([1.0, 2.0, 3.0], [2.0, 4.0, 6.0, 8.0], -1.0, 1.0, alpha=0.05)
    assert outcome.estimate == pytest.approx(-3.0)
    assert outcome.standard_error == pytest.approx(math.sqrt(2.0))
    # Welch-Satterthwaite: 2^2 / ((1/3)^2 / 2 + (5/3)^2 / 3).
    assert outcome.df == pytest.approx(4.0 / ((1 / 3) ** 2 / 2 + (5 / 3) ** 2 / 3))
    assert not outcome.equivalent


def test_single_unlearned_value_against_reference_models():
    outcome = tost_two_sample([0.9], [0.8, 0.85, 0.9, 0.95, 1.0], -0.1, 0.1, alpha=0.05)
    se = math.sqrt(0.00625 / 5)
    assert outcome.standard_error == pytest.approx(se)
    assert outcome.df == 4
    assert outcome.p_value == pytest.approx(1 - _t4_cdf(0.1 / se))


def test_zero_variance_is_an_exact_comparison():
    assert tost(0.0, 0.0, 3, -0.1, 0.1, 0.05).equivalent
    assert not tost(0.2, 0.0, 3, -0.1, 0.1, 0.05).equivalent


def _check(unlearned, reference, member_side="higher", design="two_sample"):
    return equivalence(
        metric="forget accuracy",
        unlearned=unlearned,
        reference=reference,
        lower_margin=-0.02,
        upper_margin=0.03,
        member_side=member_side,
        design=design,
        reference_name="retrained models",
    )


def test_verdict_branches_and_margins_in_the_rule():
    rng = np.random.default_rng(0)
    reference = 0.80 + rng.normal(0, 0.01, 20)
    same = _check(0.80 + rng.normal(0, 0.01, 20), reference)
    assert same.verdict == Verdict.PASS and same.side is None
    assert "[-0.02, 0.03]" in same.rule

    still_learned = _check(0.95 + rng.normal(0, 0.01, 20), reference)
    assert still_learned.verdict == Verdict.FAIL and still_learned.side == "member"

    over_forgotten = _check(0.60 + rng.normal(0, 0.01, 20), reference)
    assert over_forgotten.verdict == Verdict.FAIL and over_forgotten.side == "non_member"

    # Loss: lower is the member side.
    low_loss = _check(0.60 + rng.normal(0, 0.01, 20), reference, member_side="lower")
    assert low_loss.side == "member"

    noisy = _check(0.80 + rng.normal(0, 0.2, 5), reference)
    assert noisy.verdict == Verdict.INCONCLUSIVE


def test_tost_rejects_at_about_alpha_when_the_true_difference_sits_on_a_margin():
    """Type I error: with the true difference exactly at the margin, 'equivalent' <= alpha."""
    rng = np.random.default_rng(1)
    hits = sum(
        tost_paired(rng.normal(0.1, 1, 30), np.zeros(30), -0.1, 0.1, 0.05).equivalent
        for _ in range(2000)
    )
    assert hits / 2000 <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 2000)


def test_bad_margins_raise():
    with pytest.raises(ValueError):
        tost_paired([1.0, 2.0], [1.0, 2.0], 0.1, -0.1, 0.05)
    with pytest.raises(ValueError):
        _check([0.8], [0.8, 0.8], design="crossover")
