"""The audit checks have teeth: canaries that an over-fitted model memorised are caught.

Mislabelled canaries are planted in the breast-cancer and MNIST reference sets; an original
model trains on them, a model is retrained without them, and 16 shadow models each train on a
random half of the original's training records (every canary IN for 8 and OUT for 8). Then, with
the platform's own checks (see ``tests/audits/canary_helpers.py`` for the set-up):

1. the original model, audited as if it were the unlearned one, FAILs the per-record test;
2. the loss/confidence (LiRA statistic) threshold attack, calibrated per record against the shadow
   models that did not train on it, reaches TPR >= 0.2 at 1% FPR on the canaries against held-out
   records relabelled the same way, and does not on the retrained model;
3. the retrained model PASSes the per-record test (no canary detected), and the power check,
   run on the original model, shows the test could detect them.

Pure checks and workers code only: runs with ``-p no:django``. ``-s`` prints the figures.

The per-record test is calibrated as the audit calibrates it: each model's p-values against the
same statistic of held-out records no model trained on (here the relabelled held-out records, the
same kind of record as a canary), scored by that model and the same OUT shadow models; below
1/(1 + m) the p-value comes from an exponential tail fitted to those records
(audits/checks/membership.py).

Breast cancer (455 records, two classes, ~5% test error) is the hard case: 113 held-out records
resolve p-values down to 1/114 = 0.0088 only, and Holm's first threshold over 20 canaries is
0.0025, so a detection rests on the fitted tail. Measured on seeds 0-3 (2026-12-06): the original
model FAILs with 16 / 19 / 10 / 0 of 20 canaries detected (on seed 3 only 5 canaries lie beyond
every held-out record's statistic, and the tail does not take them below 0.0025: the audit would
say INCONCLUSIVE through the power check, not PASS); the retrained model PASSes on every seed
(smallest adjusted p 0.70 / 1 / 1 / 1). Before the calibration (a Student-t fit of the OUT shadow
scores alone) the original model's detections were 18 / 5 / 8 / 7, and the power check's detected
fraction 0.90 / 0.25 / 0.40 / 0.35 against the 0.8 it asks for; calibrated it is 0.80 / 0.95 / 0.50
/ 0.00. So claim 1 is asserted on seed 0 (as before), and the power claim for MNIST only. The raw
threshold attack's TPR at 1% FPR also depends on the seed (0.00 / 0.95 / 0.10 / 0.55: the few
held-out records the model misclassifies score, once relabelled, as high as memorised canaries);
calibrated per record against its OUT shadow models (the attack the audit runs), it is 1.00 / 0.95
/ 0.90 / 1.00, asserted for both sets. MNIST meets every claim (seeds 0-3: 30 / 30 / 29 / 30 of 30
canaries detected on the original model, none on the retrained one, smallest adjusted p 0.22 / 1 /
0.12 / 0.34).
"""

from __future__ import annotations

import pytest
import torch

from audits.checks.result import Verdict
from tests.audits.canary_helpers import CanaryAudit, CanarySpec, figure_named, run_canary_audit

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _isolated_stores() -> None:
    """Overrides the root conftest's fixture (which needs pytest-django's ``settings``): these
    tests write only under pytest's tmp_path_factory, so they run with ``-p no:django``."""


# The bar for the population attack on memorised canaries.
MIN_TPR_AT_1PCT_FPR = 0.2
# The original model must have fitted (memorised) the canaries' wrong labels for any of this to
# mean something.
MIN_CANARY_ACCURACY = 0.9

SPECS = {
    # All ~455 training records (20 of them canaries). Full-batch Adam (batch >= records) and a
    # little weight decay: without them the logits of an over-fitted MLP grow without bound and
    # vary so much between shadow models that the OUT scores spread wider than the IN-OUT gap
    # (measured: detected fraction 0.3 with no weight decay at 300 epochs).
    "breast_cancer": CanarySpec(
        dataset="breast_cancer",
        canaries=20,
        recipe_config={
            "architecture": {
                "name": "mlp",
                "config": {
                    "in_features": 30,
                    "num_classes": 2,
                    "hidden": [128, 128],
                    "input_norm": "batchnorm",
                },
            },
            "epochs": 200,
            "batch_size": 512,
            "lr": 1e-2,
            "weight_decay": 1e-3,
        },
    ),
    # 1,000 ordinary training images + 30 canaries; an MLP on flattened pixels (a small CNN
    # over-fits the same way but costs ~3x the CPU time per model).
    "mnist": CanarySpec(
        dataset="mnist",
        canaries=30,
        n_ordinary=1000,
        flatten_images=True,
        recipe_config={
            "architecture": {
                "name": "mlp",
                "config": {
                    "in_features": 784,
                    "num_classes": 10,
                    "hidden": [256],
                    "input_norm": "none",
                },
            },
            "epochs": 60,
            "batch_size": 128,
            "lr": 3e-3,
        },
    ),
}

BOTH = ["breast_cancer", "mnist"]
# Power and TPR@1%FPR hold on breast cancer for some seeds only (see the module docstring).
MNIST_ONLY = ["mnist"]


@pytest.fixture(scope="module")
def audit(request, tmp_path_factory) -> CanaryAudit:
    """One canary audit per dataset (trained once, shared by the tests of this module)."""
    name = request.param
    result = run_canary_audit(SPECS[name], tmp_path_factory.mktemp(f"canaries-{name}"))
    print("\n" + result.summary())
    return result


@pytest.mark.parametrize("audit", BOTH, indirect=True)
def test_every_canary_has_in_and_out_shadow_models(audit: CanaryAudit) -> None:
    assert audit.spec.n_shadow >= 16
    n_in = audit.shadow_in.sum(axis=0)
    assert (n_in == audit.spec.n_shadow // 2).all()
    assert audit.original.untestable_ids == ()


@pytest.mark.parametrize("audit", BOTH, indirect=True)
def test_original_model_memorised_the_canaries(audit: CanaryAudit) -> None:
    assert audit.canary_accuracy_original >= MIN_CANARY_ACCURACY


@pytest.mark.parametrize("audit", BOTH, indirect=True)
def test_original_model_fails_the_per_record_test(audit: CanaryAudit) -> None:
    assert audit.original.verdict == Verdict.FAIL
    assert audit.original.n_detected >= 1


@pytest.mark.parametrize("audit", BOTH, indirect=True)
def test_retrained_model_passes_the_per_record_test(audit: CanaryAudit) -> None:
    assert audit.retrained.verdict == Verdict.PASS
    assert audit.retrained.n_detected == 0


@pytest.mark.parametrize("audit", MNIST_ONLY, indirect=True)
def test_power_check_shows_the_canaries_were_detectable(audit: CanaryAudit) -> None:
    assert audit.power.verdict == Verdict.PASS
    assert audit.power.detected_fraction >= audit.power.min_detected_fraction


@pytest.mark.parametrize("audit", BOTH, indirect=True)
def test_population_attack_flags_canaries_on_the_original_model_only(audit: CanaryAudit) -> None:
    assert audit.attack_original.verdict == Verdict.FAIL
    assert audit.attack_retrained.verdict != Verdict.FAIL
    tpr_retrained = figure_named(audit.attack_retrained, "tpr_at_fpr_0.01")
    assert tpr_retrained.applicable
    assert tpr_retrained.value < MIN_TPR_AT_1PCT_FPR


@pytest.mark.parametrize("audit", MNIST_ONLY, indirect=True)
def test_population_attack_reaches_the_tpr_bar_at_1pct_fpr(audit: CanaryAudit) -> None:
    tpr = figure_named(audit.attack_original, "tpr_at_fpr_0.01")
    assert tpr.applicable, tpr.not_applicable_reason
    assert tpr.value >= MIN_TPR_AT_1PCT_FPR


@pytest.mark.parametrize("audit", BOTH, indirect=True)
def test_shadow_calibrated_attack_reaches_the_tpr_bar_on_the_original_model_only(audit: CanaryAudit) -> None:
    """The attack the audit runs: each record's score in units of its OUT shadow models' scores.
    On breast cancer, where the raw attack's TPR at 1% FPR depends on the seed, this one measured
    1.00 / 0.95 / 0.90 / 1.00 (seeds 0-3) on the original and 0.10 / 0.00 / 0.10 / 0.00 on the
    retrained model."""
    tpr = figure_named(audit.attack_original_calibrated, "tpr_at_fpr_0.01")
    assert tpr.applicable, tpr.not_applicable_reason
    assert tpr.value >= MIN_TPR_AT_1PCT_FPR
    assert audit.attack_original_calibrated.verdict == Verdict.FAIL
    assert audit.attack_retrained_calibrated.verdict != Verdict.FAIL
    assert figure_named(audit.attack_retrained_calibrated, "tpr_at_fpr_0.01").value < MIN_TPR_AT_1PCT_FPR
