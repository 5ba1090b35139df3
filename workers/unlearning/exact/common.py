"""What the exact methods share: the loop around them and their argument handling."""

from __future__ import annotations

import dataclasses
import time
from abc import abstractmethod
from collections.abc import Iterable
from typing import Any

from torch.utils.data import DataLoader

from workers.datasets.base import RecordDataset
from workers.training.base import TrainingRun
from workers.training.device import training_environment
from workers.training.membership import as_rows
from workers.unlearning.base import (
    MethodConfig,
    ProgressCallback,
    UnlearningMethod,
    UnlearningResult,
    no_progress,
)


class ExactMethod(UnlearningMethod):
    """An exact method takes the stored TrainingRun (``model``; ``context["membership"]`` may
    replace its membership), the records to forget and the retain set, and returns a new
    TrainingRun whose weights never saw the forgotten records. This loop times it and builds the
    result; a method implements :meth:`replace`."""

    config_class = MethodConfig

    def unlearn(self, model: Any, forget: Iterable[Any], retain: Iterable[Any], *, device: str = "cpu",
                progress: ProgressCallback = no_progress, **context: Any) -> tuple[TrainingRun, UnlearningResult]:
        started = time.perf_counter()
        run = training_run_of(model, context)
        new_run, steps, details = self.replace(run, forget_keys_of(forget), retain, device=device,
                                               progress=progress)
        # What a replay must reproduce to rebuild these weights bit for bit (workers.unlearning.exact.replay).
        return new_run, self._result(started, device, steps=steps, environment=training_environment(device),
                                     **details)

    @abstractmethod
    def replace(self, run: TrainingRun, forget_keys: list[str], retain: Any, *, device: str,
                progress: ProgressCallback) -> tuple[TrainingRun, int, dict[str, Any]]:
        """The new run without ``forget_keys``, its training steps, and the result's details."""


def training_run_of(model: Any, context: dict[str, Any]) -> TrainingRun:
    """The run to unlearn from. ``context["membership"]`` (rows as dicts or MembershipRow, e.g.
    from the database) replaces the run's own membership when given."""
    if not isinstance(model, TrainingRun):
        raise TypeError(
            "exact methods take the TrainingRun to unlearn from (workers.training.load_run), "
            f"got {type(model).__name__}"
        )
    membership = context.get("membership")
    if membership is None:
        return model
    # Everything else the run carries stays (a keep-out transfer run's selection, among others).
    return dataclasses.replace(model, membership=as_rows(membership))


def forget_keys_of(forget: Any) -> list[str]:
    """The keys to forget (see :func:`record_keys_of`), each once; an empty set is refused (an
    exact job with nothing to forget is a planning error, not a no-op to certify)."""
    keys = list(dict.fromkeys(record_keys_of(forget)))
    if not keys:
        raise ValueError("the forget set is empty")
    return keys


def record_keys_of(forget: Any) -> list[str]:
    """Record keys from a RecordDataset, a DataLoader over one, batches ``(keys, x, y)`` or
    plain keys."""
    if isinstance(forget, RecordDataset):
        return list(forget.record_keys)
    if isinstance(forget, DataLoader) and isinstance(forget.dataset, RecordDataset):
        return list(forget.dataset.record_keys)
    keys: list[str] = []
    for item in forget:
        if isinstance(item, str):
            keys.append(item)
        elif isinstance(item, dict) and "record_keys" in item:
            keys.extend(item["record_keys"])
        elif isinstance(item, (tuple, list)) and item and isinstance(item[0], (list, tuple)):
            keys.extend(item[0])
        elif isinstance(item, (tuple, list)) and item and isinstance(item[0], str):
            keys.append(item[0])
        else:
            raise TypeError(f"cannot read record keys from a {type(item).__name__}")
    return keys


def retain_dataset_of(retain: Any) -> RecordDataset:
    """The retain set as a RecordDataset (exact methods need random access to rebuild shards)."""
    if isinstance(retain, RecordDataset):
        return retain
    if isinstance(retain, DataLoader) and isinstance(retain.dataset, RecordDataset):
        return retain.dataset
    raise TypeError(
        "exact methods need the retain set as a RecordDataset (or a DataLoader over one), "
        f"got {type(retain).__name__}"
    )


def check_disjoint(forget_keys: Iterable[str], retain: RecordDataset) -> None:
    overlap = set(forget_keys).intersection(retain.record_keys)
    if overlap:
        raise ValueError(
            f"{len(overlap)} record(s) to forget are in the retain set, e.g. {sorted(overlap)[0]!r}"
        )
