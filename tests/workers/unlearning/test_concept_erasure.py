"""LEACE concept erasure ("stop using attribute X") on scikit-learn's digits, attribute = digit parity.

The issue's headline check at small scale: after LEACE on a classifier's hidden layer, a linear probe
reads parity at chance while a non-linear (MLP) probe's figure is printed beside it; the eraser is
stored as safetensors tensors outside the weights, and the class never counts as a person's erasure.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
import torch
from safetensors.torch import load, save
from sklearn.datasets import load_digits
from torch import nn

from audits.checks.concept_probe import (
    CHANCE_SHUFFLES,
    chance_auc_standard_error,
    concept_probe,
    distance_from_chance,
    permutation_p_value,
    shuffled_aucs,
)
from audits.checks.registry import audit_cannot_confirm
from audits.checks.result import Verdict
from audits.checks.verdict import final_verdict
from workers.unlearning.catalogue import CONCEPT, MethodSpec, counts_as_erasure, weakest_guarantee
from workers.unlearning.concept_erasure import (
    Leace,
    apply_eraser_tensors,
    attribute_targets,
    eraser_tensors,
    layer_outputs,
)

LAYER = "1"  # the hidden layer's ReLU output


def _model() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


@cache
def digits_classifier() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A small MLP trained on all 1,797 digits (60 full-batch Adam steps), the inputs and the digits."""
    images, labels = load_digits(return_X_y=True)
    inputs, targets = torch.tensor(images / 16.0, dtype=torch.float32), torch.tensor(labels)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = _model()
        optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
        for _ in range(60):
            optimiser.zero_grad()
            nn.functional.cross_entropy(model(inputs), targets).backward()
            optimiser.step()
    return model.eval(), inputs, targets


def parity_batches(inputs: torch.Tensor, digits: torch.Tensor, size: int = 256) -> list:
    parity = digits % 2
    return [([f"r{i}" for i in range(start, min(start + size, len(digits)))], inputs[start:start + size],
             parity[start:start + size]) for start in range(0, len(digits), size)]


def test_leace_brings_a_linear_probe_to_chance_and_shows_the_non_linear_probe(capsys):
    model, inputs, digits = digits_classifier()
    # The eraser is fitted on 1,200 digits and probed on the other 597 (5-fold out-of-fold AUC).
    order = torch.randperm(len(digits), generator=torch.Generator().manual_seed(0))
    fit, held = order[:1200], order[1200:]
    erased, result = Leace({"layer": LAYER}).unlearn(model, parity_batches(inputs[fit], digits[fit]), [])
    assert result.guarantee_class == "concept_erased"
    assert result.details["records_fitted"] == 1200 and result.details["erased_rank"] == 1

    before, parity = layer_outputs(model, LAYER, parity_batches(inputs[held], digits[held]))
    after, _ = layer_outputs(erased, LAYER, parity_batches(inputs[held], digits[held]))
    probe = concept_probe(representations=after.numpy(), attribute=parity.numpy(),
                          original_representations=before.numpy())
    with capsys.disabled():
        print(f"\nLEACE on digits' parity: linear probe AUC {probe.original_linear_auc:.3f} -> "
              f"{probe.linear_auc:.3f}; MLP probe AUC {probe.original_nonlinear_auc:.3f} -> "
              f"{probe.nonlinear_auc:.3f}; shuffled linear AUC's RMS distance from chance "
              f"{probe.chance.rms_distance:.3f} (Hanley-McNeil {probe.chance.hanley_mcneil:.3f}), "
              f"permutation p {probe.chance.linear_p_value:.3f}")
    assert probe.original_linear_auc > 0.9  # parity was linearly decodable: the check had power
    assert probe.verdict == Verdict.PASS, probe.reason
    assert distance_from_chance(probe.linear_auc) <= 0.1
    assert "linear probes only" in probe.reason and "non-linear probe" in probe.reason
    # The classifier still classifies: LEACE removed one direction of 64.
    accuracy = (erased(inputs).argmax(1) == digits).float().mean().item()
    assert accuracy > 0.85

    verdict = final_verdict(guarantee_class="concept_erased", checks=[probe])
    assert verdict.verdict == Verdict.PASS
    assert final_verdict(guarantee_class="concept_erased", checks=[]).verdict == Verdict.INCONCLUSIVE


def test_the_probe_fails_on_representations_that_still_hold_the_attribute():
    model, inputs, digits = digits_classifier()
    features, parity = layer_outputs(model, LAYER, parity_batches(inputs[:500], digits[:500]))
    probe = concept_probe(representations=features.numpy(), attribute=parity.numpy())
    assert probe.verdict == Verdict.FAIL and probe.linear_auc > 0.9
    # No shuffle of the attribute comes near 0.9: the smallest permutation p-value there is.
    assert probe.chance.linear_p_value == pytest.approx(1 / (CHANCE_SHUFFLES + 1))
    assert f"permutation p = {1 / (CHANCE_SHUFFLES + 1):.3g}" in probe.reason
    assert final_verdict(guarantee_class="concept_erased", checks=[probe]).verdict == Verdict.FAIL
    rng = np.random.default_rng(0)
    # A tolerance of 0.2: on these 300 records a refitted probe's AUC at chance strays by about 0.056 (RMS
    # over shuffles of the attribute), too much for 0.1, and the too-few-records gate would speak first.
    no_power = concept_probe(representations=rng.normal(size=(300, 4)), attribute=rng.integers(0, 2, 300),
                             original_representations=rng.normal(size=(300, 4)), tolerance=0.2)
    assert no_power.verdict == Verdict.INCONCLUSIVE and "before erasure" in no_power.reason
    too_few = concept_probe(representations=features.numpy()[:60], attribute=parity.numpy()[:60])
    assert too_few.verdict == Verdict.INCONCLUSIVE and "too few records" in too_few.reason


def test_too_few_records_is_judged_by_the_shuffled_probes_spread_not_by_a_formula():
    # 160 records whose 32 features hold nothing of the attribute. Hanley & McNeil's standard error of an
    # AUC at chance (0.046) would call them enough for the 0.1 tolerance (twice it is 0.092), but a probe
    # refitted per fold strays farther: over shuffles of the attribute its out-of-fold AUC's RMS distance
    # from 0.5 is above 0.05 (0.066 to 0.089 for six draws of such records), so the check cannot tell.
    rng = np.random.default_rng(0)
    representations, attribute = rng.normal(size=(160, 32)), np.arange(160) % 2
    probe = concept_probe(representations=representations, attribute=attribute, seed=3)
    chance = probe.chance
    assert 2 * chance.hanley_mcneil <= probe.tolerance < 2 * chance.rms_distance
    assert probe.verdict == Verdict.INCONCLUSIVE and "too few records" in probe.reason, probe.reason
    assert chance.noise == chance.rms_distance and chance.shuffles == CHANCE_SHUFFLES
    distances = [distance_from_chance(auc) for auc in chance.shuffled_linear_aucs]
    assert chance.max_distance == max(distances) and len(distances) == CHANCE_SHUFFLES
    assert chance.linear_p_value == permutation_p_value(distance_from_chance(probe.linear_auc), np.array(distances))
    assert "shuffles of the attribute" in probe.rule and "Hanley-McNeil" in probe.rule
    # The shuffles are drawn from the check's seed: the same seed, the same first shuffles.
    first = shuffled_aucs(representations, attribute, kind="linear", shuffles=2, seed=3)
    assert tuple(first) == chance.shuffled_linear_aucs[:2]
    # The p-value counts the observed AUC among the shuffles: (1 + 2 at least as far) / (3 + 1).
    assert permutation_p_value(0.05, np.array([0.01, 0.05, 0.2])) == pytest.approx(0.75)


def test_the_eraser_is_stored_as_safetensors_beside_unchanged_weights():
    model, inputs, digits = digits_classifier()
    erased, _ = Leace({"layer": LAYER}).unlearn(model, parity_batches(inputs, digits), [])
    assert erased.state_dict().keys() == model.state_dict().keys()  # the weights file is the parent's
    blob = save(eraser_tensors(erased))
    restored = _model()
    restored.load_state_dict(erased.state_dict())
    apply_eraser_tensors(restored, load(blob))
    assert torch.equal(restored(inputs), erased(inputs))
    assert not torch.equal(model(inputs), erased(inputs))
    with pytest.raises(ValueError, match="lacks bias"):
        apply_eraser_tensors(_model(), {k: v for k, v in load(blob).items() if not k.endswith("bias")})
    with pytest.raises(ValueError, match="already has a concept eraser"):
        apply_eraser_tensors(erased, load(blob))


def test_a_plain_recipe_version_stores_and_serves_its_eraser(tmp_path):
    from workers.artifacts import ArtifactStore
    from workers.training import load_run, save_run
    from workers.training.architectures import build_model
    from workers.training.base import TrainingRun
    from workers.training.membership import MembershipRow

    _, inputs, digits = digits_classifier()
    architecture = {"name": "mlp", "config": {"in_features": 64, "num_classes": 10, "hidden": [32],
                                              "input_norm": "none"}}
    torch.manual_seed(0)
    model = build_model(architecture).eval()
    erased, _ = Leace({"layer": "act0"}).unlearn(model, parity_batches(inputs, digits), [])
    run = TrainingRun("plain", {"architecture": architecture}, erased, [MembershipRow("r0", 0, 0, 0)])
    store = ArtifactStore(tmp_path)
    ref = save_run(store, run)
    assert "concept_erasers" in store.manifest(ref.artifact_id).files
    loaded = load_run(store, ref.artifact_id)
    with torch.no_grad():
        assert torch.equal(loaded.model(inputs), erased(inputs))
        assert not torch.equal(loaded.model(inputs), model(inputs))
    plain = save_run(store, TrainingRun("plain", {"architecture": architecture}, model, run.membership))
    assert "concept_erasers" not in store.manifest(plain.artifact_id).files


def test_bad_input_is_refused_by_name():
    model, inputs, digits = digits_classifier()
    with pytest.raises(ValueError, match="LeaceConfig.layer"):
        Leace({}).unlearn(model, parity_batches(inputs, digits), [])
    with pytest.raises(ValueError, match="no layer 'nope'"):
        Leace({"layer": "nope"}).unlearn(model, parity_batches(inputs, digits), [])
    with pytest.raises(ValueError, match="single value"):
        attribute_targets(torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="tolerance"):
        concept_probe(representations=np.zeros((4, 2)), attribute=np.array([0, 1, 0, 1]), tolerance=0.7)
    with pytest.raises(ValueError, match="at least 5 records"):
        concept_probe(representations=np.zeros((4, 2)), attribute=np.array([0, 1, 0, 1]))
    with pytest.raises(ValueError, match="chance_shuffles"):
        concept_probe(representations=np.zeros((10, 2)), attribute=np.arange(10) % 2, chance_shuffles=0)
    with pytest.raises(ValueError, match="at least one shuffled distance"):
        permutation_p_value(0.1, np.array([]))


def test_concept_erasure_is_its_own_class_and_never_a_persons_erasure():
    assert not counts_as_erasure("concept_erased") and not counts_as_erasure("suppressed")
    assert counts_as_erasure("exact") and counts_as_erasure("approximate")
    assert weakest_guarantee("approximate", "concept_erased") == "concept_erased"
    said = audit_cannot_confirm(guarantee_class="concept_erased", model_kind="classifier")
    assert said and "not erasure of anyone's data" in said
    with pytest.raises(ValueError, match="concept_erased is the class of concept erasure methods"):
        MethodSpec("x", CONCEPT, "approximate", "m")
    with pytest.raises(ValueError, match="concept_erased is the class of concept erasure methods"):
        MethodSpec("x", "classifier", "concept_erased", "m")
    # Hanley & McNeil at AUC 0.5, by hand: sqrt((10 + 20 + 1) / (12 * 10 * 20)) = 0.1137
    assert chance_auc_standard_error(10, 20) == pytest.approx(0.11365, abs=1e-4)
