"""The shared loop of the language-model unlearning methods.

A method is a config dataclass plus :meth:`LMUnlearningMethod.loss`; this class does the rest:
copy the model, attach a LoRA adapter (peft), run ``epochs`` passes over the forget batches (one
optimiser step per forget batch, paired with the next retain batch when the method uses one),
merge the adapter and return a plain transformers model with an :class:`UnlearningResult`.

The input model is never changed: the job still needs the parent version for audits and for
the purge that follows.
"""

from __future__ import annotations

import copy
import math
import time
from abc import abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from workers.unlearning.base import (
    ConfigError,
    MethodConfig,
    ProgressCallback,
    UnlearningMethod,
    UnlearningResult,
    no_progress,
)
from workers.unlearning.lm.lora import attach_lora, merge_lora, optimise_lora, rng_scope
from workers.unlearning.lm.losses import average_token_nll, to_device


@dataclass
class LMUnlearningConfig(MethodConfig):
    """Settings every LM method shares. ``target_modules=None`` finds them from the model."""

    lr: float = 2e-4
    epochs: int = 5
    lora_r: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    target_modules: list[str] | None = None
    max_length: int = 256
    max_grad_norm: float = 1.0
    # Stop at the end of the first epoch whose forget-set token NLL reaches this (e.g. the model's
    # NLL on texts it never saw, which is where a retrained model would be): pushing past it only
    # damages the model (gradient ascent has nothing else to stop it). None: run every epoch.
    stop_at_forget_nll: float | None = None
    # With no stop_at_forget_nll, and held-out texts given (context "held_out": LM batches of
    # records the model never saw), the target is the original model's NLL on those texts.
    stop_at_held_out: bool = True

    def validate(self) -> None:
        super().validate()
        owner = type(self).__name__
        if self.lora_r < 1:
            raise ConfigError(f"{owner}.lora_r must be >= 1, got {self.lora_r}")
        if self.lora_alpha <= 0:
            raise ConfigError(f"{owner}.lora_alpha must be > 0, got {self.lora_alpha}")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"{owner}.lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.max_length < 2:
            raise ConfigError(f"{owner}.max_length must be >= 2, got {self.max_length}")
        if self.max_grad_norm < 0:
            raise ConfigError(f"{owner}.max_grad_norm must be >= 0 (0 = no clipping)")
        if self.stop_at_forget_nll is not None and not self.stop_at_forget_nll > 0:
            raise ConfigError(f"{owner}.stop_at_forget_nll must be > 0 or null, got {self.stop_at_forget_nll}")
        if self.target_modules is not None and (
            not isinstance(self.target_modules, list)
            or not self.target_modules
            or not all(isinstance(name, str) and name for name in self.target_modules)
        ):
            raise ConfigError(f"{owner}.target_modules must be null or a non-empty list of names")


class LMUnlearningMethod(UnlearningMethod):
    """Base of the LM methods (guarantee ``approximate``). Subclasses implement :meth:`loss`."""

    # For unregistered subclasses (tests' building blocks); registering gives a method the class
    # its catalogue declaration states.
    guarantee_class: ClassVar[str] = "approximate"
    config_class: ClassVar[type[MethodConfig]] = LMUnlearningConfig
    config: LMUnlearningConfig

    @property
    def uses_retain(self) -> bool:
        """Whether :meth:`loss` reads a retain batch (then the retain set must not be empty)."""
        return False

    @abstractmethod
    def loss(
        self, model: Any, forget_batch: dict[str, Any], retain_batch: dict[str, Any] | None
    ) -> torch.Tensor:
        """The loss to minimise for one step.

        ``model`` is the ``PeftModel``; ``with model.disable_adapter():`` gives the frozen
        reference (the model before unlearning). ``retain_batch`` is None unless ``uses_retain``.
        """

    def unlearn(self, model: Any, forget: Iterable[dict[str, Any]], retain: Iterable[dict[str, Any]], *,
                device: str = "cpu", progress: ProgressCallback = no_progress,
                **context: Any) -> tuple[Any, UnlearningResult]:
        """Unlearn the forget batches from a causal LM; reads ``context["held_out"]`` (optional LM
        batches of texts the model never saw: their NLL is the stop target, see the config).

        In: a transformers causal LM (not changed), LM batches to forget and to retain (the retain
        set must be re-iterable if the method uses it, e.g. a list or a DataLoader). Out: a new
        model with the LoRA merged (plain transformers, eval mode) and a result whose details
        name the forgotten record keys and the forget/retain token NLL before and after.
        """
        started = time.perf_counter()
        cfg = self.config
        forget_batches, retain_stream, forget_keys = self._inputs(forget, retain, device)

        work = copy.deepcopy(model).to(device)
        requires_grad = {n: p.requires_grad for n, p in work.named_parameters()}
        forget_nll_before = average_token_nll(work, forget_batches, device)
        probe: list[dict[str, Any]] = []
        if retain_stream is not None:
            # The retain batches the loop will pair with the forget batches first.
            probe = [self._prepare(b, device) for b in retain_stream.peek(len(forget_batches))]
            retain_nll_before = average_token_nll(work, probe, device)

        held_out = list(context.get("held_out") or [])
        target, target_source = self._stop_target(work, held_out, device)

        def reached_target(step: int) -> bool:
            if target is None or (step + 1) % len(forget_batches):
                return False
            return average_token_nll(peft_model, forget_batches, device) >= target

        def step_loss(step: int) -> torch.Tensor:
            forget_batch = forget_batches[step % len(forget_batches)]
            retain_batch = None
            if retain_stream is not None:
                retain_batch = self._prepare(retain_stream.next(), device)
            return self.loss(peft_model, forget_batch, retain_batch)

        with rng_scope(device):
            peft_model = attach_lora(
                work,
                r=cfg.lora_r,
                alpha=cfg.lora_alpha,
                dropout=cfg.lora_dropout,
                target_modules=cfg.target_modules,
                seed=cfg.seed,
            )
            targets = sorted(peft_model.peft_config["default"].target_modules)
            losses = optimise_lora(
                peft_model,
                step_loss,
                steps=cfg.epochs * len(forget_batches),
                lr=cfg.lr,
                max_grad_norm=cfg.max_grad_norm,
                progress=progress,
                stage="unlearning",
                stop_after=reached_target,
            )
        unlearned = merge_lora(peft_model, requires_grad)
        details = self._run_details(
            unlearned, forget_batches, forget_keys, device=device, forget_nll_before=forget_nll_before,
            losses=losses, target=target, target_source=target_source, held_out=held_out, probe=probe,
            retain_nll_before=retain_nll_before if probe else None,
            lora_target_modules=targets, weights_changed_via="lora_merged")
        return unlearned, self._result(started, device, steps=len(losses), **details)

    def _descend(self, work: Any, forget_batches: list[dict[str, Any]], retain_stream: Any, *, device: str,
                 target: float | None, progress: ProgressCallback,
                 update: Callable[[torch.Tensor], None],
                 reached: Callable[[], bool] | None = None) -> list[float]:
        """The steps of a method that updates its own parameters rather than a LoRA (MRP's
        directions, fact-lookup's MLPs): ``epochs`` passes over the forget batches, each paired with
        the next retain batch; each step's loss (:meth:`loss`) goes to ``update``. Stops after the
        epoch at which the forget NLL reaches ``target`` or ``reached()`` (a method's own stop
        criterion, asked at the end of every epoch) says so. Raises FloatingPointError on a
        non-finite loss. Returns the losses, one per step taken."""
        steps = self.config.epochs * len(forget_batches)
        losses: list[float] = []
        progress("unlearning", 0.0)
        with rng_scope(device):
            for step in range(steps):
                retain_batch = self._prepare(retain_stream.next(), device) if retain_stream else None
                loss = self.loss(work, forget_batches[step % len(forget_batches)], retain_batch)
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise FloatingPointError(f"unlearning: loss became {value} at step {step}")
                update(loss)
                losses.append(value)
                progress("unlearning", (step + 1) / steps)
                if (step + 1) % len(forget_batches) == 0 and (
                        (target is not None and average_token_nll(work, forget_batches, device) >= target)
                        or (reached is not None and reached())):
                    progress("unlearning", 1.0)
                    break
        return losses

    def _run_details(self, unlearned: Any, forget_batches: list[dict[str, Any]], forget_keys: list[str], *,
                     device: str, forget_nll_before: float, losses: list[float], target: float | None,
                     target_source: str, held_out: list[dict[str, Any]], probe: list[dict[str, Any]],
                     retain_nll_before: float | None, **own: Any) -> dict[str, Any]:
        """What every LM method's result details say of a run (the forgotten keys, forget and retain
        NLL before and after, the losses, the stop), with the method's ``own`` details after them."""
        details: dict[str, Any] = {
            "forget_records": len(forget_keys),
            "forget_record_keys": forget_keys,
            "forget_token_nll_before": forget_nll_before,
            "forget_token_nll_after": average_token_nll(unlearned, forget_batches, device),
            "loss_first": losses[0],
            "loss_last": losses[-1],
            "stopped_early": len(losses) < self.config.epochs * len(forget_batches),
            "stop_target_nll": target,
            "stop_target_source": target_source if target is not None else None,
            "held_out_record_keys": sorted({k for b in held_out for k in b["record_keys"]})
            if target_source == "held_out" and target is not None else [],
            **own,
        }
        if probe:
            details["retain_token_nll_before"] = retain_nll_before
            details["retain_token_nll_after"] = average_token_nll(unlearned, probe, device)
        return details

    def _stop_target(self, model: Any, held_out: list[dict[str, Any]], device: str) -> tuple[float | None, str]:
        """The forget NLL to stop at and where it comes from: the configured one, else the model's
        NLL on the held-out batches (when ``stop_at_held_out`` and some are given), else None."""
        cfg = self.config
        if cfg.stop_at_forget_nll is not None:
            return cfg.stop_at_forget_nll, "configured"
        if cfg.stop_at_held_out and held_out:
            return average_token_nll(model, [self._prepare(b, device) for b in held_out], device), "held_out"
        return None, "configured"

    def _inputs(self, forget: Any, retain: Any, device: str) -> tuple[list[dict[str, Any]], Any, list[str]]:
        """The forget batches prepared on ``device`` (refused when empty), the retain stream (None
        when the method reads no retain set) and the forgotten record keys, sorted."""
        forget_batches = [self._prepare(b, device) for b in forget]
        if not forget_batches:
            raise ValueError(f"{self.name}: the forget set is empty")
        retain_stream = _Cycle(retain, "retain") if self.uses_retain else None
        return forget_batches, retain_stream, sorted({k for b in forget_batches for k in b["record_keys"]})

    def _prepare(self, batch: dict[str, Any], device: str) -> dict[str, Any]:
        """Check an LM batch, cut it to ``max_length`` tokens and move it to ``device``."""
        missing = {"input_ids", "attention_mask", "labels", "record_keys"} - set(batch)
        if missing:
            raise ValueError(f"{self.name}: LM batch lacks {', '.join(sorted(missing))}")
        limit = self.config.max_length
        cut = {k: v[:, :limit] if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        return to_device(cut, device)


class _Cycle:
    """Endless batches from a re-iterable; an empty one raises ``ValueError`` at once."""

    def __init__(self, batches: Iterable[dict[str, Any]], name: str) -> None:
        self._batches = batches
        self._name = name
        self._buffer: list[dict[str, Any]] = []
        self._iterator: Iterator[dict[str, Any]] = iter(batches)
        self._buffer.append(self._pull(first=True))

    def _pull(self, first: bool = False) -> dict[str, Any]:
        try:
            return next(self._iterator)
        except StopIteration:
            self._iterator = iter(self._batches)
            try:
                return next(self._iterator)
            except StopIteration:
                what = (
                    "empty" if first else "exhausted (pass a list or DataLoader, not a generator)"
                )
                raise ValueError(f"the {self._name} set is {what}") from None

    def peek(self, count: int) -> list[dict[str, Any]]:
        """The next ``count`` batches, without consuming them."""
        while len(self._buffer) < count:
            self._buffer.append(self._pull())
        return self._buffer[:count]

    def next(self) -> dict[str, Any]:
        return self._buffer.pop(0) if self._buffer else self._pull()
