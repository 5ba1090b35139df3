"""A transformers ``TrainerCallback`` that records which rows of the Trainer's ``train_dataset`` its
loader drew, as record keys (imported only when used: ``lineage_client.LineageCallback``).

The Trainer drops the columns its model does not take (the record key among them) before it builds
its loader, so the callback is given the row index -> key mapping up front: ``keys``, or
``LineageCallback.from_dataset(train_dataset)``, which reads the key column before the Trainer
drops it. At the start of training it records the row indices the loader's sampler draws on this
rank; at the end the ranks' memberships are merged (lineage_client.ranks) into ``membership``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from lineage_client.ranks import gather_membership
from lineage_client.recording import (
    DrawnRows,
    MembershipRecorder,
    MembershipRow,
    record_drawn_indices,
)


class LineageCallback(TrainerCallback):
    """Records the Trainer's membership. ``keys``: row index -> record key of ``train_dataset``;
    ``shard`` and ``slice`` place its records; ``merge_dir``: where ranks that share no
    torch.distributed group exchange their rows. After ``trainer.train()``, ``membership`` holds the
    run's rows on every rank (upload them from one: ``client.upload_membership(run, dataset,
    callback.membership)``)."""

    def __init__(self, keys: Sequence[str] | Mapping[int, str], *, shard: int = 0, slice: int = 0,
                 merge_dir: str | Path | None = None) -> None:
        self.keys = keys
        self.recorder = MembershipRecorder()
        self.merge_dir = merge_dir
        self.membership: list[MembershipRow] | None = None
        self._drawn = DrawnRows(self.recorder, keys, shard=shard, slice=slice)
        self._epochs = 0

    @classmethod
    def from_dataset(cls, dataset: Any, key_column: str = "record_key", **options: Any) -> LineageCallback:
        """The callback for ``dataset`` (the ``train_dataset`` given to the Trainer), its keys read from
        ``key_column``: a datasets.Dataset's column, or each row's entry."""
        if hasattr(dataset, "column_names"):
            keys = list(dataset[key_column])
        else:
            keys = [dataset[index][key_column] for index in range(len(dataset))]
        return cls(keys, **options)

    def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
        dataset = getattr(train_dataloader, "dataset", None)
        if dataset is not None and hasattr(dataset, "__len__") and len(dataset) != len(self.keys):
            raise ValueError(f"the Trainer's train_dataset has {len(dataset)} rows, the callback's keys "
                             f"{len(self.keys)}: give the keys of the dataset passed to the Trainer")
        record_drawn_indices(train_dataloader, self._drawn)

    def on_epoch_begin(self, args, state, control, **kwargs):
        self._drawn.epoch = self._epochs
        self._epochs += 1

    def on_train_end(self, args, state, control, **kwargs):
        self.membership = gather_membership(self.recorder, rank=args.process_index, world_size=args.world_size,
                                            directory=self.merge_dir)
