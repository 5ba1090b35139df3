"""l1-sparse unlearning: prune first, then fine-tune on the retain set with an l1 penalty.

Jia et al., "Model Sparsity Can Simplify Machine Unlearning" (NeurIPS 2023). One-shot global
magnitude pruning removes the smallest weights (memorised details tend to live in many small
weights); retain fine-tuning with a linearly decaying l1 penalty then recovers utility while
keeping the model sparse. Pruned weights stay zero throughout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from workers.unlearning.loop import LossMethod, LossMethodConfig, UnlearningRun, require_range


@dataclass
class L1SparseConfig(LossMethodConfig):
    """``sparsity``: fraction of weight entries pruned (0 skips pruning); ``l1_weight``: the
    penalty's starting coefficient on the sum of absolute parameter values (decays to 0)."""

    epochs: int = 5
    sparsity: float = 0.5
    l1_weight: float = 5e-5

    def validate(self) -> None:
        super().validate()
        require_range(self, "sparsity", 0.0, 0.99)
        require_range(self, "l1_weight", 0.0, float("inf"))


def magnitude_prune_mask(model: nn.Module, sparsity: float) -> dict[str, Tensor]:
    """0/1 masks keeping the largest-magnitude ``1 - sparsity`` of all weight-matrix entries.

    One global threshold across layers (global pruning keeps layers' relative sizes). Biases and
    normalisation parameters (1-d tensors) are never pruned; they are tiny and pruning them hurts.
    """
    weights = {name: p.detach() for name, p in model.named_parameters() if p.dim() > 1}
    if sparsity == 0 or not weights:
        return {name: torch.ones_like(w) for name, w in weights.items()}
    magnitudes = torch.cat([w.abs().flatten() for w in weights.values()])
    pruned = int(sparsity * magnitudes.numel())
    if pruned == 0:
        return {name: torch.ones_like(w) for name, w in weights.items()}
    threshold = torch.kthvalue(magnitudes.cpu(), pruned).values.to(magnitudes.device)
    return {name: (w.abs() > threshold).to(w.dtype) for name, w in weights.items()}


class L1Sparse(LossMethod, name="l1_sparse"):
    """Prune by magnitude, then minimise retain cross-entropy + decaying l1 penalty."""

    config_class = L1SparseConfig
    data = "retain"

    def prepare(self, model: nn.Module, run: UnlearningRun) -> dict[str, Any]:
        config = self.config
        assert isinstance(config, L1SparseConfig)
        mask = magnitude_prune_mask(model, config.sparsity)
        parameters = dict(model.named_parameters())
        with torch.no_grad():
            for name, keep in mask.items():
                parameters[name].mul_(keep)
        run.weight_mask = mask
        total = sum(m.numel() for m in mask.values())
        kept = sum(int(m.sum().item()) for m in mask.values())
        return {"pruned_weights": total - kept, "prunable_weights": total}

    def loss(
        self, model: nn.Module, forget_batch: Any, retain_batch: Any, run: UnlearningRun
    ) -> Tensor:
        assert retain_batch is not None
        inputs, targets = retain_batch
        return nn.functional.cross_entropy(model(inputs), targets)

    def regularizer(self, model: nn.Module, run: UnlearningRun) -> Tensor | None:
        config = self.config
        assert isinstance(config, L1SparseConfig)
        # Linear decay: strong sparsity pressure early, plain fine-tuning at the end.
        coefficient = config.l1_weight * (1.0 - run.step / max(run.total_steps, 1))
        if coefficient == 0:
            return None
        return coefficient * sum(p.abs().sum() for p in model.parameters())
