"""An in-memory adapter over tensors: for tests, benchmarks and data already loaded."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from workers.datasets.base import RecordDataset


class TensorRecordDataset(RecordDataset):
    """``(keys[i], inputs[i], targets[i])``; keys must be unique."""

    def __init__(self, keys: Sequence[str], inputs: torch.Tensor, targets: torch.Tensor,
                 *, modality: str = "tabular") -> None:
        if not (len(keys) == len(inputs) == len(targets)):
            raise ValueError("keys, inputs and targets differ in length")
        if len(set(keys)) != len(keys):
            raise ValueError("record keys repeat")
        self._keys = list(keys)
        self.inputs = inputs
        self.targets = targets
        self.modality = modality

    @property
    def record_keys(self) -> Sequence[str]:
        return self._keys

    def __getitem__(self, index: int) -> tuple[str, torch.Tensor, torch.Tensor]:
        return self._keys[index], self.inputs[index], self.targets[index]
