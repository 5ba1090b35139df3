"""NPO: Negative Preference Optimization against the frozen reference model (Zhang et al. 2024).

The forget texts are treated as dispreferred answers in DPO with no preferred one. The reference
is the model before unlearning, obtained by disabling the LoRA adapter, so no second copy of the
model is held. An optional retain term (``retain_weight > 0``, the default; 0 gives plain NPO)
adds the retain NLL as in GradDiff. Like open-unlearning's ``npo.py``, it extends GradDiff and
replaces only the forget term.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from workers.unlearning.base import ConfigError, MethodConfig
from workers.unlearning.lm.grad_diff import GradDiff, GradDiffConfig
from workers.unlearning.lm.losses import npo_loss, sequence_nll


@dataclass
class NPOConfig(GradDiffConfig):
    """GradDiff's settings plus ``beta``, the inverse temperature of the preference loss."""

    beta: float = 0.1

    def validate(self) -> None:
        super().validate()
        if self.beta <= 0:
            raise ConfigError(f"{type(self).__name__}.beta must be > 0, got {self.beta}")


class NPO(GradDiff, name="npo"):
    config_class: ClassVar[type[MethodConfig]] = NPOConfig
    config: NPOConfig

    def forget_loss(self, model: Any, forget_batch: dict[str, Any]) -> torch.Tensor:
        with torch.no_grad(), model.disable_adapter():
            reference = sequence_nll(model, forget_batch)
        return npo_loss(sequence_nll(model, forget_batch), reference, self.config.beta)
