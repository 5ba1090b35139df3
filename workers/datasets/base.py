"""Dataset adapters: one interface that yields ``(record_key, input, target)``.

An adapter reads one dataset version from its storage location and can be restricted to a subset
of record keys (the forget set, the retain set, one shard's slice). Plain PyTorch/NumPy, no Django.

Record keys are the dataset's external keys (strings, unique per dataset); the registry maps them
to DataRecord rows. Training code must write membership from the keys a loader actually yielded,
which is why every item carries its key.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

IN_MEMORY = "<file read from shared storage>"  # an adapter's ``path`` when it was given the file's bytes


class RecordDataset(Dataset, ABC):
    """A map-style dataset whose items are ``(record_key: str, input: Tensor, target: Tensor)``."""

    modality: str = "tabular"

    @property
    @abstractmethod
    def record_keys(self) -> Sequence[str]:
        """All record keys, in item order."""

    @abstractmethod
    def __getitem__(self, index: int) -> tuple[str, torch.Tensor, torch.Tensor]: ...

    def __len__(self) -> int:
        return len(self.record_keys)

    def subset(self, keys: Iterable[str]) -> RecordSubset:
        """The items whose keys are in ``keys``, in this dataset's order. Unknown keys raise."""
        wanted = set(keys)
        index = {key: i for i, key in enumerate(self.record_keys)}
        missing = wanted - index.keys()
        if missing:
            sample = ", ".join(sorted(missing)[:5])
            raise KeyError(f"{len(missing)} record key(s) not in this dataset: {sample}")
        return RecordSubset(self, sorted(index[k] for k in wanted))

    def without(self, keys: Iterable[str]) -> RecordSubset:
        """Every item except those whose keys are in ``keys`` (unknown keys are ignored)."""
        excluded = set(keys)
        return RecordSubset(self, [i for i, k in enumerate(self.record_keys) if k not in excluded])

    def describe(self) -> dict[str, Any]:
        return {"modality": self.modality, "records": len(self)}


class RecordSubset(RecordDataset):
    """A view of some items of a parent RecordDataset, in the parent's order."""

    def __init__(self, parent: RecordDataset, indices: Sequence[int]) -> None:
        self.parent = parent
        self.indices = list(indices)
        self.modality = parent.modality
        self._keys = [parent.record_keys[i] for i in self.indices]

    @property
    def record_keys(self) -> Sequence[str]:
        return self._keys

    def __getitem__(self, index: int) -> tuple[str, torch.Tensor, torch.Tensor]:
        return self.parent[self.indices[index]]
