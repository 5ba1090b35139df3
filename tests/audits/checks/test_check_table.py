"""The shared table of audit checks: every registered check is run from here and inherits these
tests (registered once under its own name; a result that names it and prints its rule; its facts
as the verdict rule and the audit runner treat them).

A check the audit runner feeds (``applies_to``) runs on the example evidence of each model kind it
applies to, through its ``inputs`` adapter; a check the runner does not feed joins ``CASES`` with
example arguments.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from audits.checks import CHECKS
from audits.checks.equivalence import DeclaredMargins
from audits.checks.evidence import (
    MODEL_KINDS,
    CanaryEvidence,
    ClassifierEvidence,
    Evidence,
    ForgetReferenceFigures,
    LanguageModelEvidence,
    ShadowProcedure,
    UtilityFigures,
)
from audits.checks.lm_memorisation import FactCompletion, LMRecordMemorisation
from audits.checks.membership import fit_shadow_reference
from audits.checks.registry import (
    ROLES,
    WARNING_ROLES,
    CheckSpec,
    check_spec,
    register_check,
    run_checks,
)
from audits.checks.result import CheckResult, Verdict
from audits.checks.verdict import LineageProof, SuppressionBound, final_verdict
from tests.audits.checks.helpers import held_out_population, record_ids, shadow_population

PASS, FAIL, INCONCLUSIVE = Verdict.PASS, Verdict.FAIL, Verdict.INCONCLUSIVE

# Example arguments of the checks the audit runner does not feed.
CASES: dict[str, Callable[[], dict[str, Any]]] = {
    "concept_probe": lambda: {
        "representations": np.random.default_rng(3).normal(size=(60, 4)),
        "attribute": np.arange(60) % 2,
    },
    "dp_group_privacy": lambda: {
        "epsilon": 1.0,
        "delta": 1e-5,
        "k": 2,
        "max_epsilon": 3.0,
        "max_delta": 1e-3,
    },
    "exact_replay": lambda: {
        "outcome": {"method": "sisa", "ran": True, "seconds": 1.5, "cost": "reruns the affected shards",
                    "comparison": {"identical": False, "tensors_compared": 12, "differing_count": 2,
                                   "differing": ["model/members.0.weight", "model/members.0.bias"],
                                   "max_abs_difference": 0.25, "records_only_stored": 1,
                                   "records_only_replayed": 0, "missing": []}},
    },
    "platform_forgetting_quality": lambda: {
        "record_ids": record_ids(3),
        "unlearned_signals": np.zeros((16, 3)),
        "retrained_signals": np.ones((16, 3)),
        "higher_is_member": False,
    },
}


def classifier_evidence(*, with_shadows: bool = True) -> ClassifierEvidence:
    """Scores as the runner computes them, from the synthetic shadow population."""
    rng = np.random.default_rng(7)
    baselines, shadow, is_in = shadow_population(rng, 16, 20, gap=6.0)
    held_out, held_out_shadow = held_out_population(rng, 16, 200)
    return ClassifierEvidence(
        record_ids=tuple(record_ids(20)),
        forget_scores=baselines + rng.normal(0, 1, 20),
        original_forget_scores=baselines + 6.0 + rng.normal(0, 1, 20),
        shadow_reference=(fit_shadow_reference(shadow, is_in, nonmember_shadow_scores=held_out_shadow)
                          if with_shadows else None),
        equivalence_margins=DeclaredMargins.symmetric(0.5, declared_by="the test table"),
        attack_forget_scores=rng.normal(0, 1, 30),
        attack_nonmember_scores=rng.normal(0, 1, 200),
        attack_signal="logit_scaled_confidence",
        retain_scores=rng.normal(1, 1, 40),
        original_retain_scores=rng.normal(1, 1, 40),
        nonmember_scores=rng.normal(0, 1, 40),
        original_nonmember_scores=rng.normal(0, 1, 40),
        utility=UtilityFigures(
            metric="accuracy", retain=0.97, test=0.9, original_retain=0.98, original_test=0.91
        ),
        nonmember_null_scores=held_out,
        original_nonmember_null_scores=held_out + rng.normal(0, 0.1, 200),
        shadow_procedure=ShadowProcedure(same_as_model=True, shadows="the plain recipe", model="the plain recipe"),
        out_shadow_counts=(~is_in).sum(axis=0),
        shadow_models=16,
        min_out_shadows=8,
        raw_confidences={
            "unlearned_conf": baselines + rng.normal(0, 1, 20), "original_conf": baselines + 6.0 + rng.normal(0, 1, 20),
            "reference_conf": shadow, "population_unlearned_conf": held_out,
            "population_original_conf": held_out + rng.normal(0, 0.1, 200),
            "population_reference_conf": held_out_shadow,
        },
        # Ten canaries planted in training, scored on the original model like the forget records.
        canaries=None if not with_shadows else CanaryEvidence(
            record_ids=tuple(f"canary-{i}" for i in range(10)), original_scores=baselines[:10] + 6.0,
            reference=fit_shadow_reference(shadow[:, :10], is_in[:, :10], nonmember_shadow_scores=held_out_shadow),
            original_nonmember_null_scores=held_out),
        # U-LiRA "per record": each IN shadow unlearned back to about where its OUT scores lie.
        ulira=None if not with_shadows else {
            "design": "per record", "target_scores": baselines,
            "unlearned_shadow_scores": shadow - 6.0 * is_in, "unlearned_shadow_held": is_in,
            "out_shadow_scores": shadow, "out_shadow_mask": ~is_in,
        },
        # The same runs' attack AUC on the kept records each shadow trained on, before and after.
        ulira_retain=None if not with_shadows else {
            "auc_before": np.array([0.55, 0.56, 0.54]), "auc_after": np.array([0.55, 0.57, 0.54]),
            "retain_records": np.array([20, 21, 19]),
        },
        # A forgotten class: representations of 12 inputs that a head-only edit left as they were,
        # and the recovery after fine-tuning on forget-like examples.
        forget_references=ForgetReferenceFigures(
            original_representation=np.eye(12)[:, :6], unlearned_representation=np.eye(12)[:, :6],
            reference_representations=tuple(np.random.default_rng(s).normal(size=(12, 6)) for s in range(2)),
            control_representations=(np.eye(12)[:, :6] + np.random.default_rng(9).normal(0, 0.3, (12, 6)),),
            unlearned_recovery={"10 steps": 0.6, "30 steps": 0.9},
            reference_recovery=({"10 steps": 0.0, "30 steps": 0.05}, {"10 steps": 0.02, "30 steps": 0.1})),
    )


def language_model_evidence() -> LanguageModelEvidence:
    def memorisation(key: str, strength: float) -> LMRecordMemorisation:
        return LMRecordMemorisation(key, strength, strength, (FactCompletion(0.2, False),))

    keys = record_ids(3)
    return LanguageModelEvidence(
        memorisation=tuple(memorisation(k, 0.3) for k in keys),
        reference_memorisation=tuple(memorisation(k, 0.25) for k in keys),
        utility=UtilityFigures(
            metric="perplexity", retain=12.0, test=15.0, original_retain=11.5, original_test=14.8
        ),
        reference_record_ids=tuple(keys), references_per_record=(4, 4, 2), min_references=4,
    )


EVIDENCE: dict[str, Callable[[], Evidence]] = {
    "classifier": classifier_evidence,
    "language_model": language_model_evidence,
}


def example_results(name: str) -> list[CheckResult]:
    """The check run on each kind's example evidence it applies to, and on its case."""
    check = CHECKS.get(name)
    arguments = [check.spec.inputs(EVIDENCE[kind]()) for kind in check.spec.applies_to]
    if name in CASES:
        arguments.append(CASES[name]())
    return [check.run(**a) for a in arguments]


def reported(name: str, verdict: Verdict) -> CheckResult:
    return CheckResult(check=name, verdict=verdict, rule="table rule", reason=f"{name} said so")


def approximate_passing(without: str = "") -> list[CheckResult]:
    """A PASS from every check the approximate class needs (but ``without``)."""
    needed = [n for n in CHECKS if check_spec(n).needed_for_approximate_pass and n != without]
    return [reported(n, PASS) for n in needed]


def dp_bound_passing(without: str = "") -> list[CheckResult]:
    return [reported(n, PASS) for n in CHECKS if check_spec(n).role == "dp_bound" and n != without]


PROOF = LineageProof(new_version_holds_none=True, older_copies_purged=True)
GOOD_BOUND = SuppressionBound(alpha=0.01, delta=0.05, n=1000, upper_bound=0.003)

# How the verdict treats one FAIL of a check, by the check's role, next to otherwise passing
# evidence: (approximate, exact, dp_bounded, suppressed when measured through the guard).
TREATMENT: dict[str, tuple[Verdict, Verdict, Verdict, Verdict]] = {
    "forget": (FAIL, INCONCLUSIVE, FAIL, FAIL),
    "power": (PASS, PASS, PASS, PASS),
    "dp_bound": (PASS, PASS, FAIL, PASS),
    "retain": (PASS, PASS, PASS, PASS),
    "utility": (PASS, PASS, PASS, PASS),
    "diagnostic": (PASS, PASS, PASS, PASS),
    "replay": (PASS, FAIL, PASS, PASS),
}


def test_every_registered_check_runs_from_the_table():
    fed = {n for n in CHECKS if check_spec(n).applies_to}
    assert set(CASES).isdisjoint(fed), "a check the runner feeds runs on the example evidence"
    assert set(CASES) | fed == set(CHECKS.names())
    assert set(TREATMENT) == set(ROLES)


@pytest.mark.parametrize("name", CHECKS.names())
def test_registered_once_under_its_own_name(name):
    check = CHECKS.get(name)
    assert check.spec.name == name
    assert check.run.__module__.startswith("audits.checks.")
    with pytest.raises(ValueError, match="already registered"):
        register_check(check.spec)(check.run)


@pytest.mark.parametrize("name", CHECKS.names())
def test_results_name_the_check_and_print_its_rule(name):
    results = example_results(name)
    assert results
    for result in results:
        assert isinstance(result, CheckResult)
        assert result.check == name
        assert result.rule
        assert result.verdict in Verdict
        assert json.loads(result.to_json())["check"] == name


@pytest.mark.parametrize("name", CHECKS.names())
def test_a_fail_counts_as_the_checks_role_says(name):
    spec = check_spec(name)
    failed = reported(name, FAIL)
    approximate, exact, dp_bounded, through_guard = TREATMENT[spec.role]
    if approximate == PASS and spec.needed_for_approximate_pass:
        approximate = INCONCLUSIVE  # needed, and not passed
    assert (
        final_verdict(
            guarantee_class="approximate", checks=[*approximate_passing(without=name), failed]
        ).verdict
        == approximate
    )
    assert final_verdict(guarantee_class="exact", checks=[failed], lineage=PROOF).verdict == exact
    assert (
        final_verdict(
            guarantee_class="dp_bounded", checks=[*dp_bound_passing(without=name), failed]
        ).verdict
        == dp_bounded
    )
    suppressed = final_verdict(
        guarantee_class="suppressed", checks=[failed], suppression=GOOD_BOUND
    )
    assert suppressed.verdict == (PASS if spec.on_weights else through_guard)
    assert (
        any(n.startswith(f"{name} FAIL not counted") for n in suppressed.notes) == spec.on_weights
    )
    assert any(w.startswith(f"{name} FAIL") for w in suppressed.warnings) == (
        spec.role in WARNING_ROLES
    )


@pytest.mark.parametrize(
    "name", [n for n in CHECKS.names() if check_spec(n).needed_for_approximate_pass]
)
def test_the_approximate_class_names_a_needed_check_that_did_not_run(name):
    assert (
        final_verdict(guarantee_class="approximate", checks=approximate_passing()).verdict == PASS
    )
    verdict = final_verdict(guarantee_class="approximate", checks=approximate_passing(without=name))
    assert verdict.verdict == INCONCLUSIVE
    assert check_spec(name).needed_for_approximate_pass in verdict.reasons


@pytest.mark.parametrize("name", CHECKS.names())
def test_only_evidence_about_the_subject_is_read_off_the_weights(name):
    spec = check_spec(name)
    assert not spec.on_weights or spec.role in ("forget", "power", "diagnostic")


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_the_runner_runs_every_check_that_applies_to_the_model_kind(kind):
    results = run_checks(EVIDENCE[kind]())
    assert [r.check for r in results] == [n for n in CHECKS if kind in check_spec(n).applies_to]


def test_without_shadow_models_the_per_record_test_and_its_power_do_not_run():
    names = [r.check for r in run_checks(classifier_evidence(with_shadows=False))]
    assert names == [
        n
        for n in CHECKS
        if "classifier" in check_spec(n).applies_to
        and n not in ("canary_power", "equivalence_tost", "membership_lira", "membership_power", "membership_rmia",
                      "retain_privacy_ulira", "unlearning_lira")
    ]


def test_a_spec_states_its_facts_consistently_and_unknown_results_are_refused():
    with pytest.raises(ValueError, match="role"):
        CheckSpec(name="vibes", role="vibes")
    with pytest.raises(ValueError, match="model kind"):
        CheckSpec(name="vibes", role="forget", applies_to=("tabular",), inputs=dict)
    with pytest.raises(ValueError, match="go together"):
        CheckSpec(name="vibes", role="forget", applies_to=("classifier",))
    with pytest.raises(ValueError, match="unknown audit check 'vibes'"):
        final_verdict(guarantee_class="approximate", checks=[reported("vibes", PASS)])
