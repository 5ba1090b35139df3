"""The shared loop and the pure maths of the approximate methods, on hand-made numbers."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn

from workers.unlearning.base import ConfigError
from workers.unlearning.influence import (
    Influence,
    layer_statistics,
    newton_step_exact,
    newton_step_kfac,
)
from workers.unlearning.l1_sparse import magnitude_prune_mask
from workers.unlearning.loop import LossMethod, LossMethodConfig, UnlearningRun
from workers.unlearning.salun import random_other_labels, saliency_mask
from workers.unlearning.scrub import distillation_kl
from workers.unlearning.ssd import dampening_factors

torch.set_num_threads(1)


def batches(
    count: int, size: int = 4, features: int = 3, seed: int = 0
) -> list[tuple[list[str], Tensor, Tensor]]:
    """A list of ``count`` classifier batches (a list is re-iterable, like a DataLoader)."""
    generator = torch.Generator().manual_seed(seed)
    return [
        (
            [f"r{b}-{i}" for i in range(size)],
            torch.randn(size, features, generator=generator),
            torch.randint(0, 2, (size,), generator=generator),
        )
        for b in range(count)
    ]


class RetainCrossEntropy(LossMethod):
    """A minimal LossMethod for exercising the loop (not registered)."""

    name = "test_retain_ce"
    data = "retain"

    def loss(
        self, model: nn.Module, forget_batch: Any, retain_batch: Any, run: UnlearningRun
    ) -> Tensor:
        return nn.functional.cross_entropy(model(retain_batch[0]), retain_batch[1])


class PairedCounter(RetainCrossEntropy):
    data = "paired"


class Exploding(RetainCrossEntropy):
    def loss(
        self, model: nn.Module, forget_batch: Any, retain_batch: Any, run: UnlearningRun
    ) -> Tensor:
        return super().loss(model, forget_batch, retain_batch, run) * float("inf")


class FreezesFirstLayer(RetainCrossEntropy):
    def prepare(self, model: nn.Module, run: UnlearningRun) -> dict[str, Any]:
        # Only the second layer's weight may change, and only its first row.
        weight = dict(model.named_parameters())["1.weight"]
        mask = torch.zeros_like(weight)
        mask[0] = 1
        run.gradient_mask = {"1.weight": mask}
        return {}


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 5), nn.Linear(5, 2))


def test_loop_refuses_a_one_shot_iterator() -> None:
    with pytest.raises(ValueError, match="re-iterable"):
        RetainCrossEntropy().unlearn(small_model(), iter(batches(2)), batches(2))


def test_loop_leaves_the_callers_random_state_alone() -> None:
    model = small_model()
    torch.manual_seed(123)
    state = torch.get_rng_state()
    RetainCrossEntropy().unlearn(model, batches(1), batches(3))
    assert torch.equal(torch.get_rng_state(), state)


def test_loop_counts_steps_per_epoch_and_paired_walks_the_longer_set() -> None:
    config = LossMethodConfig(epochs=3)
    _, result = RetainCrossEntropy(config).unlearn(small_model(), batches(1), batches(4))
    assert result.steps == 12
    _, result = PairedCounter(LossMethodConfig(epochs=2)).unlearn(
        small_model(), batches(5), batches(2)
    )
    assert result.steps == 10


def test_loop_stops_on_a_non_finite_loss() -> None:
    with pytest.raises(FloatingPointError, match="loss became inf"):
        Exploding().unlearn(small_model(), batches(1), batches(2))


def test_gradient_mask_limits_what_changes() -> None:
    model = small_model()
    unlearned, _ = FreezesFirstLayer(LossMethodConfig(lr=0.1)).unlearn(
        model, batches(1), batches(3)
    )
    before, after = model.state_dict(), unlearned.state_dict()
    for name in ("0.weight", "0.bias", "1.bias"):
        assert torch.equal(before[name], after[name]), name
    assert torch.equal(before["1.weight"][1], after["1.weight"][1])
    assert not torch.equal(before["1.weight"][0], after["1.weight"][0])


def test_loss_config_refuses_unknown_optimizer_and_bad_momentum() -> None:
    with pytest.raises(ConfigError, match="optimizer"):
        LossMethodConfig.from_dict({"optimizer": "lbfgs"})
    with pytest.raises(ConfigError, match="momentum"):
        LossMethodConfig.from_dict({"momentum": 1.0})


def test_ssd_dampening_on_hand_numbers() -> None:
    forget = torch.tensor([1.0, 50.0, 200.0, 0.0])
    data = torch.tensor([1.0, 1.0, 1.0, 0.0])
    factors = dampening_factors(forget, data, selection_weighting=10.0, dampening_constant=1.0)
    # 1 and 0 are not selected (not > 10x); 50 -> 1/50; 200 -> 1/200.
    assert torch.allclose(factors, torch.tensor([1.0, 0.02, 0.005, 1.0]))
    gentle = dampening_factors(forget, data, selection_weighting=10.0, dampening_constant=100.0)
    assert torch.allclose(gentle, torch.tensor([1.0, 1.0, 0.5, 1.0]))


def test_saliency_mask_keeps_the_largest_gradients_globally() -> None:
    gradients = {"a": torch.tensor([0.1, -5.0]), "b": torch.tensor([[3.0, 0.2], [-0.3, 4.0]])}
    mask = saliency_mask(gradients, 0.5)
    assert mask["a"].tolist() == [0.0, 1.0]
    assert mask["b"].tolist() == [[1.0, 0.0], [0.0, 1.0]]


def test_random_other_labels_never_keep_the_label() -> None:
    targets = torch.arange(10).repeat(50)
    drawn = random_other_labels(targets, 10, torch.Generator().manual_seed(0))
    assert not (drawn == targets).any()
    assert set(drawn.tolist()) == set(range(10))


def test_magnitude_pruning_hits_the_sparsity_and_spares_biases() -> None:
    model = nn.Sequential(nn.Linear(10, 20), nn.Linear(20, 4))
    mask = magnitude_prune_mask(model, 0.5)
    assert set(mask) == {"0.weight", "1.weight"}
    kept = sum(int(m.sum()) for m in mask.values())
    assert kept == (10 * 20 + 20 * 4) // 2
    smallest_kept = min(
        p.detach().abs()[mask[n] == 1].min() for n, p in model.named_parameters() if n in mask
    )
    largest_pruned = max(
        p.detach().abs()[mask[n] == 0].max() for n, p in model.named_parameters() if n in mask
    )
    assert smallest_kept > largest_pruned


def test_distillation_kl_is_zero_only_when_outputs_agree() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    assert distillation_kl(logits, logits, 4.0).item() == pytest.approx(0.0, abs=1e-7)
    assert distillation_kl(logits, logits.flip(1), 4.0).item() > 0.01


def test_kfac_solve_matches_the_dense_kronecker_solve() -> None:
    generator = torch.Generator().manual_seed(0)
    a_root = torch.randn(3, 3, generator=generator, dtype=torch.float64)
    g_root = torch.randn(4, 4, generator=generator, dtype=torch.float64)
    a, g = a_root @ a_root.T, g_root @ g_root.T
    gradient = torch.randn(3, 4, generator=generator, dtype=torch.float64)
    dense = torch.kron(a, g)
    # newton_step_exact adds damping * mean(diag(H)); mean(diag(A kron G)) = mean(diag A) mean(diag G).
    assert torch.allclose(
        newton_step_kfac(a, g, gradient, 0.1), newton_step_exact(dense, gradient, 0.1)
    )


def test_exact_layer_hessian_matches_autograd() -> None:
    model = small_model()
    layer = model[1]
    data = batches(2, size=3)
    stats = layer_statistics(model, layer, ((x, y) for _, x, y in data), exact=True, curvature=True)
    inputs = torch.cat([x for _, x, _ in data])
    targets = torch.cat([y for _, _, y in data])
    features = model[0](inputs).detach()

    def summed_loss(flat: Tensor) -> Tensor:
        theta = flat.view(2, 6)
        logits = features @ theta[:, :5].T + theta[:, 5]
        return nn.functional.cross_entropy(logits, targets, reduction="sum")

    theta = torch.cat([layer.weight.detach(), layer.bias.detach().unsqueeze(1)], dim=1).double()
    features = features.double()
    expected_hessian = torch.autograd.functional.hessian(summed_loss, theta.flatten())
    theta.requires_grad_(True)
    expected_gradient = torch.autograd.grad(summed_loss(theta.flatten()), theta)[0]
    assert stats.count == 6
    assert torch.allclose(stats.hessian, expected_hessian, atol=1e-6)
    assert torch.allclose(stats.gradient, expected_gradient, atol=1e-6)


def test_influence_refuses_a_model_whose_last_linear_is_not_the_output() -> None:
    model = nn.Sequential(nn.Linear(3, 2), nn.Tanh())
    with pytest.raises(ValueError, match="last nn.Linear"):
        Influence().unlearn(model, batches(1), batches(2))


def test_influence_refuses_an_exact_hessian_that_is_too_large() -> None:
    method = Influence({"hessian": "exact", "max_exact_parameters": 5})
    with pytest.raises(ValueError, match="max_exact_parameters"):
        method.unlearn(small_model(), batches(1), batches(2))
