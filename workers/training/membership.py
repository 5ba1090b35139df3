"""Membership written from what a training loader actually yielded.

A recipe is asked to train on some records, but what reaches the model is what its loader
yields: a record whose content can no longer be read (its subject key destroyed, say) is
skipped by :func:`collate_records`, and a sampler may never draw a record. So membership is not
the list a recipe was given: :class:`RecordingLoader` wraps the loader and reports each yielded
record key, with the shard and slice (training stage) it was yielded in, to a
:class:`MembershipSink`. The sink turns that stream into one row per record.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch.utils.data import default_collate


@dataclass(frozen=True, order=True)
class MembershipRow:
    """One record in one training run: the shard it trained, the slice (training stage) at which
    it first reached that shard's model, and its position among the records first yielded in
    that slice (0-based, in yield order)."""

    record_key: str
    shard: int = 0
    slice: int = 0
    position: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class DuplicateShardMembership(RuntimeError):
    """A record reached two shards' models: exact SISA unlearning would miss one of them."""


class MembershipSink:
    """Collects yielded keys; first yield of a key per shard fixes its slice and position.

    Later yields of the same key (next epochs, later cumulative stages) are counted but do not
    move it: its influence on the shard's model began at the first slice it was yielded in.
    """

    def __init__(self) -> None:
        self._first: dict[str, tuple[int, int]] = {}  # key -> (shard, slice)
        self._positions: dict[str, int] = {}
        self._next_position: dict[tuple[int, int], int] = {}
        self.yields = 0

    def record(self, keys: Iterable[str], *, shard: int, slice: int) -> None:
        for key in keys:
            self.yields += 1
            seen = self._first.get(key)
            if seen is not None:
                if seen[0] != shard:
                    raise DuplicateShardMembership(
                        f"record {key!r} was yielded to shard {shard} after shard {seen[0]}"
                    )
                if seen[1] <= slice:
                    continue
                # A yield in an earlier stage than seen before: only possible if stages are
                # recorded out of order; keep the earliest, which is the conservative truth.
            self._first[key] = (shard, slice)
            group = (shard, slice)
            self._positions[key] = self._next_position.get(group, 0)
            self._next_position[group] = self._positions[key] + 1

    def rows(self) -> list[MembershipRow]:
        """One row per yielded record, sorted by (shard, slice, position)."""
        rows = [
            MembershipRow(key, shard, slice_, self._positions[key])
            for key, (shard, slice_) in self._first.items()
        ]
        return sorted(rows, key=lambda r: (r.shard, r.slice, r.position))

    def keys(self) -> set[str]:
        return set(self._first)


class RecordingLoader:
    """Iterates ``loader`` and reports each batch's record keys to ``sink``.

    Batches are ``(record_keys, inputs, targets)``. ``shard`` and ``slice`` are the training
    stage's coordinates, set by the recipe (fixed for the wrapper's lifetime).
    """

    def __init__(self, loader: Iterable[Any], sink: MembershipSink, *, shard: int = 0, slice: int = 0):
        self.loader = loader
        self.sink = sink
        self.shard = shard
        self.slice = slice

    def __iter__(self) -> Iterator[Any]:
        for batch in self.loader:
            self.sink.record(batch[0], shard=self.shard, slice=self.slice)
            yield batch

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]


def collate_records(items: Sequence[Any]) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Collate ``(key, input, target)`` items into ``(keys, inputs, targets)``.

    ``None`` items (records an adapter could not read) are dropped, so they never reach the
    model and never enter membership. An all-``None`` batch collates to empty keys and ``None``
    tensors; training loops skip it.
    """
    present = [item for item in items if item is not None]
    if not present:
        return [], None, None  # type: ignore[return-value]
    keys = [item[0] for item in present]
    inputs = default_collate([item[1] for item in present])
    targets = default_collate([item[2] for item in present])
    return keys, inputs, targets


def membership_keys(rows: Iterable[MembershipRow | dict[str, Any]]) -> set[str]:
    return {r["record_key"] if isinstance(r, dict) else r.record_key for r in rows}


def as_rows(rows: Iterable[MembershipRow | dict[str, Any]]) -> list[MembershipRow]:
    """Accept rows as dataclasses or dicts (e.g. from the database)."""
    return [r if isinstance(r, MembershipRow) else MembershipRow(**r) for r in rows]
