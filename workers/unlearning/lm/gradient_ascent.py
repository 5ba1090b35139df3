"""Gradient ascent: maximise the LM loss on the forget texts (Jang et al. 2023).

The simplest LM unlearning method and the baseline the others are measured against. Its loss is
unbounded, so it is run for few epochs at a small learning rate; it has no retain term and
damages the model's other knowledge more than GradDiff or NPO.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from workers.unlearning.base import MethodConfig
from workers.unlearning.lm.loop import LMUnlearningConfig, LMUnlearningMethod
from workers.unlearning.lm.losses import mean_token_nll


@dataclass
class GradientAscentConfig(LMUnlearningConfig):
    """Only the shared LM settings (learning rate, epochs, LoRA, seed, max_length)."""


class GradientAscent(LMUnlearningMethod, name="gradient_ascent"):
    config_class: ClassVar[type[MethodConfig]] = GradientAscentConfig

    def loss(
        self, model: Any, forget_batch: dict[str, Any], retain_batch: dict[str, Any] | None
    ) -> torch.Tensor:
        """Minus the mean token NLL of the forget batch."""
        return -mean_token_nll(model, forget_batch)
