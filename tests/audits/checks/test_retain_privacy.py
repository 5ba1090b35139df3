import numpy as np
import pytest

from audits.checks.result import Verdict
from audits.checks.retain_privacy import retain_privacy


def _scores(rng, gap_before, gap_after, n_retain=400, n_non=400, jitter=0.0):
    retain_noise = rng.normal(0, 1, n_retain)
    non = rng.normal(0, 1, n_non)
    return {
        "retain_scores_before": retain_noise + gap_before,
        "retain_scores_after": retain_noise + gap_after + rng.normal(0, jitter, n_retain),
        "nonmember_scores_before": non,
        "nonmember_scores_after": non + rng.normal(0, 0.05, n_non),
    }


def test_unchanged_exposure_passes():
    rng = np.random.default_rng(0)
    result = retain_privacy(**_scores(rng, 0.5, 0.5), n_bootstrap=200)
    assert result.verdict == Verdict.PASS
    assert result.auc_change == pytest.approx(0.0, abs=0.01)


def test_more_exposed_retain_records_fail():
    rng = np.random.default_rng(1)
    result = retain_privacy(**_scores(rng, 0.3, 1.0), n_bootstrap=200)
    assert result.verdict == Verdict.FAIL
    assert result.auc_change_ci[0] > result.tolerance


def test_a_change_near_the_tolerance_is_inconclusive():
    rng = np.random.default_rng(2)
    # The unlearned model's scores move record by record, so the change is uncertain.
    result = retain_privacy(**_scores(rng, 0.3, 0.40, jitter=0.5), n_bootstrap=200)
    low, high = result.auc_change_ci
    assert result.verdict == Verdict.INCONCLUSIVE
    assert low <= result.tolerance < high


def test_too_few_records_is_not_applicable():
    rng = np.random.default_rng(3)
    result = retain_privacy(**_scores(rng, 0.3, 0.3, n_retain=5), n_bootstrap=50)
    assert result.verdict == Verdict.NOT_APPLICABLE
    assert result.auc_change is None


def test_mismatched_inputs_raise():
    with pytest.raises(ValueError):
        retain_privacy(
            retain_scores_before=[1.0, 2.0],
            retain_scores_after=[1.0],
            nonmember_scores_before=[0.0],
            nonmember_scores_after=[0.0],
        )


def test_the_methods_effect_on_kept_records_over_the_u_lira_runs_warns_when_it_exposes_them():
    from audits.checks.retain_privacy import retain_privacy_ulira
    from audits.checks.verdict import final_verdict

    rng = np.random.default_rng(0)
    before = rng.uniform(0.52, 0.58, 8)
    counts = np.full(8, 120)
    same = retain_privacy_ulira(auc_before=before, auc_after=before + rng.normal(0, 0.003, 8), retain_records=counts)
    assert same.verdict == Verdict.PASS and same.change_ci[1] <= same.tolerance, same.reason
    # Every run of the method makes the kept records it trained on 0.08 easier to tell from held-out ones.
    exposed = retain_privacy_ulira(auc_before=before, auc_after=before + 0.08 + rng.normal(0, 0.01, 8),
                                   retain_records=counts)
    assert exposed.verdict == Verdict.FAIL and exposed.change_ci[0] > exposed.tolerance
    assert "more exposed" in exposed.reason and "8 run(s)" in exposed.reason
    assert retain_privacy_ulira(auc_before=before[:1], auc_after=before[:1], retain_records=counts[:1]).verdict == (
        Verdict.NOT_APPLICABLE)
    # Role retain: it warns beside the verdict and never decides it.
    verdict = final_verdict(guarantee_class="approximate", checks=[exposed])
    assert any(w.startswith("retain_privacy_ulira FAIL") for w in verdict.warnings)
    assert verdict.verdict != Verdict.FAIL
