"""The shared part of the output-matching methods (oracle matching, datamodel matching).

Georgiev et al., "Attribute-to-Delete: Machine Unlearning via Datamodel Matching" (arXiv:2410.23232,
2024): unlearning is reduced to predicting the outputs a model retrained without the forget set
would give, then fine-tuning the model so that its outputs match those predictions on the forget set
and on a sample of the retain set. A method here says only where the targets come from
(:meth:`OutputMatchingMethod.targets`); this module draws the retain sample, reads the original
model and builds the matching batches, and :class:`workers.unlearning.loop.LossMethod` runs the
fine-tune: each step takes a forget batch and a retain batch and minimises the squared error between
the model's centred logits and the targets (forget term + ``retain_weight`` x retain term).

Both methods read the platform's shadow models (context key ``references``, see
:mod:`workers.unlearning.references`) and use only a declared share of their pairs, which the
result states (``details["shadow_split"]``), so that the audit judges with shadow models the method
did not learn from.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from workers.unlearning.base import ConfigError
from workers.unlearning.loop import LossMethod, LossMethodConfig, UnlearningRun, require_range
from workers.unlearning.references import (
    ShadowSplit,
    centred_logits,
    model_outputs,
    shadow_split,
)


@dataclass
class OutputMatchingConfig(LossMethodConfig):
    """``retain_sample``: retain records whose outputs are matched beside the forget set's (drawn with
    the seeded generator); ``retain_weight`` weighs their term. ``batch_size`` for both sets.
    ``shadow_share``: the share of the shadow-model pairs the method reads (the lowest pair numbers);
    the rest are left to the audit. ``epochs`` count walks of the longer of the forget set and the
    retain sample.

    lr and epochs were chosen on the test fixtures (tests/workers/unlearning/test_dmm.py), not taken
    from the paper: matching the very confident logits of a memorised record takes more steps than
    the 1e-3 Adam default of the other methods gives."""

    lr: float = 0.01
    epochs: int = 25
    batch_size: int = 64
    retain_sample: int = 512
    retain_weight: float = 1.0
    shadow_share: float = 0.5

    def validate(self) -> None:
        super().validate()
        require_range(self, "shadow_share", 0.0, 1.0, low_open=True)
        if self.shadow_share >= 1:
            raise ConfigError(f"{type(self).__name__}.shadow_share must be < 1 (the audit needs shadow models the "
                              f"method did not read), got {self.shadow_share}")
        require_range(self, "retain_sample", 1, 1 << 24)
        require_range(self, "retain_weight", 0.0, 1e6)


@dataclass
class MatchingTargets:
    """The matched examples: inputs (on the CPU) and target centred logits, forget set first."""

    keys: list[str]
    inputs: Tensor
    labels: Tensor
    forget_count: int


class MatchingBatches:
    """Re-iterable batches ``(keys, inputs, target_logits)`` of a fixed set, reshuffled on every walk
    with the run's seeded generator."""

    def __init__(self, keys: Sequence[str], inputs: Tensor, targets: Tensor, *, batch_size: int,
                 generator: torch.Generator) -> None:
        self.keys, self.inputs, self.targets = list(keys), inputs, targets
        self.batch_size, self.generator = batch_size, generator

    def __len__(self) -> int:
        return -(-len(self.keys) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[list[str], Tensor, Tensor]]:
        order = torch.randperm(len(self.keys), generator=self.generator)
        for start in range(0, len(order), self.batch_size):
            chosen = order[start : start + self.batch_size]
            yield [self.keys[i] for i in chosen.tolist()], self.inputs[chosen], self.targets[chosen]


class OutputMatchingMethod(LossMethod):
    """Fine-tune the model's centred logits onto targets on the forget set and a retain sample.

    Context: ``references`` (sequence of :class:`ShadowReference`), required; ``ValueError`` when it
    is missing or too small. Details: ``shadow_split``, ``matched`` (record counts) and what
    :meth:`targets` adds.
    """

    config_class = OutputMatchingConfig
    data = "paired"

    def prepare(self, model: nn.Module, run: UnlearningRun) -> dict[str, Any]:
        config = self.config
        assert isinstance(config, OutputMatchingConfig)
        references = run.context.get("references")
        if references is None:
            raise ValueError(f"{self.name} needs the shadow models (context key 'references'); the unlearning job "
                             "hands them over for methods that declare the need 'shadow_references'")
        split = shadow_split(list(references), config.shadow_share)
        forget = collect(run.forget)
        retain = collect(run.retain, sample=config.retain_sample, total=run.retain_records, generator=run.generator)
        run.progress("reading the original model", 0.0)
        examples = MatchingTargets(keys=forget[0] + retain[0], inputs=torch.cat([forget[1], retain[1]]),
                                   labels=torch.cat([forget[2], retain[2]]), forget_count=len(forget[0]))
        original = model_outputs(run.frozen_original(), examples.inputs, device=run.device)
        targets, details = self.targets(examples, original, split, run)
        if not torch.isfinite(targets).all():
            raise FloatingPointError(f"{self.name}: the target outputs are not finite")
        cut = examples.forget_count
        float_targets = targets.float()
        run.forget = MatchingBatches(examples.keys[:cut], examples.inputs[:cut], float_targets[:cut],
                                     batch_size=config.batch_size, generator=run.generator)
        run.retain = MatchingBatches(examples.keys[cut:], examples.inputs[cut:], float_targets[cut:],
                                     batch_size=config.batch_size, generator=run.generator)
        return {"shadow_split": split.to_details(),
                "matched": {"forget_records": cut, "retain_sample": len(examples.keys) - cut},
                **details}

    @abstractmethod
    def targets(self, examples: MatchingTargets, original: Tensor, split: ShadowSplit,
                run: UnlearningRun) -> tuple[Tensor, dict[str, Any]]:
        """(records, classes) target centred logits for ``examples`` (forget records first), given the
        original model's centred logits ``original``; and details for the result."""

    def loss(self, model: nn.Module, forget_batch: tuple[Tensor, Tensor] | None,
             retain_batch: tuple[Tensor, Tensor] | None, run: UnlearningRun) -> Tensor:
        config = self.config
        assert isinstance(config, OutputMatchingConfig) and forget_batch is not None and retain_batch is not None
        return (matching_loss(model, *forget_batch)
                + config.retain_weight * matching_loss(model, *retain_batch))


def matching_loss(model: nn.Module, inputs: Tensor, target_logits: Tensor) -> Tensor:
    """Mean over examples of the summed squared error between centred logits and targets."""
    return (centred_logits(model(inputs)) - target_logits).pow(2).sum(dim=1).mean()


def collect(data: Any, *, sample: int | None = None, total: int = 0,
            generator: torch.Generator | None = None) -> tuple[list[str], Tensor, Tensor]:
    """The keys, inputs and labels of ``data``'s batches ``(keys, inputs, targets)`` (on the CPU);
    with ``sample``, only that many records at positions drawn from ``generator`` among ``total``."""
    wanted = None
    if sample is not None and sample < total:
        assert generator is not None
        wanted = set(torch.randperm(total, generator=generator)[:sample].tolist())
    keys: list[str] = []
    inputs: list[Tensor] = []
    labels: list[Tensor] = []
    position = 0
    for batch in data:
        if len(batch) < 3:
            raise ValueError("output matching needs batches of (record_keys, inputs, targets): the shadow models' "
                             "membership is by record key")
        batch_keys, batch_inputs, batch_labels = batch[0], batch[-2], batch[-1]
        rows = [i for i in range(len(batch_keys)) if wanted is None or position + i in wanted]
        position += len(batch_keys)
        if rows:
            index = torch.tensor(rows)
            keys += [str(batch_keys[i]) for i in rows]
            inputs.append(batch_inputs[index].cpu())
            labels.append(batch_labels[index].cpu())
    return keys, torch.cat(inputs), torch.cat(labels)
