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
