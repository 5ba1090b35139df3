"""Canaries an ML engineer may plant in a training run, to show that the audit detects memorisation
in this model (audits.checks.power.canary_power); they never stand in for the forget records' own power.

A canary is a mislabelled synthetic record: its class ``look_alike`` is drawn at random, each element
of its input is copied from a different held-out record of that class (chosen at random per element),
and its label is another class (``look_alike`` shifted by a uniform non-zero step). The input has the
statistics of its class, so a model that did not train on the canary predicts ``look_alike`` and only
memorisation fits the label; and no person's record is copied (each element comes from another
record, at random), so a canary is nobody's data. Everything is a function of the held-out records
and the seed. Plain PyTorch, no Django: workers.canaries records them in the registry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

from workers.datasets.base import RecordDataset

KIND = "mislabelled_synthetic"
# The smallest number of held-out records of a class its canaries are drawn from: with fewer, each
# element would come from the same one or two people.
MIN_RECORDS_PER_CLASS = 5


@dataclass(frozen=True, eq=False)
class Canary:
    """One planted record: its key, input tensor (the dataset's item form), label and the class its
    input was drawn from."""

    key: str
    input: torch.Tensor
    label: int
    look_alike: int


def canary_keys(prefix: str, count: int) -> list[str]:
    """``count`` record keys ``<prefix>-0000``, ``<prefix>-0001``, ... (sorted as numbered)."""
    return [f"{prefix}-{i:04d}" for i in range(count)]


def synthesise_canaries(held_out: RecordDataset, *, count: int, seed: int, key_prefix: str) -> list[Canary]:
    """``count`` canaries drawn from ``held_out`` (records no training run uses), deterministic in
    ``seed`` and the held-out records. ValueError naming the problem: ``count`` < 1, fewer than two
    classes with :data:`MIN_RECORDS_PER_CLASS` held-out records each, inputs that are not tensors of
    one shape."""
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    keys = sorted(held_out.record_keys)
    index = {k: i for i, k in enumerate(held_out.record_keys)}
    items = [held_out[index[k]] for k in keys]
    labels = np.array([int(item[2]) for item in items], dtype=np.int64)
    classes = [int(c) for c in np.unique(labels) if (labels == c).sum() >= MIN_RECORDS_PER_CLASS]
    if len(classes) < 2:
        raise ValueError(f"canaries need held-out records of at least two classes, {MIN_RECORDS_PER_CLASS} or more "
                         f"each (a canary's input is drawn from one class, its label is another); the held-out split "
                         f"has {len(keys)} record(s) and {len(classes)} such class(es)")
    shapes = {tuple(item[1].shape) for item in items}
    if len(shapes) != 1:
        raise ValueError(f"canaries need held-out inputs of one shape; found {len(shapes)} shapes")
    inputs = torch.stack([item[1] for item in items])
    rng = np.random.default_rng([int(seed), 0xCA7A])
    canaries = []
    for key in canary_keys(key_prefix, count):
        position = int(rng.integers(len(classes)))
        look_alike = classes[position]
        label = classes[(position + int(rng.integers(1, len(classes)))) % len(classes)]
        rows = np.flatnonzero(labels == look_alike)
        # One held-out record per element: the canary is its class's look, nobody's record.
        chosen = torch.from_numpy(rng.choice(rows, size=inputs.shape[1:]))
        canaries.append(Canary(key, torch.gather(inputs, 0, chosen.unsqueeze(0)).squeeze(0).clone(), label, look_alike))
    return canaries


def canary_input_bytes(canary_input: torch.Tensor) -> bytes:
    """A canary's input as safetensors bytes (tensor ``input``): what the registry keeps."""
    return safetensors_save({"input": canary_input.contiguous()})


def canary_input_from_bytes(data: bytes) -> torch.Tensor:
    """The input :func:`canary_input_bytes` wrote (safetensors: nothing is unpickled)."""
    return safetensors_load(bytes(data))["input"]


class WithCanaries(RecordDataset):
    """``base``'s records followed by the canaries' (keys distinct from ``base``'s)."""

    def __init__(self, base: RecordDataset, canaries: Sequence[Canary]) -> None:
        clash = set(base.record_keys) & {c.key for c in canaries}
        if clash:
            raise ValueError(f"canary keys already name records of the dataset: {', '.join(sorted(clash)[:5])}")
        self.base = base
        self.canaries = list(canaries)
        self.modality = base.modality
        self._keys = list(base.record_keys) + [c.key for c in self.canaries]
        self.source_read = getattr(base, "source_read", None)

    @property
    def record_keys(self) -> Sequence[str]:
        return self._keys

    def __getitem__(self, index: int) -> tuple[str, torch.Tensor, torch.Tensor]:
        if index < len(self.base):
            return self.base[index]
        canary = self.canaries[index - len(self.base)]
        return canary.key, canary.input, torch.tensor(canary.label, dtype=torch.int64)
