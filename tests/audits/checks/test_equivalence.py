import dataclasses
import json
import math

import numpy as np
import pytest
from scipy import stats

from audits.checks.equivalence import (
    DEFAULT_MARGIN,
    PLANNING_SPREAD,
    DeclaredMargins,
    equivalence,
    equivalence_plan,
    tost,
    tost_paired,
    tost_power,
    tost_records_needed,
    tost_two_sample,
)
from audits.checks.evidence import ClassifierEvidence, ShadowProcedure, UtilityFigures
from audits.checks.membership import fit_shadow_reference
from audits.checks.registry import audit_cannot_confirm, check_spec, run_checks
from audits.checks.result import Verdict, fmt
from tests.audits.checks.helpers import record_ids, shadow_population


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


# --- The TOST in the audit: declared margins, power, the classifier adapter ----------------------


def _simulated_power(n: int, spread: float, theta: float, reps: int, rng) -> float:
    """Share of simulated paired samples the TOST calls equivalent at margins +-0.5, alpha 0.05."""
    d = rng.normal(theta, spread, (reps, n))
    mean, se = d.mean(axis=1), d.std(axis=1, ddof=1) / math.sqrt(n)
    t = stats.t.isf(0.05, n - 1)
    return float(np.mean((mean - t * se > -0.5) & (mean + t * se < 0.5)))


@pytest.mark.parametrize("n", [2, 5, 14, 40])
@pytest.mark.parametrize("theta", [0.0, 0.25])
def test_tost_power_matches_a_simulation(n, theta):
    rng = np.random.default_rng(n * 100 + int(theta * 100))
    reps = 20_000
    simulated = _simulated_power(n, 0.6, theta, reps, rng)
    power = tost_power(n=n, spread=0.6, lower_margin=-0.5, upper_margin=0.5, alpha=0.05,
                       true_difference=theta)
    # Four Monte Carlo standard errors.
    assert power == pytest.approx(simulated, abs=4 * math.sqrt(0.25 / reps))


def test_the_simulation_decides_as_tost_paired_does():
    rng = np.random.default_rng(3)
    for _ in range(300):
        d = rng.normal(0.1, 0.6, 8)
        mean, se = d.mean(), d.std(ddof=1) / math.sqrt(8)
        by_hand = (mean - stats.t.isf(0.05, 7) * se > -0.5) and (mean + stats.t.isf(0.05, 7) * se < 0.5)
        assert tost_paired(d, np.zeros(8), -0.5, 0.5, 0.05).equivalent == by_hand


def test_tost_power_edges():
    margins = {"lower_margin": -0.5, "upper_margin": 0.5, "alpha": 0.05}
    assert tost_power(n=1, spread=0.6, **margins) == 0.0
    assert tost_power(n=3, spread=0.0, **margins) == 1.0
    assert tost_power(n=3, spread=0.0, true_difference=0.7, **margins) == 0.0
    # A true difference on the margin is shown equivalent at most alpha of the time, however many.
    assert tost_power(n=10_000, spread=0.6, true_difference=0.5, **margins) <= 0.05 + 1e-6
    powers = [tost_power(n=n, spread=0.6, **margins) for n in (2, 5, 10, 20, 40)]
    assert powers == sorted(powers) and powers[-1] > 0.99
    with pytest.raises(ValueError):
        tost_power(n=10, spread=-1.0, **margins)


def test_records_needed_is_the_first_n_that_reaches_the_power():
    margins = {"lower_margin": -0.5, "upper_margin": 0.5, "alpha": 0.05}
    needed = tost_records_needed(spread=0.6, **margins)
    assert needed == 14
    assert tost_power(n=needed, spread=0.6, **margins) >= 0.8 > tost_power(n=needed - 1, spread=0.6, **margins)
    # Many pairs: the normal-theory size (z_0.95 + z_0.90)^2 spread^2 / margin^2 = 856.5.
    large = tost_records_needed(spread=1.0, lower_margin=-0.1, upper_margin=0.1, alpha=0.05)
    assert large == pytest.approx(856.5, rel=0.01)
    assert tost_records_needed(spread=0.6, true_difference=0.6, **margins) is None


def test_declared_margins_travel_through_a_job_config():
    margins = DeclaredMargins.symmetric(0.4, declared_by="the policy of model m")
    config = json.loads(json.dumps(margins.to_config()))
    assert DeclaredMargins.from_config(config) == margins
    assert (margins.lower_margin, margins.upper_margin, margins.member_side) == (-0.4, 0.4, "higher")
    assert DeclaredMargins.from_config(None) is None and DeclaredMargins.from_config({}) is None
    for bad in (0.0, -0.5, float("nan")):
        with pytest.raises(ValueError):
            DeclaredMargins.symmetric(bad, declared_by="x")
    with pytest.raises(ValueError):
        DeclaredMargins(0.5, -0.5)


def test_the_plan_states_the_power_before_any_score_is_seen():
    margins = DeclaredMargins.symmetric(DEFAULT_MARGIN, declared_by="the platform default")
    three = equivalence_plan(margins, records=3)
    assert three["declared"] == margins.to_config() and three["assumed_spread"] == PLANNING_SPREAD
    assert three["planned_power"] == pytest.approx(0.079, abs=0.002)  # simulated: 0.078
    assert three["records_for_target_power"] == 14
    assert "power of about 0.08 with 3 forgotten records" in three["statement"]
    assert "needs at least 14 records to reach 80%" in three["statement"]
    one = equivalence_plan(margins, records=1)
    assert one["planned_power"] == 0.0 and "this request has 1, so it will not run" in one["statement"]


def _classifier_evidence(n_records: int, *, unlearned: str, margins=True, n_shadow=16, seed=0):
    """Runner-shaped evidence from the synthetic shadow population (OUT: baseline + N(0, 1), IN:
    + gap 8). ``unlearned``: "forgot" (scores like a fresh OUT model) or "original" (an IN model)."""
    rng = np.random.default_rng(seed)
    baselines, shadow, is_in = shadow_population(rng, n_shadow, n_records, gap=8.0)
    fresh_out = baselines + rng.normal(0, 1, n_records)
    seen = baselines + 8.0 + rng.normal(0, 1, n_records)
    return ClassifierEvidence(
        record_ids=tuple(record_ids(n_records)),
        forget_scores=fresh_out if unlearned == "forgot" else seen,
        original_forget_scores=seen,
        shadow_reference=fit_shadow_reference(shadow, is_in),
        equivalence_margins=DeclaredMargins.symmetric(0.5, declared_by="the test") if margins else None,
        attack_forget_scores=rng.normal(0, 1, n_records),
        attack_nonmember_scores=rng.normal(0, 1, 400),
        attack_signal="logit_scaled_confidence",
        retain_scores=rng.normal(1, 1, 100),
        original_retain_scores=rng.normal(1, 1, 100),
        nonmember_scores=rng.normal(0, 1, 100),
        original_nonmember_scores=rng.normal(0, 1, 100),
        utility=UtilityFigures(metric="accuracy", retain=0.97, test=0.9, original_retain=0.97,
                               original_test=0.9),
        shadow_procedure=ShadowProcedure(same_as_model=True, shadows="the plain recipe", model="the plain recipe"),
        out_shadow_counts=(~is_in).sum(axis=0), shadow_models=n_shadow, min_out_shadows=n_shadow // 4,
    )


def _inputs(evidence):
    return check_spec("equivalence_tost").inputs(evidence)


def test_the_adapter_pairs_each_record_with_its_out_shadow_mean():
    evidence = _classifier_evidence(30, unlearned="forgot")
    arguments = _inputs(evidence)
    reference = evidence.shadow_reference
    np.testing.assert_array_equal(arguments["unlearned"], evidence.forget_scores)
    np.testing.assert_array_equal(arguments["reference"], reference.out_mean)
    assert (arguments["design"], arguments["member_side"], arguments["alpha"]) == ("paired", "higher", 0.05)
    assert (arguments["lower_margin"], arguments["upper_margin"]) == (-0.5, 0.5)
    # Pooled variance: every record's predictive scale is the same, sd * sqrt(1 + 1/n_out).
    assert arguments["difference_spread"] == pytest.approx(float(np.sqrt(np.mean(reference.out_scale ** 2))))
    assert arguments["margins_declared_by"] == "the test"


def test_the_adapter_leaves_out_untestable_records_and_declines_without_what_it_needs():
    evidence = _classifier_evidence(6, unlearned="forgot", n_shadow=4, seed=5)
    # Records 0 and 3 trained into three of the four shadow models: one OUT score, untestable.
    is_in = np.array([[True, False, False, True, False, False]] * 3 + [[False] * 6])
    scores = np.random.default_rng(5).normal(0, 1, (4, 6))
    evidence = dataclasses.replace(evidence, shadow_reference=fit_shadow_reference(scores, is_in))
    testable = evidence.shadow_reference.testable
    assert testable.tolist() == [False, True, True, False, True, True]
    arguments = _inputs(evidence)
    assert arguments["unlearned"].size == testable.sum()
    np.testing.assert_array_equal(arguments["reference"], evidence.shadow_reference.out_mean[testable])

    assert _inputs(_classifier_evidence(30, unlearned="forgot", margins=False)) is None
    assert _inputs(dataclasses.replace(evidence, shadow_reference=None)) is None
    one = _classifier_evidence(1, unlearned="forgot")
    assert _inputs(one) is None  # a single record has no spread of differences


def test_a_model_that_forgot_passes_and_the_original_fails_on_the_member_side():
    forgot = equivalence(**_inputs(_classifier_evidence(200, unlearned="forgot")))
    assert forgot.verdict == Verdict.PASS, forgot.reason
    assert forgot.power == pytest.approx(1.0, abs=1e-6) and forgot.records_for_target_power < 200
    assert "Power 1.00 to show equivalence with 200 pairs" in forgot.reason
    original = equivalence(**_inputs(_classifier_evidence(200, unlearned="original")))
    assert (original.verdict, original.side) == (Verdict.FAIL, "member")
    assert original.outcome.ci_low > 0.5


def test_a_few_records_state_their_low_power_and_a_wider_observed_spread():
    evidence = _classifier_evidence(4, unlearned="forgot", seed=11)
    noisy = dataclasses.replace(evidence, forget_scores=evidence.forget_scores + np.array([2.0, -2.0, 2.0, -2.0]))
    result = equivalence(**_inputs(noisy))
    assert result.verdict == Verdict.INCONCLUSIVE
    assert result.power < 0.2 and result.observed_spread > result.difference_spread
    assert result.power_at_observed_spread < result.power
    assert f"the differences spread {fmt(result.observed_spread)}" in result.reason


def test_once_the_tost_runs_an_approximate_classifier_deletion_can_pass():
    from audits.checks.verdict import final_verdict

    checks = run_checks(_classifier_evidence(200, unlearned="forgot"))
    assert {c.check: c.verdict for c in checks}["equivalence_tost"] == Verdict.PASS
    verdict = final_verdict(guarantee_class="approximate", checks=checks)
    assert verdict.verdict == Verdict.PASS, verdict.reasons

    without_margins = run_checks(_classifier_evidence(200, unlearned="forgot", margins=False))
    verdict = final_verdict(guarantee_class="approximate", checks=without_margins)
    assert verdict.verdict == Verdict.INCONCLUSIVE
    assert "no aggregate metric was tested for equivalence (TOST)" in verdict.reasons

    nothing_forgotten = run_checks(_classifier_evidence(200, unlearned="original"))
    verdict = final_verdict(guarantee_class="approximate", checks=nothing_forgotten)
    assert verdict.verdict == Verdict.FAIL
    assert any(r.startswith("equivalence_tost FAIL") for r in verdict.reasons)


def test_the_plan_warns_when_too_few_records_for_the_tost():
    assert audit_cannot_confirm(guarantee_class="approximate", model_kind="classifier") is None
    assert audit_cannot_confirm(guarantee_class="approximate", model_kind="classifier", records=2) is None
    one = audit_cannot_confirm(guarantee_class="approximate", model_kind="classifier", records=1)
    assert "equivalence_tost needs at least 2 forgotten records and this request has 1" in one
    # A language model is still not tested for equivalence, nor per record.
    lm = audit_cannot_confirm(guarantee_class="approximate", model_kind="language_model")
    assert "no aggregate metric was tested for equivalence (TOST)" in lm


def test_shadow_models_from_another_procedure_cannot_give_an_approximate_pass():
    """Issue 19: a model trained outside the platform is audited against shadows the platform trained
    with the family's recipe; the report names both procedures and the result cannot PASS."""
    from audits.checks.verdict import final_verdict

    outside = dataclasses.replace(_classifier_evidence(200, unlearned="forgot"), shadow_procedure=ShadowProcedure(
        same_as_model=False, shadows="the platform's plain recipe with the recorded configuration",
        model="trained outside the platform (plain, code company-pipeline-1.4)"))
    checks = run_checks(outside)
    procedure = next(c for c in checks if c.check == "shadow_procedure")
    assert procedure.verdict == Verdict.INCONCLUSIVE
    assert "company-pipeline-1.4" in procedure.reason and "different procedure" in procedure.reason
    verdict = final_verdict(guarantee_class="approximate", checks=checks)
    assert verdict.verdict == Verdict.INCONCLUSIVE
    assert any("shadow_procedure INCONCLUSIVE" in r for r in verdict.reasons)
