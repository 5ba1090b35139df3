import math

import pytest

from audits.checks.dp_group import dp_group_privacy, group_privacy_bound
from audits.checks.result import Verdict


def test_group_bound_numbers():
    bound = group_privacy_bound(1.0, 1e-5, 3)
    assert bound.epsilon == pytest.approx(3.0)
    assert bound.delta == pytest.approx(3 * math.exp(2.0) * 1e-5)  # 2.2167e-4
    assert bound.delta == pytest.approx(2.21672e-4, rel=1e-5)
    assert not bound.vacuous
    one = group_privacy_bound(0.5, 1e-6, 1)
    assert (one.epsilon, one.delta) == (pytest.approx(0.5), pytest.approx(1e-6))


def test_bound_becomes_vacuous_for_many_records():
    bound = group_privacy_bound(2.0, 1e-5, 10)  # 10 e^18 1e-5 ~ 6.6e3
    assert bound.vacuous and bound.delta > 1
    assert group_privacy_bound(50.0, 1e-5, 1000).delta == math.inf  # no overflow error


@pytest.mark.parametrize("k", [0, -1, 1.5, True])
def test_refuses_k_below_one_or_not_an_integer(k):
    with pytest.raises(ValueError):
        group_privacy_bound(1.0, 1e-5, k)


@pytest.mark.parametrize(("epsilon", "delta"), [(-1.0, 1e-5), (1.0, 1.0), (math.inf, 0.0)])
def test_refuses_bad_accountant_values(epsilon, delta):
    with pytest.raises(ValueError):
        group_privacy_bound(epsilon, delta, 2)


def test_check_against_policy_limits():
    ok = dp_group_privacy(epsilon=1.0, delta=1e-5, k=3, max_epsilon=4.0, max_delta=1e-3)
    assert ok.verdict == Verdict.PASS
    assert "(3, 0.0002217)" in ok.rule
    too_many = dp_group_privacy(epsilon=1.0, delta=1e-5, k=5, max_epsilon=4.0, max_delta=1e-3)
    assert too_many.verdict == Verdict.FAIL
    vacuous = dp_group_privacy(epsilon=2.0, delta=1e-5, k=10, max_epsilon=100, max_delta=0.9)
    assert vacuous.verdict == Verdict.FAIL and "guarantees nothing" in vacuous.reason
