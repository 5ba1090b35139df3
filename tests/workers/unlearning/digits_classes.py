"""Class forgetting on scikit-learn's digits, shared by the class-unlearning tests: one wide MLP
(the platform's ``mlp`` architecture, 2 x 256 hidden units) trained once per test process, and a
dataset wrapper that withholds labels so that a test can prove a method never reads one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, NoReturn

import torch
from sklearn.datasets import load_digits
from torch import Tensor, nn
from torch.utils.data import DataLoader, default_collate

from tests.workers.unlearning.test_method_harness import TensorRecords
from workers.datasets.base import RecordDataset
from workers.training.architectures import build_model

ARCHITECTURE = {"name": "mlp", "config": {"in_features": 64, "num_classes": 10, "hidden": [256, 256],
                                          "input_norm": "none"}}


@dataclass(frozen=True)
class DigitClasses:
    train: TensorRecords
    test_inputs: Tensor
    test_targets: Tensor
    original: nn.Module

    def forget_keys(self, digit: int) -> list[str]:
        return [key for key, target in zip(self.train.record_keys, self.train.targets, strict=True)
                if int(target) == digit]

    @torch.no_grad()
    def accuracies(self, model: nn.Module, digit: int) -> dict[str, float]:
        """Accuracy on the forgotten class and on the others, training and held-out records."""
        def accuracy(inputs: Tensor, targets: Tensor) -> float:
            return (model(inputs).argmax(1) == targets).float().mean().item()

        train_forget = self.train.targets == digit
        test_forget = self.test_targets == digit
        x, y = self.train.inputs, self.train.targets
        return {
            "forget": accuracy(x[train_forget], y[train_forget]),
            "retain": accuracy(x[~train_forget], y[~train_forget]),
            "test_forget": accuracy(self.test_inputs[test_forget], self.test_targets[test_forget]),
            "test_retain": accuracy(self.test_inputs[~test_forget], self.test_targets[~test_forget]),
        }


@cache
def digit_classes() -> DigitClasses:
    """1,300 training and 497 held-out digits; the MLP fits the training records (30 epochs of Adam)."""
    images, labels = load_digits(return_X_y=True)
    inputs, targets = torch.tensor(images / 16.0, dtype=torch.float32), torch.tensor(labels)
    order = torch.randperm(len(targets), generator=torch.Generator().manual_seed(0))
    train_index, test_index = order[:1300], order[1300:]
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model(ARCHITECTURE)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        generator = torch.Generator().manual_seed(0)
        x, y = inputs[train_index], targets[train_index]
        for _ in range(30):
            shuffled = torch.randperm(len(y), generator=generator)
            for start in range(0, len(y), 64):
                batch = shuffled[start:start + 64]
                optimizer.zero_grad()
                nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
                optimizer.step()
    return DigitClasses(TensorRecords(x, y), inputs[test_index], targets[test_index], model.eval())


class LabelRead(AssertionError):
    """A method used a label the test withheld."""


class WithheldLabel:
    """Stands where a record's (or a batch's) targets were: any use of it (an attribute, a
    conversion, a comparison, an index, a torch function) is counted in ``reads`` and raises
    :class:`LabelRead`."""

    def __init__(self, reads: list[int]) -> None:
        object.__setattr__(self, "_reads", reads)

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        object.__getattribute__(self, "_reads")[0] += 1
        raise LabelRead("a label was read; this dataset withholds its labels")

    def __getattribute__(self, name: str) -> Any:
        if name == "_refuse":
            return object.__getattribute__(self, name)
        object.__getattribute__(self, "_refuse")()

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> NoReturn:
        raise LabelRead(f"a label was passed to {getattr(func, '__name__', func)}")

    __setattr__ = __len__ = __iter__ = __getitem__ = __contains__ = _refuse
    __bool__ = __int__ = __float__ = __index__ = __array__ = __hash__ = _refuse
    __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = _refuse  # type: ignore[assignment]
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _refuse
    __str__ = __format__ = _refuse

    def __repr__(self) -> str:
        return "WithheldLabel()"


class LabelsWithheld(RecordDataset):
    """``dataset`` with every target replaced by a :class:`WithheldLabel`; ``reads`` counts the
    attempts to use one. Load it with :func:`unlabelled_loader` (a collate that stacks targets
    would read them)."""

    def __init__(self, dataset: RecordDataset) -> None:
        self.dataset = dataset
        self.modality = dataset.modality
        self.reads = [0]

    @property
    def record_keys(self) -> Sequence[str]:
        return self.dataset.record_keys

    def __getitem__(self, index: int) -> tuple[str, Tensor, Any]:
        key, inputs, _ = self.dataset[index]
        return key, inputs, WithheldLabel(self.reads)


def unlabelled_loader(dataset: LabelsWithheld, *, batch_size: int, shuffle: bool) -> DataLoader:
    """Batches ``(keys, inputs, WithheldLabel)`` of a :class:`LabelsWithheld` dataset."""
    def collate(items: list[tuple[str, Tensor, Any]]) -> tuple[list[str], Tensor, WithheldLabel]:
        return [item[0] for item in items], default_collate([item[1] for item in items]), WithheldLabel(dataset.reads)

    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, collate_fn=collate)
