"""Model architectures, built from a JSON-able config so that a manifest can rebuild them.

``build_model({"name": "mlp", "config": {...}})`` returns a freshly initialised module (the
caller seeds the RNG). Architectures avoid data-fitted preprocessing: the MLP's input scaling is
a fixed ``asinh`` plus learned weights, so no statistic is fitted across SISA shards.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from foundation.registry import Registry
from workers.unlearning.base import ConfigError

ARCHITECTURES: Registry[Callable[..., nn.Module]] = Registry("architecture")
register_architecture = ARCHITECTURES.register


def build_model(spec: Mapping[str, Any]) -> nn.Module:
    """``spec`` = ``{"name": registered name, "config": keyword arguments}``."""
    if not isinstance(spec, Mapping) or set(spec) - {"name", "config"} or "name" not in spec:
        raise ConfigError(f"architecture spec must be {{'name', 'config'}}, got {spec!r}")
    factory = ARCHITECTURES.get(spec["name"])
    config = dict(spec.get("config") or {})
    try:
        return factory(**config)
    except TypeError as exc:
        raise ConfigError(f"architecture {spec['name']!r}: {exc}") from None


class Asinh(nn.Module):
    """asinh(x / scale): a fixed, data-independent squashing of raw features that span many
    magnitudes (about log|x| for |x| >> scale, linear near 0, odd). Nothing is fitted, so it is
    safe under SISA sharding, S3T's frozen base and DP."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.asinh(x / self.scale)


@register_architecture("mlp")
def mlp(
    in_features: int,
    num_classes: int,
    hidden: list[int] | tuple[int, ...] = (64, 64),
    input_norm: str = "asinh",
    asinh_scale: float = 0.01,
    output_scale: float = 1.0,
    output_shift: float = 0.0,
) -> nn.Sequential:
    """A ReLU MLP. ``input_norm``: "asinh" (fixed, see :class:`Asinh`), "batchnorm" (statistics
    are model state, checkpointed with it; not for DP or S3T) or "none". Layers are named
    ``fc<i>`` and ``head`` so that peft can target them. A regression model (``num_classes`` 1,
    its outputs) names the unit of its target with ``output_scale``/``output_shift``: the head's
    output ``h`` is served as ``h * output_scale + output_shift`` (:class:`OutputAffine`, fixed
    numbers from the configuration, nothing fitted), so that a target in the hundreds trains at the
    scale of one."""
    if input_norm not in ("asinh", "batchnorm", "none"):
        raise ConfigError(f"mlp.input_norm must be asinh, batchnorm or none, got {input_norm!r}")
    if asinh_scale <= 0:
        raise ConfigError("mlp.asinh_scale must be > 0")
    if not output_scale > 0:
        raise ConfigError("mlp.output_scale must be > 0")
    # Flatten (no parameters, identity on [batch, features]) lets the MLP take images too.
    layers: dict[str, nn.Module] = {"flatten": nn.Flatten()}
    if input_norm == "asinh":
        layers["norm"] = Asinh(asinh_scale)
    elif input_norm == "batchnorm":
        layers["norm"] = nn.BatchNorm1d(in_features)
    width = in_features
    for i, size in enumerate(hidden):
        layers[f"fc{i}"] = nn.Linear(width, size)
        layers[f"act{i}"] = nn.ReLU()
        width = size
    layers["head"] = nn.Linear(width, num_classes)
    if (output_scale, output_shift) != (1.0, 0.0):  # none by default: the classifiers' modules are unchanged
        layers["output"] = OutputAffine(output_scale, output_shift)
    return nn.Sequential(_ordered(layers))


class OutputAffine(nn.Module):
    """``x * scale + shift`` with fixed numbers from the architecture's configuration (no
    parameter, nothing fitted): the unit of a regression target."""

    def __init__(self, scale: float, shift: float) -> None:
        super().__init__()
        self.scale, self.shift = float(scale), float(shift)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


@register_architecture("small_cnn")
def small_cnn(
    num_classes: int = 10,
    in_channels: int = 1,
    channels: list[int] | tuple[int, int] = (16, 32),
    hidden: int = 64,
    image_size: int = 28,
) -> nn.Sequential:
    """Two conv+ReLU+max-pool blocks and a two-layer head, for 28x28 images."""
    c1, c2 = channels
    side = image_size // 4
    return nn.Sequential(_ordered({
        "conv0": nn.Conv2d(in_channels, c1, 3, padding=1),
        "act0": nn.ReLU(),
        "pool0": nn.MaxPool2d(2),
        "conv1": nn.Conv2d(c1, c2, 3, padding=1),
        "act1": nn.ReLU(),
        "pool1": nn.MaxPool2d(2),
        "flatten": nn.Flatten(),
        "fc0": nn.Linear(c2 * side * side, hidden),
        "act2": nn.ReLU(),
        "head": nn.Linear(hidden, num_classes),
    }))


@register_architecture("text_bag")
def text_bag(
    num_classes: int = 2,
    vocab_size: int = 257,
    embedding_dim: int = 32,
    hidden: int = 32,
    pad_id: int = 0,
) -> nn.Module:
    """Mean of byte embeddings (padding ignored) and a small MLP; for the text reference set."""
    return TextBag(num_classes, vocab_size, embedding_dim, hidden, pad_id)


class TextBag(nn.Module):
    def __init__(self, num_classes: int, vocab_size: int, embedding_dim: int, hidden: int, pad_id: int):
        super().__init__()
        self.pad_id = pad_id
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=pad_id)
        self.fc0 = nn.Linear(embedding_dim, hidden)
        self.act0 = nn.ReLU()
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = (ids != self.pad_id).unsqueeze(-1).to(self.embedding.weight.dtype)
        pooled = (self.embedding(ids) * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        return self.head(self.act0(self.fc0(pooled)))


@register_architecture("entry_point")
def entry_point(entry_point: str, config: Mapping[str, Any] | None = None) -> nn.Module:
    """A module from the company's own installed package: the factory that the installed Python
    entry point ``entry_point`` of the group ``deletion_platform.models`` names, called with
    ``config`` as keyword arguments. Only installed entry points of that group are looked up
    (workers.model_families.entry_points)."""
    from workers.model_families.entry_points import build_entry_point_module

    return build_entry_point_module(entry_point, config or {})


@register_architecture("transformers")
def transformers_classifier(**options: Any) -> nn.Module:
    """A Hugging Face sequence classifier the platform builds from ``hf_config`` (a transformers
    ``config.json`` object; only architectures the installed transformers knows, never remote code)
    that reads the platform's byte tokens as its token ids, ``max_length`` of them per text
    (workers.training.sequence_classifier.ByteTokenClassifier). The model family is huggingface's
    (workers.model_families.huggingface); its models without an ``hf_config`` bring their
    config.json with their upload and are not built here."""
    from workers.training.sequence_classifier import byte_token_classifier

    return byte_token_classifier(options)


def _ordered(layers: dict[str, nn.Module]) -> Any:
    from collections import OrderedDict

    return OrderedDict(layers)


def has_running_stats(model: nn.Module) -> bool:
    """True when a module updates statistics in train mode outside of gradient descent."""
    return any(getattr(m, "track_running_stats", False) for m in model.modules())


def linear_layer_types() -> tuple[type[nn.Module], ...]:
    """nn.Linear, and transformers' Conv1D once transformers is loaded (a model can hold one only
    then; the platform's own architectures never import it)."""
    import sys

    pytorch_utils = sys.modules.get("transformers.pytorch_utils")
    conv1d = getattr(pytorch_utils, "Conv1D", None)
    return (nn.Linear,) if conv1d is None else (nn.Linear, conv1d)
