"""GradDiff: gradient ascent on the forget texts plus gradient descent on the retain texts.

``loss = -forget_weight * NLL(forget) + retain_weight * NLL(retain)`` (Liu et al. 2022; the
``grad_diff`` of open-unlearning). The retain term keeps the model's other knowledge while the
forget term pushes the forgotten texts' likelihood down.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from workers.unlearning.base import ConfigError, MethodConfig
from workers.unlearning.lm.loop import LMUnlearningConfig, LMUnlearningMethod
from workers.unlearning.lm.losses import mean_token_nll


@dataclass
class GradDiffConfig(LMUnlearningConfig):
    """Shared LM settings plus the weights of the forget and retain terms."""

    forget_weight: float = 1.0
    retain_weight: float = 1.0

    def validate(self) -> None:
        super().validate()
        if self.forget_weight <= 0:
            raise ConfigError(f"{type(self).__name__}.forget_weight must be > 0")
        if self.retain_weight < 0:
            raise ConfigError(f"{type(self).__name__}.retain_weight must be >= 0")


class GradDiff(LMUnlearningMethod, name="grad_diff"):
    config_class: ClassVar[type[MethodConfig]] = GradDiffConfig
    config: GradDiffConfig

    @property
    def uses_retain(self) -> bool:
        return self.config.retain_weight > 0

    def forget_loss(self, model: Any, forget_batch: dict[str, Any]) -> torch.Tensor:
        """The term that removes the forget texts; subclasses (NPO) replace it."""
        return -mean_token_nll(model, forget_batch)

    def loss(
        self, model: Any, forget_batch: dict[str, Any], retain_batch: dict[str, Any] | None
    ) -> torch.Tensor:
        total = self.config.forget_weight * self.forget_loss(model, forget_batch)
        if retain_batch is not None:
            total = total + self.config.retain_weight * mean_token_nll(model, retain_batch)
        return total
