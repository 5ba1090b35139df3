from dataclasses import dataclass

import numpy as np
import pytest

from audits.checks.equivalence import equivalence
from audits.checks.membership import fit_shadow_reference, membership_test
from audits.checks.power import membership_power
from audits.checks.result import CheckResult, Verdict
from audits.checks.shadow_policy import shadow_policy
from audits.checks.shadow_procedure import shadow_procedure
from audits.checks.verdict import RULES, LineageProof, SuppressionBound, final_verdict
from tests.audits.checks.helpers import record_ids, shadow_population

PASS, FAIL, INCONCLUSIVE, NA = (
    Verdict.PASS,
    Verdict.FAIL,
    Verdict.INCONCLUSIVE,
    Verdict.NOT_APPLICABLE,
)


@dataclass(frozen=True, kw_only=True)
class Sided(CheckResult):
    side: str | None = None


def r(check: str, verdict: Verdict, side: str | None = None) -> CheckResult:
    return Sided(
        check=check, verdict=verdict, rule="test rule", reason=f"{check} said so", side=side
    )


def approximate_passing() -> list[CheckResult]:
    return [
        r("membership_lira", PASS),
        r("membership_power", PASS),
        r("equivalence_tost", PASS),
        r("population_attack", PASS),
        r("shadow_procedure", PASS),
        r("shadow_policy", PASS),
    ]


def replace(checks, name, verdict, side=None):
    return [r(name, verdict, side) if c.check == name else c for c in checks]


# --- approximate -------------------------------------------------------------------------


def test_approximate_pass_needs_no_detection_power_and_equivalence():
    verdict = final_verdict(guarantee_class="approximate", checks=approximate_passing())
    assert verdict.verdict == PASS
    assert verdict.rule == RULES["approximate"]
    assert "TOST" in verdict.rule


@pytest.mark.parametrize(
    ("name", "side"),
    [
        ("membership_lira", None),
        ("population_attack", None),
        ("equivalence_tost", "member"),
        ("membership_rmia", None),
        ("unlearning_lira", "member"),
        ("representation_retention", None),
        ("relearning", None),
        ("lm_memorisation", None),
    ],
)
def test_approximate_fails_on_any_member_side_failure(name, side):
    checks = approximate_passing()
    checks = (
        replace(checks, name, FAIL, side)
        if any(c.check == name for c in checks)
        else [*checks, r(name, FAIL, side)]
    )
    verdict = final_verdict(guarantee_class="approximate", checks=checks)
    assert verdict.verdict == FAIL
    assert any(name in reason for reason in verdict.reasons)


@pytest.mark.parametrize(
    "checks",
    [
        replace(approximate_passing(), "membership_power", INCONCLUSIVE),  # no power
        [c for c in approximate_passing() if c.check != "membership_power"],  # power not run
        [c for c in approximate_passing() if c.check != "equivalence_tost"],  # no TOST
        [c for c in approximate_passing() if c.check != "membership_lira"],  # no record test
        replace(approximate_passing(), "equivalence_tost", INCONCLUSIVE),
        replace(approximate_passing(), "membership_lira", INCONCLUSIVE),  # untestable record
        replace(approximate_passing(), "equivalence_tost", FAIL, "non_member"),  # over-forgot
        [*approximate_passing(), r("unlearning_lira", FAIL, "non_member")],
    ],
)
def test_approximate_is_inconclusive_without_full_evidence(checks):
    verdict = final_verdict(guarantee_class="approximate", checks=checks)
    assert verdict.verdict == INCONCLUSIVE
    assert verdict.reasons  # says what is missing


def test_warnings_and_notes_do_not_change_the_forgetting_verdict():
    checks = [
        *replace(approximate_passing(), "population_attack", NA),
        r("utility", FAIL),
        r("retain_privacy", INCONCLUSIVE),
    ]
    verdict = final_verdict(guarantee_class="approximate", checks=checks)
    assert verdict.verdict == PASS
    assert len(verdict.warnings) == 2
    assert any("population_attack" in note for note in verdict.notes)


# --- exact -------------------------------------------------------------------------------


def test_exact_rests_on_the_lineage_proof():
    proof = LineageProof(new_version_holds_none=True, older_copies_purged=True)
    assert final_verdict(guarantee_class="exact", checks=[], lineage=proof).verdict == PASS
    assert final_verdict(guarantee_class="exact", checks=[]).verdict == INCONCLUSIVE
    holds = LineageProof(new_version_holds_none=False, older_copies_purged=True)
    assert final_verdict(guarantee_class="exact", checks=[], lineage=holds).verdict == FAIL
    copies = LineageProof(new_version_holds_none=True, older_copies_purged=False)
    assert final_verdict(guarantee_class="exact", checks=[], lineage=copies).verdict == FAIL


def test_exact_is_inconclusive_when_a_sanity_check_contradicts_the_proof():
    proof = LineageProof(new_version_holds_none=True, older_copies_purged=True)
    verdict = final_verdict(
        guarantee_class="exact", checks=[r("membership_lira", FAIL)], lineage=proof
    )
    assert verdict.verdict == INCONCLUSIVE
    assert "contradicts" in verdict.reason
    # Low power is not a contradiction: the proof still decides.
    quiet = final_verdict(
        guarantee_class="exact", checks=[r("membership_power", INCONCLUSIVE)], lineage=proof
    )
    assert quiet.verdict == PASS


def test_a_replayed_exact_deletion_passes_despite_a_sanity_flag_and_a_failed_replay_fails():
    """Finding 3: a flag on a record the weights provably never saw no longer holds a replayed proof
    back (it is reported as a note); finding 4: a replay that differs FAILs the exact verdict."""
    proof = LineageProof(new_version_holds_none=True, older_copies_purged=True)
    flag = r("membership_lira", FAIL)
    replayed = final_verdict(guarantee_class="exact", checks=[flag, r("exact_replay", PASS)], lineage=proof)
    assert replayed.verdict == PASS
    assert "replay rebuilt identical weights" in replayed.reason
    assert any(n.startswith("Sanity check flag not counted") for n in replayed.notes)
    differs = final_verdict(guarantee_class="exact", checks=[r("exact_replay", FAIL)], lineage=proof)
    assert differs.verdict == FAIL and differs.reasons == ("Replay: exact_replay said so",)
    unreproduced = final_verdict(guarantee_class="exact", checks=[flag, r("exact_replay", INCONCLUSIVE)],
                                 lineage=proof)
    assert unreproduced.verdict == INCONCLUSIVE
    # No replay ran (NOT_APPLICABLE): the flag still leaves the verdict open, and a PASS says what it rests on.
    not_run = final_verdict(guarantee_class="exact", checks=[flag, r("exact_replay", NA)], lineage=proof)
    assert not_run.verdict == INCONCLUSIVE
    clean = final_verdict(guarantee_class="exact", checks=[r("exact_replay", NA)], lineage=proof)
    assert clean.verdict == PASS and "rests on the platform's execution record" in clean.reason


# --- dp_bounded --------------------------------------------------------------------------


def test_dp_bounded_rests_on_the_group_bound():
    assert (
        final_verdict(guarantee_class="dp_bounded", checks=[r("dp_group_privacy", PASS)]).verdict
        == PASS
    )
    assert (
        final_verdict(guarantee_class="dp_bounded", checks=[r("dp_group_privacy", FAIL)]).verdict
        == FAIL
    )
    assert final_verdict(guarantee_class="dp_bounded", checks=[]).verdict == INCONCLUSIVE
    detected = [r("dp_group_privacy", PASS), r("membership_lira", FAIL)]
    assert final_verdict(guarantee_class="dp_bounded", checks=detected).verdict == FAIL


# --- suppressed --------------------------------------------------------------------------

GOOD_BOUND = SuppressionBound(alpha=0.01, delta=0.05, n=1000, upper_bound=0.003)


def test_suppressed_rests_on_the_guard_bound_and_ignores_the_weights():
    verdict = final_verdict(
        guarantee_class="suppressed", checks=[r("membership_lira", FAIL)], suppression=GOOD_BOUND
    )
    assert verdict.verdict == PASS
    assert any("hold the data by design" in note for note in verdict.notes)


@pytest.mark.parametrize(
    ("bound", "checks", "expected"),
    [
        (SuppressionBound(alpha=0.01, delta=0.05, n=1000, upper_bound=0.02), [], FAIL),
        (GOOD_BOUND, [r("lm_memorisation", FAIL)], FAIL),  # leaked through the guard
        (SuppressionBound(alpha=0.01, delta=0.05, n=100, upper_bound=0.03), [], INCONCLUSIVE),
        (SuppressionBound(alpha=0.01, delta=0.05, n=1000, upper_bound=0.001), [], INCONCLUSIVE),
        (None, [], INCONCLUSIVE),
    ],
)
def test_suppressed_branches(bound, checks, expected):
    verdict = final_verdict(guarantee_class="suppressed", checks=checks, suppression=bound)
    assert verdict.verdict == expected


def test_unknown_class_raises():
    with pytest.raises(ValueError):
        final_verdict(guarantee_class="forgotten", checks=[])


# --- end to end with real checks -----------------------------------------------------------


def _pipeline(rng, unlearned_gap: float) -> Verdict:
    n = 20
    baselines, shadow, is_in = shadow_population(rng, 16, n, gap=6.0)
    ref = fit_shadow_reference(shadow, is_in)
    ids = record_ids(n)
    unlearned = baselines + unlearned_gap + rng.normal(0, 1, n)
    original = baselines + 6.0 + rng.normal(0, 1, n)
    out_means = ref.out_mean
    checks = [
        membership_test(record_ids=ids, unlearned_scores=unlearned, reference=ref),
        membership_power(
            record_ids=ids, seen_scores=original, reference=ref, source="original_model"
        ),
        equivalence(
            metric="LiRA statistic on the forget set",
            unlearned=unlearned,
            reference=out_means,
            lower_margin=-1.0,
            upper_margin=1.0,
            member_side="higher",
            design="paired",
        ),
        shadow_procedure(same_as_model=True, shadows="the plain recipe", model="the plain recipe"),
        shadow_policy(record_ids=ids, out_per_record=(~is_in).sum(axis=0), shadow_models=16, minimum=6),
    ]
    return final_verdict(guarantee_class="approximate", checks=checks)


def test_end_to_end_forgotten_passes_and_remembered_fails():
    rng = np.random.default_rng(42)
    forgotten = _pipeline(rng, unlearned_gap=0.0)
    remembered = _pipeline(rng, unlearned_gap=6.0)
    assert forgotten.verdict == PASS, forgotten.reasons
    assert remembered.verdict == FAIL
    assert "membership_lira FAIL" in remembered.reason
