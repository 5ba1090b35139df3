import json
import math

import numpy as np
import pytest

from audits.checks.membership import (
    MIN_OUT_MODELS_FOR_PER_RECORD_VARIANCE,
    calibration_diagnostic,
    fit_shadow_reference,
    lira_p_values,
    membership_test,
)
from audits.checks.result import Verdict
from tests.audits.checks.helpers import record_ids, shadow_population


def _t3_sf(t: float) -> float:
    """Survival function of Student's t with 3 degrees of freedom, in closed form."""
    x = t / math.sqrt(3.0)
    return 0.5 - (x / (1 + x * x) + math.atan(x)) / math.pi


def test_p_value_is_the_student_t_predictive_tail_by_hand():
    # One record, four OUT models scoring 0, 1, 2, 3 and two IN models.
    shadow = np.array([[0.0], [1.0], [2.0], [3.0], [10.0], [11.0]])
    is_in = np.array([[False], [False], [False], [False], [True], [True]])
    ref = fit_shadow_reference(shadow, is_in, variance="per_record")
    mean, sd = 1.5, math.sqrt(5.0 / 3.0)
    t = (5.0 - mean) / (sd * math.sqrt(1 + 1 / 4))
    assert lira_p_values([5.0], ref)[0] == pytest.approx(_t3_sf(t), rel=1e-9)
    assert ref.in_mean[0] == pytest.approx(10.5)


def test_out_drawn_scores_are_flagged_at_most_alpha_of_the_time():
    """Family-wise false-positive rate of the corrected test near alpha over many forget sets."""
    rng = np.random.default_rng(2024)
    n_seeds, n_records, alpha = 300, 20, 0.05
    any_detection, all_p = 0, []
    for _ in range(n_seeds):
        baselines, shadow, is_in = shadow_population(rng, 16, n_records, gap=3.0)
        ref = fit_shadow_reference(shadow, is_in)
        target = baselines + rng.normal(0.0, 1.0, n_records)  # truly forgotten: an OUT draw
        result = membership_test(
            record_ids=record_ids(n_records), unlearned_scores=target, reference=ref, alpha=alpha
        )
        any_detection += result.n_detected > 0
        all_p.append(result.p_values)
    rate = any_detection / n_seeds
    # Holm with 20 independent tests has family-wise error just under alpha; 3 binomial SDs.
    assert 0.01 <= rate <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / n_seeds)
    # Uncorrected p-values of OUT draws are uniform: 5% of them fall below 0.05.
    assert np.mean(np.concatenate(all_p) < 0.05) == pytest.approx(0.05, abs=0.015)


def test_in_drawn_scores_are_detected_with_power():
    rng = np.random.default_rng(7)
    fractions = []
    for _ in range(30):
        baselines, shadow, is_in = shadow_population(rng, 16, 20, gap=6.0)
        ref = fit_shadow_reference(shadow, is_in)
        still_member = baselines + 6.0 + rng.normal(0.0, 1.0, 20)
        result = membership_test(
            record_ids=record_ids(20), unlearned_scores=still_member, reference=ref
        )
        assert result.verdict == Verdict.FAIL
        fractions.append(result.n_detected / 20)
        assert np.nanmean(result.log_likelihood_ratio) > 0  # online LiRA favours membership
    assert np.mean(fractions) >= 0.95


def test_single_record_subject_is_detected_or_not():
    rng = np.random.default_rng(3)
    baselines, shadow, is_in = shadow_population(rng, 16, 1, gap=8.0)
    ref = fit_shadow_reference(shadow, is_in, variance="per_record")
    kept = membership_test(record_ids=["only"], unlearned_scores=baselines + 8.0, reference=ref)
    gone = membership_test(record_ids=["only"], unlearned_scores=baselines, reference=ref)
    assert kept.verdict == Verdict.FAIL and kept.detected_ids == ("only",)
    assert gone.verdict == Verdict.PASS


def test_record_without_enough_out_models_is_inconclusive():
    shadow = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 5.0]])
    is_in = np.array([[False, False], [False, True], [True, True]])  # record b: one OUT model
    ref = fit_shadow_reference(shadow, is_in, variance="per_record")
    result = membership_test(record_ids=["a", "b"], unlearned_scores=[0.5, 0.0], reference=ref)
    assert result.verdict == Verdict.INCONCLUSIVE
    assert result.untestable_ids == ("b",)
    assert "b" in result.reason
    json.loads(result.to_json())  # NaN p-values serialise as "nan"


def test_variance_mode_auto_switches_with_many_shadow_models():
    rng = np.random.default_rng(0)
    _, few, few_in = shadow_population(rng, 16, 5, gap=2.0)
    _, many, many_in = shadow_population(rng, 2 * MIN_OUT_MODELS_FOR_PER_RECORD_VARIANCE, 5, 2.0)
    assert fit_shadow_reference(few, few_in).variance == "global"
    assert fit_shadow_reference(many, many_in).variance == "per_record"


def test_expected_power_grows_with_the_in_out_gap():
    rng = np.random.default_rng(1)
    powers = []
    for gap in (0.0, 2.0, 6.0):
        _, shadow, is_in = shadow_population(rng, 16, 10, gap=gap)
        ref = fit_shadow_reference(shadow, is_in)
        result = membership_test(
            record_ids=record_ids(10), unlearned_scores=np.zeros(10), reference=ref
        )
        powers.append(float(np.mean(result.expected_power)))
    assert powers[0] < 0.05 < powers[1] < powers[2]
    assert powers[2] > 0.9


def test_calibration_diagnostic_flags_a_target_unlike_its_shadows():
    rng = np.random.default_rng(5)
    baselines, shadow, _ = shadow_population(rng, 16, 400, gap=0.0)
    all_out = np.zeros_like(shadow, dtype=bool)  # test-set records: no model trained on them
    ref = fit_shadow_reference(shadow, all_out)
    honest = calibration_diagnostic(baselines + rng.normal(0, 1, 400), ref, alpha=0.05)
    shifted = calibration_diagnostic(baselines + 1.5 + rng.normal(0, 1, 400), ref, alpha=0.05)
    assert not honest.anti_conservative and honest.empirical_fpr < 0.1
    assert shifted.anti_conservative and shifted.empirical_fpr > 0.2


def test_inputs_are_validated():
    shadow = np.zeros((4, 2))
    with pytest.raises(ValueError):
        fit_shadow_reference(shadow, np.zeros((4, 3), dtype=bool))
    ref = fit_shadow_reference(np.arange(8.0).reshape(4, 2), np.zeros((4, 2), dtype=bool))
    with pytest.raises(ValueError):
        membership_test(record_ids=["a", "a"], unlearned_scores=[0, 0], reference=ref)
    with pytest.raises(ValueError):
        membership_test(record_ids=["a"], unlearned_scores=[0], reference=ref)
