"""Fine-tune: keep training on the retain set only (catastrophic forgetting of the forget set).

The weakest approximate method and the usual baseline: the forget set's influence fades because
its examples are no longer seen, not because anything removes it.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from workers.unlearning.loop import LossMethod, LossMethodConfig, UnlearningRun


@dataclass
class FinetuneConfig(LossMethodConfig):
    """Retain-set training; ``epochs`` passes over it."""

    epochs: int = 5


class Finetune(LossMethod, name="finetune"):
    """Minimise the retain cross-entropy. Reads the retain set only (the forget set must be
    non-empty all the same, so that a job without records to forget is refused)."""

    config_class = FinetuneConfig
    data = "retain"

    def loss(
        self,
        model: nn.Module,
        forget_batch: tuple[Tensor, Tensor] | None,
        retain_batch: tuple[Tensor, Tensor] | None,
        run: UnlearningRun,
    ) -> Tensor:
        assert retain_batch is not None
        inputs, targets = retain_batch
        return nn.functional.cross_entropy(model(inputs), targets)
