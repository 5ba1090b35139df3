"""Recording which records a training loop used, as the platform's membership has them.

The platform's lineage is one row per record a run trained on: the shard whose model it reached,
the slice (training stage) at which it first did, and its position among the records first seen in
that shard and slice. A record yielded again (next epoch, a later stage) keeps its first place. A
company's loop gives its record keys one of two ways, and :class:`RecordingLoader` takes either:

* the items or batches carry them: a dict with a ``"record_key"`` column (``key_column``), or
  anything a ``key_fn`` reads keys from;
* the dataset returns only tensors and the company keeps a row index -> key list (``keys``): the
  wrapper then records the row indices the DataLoader's sampler draws.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple


class MembershipRow(NamedTuple):
    """One record of a run: shard, slice, position as the platform stores them; ``epoch`` (the pass
    in which it was first yielded) stays with the client, the platform's lineage does not need it."""

    record_key: str
    shard: int = 0
    slice: int = 0
    position: int = 0
    epoch: int = 0


class DuplicateShardMembership(ValueError):
    """A record reached two shards' models: an exact deletion that retrains one shard would miss the other."""


class MembershipRecorder:
    """Collects yielded record keys; the first yield of a key fixes its shard, slice and position."""

    def __init__(self) -> None:
        self._first: dict[str, tuple[int, int, int, int]] = {}  # key -> (shard, slice, position, epoch)
        self._next_position: dict[tuple[int, int], int] = {}
        self.yields = 0

    def record(self, keys: Iterable[str], *, shard: int = 0, slice: int = 0, epoch: int = 0) -> None:
        """Note that ``keys`` reached the model of ``shard`` at ``slice`` during ``epoch``."""
        for key in keys:
            self.yields += 1
            seen = self._first.get(key)
            if seen is not None:
                if seen[0] != shard:
                    raise DuplicateShardMembership(f"record {key!r} was yielded to shard {shard} after shard {seen[0]}")
                if seen[1] <= slice:
                    continue
                # An earlier stage than seen before (stages recorded out of order): keep the earliest.
            position = self._next_position.get((shard, slice), 0)
            self._next_position[(shard, slice)] = position + 1
            self._first[key] = (shard, slice, position, epoch)

    def rows(self) -> list[MembershipRow]:
        """One row per record, ordered by shard, slice and position (the order uploads chunk them in)."""
        rows = [MembershipRow(key, *place) for key, place in self._first.items()]
        rows.sort(key=lambda row: (row.shard, row.slice, row.position))
        return rows

    def __len__(self) -> int:
        return len(self._first)

    def __contains__(self, key: object) -> bool:
        return key in self._first

    def wrap(self, loader: Iterable[Any], **options: Any) -> RecordingLoader:
        """``RecordingLoader(loader, self, **options)``."""
        return RecordingLoader(loader, self, **options)


class RecordingLoader:
    """Iterates ``loader`` unchanged and records the record keys of what it yields.

    Keys come from ``key_fn(batch)`` when given, else from ``batch[key_column]`` (a dict item or a
    collated batch: a string, a list of them, or a tensor of integer keys), or, with ``keys`` (row
    index -> key), from the row indices a torch DataLoader's sampler draws. ``shard`` and ``slice``
    place the records (a sharded recipe wraps each stage's loader with its own). Each pass over the
    wrapper is one epoch (``set_epoch`` sets the next one).

    With ``keys`` a row counts when its index is drawn, which can be a batch or two before the model
    sees it (DataLoader workers prefetch): stopping mid-epoch records a few rows too many, never too few.
    """

    def __init__(self, loader: Iterable[Any], recorder: MembershipRecorder, *,
                 key_fn: Callable[[Any], Iterable[Any]] | None = None, key_column: str = "record_key",
                 keys: Sequence[str] | Mapping[int, str] | None = None, shard: int = 0, slice: int = 0) -> None:
        if key_fn is not None and keys is not None:
            raise ValueError("give key_fn (keys read from each batch) or keys (row index -> key), not both")
        self.loader = loader
        self.recorder = recorder
        self.key_fn = key_fn
        self.key_column = key_column
        self.shard = shard
        self.slice = slice
        self.epoch = 0  # the next pass's
        self._pass_epoch = 0
        self._drawn = None if keys is None else DrawnRows(recorder, keys, shard=shard, slice=slice)
        if self._drawn is not None:
            record_drawn_indices(loader, self._drawn)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[Any]:
        self._pass_epoch = self.epoch
        self.epoch += 1
        if self._drawn is not None:
            self._drawn.epoch = self._pass_epoch
        for batch in self.loader:
            if self._drawn is None:
                keys = self.key_fn(batch) if self.key_fn is not None else batch_keys(batch, self.key_column)
                self.recorder.record(_as_keys(keys), shard=self.shard, slice=self.slice, epoch=self._pass_epoch)
            yield batch

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]


class DrawnRows:
    """Records the keys of the rows a loader's sampler draws (``keys``: row index -> record key),
    in the shard, slice and ``epoch`` it is set to."""

    def __init__(self, recorder: MembershipRecorder, keys: Sequence[str] | Mapping[int, str], *,
                 shard: int = 0, slice: int = 0) -> None:
        self.recorder = recorder
        self.keys = keys
        self.shard = shard
        self.slice = slice
        self.epoch = 0

    def __call__(self, indices: Sequence[int]) -> None:
        keys = self.keys
        self.recorder.record(_as_keys([keys[index] for index in indices]), shard=self.shard, slice=self.slice,
                             epoch=self.epoch)


def batch_keys(batch: Any, key_column: str = "record_key") -> Iterable[Any]:
    """The record keys of an item or collated batch: its ``key_column`` entry or attribute."""
    if isinstance(batch, Mapping):
        if key_column not in batch:
            raise KeyError(f"the loader yielded a batch without a {key_column!r} column (it has "
                           f"{', '.join(map(str, batch))}); pass key_fn= to read its keys, or keys= (row index -> key)")
        return batch[key_column]
    if hasattr(batch, key_column):
        return getattr(batch, key_column)
    raise TypeError(f"cannot read record keys from a {type(batch).__name__}; pass key_fn= (batch -> keys) "
                    "or keys= (row index -> key)")


def _as_keys(value: Any) -> list[str]:
    """A key or a batch of them (list, tuple, tensor or array of integers) as strings."""
    if isinstance(value, str | int) and not isinstance(value, bool):
        return [str(value)]
    if hasattr(value, "tolist"):  # a tensor or an array
        value = value.tolist()
        if not isinstance(value, list):
            value = [value]
    keys = []
    for key in value:
        if isinstance(key, bool) or not isinstance(key, str | int):
            raise TypeError(f"a record key must be a string or an integer, got {type(key).__name__}")
        keys.append(str(key))
    return keys


class _DrawnIndices:
    """Stands in for a DataLoader's (batch) sampler: draws what it draws and reports each draw."""

    def __init__(self, sampler: Any, report: Callable[[Sequence[int]], None]) -> None:
        self.wrapped = sampler
        self.report = report

    def __iter__(self) -> Iterator[Any]:
        for drawn in self.wrapped:
            indices = drawn.tolist() if hasattr(drawn, "tolist") else drawn
            if indices is None:
                raise TypeError("the loader's dataset is iterable (its sampler names no rows): read keys from the "
                                "items it yields (key_column= or key_fn=) instead of keys=")
            self.report(indices if isinstance(indices, list | tuple) else [indices])
            yield drawn

    def __len__(self) -> int:
        return len(self.wrapped)

    def __getattr__(self, name: str) -> Any:  # set_epoch, batch_size, drop_last ... of the sampler
        if name.startswith("__") or name in ("wrapped", "report"):
            raise AttributeError(name)
        return getattr(self.wrapped, name)


def record_drawn_indices(loader: Any, report: Callable[[Sequence[int]], None]) -> None:
    """Have ``report`` called with the row indices of each batch ``loader`` (a torch DataLoader, or
    accelerate's wrapper of one, as the transformers Trainer builds) draws from its sampler."""
    base = getattr(loader, "base_dataloader", loader)  # accelerate iterates the DataLoader it wraps
    name = "batch_sampler" if getattr(base, "batch_sampler", None) is not None else "sampler"
    sampler = getattr(base, name, None)
    if sampler is None:
        raise TypeError(f"keys= (row index -> key) needs a torch DataLoader, whose sampler names the rows it draws; "
                        f"got a {type(loader).__name__}: read keys from what it yields (key_column= or key_fn=)")
    if isinstance(sampler, _DrawnIndices):
        sampler = sampler.wrapped
    # A DataLoader refuses new samplers once built, to protect its own iterators; this one draws
    # exactly what the sampler draws, so the loader's behaviour does not change.
    object.__setattr__(base, name, _DrawnIndices(sampler, report))
