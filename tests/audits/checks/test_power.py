import numpy as np
import pytest

from audits.checks.membership import fit_shadow_reference
from audits.checks.power import membership_power
from audits.checks.result import Verdict
from tests.audits.checks.helpers import held_out_population, record_ids, shadow_population


def test_power_is_demonstrated_when_the_original_model_is_detected():
    rng = np.random.default_rng(11)
    baselines, shadow, is_in = shadow_population(rng, 16, 10, gap=7.0)
    ref = fit_shadow_reference(shadow, is_in)
    original = baselines + 7.0 + rng.normal(0, 1, 10)  # the original model saw every record
    result = membership_power(
        record_ids=record_ids(10), seen_scores=original, reference=ref, source="original_model"
    )
    assert result.verdict == Verdict.PASS
    assert result.detected_fraction == 1.0
    assert result.powered_ids == tuple(record_ids(10))
    low, high = result.detected_fraction_interval
    assert low == pytest.approx(0.025 ** (1 / 10)) and high == 1.0


def test_no_power_when_training_leaves_no_trace():
    """IN and OUT scores alike (a well-generalising model): nothing to detect, INCONCLUSIVE."""
    rng = np.random.default_rng(12)
    baselines, shadow, is_in = shadow_population(rng, 16, 30, gap=0.0)
    ref = fit_shadow_reference(shadow, is_in)
    original = baselines + rng.normal(0, 1, 30)
    result = membership_power(
        record_ids=record_ids(30), seen_scores=original, reference=ref, source="original_model"
    )
    assert result.verdict == Verdict.INCONCLUSIVE
    assert result.detected_fraction < 0.2
    assert np.mean(result.expected_power) < 0.05


def test_one_undetected_record_is_enough_to_withhold_power_on_the_original_model():
    rng = np.random.default_rng(13)
    baselines, shadow, is_in = shadow_population(rng, 16, 5, gap=8.0)
    ref = fit_shadow_reference(shadow, is_in)
    original = baselines + 8.0
    original[2] = baselines[2]  # the original model never memorised record 2
    result = membership_power(
        record_ids=record_ids(5), seen_scores=original, reference=ref, source="original_model"
    )
    assert result.verdict == Verdict.INCONCLUSIVE
    assert "rec-0002" not in result.powered_ids and result.n_detected == 4


def test_canaries_use_their_own_minimum_and_the_forget_set_family_size():
    rng = np.random.default_rng(14)
    baselines, shadow, is_in = shadow_population(rng, 16, 10, gap=5.0)
    ref = fit_shadow_reference(shadow, is_in)
    seen = baselines + 5.0
    seen[0] = baselines[0]  # one canary missed: 9 of 10 >= the canary default 0.8
    result = membership_power(
        record_ids=record_ids(10), seen_scores=seen, reference=ref, source="canaries"
    )
    assert result.verdict == Verdict.PASS and result.min_detected_fraction == 0.8
    # A huge forget set makes each test stricter: the same canaries are detected less often.
    strict = membership_power(
        record_ids=record_ids(10),
        seen_scores=seen,
        reference=ref,
        source="canaries",
        n_tests=10_000_000,
    )
    assert strict.n_tests == 10_000_000
    assert strict.n_detected < result.n_detected


def test_power_on_a_model_unlike_its_shadows_is_calibrated_on_its_own_held_out_records():
    """The original model, trained on all the data, deviates more than its shadow models: its own
    held-out scores calibrate the test, which still detects what it memorised and says so."""
    rng = np.random.default_rng(15)
    baselines, shadow, is_in = shadow_population(rng, 16, 10, gap=10.0)
    held_out, held_out_shadow = held_out_population(rng, 16, 500, target_spread=1.8)
    ref = fit_shadow_reference(shadow, is_in, nonmember_shadow_scores=held_out_shadow)
    original = baselines + 10.0 + rng.normal(0, 1.8, 10)
    result = membership_power(record_ids=record_ids(10), seen_scores=original, reference=ref,
                              source="original_model", nonmember_scores=held_out)
    assert result.verdict == Verdict.PASS and result.n_nonmembers == 500
    assert "500 held-out records" in result.rule
    # A record the original model never memorised scores like a held-out record: not detected.
    original[3] = baselines[3] + rng.normal(0, 1.8)
    missed = membership_power(record_ids=record_ids(10), seen_scores=original, reference=ref,
                              source="original_model", nonmember_scores=held_out)
    assert missed.verdict == Verdict.INCONCLUSIVE and "rec-0003" not in missed.powered_ids


def test_unknown_source_raises():
    ref = fit_shadow_reference(np.arange(8.0).reshape(4, 2), np.zeros((4, 2), dtype=bool))
    with pytest.raises(ValueError):
        membership_power(record_ids=["a", "b"], seen_scores=[0, 0], reference=ref, source="gut")
