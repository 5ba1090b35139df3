"""NegGrad+: descend on the retain loss while ascending on the forget loss, weighted.

Kurmanji et al., "Towards Unbounded Machine Unlearning" (NeurIPS 2023), baseline NegGrad+:
``loss = retain_weight * CE(retain) - (1 - retain_weight) * CE(forget)``. Pure gradient ascent
(``retain_weight`` = 0) destroys the model; the retain term keeps it useful.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from workers.unlearning.base import ConfigError
from workers.unlearning.loop import LossMethod, LossMethodConfig, UnlearningRun, require_range


@dataclass
class NegGradPlusConfig(LossMethodConfig):
    """``retain_weight`` in [0, 1) balances retain descent against forget ascent.

    ``forget_loss_cap`` stops the ascent on an example once its loss passes the cap: an unbounded
    ascent overshoots, and a forget set whose loss is far above a retrained model's stands out to
    a membership test as much as one the model still fits.
    """

    epochs: int = 2
    retain_weight: float = 0.95
    forget_loss_cap: float = 5.0

    def validate(self) -> None:
        super().validate()
        require_range(self, "retain_weight", 0.0, 1.0)
        if self.retain_weight == 1.0:
            raise ConfigError(
                "NegGradPlusConfig.retain_weight must be < 1 (1 is plain fine-tuning)"
            )
        require_range(self, "forget_loss_cap", 0.0, float("inf"), low_open=True)


class NegGradPlus(LossMethod, name="neggrad_plus"):
    """Paired forget/retain steps; the retain set is walked once per epoch, the forget set cycled."""

    config_class = NegGradPlusConfig
    data = "paired"

    def loss(
        self,
        model: nn.Module,
        forget_batch: tuple[Tensor, Tensor] | None,
        retain_batch: tuple[Tensor, Tensor] | None,
        run: UnlearningRun,
    ) -> Tensor:
        assert forget_batch is not None and retain_batch is not None
        config = self.config
        assert isinstance(config, NegGradPlusConfig)
        retain_loss = nn.functional.cross_entropy(model(retain_batch[0]), retain_batch[1])
        per_example = nn.functional.cross_entropy(
            model(forget_batch[0]), forget_batch[1], reduction="none"
        )
        # Examples already past the cap contribute no gradient (clamp's gradient is 0 there).
        forget_loss = per_example.clamp(max=config.forget_loss_cap).mean()
        return config.retain_weight * retain_loss - (1.0 - config.retain_weight) * forget_loss
