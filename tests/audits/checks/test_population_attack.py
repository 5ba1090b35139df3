import json

import numpy as np

from audits.checks.population_attack import (
    MIN_MEMBERS_FOR_AUC,
    MIN_NONMEMBERS_FOR_AUC,
    min_nonmembers_for_fpr,
    population_attack,
)
from audits.checks.result import Verdict


def _figures(result):
    return {f.name: f for f in result.figures}


def test_minimum_sizes_follow_from_the_fpr():
    assert min_nonmembers_for_fpr(0.01) == 100
    assert min_nonmembers_for_fpr(0.001) == 1000


def test_separable_forget_set_fails():
    rng = np.random.default_rng(0)
    result = population_attack(
        forget_scores=rng.normal(5, 1, 200),
        nonmember_scores=rng.normal(0, 1, 2000),
        n_bootstrap=200,
    )
    figures = _figures(result)
    assert result.verdict == Verdict.FAIL
    assert figures["auc"].value > 0.99 and figures["auc"].ci_low > 0.5
    assert figures["tpr_at_fpr_0.01"].value > 0.8
    assert figures["tpr_at_fpr_0.001"].applicable


def test_forgotten_forget_set_passes_with_an_interval_around_chance():
    rng = np.random.default_rng(1)
    result = population_attack(
        forget_scores=rng.normal(0, 1, 300),
        nonmember_scores=rng.normal(0, 1, 3000),
        n_bootstrap=200,
    )
    auc = _figures(result)["auc"]
    assert result.verdict == Verdict.PASS
    assert abs(auc.value - 0.5) < 0.05 and auc.ci_high - auc.ci_low < 0.15
    json.loads(result.to_json())


def test_small_sets_are_not_applicable_with_the_reason():
    rng = np.random.default_rng(2)
    tiny = population_attack(
        forget_scores=rng.normal(9, 1, MIN_MEMBERS_FOR_AUC - 1),
        nonmember_scores=rng.normal(0, 1, 5000),
        n_bootstrap=50,
    )
    assert tiny.verdict == Verdict.NOT_APPLICABLE
    assert str(MIN_MEMBERS_FOR_AUC) in tiny.reason
    # 500 non-members: AUC and TPR at 1% are figures, TPR at 0.1% is not.
    mid = population_attack(
        forget_scores=rng.normal(0, 1, 50),
        nonmember_scores=rng.normal(0, 1, 500),
        n_bootstrap=50,
    )
    figures = _figures(mid)
    assert figures["auc"].applicable and figures["tpr_at_fpr_0.01"].applicable
    assert not figures["tpr_at_fpr_0.001"].applicable
    assert "1000 non-member" in figures["tpr_at_fpr_0.001"].not_applicable_reason
    few_nonmembers = population_attack(
        forget_scores=rng.normal(0, 1, 50),
        nonmember_scores=rng.normal(0, 1, MIN_NONMEMBERS_FOR_AUC - 1),
        n_bootstrap=50,
    )
    assert few_nonmembers.verdict == Verdict.NOT_APPLICABLE


def test_reference_figures_move_chance():
    rng = np.random.default_rng(3)
    forget = rng.normal(0.3, 1, 400)  # forget records differ from test records anyway
    nonmembers = rng.normal(0, 1, 2000)
    plain = population_attack(forget_scores=forget, nonmember_scores=nonmembers, n_bootstrap=200)
    shifted = population_attack(
        forget_scores=forget,
        nonmember_scores=nonmembers,
        reference_auc=0.58,
        reference_tprs={0.01: 0.025, 0.001: 0.003},
        n_bootstrap=200,
    )
    assert plain.verdict == Verdict.FAIL
    assert shifted.verdict == Verdict.PASS


def test_shadow_calibration_removes_per_record_difficulty():
    """Hard and easy records differ in raw score by far more than membership moves them; in units
    of each record's OUT shadow scores, the members stand out and the easy non-members do not."""
    from audits.checks.population_attack import shadow_calibrated_scores

    rng = np.random.default_rng(1)
    n = 400
    difficulty = rng.normal(0, 5, n)  # per-record offset, shared by every model
    out = difficulty + rng.normal(0, 1, (16, n))
    member = np.arange(n) < 100
    scores = difficulty + rng.normal(0, 1, n) + 3.0 * member
    raw = population_attack(forget_scores=scores[member], nonmember_scores=scores[~member], n_bootstrap=200)
    calibrated = shadow_calibrated_scores(scores, out)
    fixed = population_attack(forget_scores=calibrated[member], nonmember_scores=calibrated[~member],
                              n_bootstrap=200)
    assert _figures(raw)["auc"].value < 0.75
    assert _figures(fixed)["auc"].value > 0.95
    out_with_in = out.copy()
    out_with_in[:9, 0] = np.nan  # shadows that trained on record 0 are left out
    assert np.isfinite(shadow_calibrated_scores(scores, out_with_in)[0])
    out_with_in[:15, 1] = np.nan  # one OUT score: no spread, no calibrated score
    assert np.isnan(shadow_calibrated_scores(scores, out_with_in)[1])
