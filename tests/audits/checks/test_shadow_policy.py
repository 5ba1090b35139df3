"""The shadow policy: an approximate verdict needs 16 OUT shadows per forgotten record; 2 shadows
give INCONCLUSIVE naming the shortfall; exact and dp_bounded verdicts report it, not downgrade."""

import numpy as np
import pytest

from audits.checks.result import CheckResult, Verdict
from audits.checks.shadow_policy import shadow_policy
from audits.checks.verdict import LineageProof, final_verdict
from tests.audits.checks.helpers import record_ids
from tests.audits.checks.test_check_table import approximate_passing


def test_two_shadows_are_inconclusive_and_name_the_shortfall():
    result = shadow_policy(record_ids=record_ids(3), out_per_record=np.array([1, 1, 0]), shadow_models=2)
    assert result.verdict == Verdict.INCONCLUSIVE
    assert "3 of 3 record(s) have fewer than 16 OUT shadow models (the fewest: 0, of 2 shadow models)" in result.reason
    assert "16 more complementary pair(s) (32 shadows in all)" in result.reason


def test_complementary_pairs_give_exactly_the_minimum():
    result = shadow_policy(record_ids=record_ids(4), out_per_record=np.full(4, 16), shadow_models=32)
    assert result.verdict == Verdict.PASS
    assert result.out_per_record == (16, 16, 16, 16)


def test_no_shadow_models_at_all_is_a_shortfall():
    result = shadow_policy(record_ids=record_ids(2), out_per_record=None, shadow_models=0)
    assert result.verdict == Verdict.INCONCLUSIVE and result.short == tuple(record_ids(2))


def test_an_approximate_pass_needs_it_and_an_exact_one_reports_it():
    short = shadow_policy(record_ids=record_ids(2), out_per_record=np.array([8, 9]), shadow_models=16)
    others = [r for r in approximate_passing() if r.check != "shadow_policy"]
    approximate = final_verdict(guarantee_class="approximate", checks=[*others, short])
    assert approximate.verdict == Verdict.INCONCLUSIVE
    assert any("fewer than 16 OUT shadow models" in reason for reason in approximate.reasons)
    passing = [*others, CheckResult(check="shadow_policy", verdict=Verdict.PASS, rule="r", reason="ok")]
    assert final_verdict(guarantee_class="approximate", checks=passing).verdict == Verdict.PASS
    exact = final_verdict(guarantee_class="exact", checks=[short],
                          lineage=LineageProof(new_version_holds_none=True, older_copies_purged=True))
    assert exact.verdict == Verdict.PASS
    assert ("shadow_policy", "INCONCLUSIVE") in exact.checks


def test_a_minimum_below_one_is_refused():
    with pytest.raises(ValueError, match="minimum"):
        shadow_policy(record_ids=record_ids(1), out_per_record=np.array([3]), shadow_models=6, minimum=0)
