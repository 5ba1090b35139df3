import math

import pytest

from audits.checks import sanity_rates
from audits.checks.sanity_rates import (
    EXACT_SANITY_MEASURED,
    EXACT_SANITY_PROVENANCE,
    SanityFalseAlarms,
    combined,
    exact_sanity_false_alarm_sentence,
    one_sided_bounds,
)


def test_the_measured_run_is_as_large_as_the_issue_asks():
    """At least 1,000 per-record tests, SISA and retrain, two datasets; counts that add up."""
    assert sum(row.tests for row in EXACT_SANITY_MEASURED) >= 1000
    assert {row.method for row in EXACT_SANITY_MEASURED} == {"sisa", "retrain"}
    assert len({row.dataset for row in EXACT_SANITY_MEASURED}) == 2
    for row in EXACT_SANITY_MEASURED:
        assert 0 <= row.holm_detections <= row.false_alarms <= row.tests
        assert row.requests_failed <= min(row.requests, row.holm_detections)
        assert row.alpha == 0.05
    assert EXACT_SANITY_PROVENANCE.script == "benchmarks/exact_sanity_false_alarm.py"


def test_one_sided_bounds_by_hand():
    # 0 of n: upper bound solves (1 - u)^n = 0.05; n of n: lower bound solves l^n = 0.05.
    assert one_sided_bounds(0, 100) == (0.0, pytest.approx(1 - 0.05 ** (1 / 100)))
    assert one_sided_bounds(20, 20) == (pytest.approx(0.05 ** (1 / 20)), 1.0)
    low, high = one_sided_bounds(50, 1000)
    assert low < 0.05 < high


def test_the_issues_condition_is_on_the_lower_bound():
    at_level = SanityFalseAlarms("d", "sisa", deletions=1, requests=1000, tests=1000, false_alarms=60,
                                 holm_detections=0, requests_failed=0)
    above = SanityFalseAlarms("d", "sisa", deletions=1, requests=1000, tests=1000, false_alarms=80,
                              holm_detections=0, requests_failed=0)
    assert at_level.within_stated_level  # 6% observed, but 5% is within the bound
    assert not above.within_stated_level


def test_a_measured_method_adds_up_its_datasets():
    rows = [row for row in EXACT_SANITY_MEASURED if row.method == "sisa"]
    holm, tests = sum(r.holm_detections for r in rows), sum(r.tests for r in rows)
    failed, requests = sum(r.requests_failed for r in rows), sum(r.requests for r in rows)
    upper = one_sided_bounds(holm, tests)[1]
    sentence = exact_sanity_false_alarm_sentence("sisa")
    assert sentence.startswith("Sanity check, not proof: on records provably absent from the model (SISA ")
    assert f"false alarm in {holm:,} of {tests:,} per-record tests" in sentence
    assert f"one-sided 95% upper bound {upper:.3f}" in sentence
    assert f"failed {failed:,} of {requests:,} deletion requests" in sentence
    assert "not measured" not in sentence
    assert sentence.endswith("benchmarks/exact_sanity_false_alarm.py, 2026-12-06, 2-core CPU, no GPU.")


def test_an_unmeasured_method_gets_every_row_and_says_so():
    sentence = exact_sanity_false_alarm_sentence("s3t")
    tests = sum(row.tests for row in EXACT_SANITY_MEASURED)
    assert "not measured for s3t" in sentence
    assert f"of {tests:,} per-record tests" in sentence
    assert "not measured" not in exact_sanity_false_alarm_sentence(None)


def test_the_dataset_that_fails_most_is_named(monkeypatch):
    rows = (
        SanityFalseAlarms("quiet", "retrain", deletions=10, requests=100, tests=100, false_alarms=2,
                          holm_detections=0, requests_failed=0),
        SanityFalseAlarms("noisy", "retrain", deletions=10, requests=20, tests=100, false_alarms=12,
                          holm_detections=5, requests_failed=4),
    )
    monkeypatch.setattr(sanity_rates, "EXACT_SANITY_MEASURED", rows)
    sentence = exact_sanity_false_alarm_sentence("retrain")
    assert "false alarm in 5 of 200 per-record tests (rate 0.025" in sentence
    assert "failed 4 of 120 deletion requests" in sentence
    assert "most often on noisy: 4 of 20 requests (rate 0.200" in sentence
    assert "rejected 14 of 200 at the nominal 0.05 (rate 0.070" in sentence


def test_rows_at_different_alphas_do_not_add_up():
    a = SanityFalseAlarms("d", "sisa", 1, 1, 1, 0, 0, 0, alpha=0.05)
    b = SanityFalseAlarms("d", "sisa", 1, 1, 1, 0, 0, 0, alpha=0.01)
    with pytest.raises(ValueError, match="different alphas"):
        combined((a, b), dataset="d", method="sisa")
    total = combined((a, a), dataset="d", method="sisa")
    assert (total.tests, total.rate, math.isclose(total.alpha, 0.05)) == (2, 0.0, True)
