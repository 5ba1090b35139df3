"""The shared plumbing and training loop of the approximate classifier methods.

Two base classes:

* :class:`ApproximateMethod` does what every approximate method needs around its maths: it checks
  the data (non-empty, re-iterable), copies the caller's model (the original stays untouched for
  audits), seeds every random draw from ``config.seed`` without disturbing the caller's RNG,
  measures wall time and builds the :class:`UnlearningResult`. One-shot methods (SSD, influence)
  extend it and implement :meth:`ApproximateMethod.run`.
* :class:`LossMethod` adds one training loop: optimizer, epochs of *phases* over forget and/or
  retain batches, gradient masks, clipping, progress calls (which may raise ``JobCancelled``) and a
  guard against non-finite losses. A method built on it is mostly its :meth:`LossMethod.loss`.

Batches follow :mod:`workers.unlearning.base`: ``(record_keys, inputs, targets)``; only the last
two items are used, so ``(inputs, targets)`` batches work too. Plain PyTorch, no Django.
"""

from __future__ import annotations

import copy
import time
from abc import abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from workers.training.base import running_statistics_for_single_examples
from workers.training.device import deterministic
from workers.unlearning.base import (
    ConfigError,
    MethodConfig,
    ProgressCallback,
    UnlearningMethod,
    UnlearningResult,
    no_progress,
)

Batch = Sequence[Any]
PhaseData = Literal["forget", "retain", "paired"]
OPTIMIZERS = ("sgd", "adam")


@dataclass
class LossMethodConfig(MethodConfig):
    """Settings shared by every method trained with :class:`LossMethod`.

    ``epochs`` counts passes over the data a phase walks (for paired phases: the longer of the
    two sets). ``max_grad_norm`` of 0 disables clipping. Adam is the default because its
    per-parameter step size makes one learning rate work across model sizes; near a converged
    optimum plain SGD barely moves (the retain gradients are tiny). ``momentum`` is SGD's only.
    """

    lr: float = 0.001
    epochs: int = 2
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    max_grad_norm: float = 5.0

    def validate(self) -> None:
        super().validate()
        owner = type(self).__name__
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(
                f"{owner}.optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"
            )
        if self.momentum >= 1:
            raise ConfigError(f"{owner}.momentum must be < 1, got {self.momentum}")
        if self.max_grad_norm < 0:
            raise ConfigError(
                f"{owner}.max_grad_norm must be >= 0 (0 disables clipping), got {self.max_grad_norm}"
            )


def require_range(
    config: MethodConfig, name: str, low: float, high: float, *, low_open: bool = False
) -> None:
    """Raise ConfigError unless ``low <= config.<name> <= high`` (``low < ...`` when ``low_open``)."""
    value = getattr(config, name)
    too_low = value <= low if low_open else value < low
    if too_low or value > high:
        bracket = "(" if low_open else "["
        raise ConfigError(
            f"{type(config).__name__}.{name} must be in {bracket}{low}, {high}], got {value}"
        )


@dataclass
class UnlearningRun:
    """What one call of ``unlearn`` works with; handed to a method's hooks and loss.

    ``original`` is the caller's model and must not be modified. ``generator`` is seeded from the
    config and is the only source of randomness a method should use (random labels, sampling).
    ``state`` holds what a method's :meth:`LossMethod.prepare` computes (a teacher, masks).
    ``gradient_mask`` (parameter name -> 0/1 tensor) limits which entries the optimizer changes;
    ``weight_mask`` is multiplied into the weights after every step (pruned weights stay zero).
    """

    original: nn.Module
    forget: Iterable[Batch]
    retain: Iterable[Batch]
    device: torch.device
    progress: ProgressCallback
    context: dict[str, Any]
    generator: torch.Generator
    forget_records: int
    retain_records: int
    state: dict[str, Any] = field(default_factory=dict)
    gradient_mask: dict[str, Tensor] | None = None
    weight_mask: dict[str, Tensor] | None = None
    step: int = 0
    total_steps: int = 0

    def frozen_original(self) -> nn.Module:
        """A copy of the original model on the run's device, in eval mode, without gradients."""
        teacher = copy.deepcopy(self.original).to(self.device).eval()
        for parameter in teacher.parameters():
            parameter.requires_grad_(False)
        return teacher

    def batches(self, data: Iterable[Batch]) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield ``(inputs, targets)`` of every batch of ``data``, moved to the run's device."""
        for batch in data:
            yield self.to_device(batch)

    def to_device(self, batch: Batch) -> tuple[Tensor, Tensor]:
        inputs, targets = batch[-2], batch[-1]
        return inputs.to(self.device), targets.to(self.device)


class ApproximateMethod(UnlearningMethod):
    """Plumbing for approximate classifier methods; subclasses implement :meth:`run`.

    ``unlearn(model, forget, retain, device=..., progress=..., **context)`` takes the trained
    ``nn.Module`` and re-iterable forget/retain loaders, and returns ``(new_model, result)``: the
    caller's model is never modified. The new model is left in the caller's model's train/eval mode.
    Raises ``ValueError`` for an empty or one-shot forget (or, where used, retain) set,
    ``JobCancelled`` when the progress callback raises it, ``FloatingPointError`` if the
    optimisation diverges.
    """

    # For unregistered subclasses (tests' building blocks); registering gives a method the class
    # its catalogue declaration states.
    guarantee_class: ClassVar[str] = "approximate"
    # A method that never reads the retain set sets this to False; otherwise an empty retain set is
    # refused before any work starts. An empty forget set is always refused.
    uses_retain: ClassVar[bool] = True

    def unlearn(self, model: nn.Module, forget: Iterable[Batch], retain: Iterable[Batch], *, device: str = "cpu",
                progress: ProgressCallback = no_progress, **context: Any) -> tuple[nn.Module, UnlearningResult]:
        started = time.perf_counter()
        if not isinstance(model, nn.Module):
            raise TypeError(f"{self.name} unlearns a torch.nn.Module, got {type(model).__name__}")
        # Counting refuses one-shot iterators: every method walks its data more than once.
        forget_records = _count_records("forget", forget)
        retain_records = _count_records("retain", retain)
        if forget_records == 0:
            raise ValueError(f"{self.name}: the forget set is empty; there is nothing to unlearn")
        if self.uses_retain and retain_records == 0:
            raise ValueError(f"{self.name}: the retain set is empty; this method needs retain data")
        target = torch.device(device)
        with seeded(self.config.seed, target) as generator:
            student = copy.deepcopy(model).to(target)
            run = UnlearningRun(
                original=model,
                forget=forget,
                retain=retain,
                device=target,
                progress=progress,
                context=context,
                generator=generator,
                forget_records=forget_records,
                retain_records=retain_records,
            )
            steps, details = self.run(student, run)
        student.train(model.training)
        details = {"forget_records": forget_records, "retain_records": retain_records, **details}
        return student, self._result(started, str(target), steps, **details)

    @abstractmethod
    def run(self, model: nn.Module, run: UnlearningRun) -> tuple[int, dict[str, Any]]:
        """Change ``model`` (already a copy, on the run's device) in place.

        Returns ``(steps, details)``: the number of optimizer or update steps taken and facts for
        the result (JSON-serialisable values).
        """


class LossMethod(ApproximateMethod):
    """An approximate method that is a loss minimised by the shared loop.

    A subclass sets ``data`` (which set one epoch walks) and implements :meth:`loss`; methods with
    more than one kind of step (SCRUB's max and min steps) override :meth:`phases`. Randomness in a
    loss must come from ``run.generator``.
    """

    config_class: ClassVar[type[MethodConfig]] = LossMethodConfig
    data: ClassVar[PhaseData] = "retain"

    def prepare(self, model: nn.Module, run: UnlearningRun) -> dict[str, Any]:
        """Hook before the first step: build teachers or masks into ``run``. Returns details."""
        return {}

    def loss(
        self,
        model: nn.Module,
        forget_batch: tuple[Tensor, Tensor] | None,
        retain_batch: tuple[Tensor, Tensor] | None,
        run: UnlearningRun,
    ) -> Tensor:
        """The scalar to minimise for one step; batches are ``(inputs, targets)`` on the device."""
        raise NotImplementedError(f"{type(self).__name__} must implement loss() or phases()")

    def phases(self, epoch: int) -> list[Phase]:
        """The phases of epoch ``epoch`` (0-based), run in order. Default: one phase of ``loss``."""
        return [Phase("unlearn", self.data, self.loss)]

    def regularizer(self, model: nn.Module, run: UnlearningRun) -> Tensor | None:
        """Optional term added to every step's loss (l1 sparsity); ``None`` adds nothing."""
        return None

    def run(self, model: nn.Module, run: UnlearningRun) -> tuple[int, dict[str, Any]]:
        config = self.config
        assert isinstance(config, LossMethodConfig)
        details = self.prepare(model, run)
        schedule = [self.phases(epoch) for epoch in range(config.epochs)]
        lengths = {"forget": _num_batches(run.forget), "retain": _num_batches(run.retain)}
        lengths["paired"] = max(lengths["forget"], lengths["retain"])
        run.total_steps = sum(
            lengths[phase.data] * phase.passes for phases in schedule for phase in phases
        )
        optimizer = build_optimizer(model, config)
        parameters = dict(model.named_parameters())
        last_loss: dict[str, float] = {}
        model.train()
        for phases in schedule:
            for phase in phases:
                total, count = 0.0, 0
                for forget_batch, retain_batch in _phase_batches(phase, run, lengths["paired"]):
                    optimizer.zero_grad(set_to_none=True)
                    with running_statistics_for_single_examples(model, forget_batch, retain_batch):
                        loss = phase.loss(model, forget_batch, retain_batch, run)
                    extra = self.regularizer(model, run)
                    if extra is not None:
                        loss = loss + extra
                    if not torch.isfinite(loss):
                        raise FloatingPointError(
                            f"{self.name}: loss became {loss.item()} in phase {phase.name!r} at step "
                            f"{run.step}; try a lower lr or a smaller max_grad_norm"
                        )
                    loss.backward()
                    if run.gradient_mask is not None:
                        _apply_gradient_mask(parameters, run.gradient_mask)
                    if config.max_grad_norm > 0:
                        nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                    optimizer.step()
                    if run.weight_mask is not None:
                        _apply_weight_mask(parameters, run.weight_mask)
                    run.step += 1
                    total, count = total + loss.item(), count + 1
                    run.progress(phase.name, run.step / max(run.total_steps, 1))
                last_loss[phase.name] = total / max(count, 1)
        details = {**details, "final_phase_loss": last_loss}
        return run.step, details


@dataclass(frozen=True)
class Phase:
    """One walk over data within an epoch: which set(s) it reads and which loss it minimises.

    ``data`` is ``"forget"`` (retain batch is ``None``), ``"retain"`` (forget batch is ``None``) or
    ``"paired"`` (both; the shorter set is walked again as often as needed). ``passes`` walks the
    data that many times (a small forget set gives too few steps in one walk).
    """

    name: str
    data: PhaseData
    loss: Callable[[nn.Module, Any, Any, UnlearningRun], Tensor]
    passes: int = 1


def build_optimizer(model: nn.Module, config: LossMethodConfig) -> torch.optim.Optimizer:
    """The optimizer named by ``config.optimizer`` over the model's trainable parameters."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "adam":
        return torch.optim.Adam(trainable, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(
        trainable, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[torch.Generator]:
    """Seed torch's RNG for the block and restore the caller's RNG state afterwards.

    Yields a CPU generator seeded with ``seed`` for a method's own draws. Loaders that shuffle
    without their own generator draw from the global RNG, which is seeded here too. Deterministic
    kernels are switched on for the block (the training recipes' own switch, so that CUDA runs
    reproduce as well), so a stored config reproduces the same weights.
    """
    cuda_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices), deterministic(seed):
        yield torch.Generator().manual_seed(seed)


def loss_per_example(model: nn.Module, inputs: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy of each example (no reduction)."""
    return nn.functional.cross_entropy(model(inputs), targets, reduction="none")


def _phase_batches(
    phase: Phase, run: UnlearningRun, paired_length: int
) -> Iterator[tuple[tuple[Tensor, Tensor] | None, tuple[Tensor, Tensor] | None]]:
    for _ in range(phase.passes):
        if phase.data == "forget":
            for batch in run.batches(run.forget):
                yield batch, None
        elif phase.data == "retain":
            for batch in run.batches(run.retain):
                yield None, batch
        else:
            forget, retain = _repeat(run, run.forget), _repeat(run, run.retain)
            for _ in range(paired_length):
                yield next(forget), next(retain)


def _repeat(run: UnlearningRun, data: Iterable[Batch]) -> Iterator[tuple[Tensor, Tensor]]:
    # Re-iterating (rather than itertools.cycle) reshuffles and does not hold every batch in memory.
    while True:
        yield from run.batches(data)


def _apply_gradient_mask(parameters: dict[str, nn.Parameter], mask: dict[str, Tensor]) -> None:
    for name, parameter in parameters.items():
        if parameter.grad is None:
            continue
        if name in mask:
            parameter.grad.mul_(mask[name])
        else:
            # A parameter the mask does not name is frozen: a mask lists what may change.
            parameter.grad.zero_()


@torch.no_grad()
def _apply_weight_mask(parameters: dict[str, nn.Parameter], mask: dict[str, Tensor]) -> None:
    for name, keep in mask.items():
        parameters[name].mul_(keep)


def _count_records(role: str, data: Iterable[Batch]) -> int:
    """Number of records in a loader (its dataset's length) or a list of batches."""
    if iter(data) is data:
        raise ValueError(
            f"the {role} set must be re-iterable (a DataLoader or a list of batches), not a one-shot iterator"
        )
    dataset = getattr(data, "dataset", None)
    if dataset is not None and hasattr(dataset, "__len__"):
        return len(dataset)
    # Counted from the inputs: a label-free method (laf) must work on batches whose labels are withheld.
    return sum(len(batch[-2]) for batch in data)


def _num_batches(data: Iterable[Batch]) -> int:
    try:
        return len(data)  # type: ignore[arg-type]
    except TypeError:
        return sum(1 for _ in data)
