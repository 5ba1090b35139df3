"""U-LiRA on planted shadow populations: unlearned shadows like OUT shadows pass, a method that
leaves records member-like fails, one that pushes them below fails on the other side, and a record
without enough shadows is named."""

import numpy as np
import pytest

from audits.checks.result import Verdict
from audits.checks.ulira import MIN_SHADOWS_PER_SIDE, unlearning_lira
from tests.audits.checks.helpers import record_ids


def planted(rng, *, shift=0.0, records=6, per_side=8, design="per-request IN shadows"):
    baseline = rng.normal(0, 2, records)
    out = baseline + rng.normal(0, 1, (per_side, records))
    unlearned = baseline + shift + rng.normal(0, 1, (per_side, records))
    return dict(record_ids=record_ids(records), design=design, target_scores=baseline + shift + rng.normal(0, 1, records),
                unlearned_shadow_scores=unlearned, unlearned_shadow_held=np.ones_like(unlearned, dtype=bool),
                out_shadow_scores=out, out_shadow_mask=np.ones_like(out, dtype=bool))


def test_a_method_that_leaves_no_trace_passes():
    result = unlearning_lira(**planted(np.random.default_rng(0)))
    assert result.verdict == Verdict.PASS, result.reason


def test_records_left_member_like_fail():
    result = unlearning_lira(**planted(np.random.default_rng(1), shift=3.0))
    assert result.verdict == Verdict.FAIL and result.side == "member"
    assert len(result.detected) >= 4
    assert np.nanmin(result.advantage) > 0.5


def test_over_forgetting_is_detectable_too():
    result = unlearning_lira(**planted(np.random.default_rng(2), shift=-3.0))
    assert result.verdict == Verdict.FAIL and result.side == "non_member"


def test_too_few_shadows_is_inconclusive_and_named():
    case = planted(np.random.default_rng(3), design="per record")
    held = case["unlearned_shadow_held"]
    held[MIN_SHADOWS_PER_SIDE - 1:, 0] = False  # record 0 was held by only 3 unlearned shadows
    result = unlearning_lira(**case)
    assert result.verdict == Verdict.INCONCLUSIVE
    assert result.untested == (case["record_ids"][0],)
    assert "fewer than 4" in result.reason


def test_false_fail_rate_of_a_sound_method_stays_at_alpha():
    rng = np.random.default_rng(4)
    fails = sum(unlearning_lira(**planted(rng)).verdict == Verdict.FAIL for _ in range(200))
    assert fails / 200 <= 0.09  # alpha 0.05, binomial 99% bound at 200 trials


def test_unknown_design_is_refused():
    with pytest.raises(ValueError, match="design"):
        unlearning_lira(**{**planted(np.random.default_rng(5)), "design": "some"})
