"""Blindspot unlearning for regression models (Tarun, Chundawat, Mandal, Kankanhalli, "Deep
Regression Unlearning", ICML 2023).

Two steps:

1. A *blindspot* model, the same architecture freshly initialised, is trained briefly
   (``blindspot_epochs``) on the retain set only: it knows the kept data a little and has never
   seen the forget set (its "blind spot").
2. A copy of the original model is trained on three terms, each batch of the forget set paired
   with a batch of the retain set::

       loss = retain_weight     * MSE(model(x_r), y_r) / s^2
            + forget_weight     * MSE(model(x_f), blindspot(x_f)) / s^2
            + activation_weight * sum over hidden layers l of
                                  mean((at(h_l^model(x_f)) - at(h_l^blindspot(x_f)))^2)

   the retain set's own loss, the blindspot model's predictions as the forget records' targets,
   and the layer-wise activation matching of the paper ("attention difference": ``at(h)`` is the
   attention-transfer map of Zagoruyko & Komodakis, the L2-normalised ``h**2``, averaged over the
   channels of a convolutional layer).

Departures from the paper, said here because the report quotes the method's name:

* The paper's text was not readable where this was written; the three terms and the blindspot
  model's brief training follow its abstract and figure 1 (a randomly initialised model partially
  exposed to the retain samples, frozen while the original's copy trains on the three losses). The
  weights (1, 1, 1), the learning rate and the epochs are our defaults, not figures from the paper.
* ``s^2`` is the retain targets' variance (computed from the retain set at run time): the two
  squared errors are put on the scale of the activation term whatever unit the target has
  (diabetes progression is in the hundreds). The paper's datasets use their own scaling.
* The hidden layers matched are the outputs of every ``nn.Linear``/``nn.Conv1d/2d`` except the last
  one in module order (the head, whose output the forget term already matches).
* The blindspot model is the model's own architecture (a deep copy whose layers are re-initialised
  with their ``reset_parameters``); a module holding parameters outside such layers is refused.

Context keys: none. Data: batches ``(keys, inputs, targets)`` with real-valued targets; a model
with more than one output per input (a classifier) or integer targets is refused with a
``ValueError`` before any step. Plain PyTorch, no Django.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from workers.unlearning.base import ConfigError
from workers.unlearning.loop import (
    LossMethod,
    LossMethodConfig,
    UnlearningRun,
    build_optimizer,
    require_range,
)

MATCHED_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)


@dataclass
class BlindspotConfig(LossMethodConfig):
    """``epochs``: paired passes (forget with retain) of the unlearning step. ``blindspot_epochs``
    and ``blindspot_lr``: the blindspot model's brief training on the retain set (Adam).
    ``retain_weight``/``forget_weight``/``activation_weight``: the three terms (module docstring)."""

    lr: float = 0.001
    epochs: int = 5
    blindspot_epochs: int = 2
    blindspot_lr: float = 0.01
    retain_weight: float = 1.0
    forget_weight: float = 1.0
    activation_weight: float = 1.0

    def validate(self) -> None:
        super().validate()
        owner = type(self).__name__
        if self.blindspot_epochs < 1:
            raise ConfigError(f"{owner}.blindspot_epochs must be >= 1 (the blindspot model learns from the retain set)")
        if self.blindspot_lr <= 0:
            raise ConfigError(f"{owner}.blindspot_lr must be > 0")
        for name in ("retain_weight", "forget_weight", "activation_weight"):
            require_range(self, name, 0.0, 1e6)
        if self.forget_weight == 0 and self.activation_weight == 0:
            raise ConfigError(f"{owner}: forget_weight and activation_weight are both 0: nothing would move the "
                              "forget set")


def attention_map(activation: Tensor) -> Tensor:
    """The attention-transfer map of one layer's output ``[B, C, ...]``: ``h**2`` averaged over the
    channels of a convolutional output (kept as is for ``[B, F]``), flattened and L2-normalised per
    example. Out: ``[B, K]``."""
    squared = activation.pow(2)
    if squared.dim() > 2:
        squared = squared.mean(1)
    return nn.functional.normalize(squared.flatten(1), dim=1)


def activation_difference(student: list[Tensor], blindspot: list[Tensor]) -> Tensor:
    """Sum over layers of the mean squared difference of their attention maps (:func:`attention_map`)."""
    if len(student) != len(blindspot):
        raise ValueError(f"{len(student)} student layers against {len(blindspot)} blindspot layers")
    terms = [(attention_map(a) - attention_map(b)).pow(2).mean() for a, b in zip(student, blindspot, strict=True)]
    return torch.stack(terms).sum() if terms else torch.zeros(())


def one_output(model: nn.Module, inputs: Tensor) -> Tensor:
    """``model(inputs)`` as ``[B]``; ValueError naming the width when the model gives more than one
    output per input (a classifier's scores)."""
    output = model(inputs)
    flat = output.reshape(len(inputs), -1)
    if flat.shape[1] != 1:
        raise ValueError(f"blindspot unlearns regression models with one output per input; this model gives "
                         f"{flat.shape[1]} (a classifier takes a classification method)")
    return flat[:, 0]


def real_targets(targets: Tensor) -> Tensor:
    if not torch.is_floating_point(targets):
        raise ValueError(f"blindspot unlearns regression models: the targets are {targets.dtype} (class labels), "
                         "not real numbers")
    return targets.reshape(-1)


def reinitialised(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` with every layer re-initialised (``reset_parameters``), drawing from
    torch's RNG. ValueError when a parameter lives in a module that cannot be re-initialised."""
    fresh = copy.deepcopy(model)
    for name, module in fresh.named_modules():
        own = list(module.parameters(recurse=False))
        if not own:
            continue
        reset = getattr(module, "reset_parameters", None)
        if not callable(reset):
            raise ValueError(f"blindspot needs a freshly initialised copy of the model; its module {name!r} "
                             f"({type(module).__name__}) has parameters and no reset_parameters")
        reset()
    for parameter in fresh.parameters():
        parameter.requires_grad_(True)
    return fresh


def hidden_layers(model: nn.Module) -> list[nn.Module]:
    """The layers whose outputs are matched: every Linear/Conv layer but the last in module order."""
    layers = [m for m in model.modules() if isinstance(m, MATCHED_LAYERS)]
    return layers[:-1]


class _Capture:
    """Forward hooks that keep the outputs of ``layers`` while recording is on."""

    def __init__(self, layers: list[nn.Module]) -> None:
        self.outputs: list[Tensor] = []
        self.recording = False
        self.handles = [layer.register_forward_hook(self._keep) for layer in layers]

    def _keep(self, module: nn.Module, args: Any, output: Tensor) -> None:
        if self.recording:
            self.outputs.append(output)

    def run(self, forward: Callable[[], Tensor]) -> tuple[Tensor, list[Tensor]]:
        self.outputs, self.recording = [], True
        try:
            result = forward()
        finally:
            self.recording = False
        return result, self.outputs

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


class Blindspot(LossMethod, name="blindspot"):
    """Blindspot unlearning of a regression model (module docstring): returns a new model whose
    predictions on the forget set follow a model that never saw it, while it keeps fitting the
    retain set."""

    config_class = BlindspotConfig
    data = "paired"

    def prepare(self, model: nn.Module, run: UnlearningRun) -> dict[str, Any]:
        config = self.config
        retain_targets = torch.cat([real_targets(targets) for _, targets in run.batches(run.retain)])
        variance = float(retain_targets.var()) if len(retain_targets) > 1 else 0.0
        scale = variance if variance > 0 else 1.0
        blindspot = reinitialised(model).to(run.device)
        optimizer = build_optimizer(blindspot, LossMethodConfig(lr=config.blindspot_lr, optimizer="adam"))
        blindspot.train()
        steps = 0
        for epoch in range(config.blindspot_epochs):
            for inputs, targets in run.batches(run.retain):
                optimizer.zero_grad(set_to_none=True)
                loss = nn.functional.mse_loss(one_output(blindspot, inputs), real_targets(targets)) / scale
                loss.backward()
                optimizer.step()
                steps += 1
            run.progress("blindspot model", (epoch + 1) / config.blindspot_epochs * 0.2)
        blindspot.eval()
        for parameter in blindspot.parameters():
            parameter.requires_grad_(False)
        run.state.update(blindspot=blindspot, scale=scale, student_capture=_Capture(hidden_layers(model)),
                         blindspot_capture=_Capture(hidden_layers(blindspot)))
        return {"blindspot_steps": steps, "target_variance": round(variance, 6),
                "matched_layers": len(hidden_layers(model))}

    def run(self, model: nn.Module, run: UnlearningRun) -> tuple[int, dict[str, Any]]:
        try:
            return super().run(model, run)
        finally:  # the hooks must not stay on the model handed back
            for key in ("student_capture", "blindspot_capture"):
                if key in run.state:
                    run.state[key].remove()

    def loss(self, model: nn.Module, forget_batch: tuple[Tensor, Tensor] | None,
             retain_batch: tuple[Tensor, Tensor] | None, run: UnlearningRun) -> Tensor:
        assert forget_batch is not None and retain_batch is not None
        config, state = self.config, run.state
        forget_inputs, _ = forget_batch  # the forget set's own targets are never read
        retain_inputs, retain_targets = retain_batch
        with torch.no_grad():
            target, blind_layers = state["blindspot_capture"].run(lambda: one_output(state["blindspot"], forget_inputs))
        predicted, own_layers = state["student_capture"].run(lambda: one_output(model, forget_inputs))
        retain_loss = nn.functional.mse_loss(one_output(model, retain_inputs), real_targets(retain_targets))
        forget_loss = nn.functional.mse_loss(predicted, target)
        loss = (config.retain_weight * retain_loss + config.forget_weight * forget_loss) / state["scale"]
        if config.activation_weight:
            loss = loss + config.activation_weight * activation_difference(own_layers, blind_layers)
        return loss
