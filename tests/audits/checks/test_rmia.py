"""RMIA on planted cases: a forgotten record looks like a held-out one, a kept one does not, and a
record the test cannot detect on the original model can neither pass nor fail."""

import numpy as np
import pytest

from audits.checks.result import Verdict
from audits.checks.rmia import membership_rmia, rmia_scores, rmia_test
from tests.audits.checks.helpers import held_out_population, record_ids, shadow_population


def planted(rng, *, records=10, gap=6.0, unlearned="forgotten", shadows=16, held_out=1000):
    baselines, shadow, is_in = shadow_population(rng, shadows, records, gap=gap)
    population, population_shadow = held_out_population(rng, shadows, held_out)
    original = baselines + gap + rng.normal(0, 1, records)
    after = {"forgotten": baselines + rng.normal(0, 1, records), "kept": original}[unlearned]
    return dict(record_ids=record_ids(records), unlearned_conf=after, original_conf=original,
                reference_conf=shadow, reference_out=~is_in, population_unlearned_conf=population,
                population_original_conf=population, population_reference_conf=population_shadow)


def test_forgotten_records_pass_with_their_power_shown():
    result = membership_rmia(**planted(np.random.default_rng(1)))
    assert result.verdict == Verdict.PASS, result.reason
    # RMIA works on probabilities: a record the original already gets right with p ~ 1 cannot
    # double its likelihood ratio, so only some records are powered; those pass.
    assert len(result.powered) >= 3 and not result.detected


def test_records_still_held_fail():
    result = membership_rmia(**planted(np.random.default_rng(2), unlearned="kept"))
    assert result.verdict == Verdict.FAIL
    assert len(result.detected) >= 3 and set(result.detected) <= set(result.powered)


def test_no_power_on_the_original_is_inconclusive_not_pass_or_fail():
    # Members look like non-members (gap 0): the test could not have failed.
    for unlearned in ("forgotten", "kept"):
        result = membership_rmia(**planted(np.random.default_rng(3), gap=0.0, unlearned=unlearned))
        assert result.verdict == Verdict.INCONCLUSIVE, (unlearned, result.reason)
        assert "no power" in result.reason


def test_false_detection_of_forgotten_records_stays_near_alpha():
    rng = np.random.default_rng(4)
    trials = 150
    flagged = sum(bool(membership_rmia(**planted(rng, records=8)).detected) for _ in range(trials))
    # Holm over 8 records at 0.05: at most 5% of trials flag any record (with sampling noise:
    # the binomial 99.9% bound at 150 trials is about 12%).
    assert flagged / trials <= 0.12


def test_scores_count_dominated_population_records():
    scores = rmia_scores(np.array([4.0, 1.0]), np.array([1.0, 2.0, 3.0, 8.0]), gamma=2.0)
    np.testing.assert_allclose(scores, [0.5, 0.0])  # 4/z >= 2 for z in {1, 2}; 1/z >= 2 for none


def test_shapes_and_population_are_checked():
    case = planted(np.random.default_rng(5))
    with pytest.raises(ValueError, match="shape"):
        rmia_test(target_conf=case["unlearned_conf"][:3], reference_conf=case["reference_conf"],
                  reference_out=case["reference_out"], population_target_conf=case["population_unlearned_conf"],
                  population_reference_conf=case["population_reference_conf"])
    with pytest.raises(ValueError, match="held-out records"):
        rmia_test(target_conf=case["unlearned_conf"], reference_conf=case["reference_conf"],
                  reference_out=case["reference_out"], population_target_conf=case["population_unlearned_conf"][:5],
                  population_reference_conf=case["population_reference_conf"][:, :5])
