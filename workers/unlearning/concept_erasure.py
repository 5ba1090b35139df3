"""LEACE concept erasure: "stop using attribute X", for a feature, never for a person.

LEAst-squares Concept Erasure (Belrose et al., NeurIPS 2023, arXiv 2306.03819; the ``concept-erasure``
package) fits, in closed form, the affine map ``x -> x - P (x - mean)`` of one layer's representations
that makes the attribute's labels linearly undecodable from them (every linear classifier's
cross-covariance with the attribute is zero) while moving the representations as little as possible
in the least-squares sense. That is the whole promise: a non-linear probe may still recover the
attribute, and the audit's concept probe (``audits/checks/concept_probe.py``) shows how well beside
the linear one. Its guarantee class, ``concept_erased``, never counts as erasure of a person's data.

The eraser lives on the model, like MRP's projections (:mod:`workers.unlearning.lm.projections`): a
:class:`ConceptEraser` child named :data:`ERASER_CHILD` on the erased layer plus a forward hook that
passes the layer's output through it. Its tensors are non-persistent buffers, so ``state_dict`` (the
stored weights) is unchanged; the store keeps them as their own safetensors blob
(:func:`eraser_tensors` / :func:`apply_eraser_tensors`), never pickled.

In: ``forget`` is an iterable of ``(record_keys, inputs, attribute_labels)`` batches, the records the
eraser is fitted on (the attribute's labels, integers, at least two values); ``retain`` is not read.
Out: the model (a copy) with the eraser on ``config.layer``; ``result.details``: ``layer``,
``records_fitted``, ``attribute_values``, ``erased_rank`` (the dimensions the eraser changes),
``mean_shift`` (the mean L2 change of the fitted representations, relative to their mean norm).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from workers.unlearning.base import (
    ConfigError,
    MethodConfig,
    ProgressCallback,
    UnlearningMethod,
    no_progress,
)
from workers.unlearning.concept_coupling import COUPLING_FIELDS, CouplingEraser, attribute_given

ERASER_CHILD = "concept_eraser"
_TENSOR_FIELDS = ("proj_left", "proj_right", "bias")


@dataclass
class LeaceConfig(MethodConfig):
    """``layer``: the dotted name of the module whose output is erased (``model.get_submodule``), e.g.
    ``"net.2"``; its output must be ``[batch, features]`` (required when the method runs: the layer
    depends on the model). ``svd_tol``: the package's default, below
    which singular values of the whitened cross-covariance are dropped."""

    layer: str = ""
    svd_tol: float = 0.01

    def validate(self) -> None:
        super().validate()
        if not 0.0 < self.svd_tol < 1.0:
            raise ConfigError(f"LeaceConfig.svd_tol must be in (0, 1), got {self.svd_tol}")


class ConceptEraser(nn.Module):
    """``x -> x - ((x - bias) @ proj_rightᵀ) @ proj_leftᵀ``: LEACE's eraser as stored tensors
    (``proj_left``, ``proj_right``: ``[features, rank]`` and ``[rank, features]``; ``bias``: ``[features]``)."""

    TENSOR_FIELDS = _TENSOR_FIELDS

    def __init__(self, proj_left: torch.Tensor, proj_right: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        if proj_left.ndim != 2 or proj_right.ndim != 2 or bias.ndim != 1:
            raise ValueError("an eraser needs 2-d proj_left/proj_right and a 1-d bias")
        features, rank = proj_left.shape
        if proj_right.shape != (rank, features) or bias.shape != (features,):
            raise ValueError(f"eraser tensors do not fit: proj_left {tuple(proj_left.shape)}, proj_right "
                             f"{tuple(proj_right.shape)}, bias {tuple(bias.shape)}")
        for name, tensor in zip(_TENSOR_FIELDS, (proj_left, proj_right, bias), strict=True):
            self.register_buffer(name, tensor.detach().float().clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return erase(x, self.proj_left, self.proj_right, self.bias)


def erase(x: torch.Tensor, proj_left: torch.Tensor, proj_right: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """LEACE's affine erasure of ``x`` (``[..., features]``), as ``concept_erasure.LeaceEraser`` applies it."""
    if x.shape[-1] != proj_left.shape[0]:
        raise ValueError(f"the eraser takes {proj_left.shape[0]} features, the layer gave {x.shape[-1]}")
    delta = x - bias.to(x.dtype)
    return x - (delta @ proj_right.to(x.dtype).T) @ proj_left.to(x.dtype).T


def attribute_targets(labels: torch.Tensor) -> torch.Tensor:
    """The attribute as LEACE fits it: one column for a binary attribute, one-hot for more values.
    ``ValueError`` for a single value (nothing to erase) or labels that are not integers."""
    if labels.dtype.is_floating_point or labels.ndim != 1:
        raise ValueError("attribute labels must be a 1-d tensor of integers")
    values = torch.unique(labels)
    if values.numel() < 2:
        raise ValueError("the attribute takes a single value on the fitting records: nothing to erase")
    if values.numel() == 2:
        return (labels == values[1]).float().unsqueeze(1)
    return (labels.unsqueeze(1) == values.unsqueeze(0)).float()


def fit_eraser(features: torch.Tensor, labels: torch.Tensor, *, svd_tol: float = 0.01) -> ConceptEraser:
    """Fit LEACE on ``features`` (``[n, d]``) w.r.t. integer ``labels`` (``[n]``) and return the eraser."""
    from concept_erasure import LeaceFitter  # imported only where it runs

    if features.ndim != 2 or features.shape[0] != labels.shape[0]:
        raise ValueError(f"features {tuple(features.shape)} and labels {tuple(labels.shape)} do not pair up")
    targets = attribute_targets(labels)
    fitter = LeaceFitter(features.shape[1], targets.shape[1], dtype=torch.float64, svd_tol=svd_tol)
    fitter.update(features.double(), targets.double())
    eraser = fitter.eraser
    bias = eraser.bias if eraser.bias is not None else torch.zeros(features.shape[1], dtype=torch.float64)
    return ConceptEraser(constant_features_kept(eraser.proj_left, features), eraser.proj_right, bias)


# A feature whose spread on the fitting records is below this share of the median feature's is left as it is.
NEAR_CONSTANT = 1e-3


def constant_features_kept(proj_left: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """``proj_left`` with zero rows for the features (near-)constant on the fitting records: dead or
    almost dead ReLU units, whose standard deviation is at most ``NEAR_CONSTANT`` times the median's.

    LEACE's correction lies in the span of the features' covariance, so it leaves a constant feature
    as it was; in floating point it writes ~1e-16 times the erased component there instead, and a unit
    that fired on one fitting record gets ~1e-6 times it. On new records such a unit is constant, so
    the erased component is all it holds, and a probe that standardises each feature scales it straight
    back up (measured on digits: a linear probe's AUC for parity 0.986 and, with one unit that fired
    once in 1,200 fitting records, 0.988 after erasure, at chance without those rows)."""
    spread = features.std(dim=0)
    varying = spread[spread > 0]
    if varying.numel() == 0:
        raise ValueError("every feature is constant on the fitting records: nothing to erase")
    near_constant = spread <= NEAR_CONSTANT * varying.median()
    return torch.where(near_constant.unsqueeze(1), torch.zeros_like(proj_left), proj_left)


def layer_outputs(model: nn.Module, layer: str, batches: Iterable[Any], *, device: str = "cpu",
                  attribute_at_inference: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The outputs of ``model``'s module ``layer`` on ``(keys, inputs, labels)`` batches, and the labels.
    ``attribute_at_inference``: give each batch's labels to the model's class-conditional erasers
    (:mod:`workers.unlearning.concept_coupling`) as the attribute of its inputs; without it such an eraser
    raises. ``ValueError`` for an unknown layer or an output that is not ``[batch, features]``."""
    module = _layer(model, layer)
    captured: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _a, output: captured.append(output.detach().cpu()))
    model.eval()
    try:
        with torch.no_grad():
            for _keys, inputs, targets in batches:
                if attribute_at_inference:
                    with attribute_given(model, torch.as_tensor(targets).to(device)):
                        model(inputs.to(device))
                else:
                    model(inputs.to(device))
                labels.append(torch.as_tensor(targets).cpu())
    finally:
        handle.remove()
    if not captured:
        raise ValueError("no fitting records: the attribute's batches are empty")
    features = torch.cat(captured)
    if features.ndim != 2:
        raise ValueError(f"layer {layer!r} gives outputs of shape {tuple(features.shape[1:])} per record; "
                         "LEACE here erases [batch, features] outputs")
    return features, torch.cat(labels).long()


def _layer(model: nn.Module, layer: str) -> nn.Module:
    try:
        return model.get_submodule(layer)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n]
        raise ValueError(f"the model has no layer {layer!r}; its layers: {', '.join(names)}") from None


def _erase_layer_output(module: nn.Module, _args: Any, output: torch.Tensor) -> torch.Tensor:
    return getattr(module, ERASER_CHILD)(output)


def attach_eraser(model: nn.Module, layer: str, eraser: ConceptEraser | CouplingEraser) -> nn.Module:
    """Put ``eraser`` on ``model``'s module ``layer`` (in place; returns ``model``). A layer erased
    once already refuses a second eraser (fit one on the attributes together instead)."""
    module = _layer(model, layer)
    if hasattr(module, ERASER_CHILD):
        raise ValueError(f"layer {layer!r} already has a concept eraser")
    module.add_module(ERASER_CHILD, eraser)
    module.register_forward_hook(_erase_layer_output)
    return model


def erasers_detach(model: nn.Module) -> list[str]:
    """Take every concept eraser off ``model`` (in place): its layers then serve what the weights compute.
    Returns the names of the layers that had one."""
    erased = [(name, module) for name, module in model.named_modules() if hasattr(module, ERASER_CHILD)]
    for _name, module in erased:
        for key, hook in list(module._forward_hooks.items()):
            if hook is _erase_layer_output:
                del module._forward_hooks[key]
        delattr(module, ERASER_CHILD)
    return [name for name, _ in erased]


def erased_layers(model: nn.Module) -> dict[str, ConceptEraser | CouplingEraser]:
    """The model's erasers (LEACE's and class-conditional couplings) by the name of the layer they erase."""
    return {name.removesuffix(f".{ERASER_CHILD}"): module for name, module in model.named_modules()
            if isinstance(module, ConceptEraser | CouplingEraser)}


def eraser_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's erasers as safetensors-ready tensors: ``<layer>.proj_left`` etc. (LEACE), or
    ``<layer>.centroids`` etc. (a coupling, :mod:`workers.unlearning.concept_coupling`)."""
    return {f"{layer}.{field}": getattr(eraser, field).contiguous()
            for layer, eraser in erased_layers(model).items() for field in eraser.TENSOR_FIELDS}


def apply_eraser_tensors(model: nn.Module, tensors: dict[str, torch.Tensor]) -> nn.Module:
    """Attach the erasers stored by :func:`eraser_tensors` to ``model`` (in place; returns it); a layer's
    fields say which kind of eraser it is. ``ValueError`` when a layer's tensors are not all there or do
    not fit."""
    layers: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in tensors.items():
        layer, _, field = name.rpartition(".")
        if field not in _TENSOR_FIELDS + COUPLING_FIELDS or not layer:
            raise ValueError(f"unexpected eraser tensor {name!r}")
        layers.setdefault(layer, {})[field] = tensor
    for layer, fields in sorted(layers.items()):
        kind = CouplingEraser if set(fields) & set(COUPLING_FIELDS) else ConceptEraser
        missing = sorted(set(kind.TENSOR_FIELDS) - set(fields))
        extra = sorted(set(fields) - set(kind.TENSOR_FIELDS))
        if missing or extra:
            raise ValueError(f"the eraser of layer {layer!r} " + (f"lacks {', '.join(missing)}" if missing else
                                                                  f"mixes in {', '.join(extra)}"))
        attach_eraser(model, layer, kind(*(fields[field] for field in kind.TENSOR_FIELDS)))
    return model


class ConceptEraserMethod(UnlearningMethod):
    """A concept method: fit an eraser on one layer's outputs for the labelled records (``forget``:
    batches whose labels are the attribute's values; ``retain`` is not read) and attach it to a copy
    of the model. A subclass names its config (with ``layer``), ``fit`` and, optionally, ``refuse``."""

    def refuse(self, model: nn.Module) -> None:
        """Raise ``ValueError`` where this method cannot erase from ``model`` (none by default)."""

    def fit(self, features: torch.Tensor, labels: torch.Tensor) -> tuple[nn.Module, torch.Tensor, dict[str, Any]]:
        """The eraser fitted on ``features`` with the attribute ``labels``, the erased features, and
        what the result adds about it."""
        raise NotImplementedError

    def unlearn(self, model: nn.Module, forget: Iterable[Any], retain: Iterable[Any], *, device: str = "cpu",
                progress: ProgressCallback = no_progress, **context: Any) -> tuple[nn.Module, Any]:
        started = time.perf_counter()
        config = self.config
        if not config.layer:
            raise ConfigError(f"{type(config).__name__}.layer must name the layer whose output is erased, e.g. 'net.2'")
        self.refuse(model)
        progress("representations", 0.0)
        features, labels = layer_outputs(model, config.layer, forget, device=device)
        progress("fit", 0.5)
        eraser, erased_features, details = self.fit(features, labels)
        moved = (erased_features - features).norm(dim=1).mean() / features.norm(dim=1).mean().clamp_min(1e-12)
        erased = copy.deepcopy(model)
        attach_eraser(erased, config.layer, eraser.to(device))
        progress("fit", 1.0)
        return erased, self._result(started, device, layer=config.layer, records_fitted=int(labels.numel()),
                                    attribute_values=int(torch.unique(labels).numel()), mean_shift=float(moved),
                                    **details)


class Leace(ConceptEraserMethod, name="leace"):
    """LEACE on one layer's output w.r.t. one attribute (see the module docstring)."""

    config_class = LeaceConfig

    def fit(self, features: torch.Tensor, labels: torch.Tensor) -> tuple[nn.Module, torch.Tensor, dict[str, Any]]:
        eraser = fit_eraser(features, labels, svd_tol=self.config.svd_tol)
        return eraser, eraser(features), {"erased_rank": int(eraser.proj_left.shape[1])}
