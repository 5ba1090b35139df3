"""Issue 23's planted cases on a dataset, judged by the audit's own verdict rule: scikit-learn
digits, a small MLP, 32 shadow models in complementary pairs (tests/audits/checks/planted_audit.py,
one replicate; benchmarks/audit_planted_cases.py runs the same cases over 20 seeds and prints the
rates). Each test asserts the verdict ``final_verdict`` gives the checks ``run_checks`` ran, and
the check that decided it.

Not here: a model retrained without the records -> PASS. On this data it is not what the audit
gives (the benchmark's table in the README: the forgotten records the original memorised are
mislabelled digits, on which the retrained model and the half-data shadows differ beyond what the
held-out calibration describes; in the benchmark's memorised setting, ``memorised_audits``, 30
noise canaries on a wide MLP, the retrained model was INCONCLUSIVE in 20 of 20 seeds: not every
forgotten record is detected on the original. benchmarks/audit_memorised_settings.py --inputs mixed, noise
images split with the digits and label smoothing, PASSes it in 17 of 20 seeds with 10 records: below 90%,
README); the verdict-level PASS is held on planted scores in test_verdict_power.py."""

from __future__ import annotations

import pytest

from audits.checks.result import Verdict
from tests.audits.checks.planted_audit import expected, planted_audits, replicate

CASES = ("original_as_unlearned", "finetune_random_records", "two_shadows", "unpowered_records",
         "head_only_class", "neggrad_plus_stopped_early")


@pytest.fixture(scope="module")
def audits():
    import audits.checks  # noqa: F401  (registers every check, as the runner's import does)

    return planted_audits(replicate(0), CASES)


def _reasons(result) -> str:
    return " | ".join(result.verdict.reasons)


def test_the_original_presented_as_unlearned_fails(audits):
    result = audits["original_as_unlearned"]
    assert result.verdict.verdict == Verdict.FAIL, _reasons(result)
    assert "membership_lira FAIL" in _reasons(result)
    # RMIA, with the same shadows, detects it too (its p-values once stopped at 1 / 498, which Holm
    # over 20 records at its share of the level could not use: INCONCLUSIVE in every seed).
    assert "membership_rmia FAIL" in _reasons(result)
    assert expected("original_as_unlearned", result)


def test_a_head_only_edit_of_a_class_fails_by_its_representation(audits):
    result = audits["head_only_class"]
    assert result.verdict.verdict == Verdict.FAIL, _reasons(result)
    assert any(r.startswith("representation_retention FAIL") for r in result.verdict.reasons)
    assert result.check("representation_retention").unlearned_change < 1e-6
    assert expected("head_only_class", result)


def test_neggrad_plus_stopped_early_fails_by_relearning(audits):
    result = audits["neggrad_plus_stopped_early"]
    assert result.verdict.verdict == Verdict.FAIL, _reasons(result)
    assert any(r.startswith("relearning FAIL") for r in result.verdict.reasons)
    assert expected("neggrad_plus_stopped_early", result)


def test_a_sound_method_on_random_records_is_not_judged_by_the_representation_check(audits):
    result = audits["finetune_random_records"]
    representation = result.check("representation_retention")
    assert representation.verdict == Verdict.NOT_APPLICABLE
    assert "random records, not a class or sub-population" in representation.reason
    assert not any(r.startswith("representation_retention") for r in result.verdict.reasons)
    assert expected("finetune_random_records", result)


def test_two_shadow_models_are_inconclusive_naming_the_shortfall(audits):
    result = audits["two_shadows"]
    assert result.verdict.verdict == Verdict.INCONCLUSIVE, _reasons(result)
    assert "20 of 20 record(s) have fewer than 16 OUT shadow models (the fewest: 1, of 2 shadow models)" \
        in _reasons(result)
    assert expected("two_shadows", result)


def test_two_records_without_power_are_inconclusive(audits):
    result = audits["unpowered_records"]
    assert result.verdict.verdict == Verdict.INCONCLUSIVE, _reasons(result)
    assert "2 of 2 forgotten record(s) are not detected even on the original model" in _reasons(result)
    assert expected("unpowered_records", result)

