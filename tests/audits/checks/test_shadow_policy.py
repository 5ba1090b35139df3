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


def test_a_language_model_audit_states_its_own_minimum_of_held_out_references_per_record():
    from audits.checks.evidence import LanguageModelEvidence, UtilityFigures
    from audits.checks.registry import run_checks
    from audits.checks.shadow_policy import lm_reference_policy

    short = lm_reference_policy(record_ids=["a", "b", "c"], references_per_record=[4, 2, 0], minimum=4)
    assert short.verdict == Verdict.INCONCLUSIVE and short.short == ("b", "c")
    assert short.references_per_record == (4, 2, 0)
    assert "2 of 3 record(s) have fewer than 4 held-out records of their format" in short.reason
    assert "(the fewest: 0)" in short.reason and "trains no shadow models" in short.rule
    assert lm_reference_policy(record_ids=["a"], references_per_record=[6], minimum=4).verdict == Verdict.PASS
    with pytest.raises(ValueError, match="minimum"):
        lm_reference_policy(record_ids=["a"], references_per_record=[6], minimum=0)
    # The audit of a language model runs it from its evidence, at the minimum the evidence carries.
    evidence = LanguageModelEvidence(
        memorisation=(), reference_memorisation=(),
        utility=UtilityFigures(metric="perplexity", retain=12.0, test=15.0, original_retain=11.5, original_test=14.8),
        reference_record_ids=("a", "b"), references_per_record=(8, 5), min_references=6)
    [policy] = [r for r in run_checks(evidence) if r.check == "lm_reference_policy"]
    assert policy.verdict == Verdict.INCONCLUSIVE and policy.minimum == 6 and policy.short == ("b",)
