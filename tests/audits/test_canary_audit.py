"""Canaries planted by a real training run, in a request's audit (workers.canaries, canary_power).

A breast-cancer MLP that memorises (as tests/audits/test_ulira_audit.py's) is trained through the
platform's training job with canaries, 8 shadow models (complementary pairs: each record IN in 4, OUT
in 4; the shadow policy's minimum is set to 4 here so that it is not what decides). A request erases
two ordinary records, which the per-record test cannot detect even on the original model (typical
records of a well-generalising class), by fine-tuning. The audit scores the canaries on the original
model: canary_power PASSes, the report states both powers, and the verdict is still not PASS, because
canaries never stand in for the forget records' own power.

Since the per-record test's p-values are floored by the Student-t predictive tail (audits.checks.membership:
a held-out null of easy records understated hard records' spread), 4 of the 8 mislabelled canaries are
detected here (halves 5, 2026-12-07), below the check's default 0.8: the test lowers the canaries' required
fraction to 0.25 so that canary_power PASSes and the point of the test (a PASSing canary check does not
lift the verdict) can fail. That canaries on this small set are weakly detectable is a finding about the
set (113 held-out records), not something the test hides: the demo's model reports its own figure.

The shadow halves are hashed from the version's id and the record keys (a canary's names its training
job), which depend on what ran before in the test database; here they are fixed (HALVES_OF, canary keys
without the job), because on this small set how many canaries the test detects depends on them.
Measured with fixed halves 1-12 (8 shadows, 2026-12-07): 4, 5, 4, ?, >= 7, 6, >= 7, 4, 4, 4, 6, 5 of the
8 canaries (canary_power PASSes, at 0.8, for halves 5 and 7 only; "?" failed on another assertion, not
recorded); the held-out split has 113 records, so every detection rests on the fitted tail below
p = 1/114 (tests/audits/test_canaries.py). The test is of the pipeline (canaries planted, scored and
reported, never standing in), not of canary power on this set: halves 5 are one where it holds.
"""

from __future__ import annotations

import pytest

from models_registry.models import DataRecord
from tests import factories
from tests.audits.audit_jobs import check, fix_shadow_halves
from tests.flows import run_job
from workers.jobs import job_create
from workers.models import JobKind
from workers.reference_data import reference_dataset_register
from workers.services import model_train, shadow_models_train

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("one_torch_thread")]

CANARIES = 8
SHADOWS = 8
# The shadow halves hash the version's id; fixed here (see the module docstring).
HALVES_OF = 5
MEMORISING_MLP = {
    "architecture": {"name": "mlp", "config": {"in_features": 30, "num_classes": 2, "hidden": [64, 64],
                                               "input_norm": "batchnorm"}},
    "epochs": 100, "batch_size": 512, "lr": 1e-2, "weight_decay": 1e-3, "seed": 0,
}


@pytest.fixture(autouse=True)
def _fixed_halves(monkeypatch):
    fix_shadow_halves(monkeypatch, halves_of=HALVES_OF)



def test_planted_canaries_power_the_pipeline_never_the_forget_records(settings, monkeypatch):
    from audits.checks import power

    settings.AUDIT_MIN_OUT_SHADOWS = SHADOWS // 2
    monkeypatch.setitem(power.DEFAULT_MIN_DETECTED_FRACTION, "canaries", 0.25)
    dataset = reference_dataset_register(name="breast_cancer")
    model = factories.registered_model(name="bc-canary-audit", recipe="plain")
    original = run_job(model_train(model=model, dataset=dataset, recipe_config=MEMORISING_MLP,
                                   canaries=CANARIES, enqueue=False)).result_version
    run_job(shadow_models_train(version=original, count=SHADOWS, enqueue=False))
    records = list(DataRecord.objects.filter(dataset=dataset, split="train", canary=False).order_by("id")
                   .values_list("id", flat=True)[:2])
    new = run_job(job_create(kind=JobKind.UNLEARN, registered_model=model, source_version=original,
                             method="finetune", config={"epochs": 5, "lr": 3e-3}, guarantee_class="approximate",
                             forget_record_ids=records, enqueue=False)).result_version_id
    audit = run_job(job_create(kind=JobKind.AUDIT, registered_model=model, source_version=original,
                               forget_record_ids=records, guarantee_class="approximate", enqueue=False,
                               config={"audited_version": new})).result["audit"]

    canary = check(audit, "canary_power")
    assert len(canary["record_ids"]) == CANARIES and all(k.startswith("canary-j") for k in canary["record_ids"])
    assert canary["verdict"] == "PASS", canary["reason"]
    assert canary["n_detected"] >= 2, canary  # measured 4 of 8 (module docstring)
    lira = check(audit, "membership_lira")
    assert lira["powered_ids"] == [], lira  # the forget records' own power: none
    verdict = audit["verdict"]
    assert verdict["verdict"] != "PASS"
    assert any("2 of 2 forgotten record(s) are not detected even on the original" in r for r in verdict["reasons"])
    own, pipeline = verdict["power"]
    assert own.startswith("The forget records' own power") and "LiRA detects 0 of 2" in own
    assert pipeline.startswith("Pipeline power (canaries") and f"PASS: {canary['n_detected']} of {CANARIES}" in pipeline
