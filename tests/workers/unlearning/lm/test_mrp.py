"""MRP beyond the shared harness: the paper's claim at small scale (three successive requests, each
forgotten, the earlier ones still forgotten, held-out texts' NLL within 0.1 nats), the projection
maths with hand-made numbers, and the projections' way through the store (safetensors beside the
unchanged weights, applied on load, stacked by the next request, kept by other LM methods)."""

from __future__ import annotations

import pytest
import torch

from tests.workers.unlearning.lm.conftest import FORGET_KEYS, RECORDS, RETAIN_KEYS
from workers.unlearning.base import METHODS, ConfigError
from workers.unlearning.lm.data import lm_batches
from workers.unlearning.lm.losses import average_token_nll
from workers.unlearning.lm.mrp import ratio_directions, top_directions
from workers.unlearning.lm.projections import (
    apply_projection_tensors,
    orthonormal_rows,
    project_out,
    projected_layers,
    projection_tensors,
)

MEMBERS = FORGET_KEYS + RETAIN_KEYS
# Three requests, one after another, each on the version the one before made.
REQUESTS = [MEMBERS[0:4], MEMBERS[4:6], MEMBERS[6:8]]
# The paper's retain weight (1.2) moved the held-out NLL of this 64-wide, one-template model by up to
# 0.5 nats over three requests (measured); 3.0 keeps it within 0.1 with every request forgotten. Measured
# with the default start (ratio): held-out moves 0.051 / 0.087 / 0.083, the requests' texts rise 0.39 /
# 0.43 / 0.77 nats (with the first version's difference start and retain weight 2.5: -0.08 / -0.01 /
# -0.05 and 0.45 / 1.06 / 0.88; that start wrecks SmolLM2, see workers/unlearning/lm/mrp.py).
CONTINUAL = {"lr": 0.15, "epochs": 20, "retain_weight": 3.0}
HELD_OUT_MOVE = 0.1


def _batches(tokenizer, keys, batch_size=4):
    return lm_batches(tokenizer, [(k, RECORDS[k]) for k in keys], max_length=64, batch_size=batch_size)


def _mrp(config=None):
    return METHODS.get("mrp")(config or CONTINUAL)


def test_project_out_removes_exactly_the_basis_directions():
    basis = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.6, 0.8]])
    hidden = torch.tensor([[2.0, 3.0, 4.0]])
    projected = project_out(hidden, basis)
    assert torch.allclose(projected @ basis.T, torch.zeros(1, 2), atol=1e-6)
    # 3*0.6 + 4*0.8 = 5 along the second row is removed; (0, 0.8, -0.6) is kept as it was.
    assert torch.allclose(projected, torch.tensor([[0.0, 0.0, 0.0]]) + (3 * 0.8 - 4 * 0.6) * torch.tensor(
        [[0.0, 0.8, -0.6]]), atol=1e-6)
    assert torch.equal(project_out(hidden, torch.zeros(0, 3)), hidden)


def test_orthonormal_rows_keep_the_span_of_the_rows_before():
    old = orthonormal_rows(torch.tensor([[1.0, 1.0, 0.0]]))
    both = orthonormal_rows(torch.cat([old, torch.tensor([[0.0, 1.0, 1.0]])]))
    assert torch.allclose(both @ both.T, torch.eye(2), atol=1e-6)
    assert torch.allclose(old @ both.T @ both, old, atol=1e-6)  # the old direction is still projected out
    with pytest.raises(ValueError, match="cannot be orthonormal"):
        orthonormal_rows(torch.ones(3, 2))


def test_top_directions_skip_what_is_already_projected_out():
    matrix = torch.diag(torch.tensor([5.0, 3.0, -1.0]))
    assert torch.allclose(top_directions(matrix, torch.zeros(0, 3), 1).abs(), torch.tensor([[1.0, 0.0, 0.0]]))
    # With e0 gone, the best direction left is e1 (eigenvalue 3), not e0 again nor e2.
    chosen = top_directions(matrix, torch.tensor([[1.0, 0.0, 0.0]]), 1)
    assert torch.allclose(chosen.abs(), torch.tensor([[0.0, 1.0, 0.0]]), atol=1e-6)
    with pytest.raises(ValueError, match="do not fit"):
        top_directions(matrix, torch.eye(3)[:2], 2)


def test_three_successive_requests_each_forgotten_and_held_out_texts_within_a_tenth_of_a_nat(
    memorised_model, tokenizer, heldout_batches, baseline
):
    def nll(model, keys):
        return average_token_nll(model, _batches(tokenizer, keys))

    before = {i: nll(memorised_model, keys) for i, keys in enumerate(REQUESTS)}
    model, erased, right_after, bases = memorised_model, [], {}, []
    for i, keys in enumerate(REQUESTS):
        erased += keys
        retain = [k for k in MEMBERS if k not in erased]
        model, result = _mrp().unlearn(model, _batches(tokenizer, keys), _batches(tokenizer, retain, 8))
        right_after[i] = nll(model, keys)
        held_out = average_token_nll(model, heldout_batches)
        assert abs(held_out - baseline["heldout"]) <= HELD_OUT_MOVE, (i, baseline["heldout"], held_out)
        assert right_after[i] >= before[i] + 0.3, (i, before[i], right_after[i])
        assert result.details["projection_rank_after"] == {"0": 2 * (i + 1), "1": 2 * (i + 1)}
        bases.append(projected_layers(model))
    for i in range(len(REQUESTS) - 1):
        # Earlier requests still hold: their texts stay at least half as far above where they were.
        still = nll(model, REQUESTS[i])
        assert still - before[i] >= 0.5 * (right_after[i] - before[i]), (i, before[i], right_after[i], still)
        for layer, basis in bases[i].items():  # and their directions are still projected out
            final = bases[-1][layer]
            assert torch.allclose(basis @ final.T @ final, basis, atol=1e-4)
    assert all(torch.equal(a, b) for a, b in zip(memorised_model.state_dict().values(),
                                                  model.state_dict().values(), strict=True))


def test_projections_are_stored_beside_the_weights_applied_on_load_and_stacked_by_the_next_request(
    memorised_model, tokenizer, forget_batches, retain_batches, tmp_path
):
    from workers.artifacts import ArtifactStore
    from workers.training.base import TrainingRun
    from workers.training.lm import LoRACausalLMConfig, LoRACausalLMRecipe
    from workers.training.membership import MembershipRow

    store = ArtifactStore(tmp_path)
    recipe = LoRACausalLMRecipe(LoRACausalLMConfig())

    def stored(model):
        run = TrainingRun(recipe.name, recipe.config.to_dict(), model, [MembershipRow(k, 0, 0, 0) for k in MEMBERS],
                          {}, tokenizer=tokenizer)
        ref = recipe.save(store, run)
        return store.manifest(ref.artifact_id), LoRACausalLMRecipe.load(store, store.manifest(ref.artifact_id)).model

    parent_manifest, _ = stored(memorised_model)
    first, _ = _mrp({"lr": 0.15, "epochs": 2}).unlearn(memorised_model, forget_batches, retain_batches)
    manifest, loaded = stored(first)
    assert "projections" not in parent_manifest.files and "projections" in manifest.files
    # Weights unchanged: the same blob as the parent's; the projections a safetensors blob of their own.
    assert manifest.files["weights"] == parent_manifest.files["weights"]
    assert set(projection_tensors(loaded)) == {"layer.0", "layer.1"}
    assert average_token_nll(loaded, forget_batches) == pytest.approx(average_token_nll(first, forget_batches),
                                                                      abs=1e-5)
    second, result = _mrp({"lr": 0.15, "epochs": 2}).unlearn(loaded, forget_batches, retain_batches)
    assert result.details["projection_rank_before"] == {"0": 2, "1": 2}
    assert result.details["projection_rank_after"] == {"0": 4, "1": 4}
    # Another LM method on a projected version keeps the projections (LoRA merges around them).
    after_npo, _ = METHODS.get("npo")({"epochs": 1}).unlearn(second, forget_batches, retain_batches)
    _, reloaded = stored(after_npo)
    assert {k: v.shape for k, v in projection_tensors(reloaded).items()} == {"layer.0": (4, 64), "layer.1": (4, 64)}


def test_stored_projections_that_do_not_fit_are_refused(memorised_model):
    import copy

    model = copy.deepcopy(memorised_model)
    with pytest.raises(ValueError, match="does not fit"):
        apply_projection_tensors(model, {"layer.0": torch.eye(32)[:2]})
    with pytest.raises(ValueError, match="not orthonormal"):
        apply_projection_tensors(model, {"layer.0": 2 * torch.eye(64)[:2]})
    with pytest.raises(ValueError, match="decoder layers 0..1"):
        apply_projection_tensors(model, {"layer.5": torch.eye(64)[:2]})


def test_config_and_layers_are_checked(memorised_model, forget_batches, retain_batches):
    for bad in ({"rank": 0}, {"layers": []}, {"layers": [0, 0]}, {"layers": [-1]}):
        with pytest.raises(ConfigError):
            _mrp(bad)
    with pytest.raises(ValueError, match="layers \\[7\\] do not exist"):
        _mrp({"layers": [7], "epochs": 1}).unlearn(memorised_model, forget_batches, retain_batches)
    _, result = _mrp({"layers": [1], "epochs": 1}).unlearn(memorised_model, forget_batches, retain_batches)
    assert result.details["projection_layers"] == [1] and result.details["projection_rank_after"] == {"1": 2}


def test_the_ratio_start_skips_a_direction_every_text_uses_strongly():
    # Forget and retain texts share a huge dimension (0: second moment 1e4 on both); the forget texts
    # alone use dimension 2. The difference rule cannot tell them apart once the huge one differs a
    # little (1e4 + 50 against 1e4); the ratio rule picks dimension 2.
    forget = torch.diag(torch.tensor([1e4 + 50.0, 1.0, 5.0, 1.0]))
    retain = torch.diag(torch.tensor([1e4, 1.0, 1.0, 1.0]))
    none = torch.zeros(0, 4)
    assert top_directions(forget - retain, none, 1).abs().argmax() == 0
    assert ratio_directions(forget, retain, none, 1, ridge=0.1).abs().argmax() == 2
    # Directions already projected out are never chosen again.
    chosen = ratio_directions(forget, retain, torch.eye(4)[2:3], 1, ridge=0.1)
    assert chosen[0, 2].abs() < 1e-6
