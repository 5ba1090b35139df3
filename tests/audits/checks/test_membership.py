import json
import math

import numpy as np
import pytest

from audits.checks.membership import (
    MIN_OUT_MODELS_FOR_PER_RECORD_VARIANCE,
    calibration_diagnostic,
    corrected_membership_test,
    expected_power,
    fit_shadow_reference,
    lira_p_values,
    membership_test,
)
from audits.checks.result import Verdict
from audits.checks.stats import holm_adjust
from tests.audits.checks.helpers import held_out_population, record_ids, shadow_population


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


def test_calibrated_p_value_by_hand():
    """One record, OUT for shadows 0 and 1 (scores 0 and 2: mean 1, variance 2, scale sqrt(3));
    four held-out records whose mean over those shadows is 0, 1, 2, 3 and which the tested model
    scores 1, 1, 1, 5: statistics 1, 0, -1, 2 (over sqrt 3)."""
    shadow = np.array([[0.0], [2.0], [10.0], [11.0]])
    is_in = np.array([[False], [False], [True], [True]])
    held_out_shadow = np.array([[0.0, 1, 2, 3], [0.0, 1, 2, 3], [5.0, 5, 5, 5], [9.0, 9, 9, 9]])
    ref = fit_shadow_reference(shadow, is_in, nonmember_shadow_scores=held_out_shadow)
    held_out = [1.0, 1.0, 1.0, 5.0]
    # Observed 2: statistic 1/sqrt(3), reached or passed by two held-out records (the tie counts).
    assert lira_p_values([2.0], ref, nonmember_scores=held_out)[0] == pytest.approx(3 / 5)
    # Beyond every held-out record, with too few of them for a tail: 1 / (1 + m).
    assert lira_p_values([4.0], ref, nonmember_scores=held_out)[0] == pytest.approx(1 / 5)
    # The uncalibrated p-value of the same score is the Student-t tail (1 degree of freedom).
    assert lira_p_values([2.0], ref)[0] == pytest.approx(0.5 - math.atan(1 / math.sqrt(3)) / math.pi)


def test_beyond_every_held_out_record_the_tail_is_exponential():
    """Held-out statistics 1..20: the tail's scale is the mean excess of the largest ten over the
    eleventh (5.5); a statistic of 23 gets exp(-3 / 5.5) / 21."""
    m = 20
    shadow = np.array([[-1.0], [1.0]])  # OUT mean 0, variance 2: scale sqrt(3)
    ref = fit_shadow_reference(shadow, np.zeros((2, 1), dtype=bool), nonmember_shadow_scores=np.zeros((2, m)))
    held_out = math.sqrt(3) * np.arange(1.0, m + 1)
    p = lira_p_values([23 * math.sqrt(3)], ref, nonmember_scores=held_out)[0]
    assert p == pytest.approx(math.exp(-3 / 5.5) / (m + 1))
    test = corrected_membership_test([23 * math.sqrt(3)], ref, alpha=0.05, nonmember_scores=held_out)
    assert (test.n_nonmembers, test.n_extrapolated) == (m, 1)


def _target_unlike_its_shadows(rng, n_records, *, target_spread, gap=0.0, n_held_out=400):
    """A forget set scored by a model that deviates from each record's baseline with
    ``target_spread`` while shadow models deviate with 1: (reference, target scores of the
    records as non-members (+ ``gap`` as members), the target's held-out scores)."""
    baselines, shadow, is_in = shadow_population(rng, 16, n_records, gap=3.0)
    held_out, held_out_shadow = held_out_population(rng, 16, n_held_out, target_spread=target_spread)
    ref = fit_shadow_reference(shadow, is_in, nonmember_shadow_scores=held_out_shadow)
    return ref, baselines + gap + rng.normal(0.0, target_spread, n_records), held_out


def test_a_target_unlike_its_shadows_holds_the_level_once_calibrated():
    """The shadow fit alone assumes the tested model deviates like a shadow model; when it
    deviates more (the audited model trains on twice a shadow's data), forgotten records are
    flagged too often. Calibrated on held-out records, the test holds its level."""
    rng = np.random.default_rng(2026)
    n_sets, n_records, alpha = 200, 20, 0.05
    calibrated, uncalibrated, any_detection = [], [], 0
    for _ in range(n_sets):
        ref, forgotten, held_out = _target_unlike_its_shadows(rng, n_records, target_spread=1.8)
        uncalibrated.append(lira_p_values(forgotten, ref))
        result = membership_test(record_ids=record_ids(n_records), unlearned_scores=forgotten, reference=ref,
                                 nonmember_scores=held_out, alpha=alpha)
        calibrated.append(result.p_values)
        any_detection += result.n_detected > 0
        assert result.n_nonmembers == 400
    assert np.mean(np.concatenate(uncalibrated) <= alpha) > 0.12
    assert np.mean(np.concatenate(calibrated) <= alpha) == pytest.approx(alpha, abs=0.015)
    assert any_detection / n_sets <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / n_sets)


def test_calibrated_test_detects_members_and_names_its_null_in_the_rule():
    rng = np.random.default_rng(8)
    ref, still_member, held_out = _target_unlike_its_shadows(rng, 20, target_spread=1.8, gap=12.0)
    result = membership_test(record_ids=record_ids(20), unlearned_scores=still_member, reference=ref,
                             nonmember_scores=held_out)
    assert result.verdict == Verdict.FAIL and result.n_detected >= 18
    # Holm's first threshold (0.05 / 20) lies below 1 / 401: the tail is what resolves it.
    assert result.n_extrapolated >= 18
    assert "400 held-out records" in result.rule and "exponential tail" in result.rule
    uncalibrated = membership_test(record_ids=record_ids(20), unlearned_scores=still_member, reference=ref)
    assert uncalibrated.n_nonmembers == 0 and "not calibrated on held-out records" in uncalibrated.rule


def test_calibrated_expected_power_matches_detection_of_in_draws():
    """With the tested model scoring like a shadow model, the calibrated test's expected power
    under the IN Gaussian is the fraction of IN draws it detects."""
    rng = np.random.default_rng(21)
    baselines, shadow, is_in = shadow_population(rng, 16, 2000, gap=2.5)
    held_out, held_out_shadow = held_out_population(rng, 16, 1000)
    ref = fit_shadow_reference(shadow, is_in, nonmember_shadow_scores=held_out_shadow)
    members = baselines + 2.5 + rng.normal(0.0, 1.0, 2000)
    p = lira_p_values(members, ref, nonmember_scores=held_out)
    power = expected_power(ref, 0.05, 1, nonmember_scores=held_out)
    assert np.mean(p <= 0.05) == pytest.approx(np.mean(power), abs=0.03)
    # Stricter levels than the held-out records resolve come from the tail, and lower power.
    strict = expected_power(ref, 0.05, 200, nonmember_scores=held_out)
    assert np.all(strict < power)


def test_per_record_variance_is_calibrated_the_same_way():
    rng = np.random.default_rng(4)
    rates = []
    for _ in range(40):
        baselines, shadow, is_in = shadow_population(rng, 16, 25, gap=3.0)
        held_out, held_out_shadow = held_out_population(rng, 16, 300, target_spread=1.8)
        ref = fit_shadow_reference(shadow, is_in, variance="per_record", nonmember_shadow_scores=held_out_shadow)
        p = lira_p_values(baselines + rng.normal(0.0, 1.8, 25), ref, nonmember_scores=held_out)
        rates.append(np.mean(p <= 0.1))
    assert np.mean(rates) == pytest.approx(0.1, abs=0.03)


def test_calibration_inputs_are_validated():
    shadow, is_in = np.zeros((4, 2)), np.zeros((4, 2), dtype=bool)
    with pytest.raises(ValueError, match="nonmember_shadow_scores"):
        fit_shadow_reference(shadow, is_in, nonmember_shadow_scores=np.zeros((3, 5)))
    with pytest.raises(ValueError, match="NaN"):
        fit_shadow_reference(shadow, is_in, nonmember_shadow_scores=np.full((4, 5), np.nan))
    uncalibrated = fit_shadow_reference(np.arange(8.0).reshape(4, 2), is_in)
    with pytest.raises(ValueError, match="without nonmember_shadow_scores"):
        lira_p_values([0.0, 0.0], uncalibrated, nonmember_scores=[0.0])
    ref = fit_shadow_reference(np.arange(8.0).reshape(4, 2), is_in, nonmember_shadow_scores=np.zeros((4, 5)))
    with pytest.raises(ValueError, match="nonmember_scores shape"):
        lira_p_values([0.0, 0.0], ref, nonmember_scores=[0.0] * 4)


def _hard_records_easy_held_out(rng, n_records, *, gap=0.0, n_held_out=300):
    """Issue 23's mismatch: forgotten records whose OUT shadow scores spread with 1 and which the
    tested model scores like one more shadow model (+ ``gap`` as members), held-out records that
    every model scores within 0.4 of their baseline (easy records: a narrow null)."""
    baselines, shadow, is_in = shadow_population(rng, 16, n_records, gap=3.0)
    held_baselines = rng.normal(0.0, 2.0, n_held_out)
    held_out_shadow = held_baselines + rng.normal(0.0, 0.4, (16, n_held_out))
    held_out = held_baselines + rng.normal(0.0, 0.4, n_held_out)
    ref = fit_shadow_reference(shadow, is_in, nonmember_shadow_scores=held_out_shadow)
    return ref, baselines + gap + rng.normal(0.0, 1.0, n_records), held_out


def test_hard_records_are_not_falsely_flagged_against_a_null_of_easy_records():
    """A held-out null narrower than the forgotten records' own spread flags forgotten records
    beyond its largest value; the Student-t floor (the record's own OUT fit) holds the level, and
    members are still detected."""
    rng = np.random.default_rng(23)
    n_sets, n_records, alpha = 60, 20, 0.05
    false_fails = {True: 0, False: 0}
    for _ in range(n_sets):
        ref, forgotten, held_out = _hard_records_easy_held_out(rng, n_records)
        for floor in (True, False):
            # The default (True: the floor) against the held-out null alone (False).
            p = lira_p_values(forgotten, ref, nonmember_scores=held_out, predictive_floor=None if floor else False)
            false_fails[floor] += bool(np.any(holm_adjust(p, n_tests=n_records) <= alpha))
    assert false_fails[False] / n_sets > 0.3  # the held-out null alone: far above alpha
    assert false_fails[True] / n_sets <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / n_sets)
    ref, members, held_out = _hard_records_easy_held_out(rng, n_records, gap=8.0)
    result = membership_test(record_ids=record_ids(n_records), unlearned_scores=members, reference=ref,
                             nonmember_scores=held_out, alpha=alpha)
    assert result.verdict == Verdict.FAIL and result.n_detected >= 15
    assert "Student-t predictive tail" in result.rule
    # The floor is the larger p-value, so expected power uses the larger threshold.
    power = expected_power(ref, alpha, n_records, nonmember_scores=held_out)
    assert np.all(power <= expected_power(ref, alpha, n_records, nonmember_scores=held_out, predictive_floor=False))
