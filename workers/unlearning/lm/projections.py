"""Orthogonal projections of a causal LM's hidden states, stacked across requests (MRP's artefact).

A projected decoder layer passes on ``h - h Bᵀ B`` instead of its output hidden states ``h``, where
the rows of ``B`` (``[k, hidden]``) are orthonormal: the ``k`` directions it spans are gone from
every later layer's input, whatever the weights do. Each MRP request adds directions to ``B`` (the
new basis spans the old one, so every earlier request still holds) and never changes a weight.

The projection lives on the model itself: a :class:`RepresentationProjection` child named
:data:`PROJECTION_CHILD` on each projected decoder layer, plus a forward hook on that layer. Its
basis is a non-persistent buffer, so ``state_dict`` (the stored weights) leaves it out,
``copy.deepcopy`` and ``.to(device)`` carry it, and peft's LoRA wraps and merges the model around it:
an LM method run on a projected model returns a model that is still projected. The store keeps the
bases as their own safetensors blob (:func:`projection_tensors` / :func:`apply_projection_tensors`,
read and written by :mod:`workers.training.lm`), so a loaded version is served with every one of them.

Works on any transformers causal LM whose decoder layers sit in one ``nn.ModuleList`` of
``num_hidden_layers`` entries (GPT-2, Llama, Mistral, Qwen, GPT-NeoX, ...).
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

PROJECTION_CHILD = "representation_projection"
_TENSOR_NAME = re.compile(r"^layer\.(\d+)$")


class RepresentationProjection(nn.Module):
    """``h -> h - h Bᵀ B`` for an orthonormal basis ``B`` (``[k, hidden]``).

    ``pending`` (``[k', hidden]``, trained by MRP, not a registered parameter) adds directions
    while a request trains them: the basis then used is the orthonormalised ``[B; pending]``.
    """

    def __init__(self, basis: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("basis", basis.detach().float().clone(), persistent=False)
        self.pending: torch.Tensor | None = None

    def current_basis(self) -> torch.Tensor:
        """The basis applied now: ``basis``, widened by ``pending`` while a request trains it."""
        if self.pending is None:
            return self.basis
        return orthonormal_rows(torch.cat([self.basis, self.pending.to(self.basis)], dim=0))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return project_out(hidden, self.current_basis())


def project_out(hidden: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """``hidden - hidden Bᵀ B``: ``hidden`` (``[..., d]``) without its components along the rows of
    ``basis`` (``[k, d]``, orthonormal). ``k = 0`` returns ``hidden`` unchanged."""
    if basis.shape[0] == 0:
        return hidden
    basis = basis.to(hidden.dtype)
    return hidden - (hidden @ basis.T) @ basis


def orthonormal_rows(matrix: torch.Tensor) -> torch.Tensor:
    """Orthonormal rows spanning the rows of ``matrix`` (``[k, d]``, ``k <= d``), in order: the
    first ``j`` rows of the result span the first ``j`` of ``matrix`` (QR of its transpose;
    differentiable). Raises ``ValueError`` when ``k > d``."""
    rows, width = matrix.shape
    if rows > width:
        raise ValueError(f"{rows} directions cannot be orthonormal in {width} dimensions")
    q, _ = torch.linalg.qr(matrix.float().T, mode="reduced")
    return q.T


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The model's decoder layers: its first ``nn.ModuleList`` of ``num_hidden_layers`` modules.
    Raises ``ValueError`` when it has none (not a transformers decoder)."""
    config = getattr(model, "config", None)
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    count = getattr(text_config, "num_hidden_layers", None)
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and count and len(module) == count:
            return module
    raise ValueError(f"{type(model).__name__}: no list of {count} decoder layers to project")


def hidden_size(model: nn.Module) -> int:
    """Width of the hidden states the decoder layers pass on."""
    config = model.config
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    return int(text_config.hidden_size)


def layer_projection(model: nn.Module, index: int, *, create: bool = False) -> RepresentationProjection | None:
    """The projection on decoder layer ``index`` (None if it has none, unless ``create``: then an
    empty one is attached, with its hook). ``IndexError`` for a layer the model does not have."""
    layers = decoder_layers(model)
    if not 0 <= index < len(layers):
        raise IndexError(f"the model has decoder layers 0..{len(layers) - 1}, not {index}")
    layer = layers[index]
    projection = getattr(layer, PROJECTION_CHILD, None)
    if projection is None and create:
        reference = next(model.parameters())
        projection = RepresentationProjection(torch.zeros(0, hidden_size(model), device=reference.device))
        layer.add_module(PROJECTION_CHILD, projection)
        layer.register_forward_hook(_project_layer_output)
    return projection


def _project_layer_output(layer: nn.Module, args: Any, output: Any) -> Any:
    """Forward hook of a projected layer: its output hidden states (a tensor, or the first item of
    the tuple older transformers layers return) through its projection."""
    projection = getattr(layer, PROJECTION_CHILD)
    if isinstance(output, tuple):
        return (projection(output[0]), *output[1:])
    return projection(output)


def projected_layers(model: nn.Module) -> dict[int, torch.Tensor]:
    """``{layer index: basis}`` of every projected decoder layer with at least one direction."""
    bases: dict[int, torch.Tensor] = {}
    for index, layer in enumerate(decoder_layers(model)):
        projection = getattr(layer, PROJECTION_CHILD, None)
        if projection is not None and projection.basis.shape[0]:
            bases[index] = projection.basis
    return bases


def projection_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's projections as tensors to store (``layer.<index>`` -> basis, float32, CPU);
    empty for a model without projections (not a transformers decoder included)."""
    try:
        bases = projected_layers(model)
    except ValueError:
        return {}
    return {f"layer.{index}": basis.detach().to("cpu", torch.float32).contiguous()
            for index, basis in bases.items()}


def apply_projection_tensors(model: nn.Module, tensors: dict[str, torch.Tensor]) -> nn.Module:
    """Put stored projections (:func:`projection_tensors`) on ``model`` (changed in place and
    returned). ``ValueError`` for a name, layer or width that does not fit the model, or a basis
    whose rows are not orthonormal (the stored bases always are)."""
    width = hidden_size(model)
    for name, basis in sorted(tensors.items()):
        match = _TENSOR_NAME.match(name)
        if match is None or basis.ndim != 2 or basis.shape[1] != width:
            raise ValueError(f"stored projection {name!r} {tuple(basis.shape)} does not fit a model "
                             f"of hidden size {width}")
        gram = basis.float() @ basis.float().T
        if not torch.allclose(gram, torch.eye(basis.shape[0]), atol=1e-4):
            raise ValueError(f"stored projection {name!r} is not orthonormal")
        try:
            projection = layer_projection(model, int(match[1]), create=True)
        except IndexError as exc:
            raise ValueError(f"stored projection {name!r}: {exc}") from None
        projection.basis = basis.detach().float().to(projection.basis.device).clone()
    return model
