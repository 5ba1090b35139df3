"""SalUn: saliency-masked random-label unlearning.

Fan et al., "SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency" (ICLR 2024).
A weight is *salient* when the forget loss's gradient on it is large; only salient weights are
updated while the model learns random (wrong) labels on the forget set and the true labels on the
retain set. The mask keeps the change local to what encodes the forget set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from workers.unlearning.loop import LossMethod, LossMethodConfig, UnlearningRun, require_range


@dataclass
class SalunConfig(LossMethodConfig):
    """``saliency_fraction``: share of parameter entries updated (the most salient ones).

    ``forget_weight`` is the weight of one forget record against one retain record. At 1 every
    record counts the same, as in the paper's training on the concatenated sets; the paired loop
    sees each forget record far more often than each retain record, so the loss rescales it by
    ``forget_records / retain_records`` to keep that balance."""

    epochs: int = 3
    saliency_fraction: float = 0.5
    forget_weight: float = 1.0

    def validate(self) -> None:
        super().validate()
        require_range(self, "saliency_fraction", 0.0, 1.0, low_open=True)
        require_range(self, "forget_weight", 0.0, float("inf"), low_open=True)


def saliency_mask(gradients: dict[str, Tensor], fraction: float) -> dict[str, Tensor]:
    """0/1 masks selecting the ``fraction`` of entries with the largest |gradient|, globally."""
    magnitudes = torch.cat([g.abs().flatten() for g in gradients.values()])
    keep = max(1, int(round(fraction * magnitudes.numel())))
    threshold = torch.topk(magnitudes, keep).values.min()
    return {name: (g.abs() >= threshold).to(g.dtype) for name, g in gradients.items()}


def random_other_labels(targets: Tensor, num_classes: int, generator: torch.Generator) -> Tensor:
    """A uniformly drawn label different from each target (drawn on CPU for reproducibility)."""
    shift = torch.randint(1, num_classes, targets.shape, generator=generator).to(targets.device)
    return (targets + shift) % num_classes


class Salun(LossMethod, name="salun"):
    """Mask from the forget gradient, then paired random-label forget + retain steps."""

    config_class = SalunConfig
    data = "paired"

    def prepare(self, model: nn.Module, run: UnlearningRun) -> dict[str, Any]:
        config = self.config
        assert isinstance(config, SalunConfig)
        # Eval mode: the saliency should not depend on dropout draws or move batch-norm statistics.
        model.eval()
        model.zero_grad(set_to_none=True)
        num_classes = 0
        for inputs, targets in run.batches(run.forget):
            logits = model(inputs)
            num_classes = logits.shape[1]
            # Summed so every forget record weighs the same whatever the batch sizes.
            nn.functional.cross_entropy(logits, targets, reduction="sum").backward()
        gradients = {
            name: (p.grad if p.grad is not None else torch.zeros_like(p)).detach()
            for name, p in model.named_parameters()
            if p.requires_grad
        }
        model.zero_grad(set_to_none=True)
        run.gradient_mask = saliency_mask(gradients, config.saliency_fraction)
        run.state["num_classes"] = num_classes
        salient = sum(int(m.sum().item()) for m in run.gradient_mask.values())
        total = sum(m.numel() for m in run.gradient_mask.values())
        return {"salient_parameters": salient, "parameters": total}

    def loss(
        self, model: nn.Module, forget_batch: Any, retain_batch: Any, run: UnlearningRun
    ) -> Tensor:
        config = self.config
        assert (
            isinstance(config, SalunConfig)
            and forget_batch is not None
            and retain_batch is not None
        )
        forget_inputs, forget_targets = forget_batch
        random_targets = random_other_labels(
            forget_targets, run.state["num_classes"], run.generator
        )
        forget_loss = nn.functional.cross_entropy(model(forget_inputs), random_targets)
        retain_loss = nn.functional.cross_entropy(model(retain_batch[0]), retain_batch[1])
        balance = run.forget_records / run.retain_records
        return config.forget_weight * balance * forget_loss + retain_loss
