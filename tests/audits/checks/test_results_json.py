"""Every result serialises to strict JSON; the registry and the guarantee texts are complete."""

import json
import math

import numpy as np
import pytest

import audits.checks
from audits.checks import CHECKS
from audits.checks.dp_group import dp_group_privacy
from audits.checks.forgetting_quality import forgetting_quality
from audits.checks.guarantees import GUARANTEE_TEXTS, guarantee_text
from audits.checks.population_attack import population_attack
from audits.checks.result import CheckResult, Verdict, json_safe
from audits.checks.verdict import LineageProof, final_verdict
from foundation.strict_json import canonical_json, jsonable
from tests.audits.checks.helpers import record_ids
from workers.unlearning.base import GUARANTEE_CLASSES


def test_json_safe_converts_numpy_and_non_finite_values():
    data = {
        "a": np.float32(1.5),
        "b": np.array([1.0, np.nan, np.inf]),
        "c": (np.int64(2),),
        "d": Verdict.PASS,
        "e": -math.inf,
    }
    assert json_safe(data) == {
        "a": 1.5,
        "b": [1.0, "nan", "inf"],
        "c": [2],
        "d": "PASS",
        "e": "-inf",
    }


def test_jsonable_spells_non_finite_figures_as_json_safe_does():
    """The audit runner and the workers store their own figures through ``jsonable``: a NaN literal
    there failed the job's save (PostgreSQL's JSON refuses it), where a check's NaN was a string."""
    data = {"lds": np.float64(np.nan), "worst": [np.inf, -math.inf, 0.5], "n": np.int64(3)}
    stored = jsonable(data)
    assert stored == json_safe(data) == {"lds": "nan", "worst": ["inf", "-inf", 0.5], "n": 3}
    assert canonical_json(stored)  # no NaN literal left: the strict form accepts it
    assert jsonable({"s": "NaN"}) == {"s": "NaN"}  # a string stays what it was


@pytest.mark.parametrize(
    "result",
    [
        dp_group_privacy(epsilon=1.0, delta=1e-5, k=2, max_epsilon=3.0, max_delta=1e-3),
        population_attack(
            forget_scores=np.arange(30.0), nonmember_scores=np.arange(200.0), n_bootstrap=20
        ),
        forgetting_quality(
            record_ids=record_ids(3),
            unlearned_signals=np.zeros((16, 3)),
            retrained_signals=np.ones((16, 3)),
            higher_is_member=False,
        ),
        final_verdict(
            guarantee_class="exact",
            checks=[],
            lineage=LineageProof(new_version_holds_none=True, older_copies_purged=True),
        ),
    ],
    ids=lambda r: r.check,
)
def test_results_round_trip_through_strict_json(result: CheckResult):
    data = json.loads(result.to_json())
    assert data["check"] == result.check
    assert data["verdict"] in {v.value for v in Verdict}
    assert data["rule"]


def test_every_check_module_is_registered_and_unknown_names_raise():
    assert set(CHECKS.names()) == {
        "canary_power",
        "concept_probe",
        "dp_group_privacy",
        "equivalence_tost",
        "exact_replay",
        "platform_forgetting_quality",
        "lm_memorisation",
        "lm_reference_policy",
        "membership_lira",
        "membership_power",
        "membership_rmia",
        "population_attack",
        "relearning",
        "representation_retention",
        "shadow_policy",
        "unlearning_lira",
        "retain_privacy",
        "retain_privacy_ulira",
        "shadow_procedure",
        "utility",
    }
    assert CHECKS.get("utility").run is audits.checks.utility.utility
    with pytest.raises(ValueError, match="registered"):
        CHECKS.get("vibes")


def test_every_guarantee_class_has_plain_words():
    assert set(GUARANTEE_TEXTS) == set(GUARANTEE_CLASSES)
    for name in GUARANTEE_CLASSES:
        text = guarantee_text(name)
        assert text.promises and text.does_not_promise and text.evidence
    assert "still inside the model" in guarantee_text("suppressed").does_not_promise
    with pytest.raises(ValueError):
        guarantee_text("forgotten")


def test_the_checks_import_neither_django_nor_torch():
    import subprocess
    import sys

    code = (
        "import sys, audits.checks, audits.checks.verdict, audits.checks.guarantees;"
        "bad = [m for m in ('django', 'torch') if m in sys.modules];"
        "print(*bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
