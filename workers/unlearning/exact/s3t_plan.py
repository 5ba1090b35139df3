"""Which S3T adapters a deletion switches off, and how much of the kept data the served model then
still learned from: pure and torch-free, so that the planner (in the web process) can say it before
anything runs, from the stored version's manifest and the registry's membership, with the same rule
the unlearning itself applies (workers.training.s3t.s3t_deactivate).

An S3T run trains, per shard and slice ordering ``o``, adapter ``p`` on the shard's slices
``o[0..p]``. A forgotten record of slice ``j`` taints, in every ordering of its shard, the adapter
at ``j``'s position and every later one; what is left of each ordering is a clean prefix, and the
shard serves the ordering with the longest one (the lowest ordering on a tie).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

AdapterId = tuple[int, int, int]  # (shard, ordering, position)
ADAPTER_PART = re.compile(r"shard(\d+)/ordering(\d+)/adapter(\d+)")


def slice_orderings(slices: int, orderings: int) -> list[list[int]]:
    """The slice orderings of a shard: rotations of ``0..slices-1`` spread evenly (the first is the
    identity), so each slice sits early in some ordering."""
    offsets = [int(i * slices / orderings + 0.5) for i in range(orderings)]
    return [[(j + offset) % slices for j in range(slices)] for offset in offsets]


@dataclass(frozen=True)
class S3TDeactivationPlan:
    """What deactivation leaves. ``remaining``: the adapters no forgotten record reached;
    ``deactivated``: those switched off by this deletion; ``serving``: shard -> (ordering, active
    adapters); ``kept_records``: records of the membership that are not forgotten (what a retrain on
    the kept data learns from); ``kept_records_served``: those in a slice an active adapter trained on."""

    remaining: frozenset[AdapterId]
    deactivated: tuple[AdapterId, ...]
    serving: dict[int, tuple[int, int]]
    shards_out: tuple[int, ...]
    kept_records: int
    kept_records_served: int

    @property
    def kept_fraction(self) -> float | None:
        """The share of the kept records the served model learned from (None when nothing is kept)."""
        return self.kept_records_served / self.kept_records if self.kept_records else None

    def missing(self, *, shards: int, orderings: int, slices: int) -> list[AdapterId]:
        """Every adapter of a complete run that is not left (switched off now or by an earlier
        deletion): what retraining on the kept data must train again."""
        return [(s, o, p) for s in range(shards) for o in range(orderings) for p in range(slices)
                if (s, o, p) not in self.remaining]


def s3t_deactivation_plan(*, orderings: list[list[int]], shards: int, adapters: Iterable[AdapterId],
                          active: Mapping[int, tuple[int, int]], affected: Mapping[int, Iterable[int]],
                          kept_by_slice: Mapping[tuple[int, int], int]) -> S3TDeactivationPlan:
    """Apply the S3T rule. ``adapters``: those the version still has; ``active``: what each shard
    serves now; ``affected``: shard -> slices that hold a record to forget; ``kept_by_slice``:
    (shard, slice) -> records that stay. A shard no forgotten record reached keeps what it serves."""
    remaining = set(adapters)
    deactivated: list[AdapterId] = []
    for shard, slices in affected.items():
        slices = set(slices)
        if not slices:
            continue
        for o, ordering in enumerate(orderings):
            cut = min(ordering.index(j) for j in slices)
            for adapter in sorted(a for a in remaining if a[0] == shard and a[1] == o and a[2] >= cut):
                deactivated.append(adapter)
                remaining.discard(adapter)
    serving: dict[int, tuple[int, int]] = {}
    for shard in range(shards):
        if not set(affected.get(shard, ())):
            serving[shard] = tuple(active.get(shard, (0, 0)))  # type: ignore[assignment]
            continue
        lengths = [_prefix_length(remaining, shard, o) for o in range(len(orderings))]
        best = max(lengths)
        serving[shard] = (lengths.index(best), best)
    served = {(shard, k) for shard, (o, length) in serving.items() for k in orderings[o][:length]}
    return S3TDeactivationPlan(
        remaining=frozenset(remaining), deactivated=tuple(sorted(deactivated)), serving=serving,
        shards_out=tuple(s for s in range(shards) if serving[s][1] == 0),
        kept_records=sum(kept_by_slice.values()),
        kept_records_served=sum(n for place, n in kept_by_slice.items() if place in served),
    )


def _prefix_length(adapters: set[AdapterId] | Mapping[AdapterId, Any], shard: int, ordering: int) -> int:
    length = 0
    while (shard, ordering, length) in adapters:
        length += 1
    return length


@dataclass(frozen=True)
class S3TStoredState:
    """What a stored S3T version holds, read off its manifest: shards, the slice orderings, the
    adapters it still has and what each shard serves."""

    shards: int
    slices: int
    orderings: list[list[int]]
    adapters: frozenset[AdapterId]
    active: dict[int, tuple[int, int]]


def s3t_stored_state(*, recipe_config: Mapping[str, Any], parts: Mapping[str, str],
                     state: Mapping[str, Any]) -> S3TStoredState:
    """From an ``s3t_ensemble`` manifest's recipe config, parts and state (no weights are read).
    Missing config fields take the recipe's defaults (S3TConfig: 1 shard, 4 slices, 1 ordering)."""
    shards = int(recipe_config.get("shards", 1))
    slices = int(recipe_config.get("slices", 4))
    adapters = set()
    for name in parts:
        match = ADAPTER_PART.fullmatch(name)
        if match is None:
            raise ValueError(f"unexpected part {name!r} in an s3t manifest")
        adapters.add((int(match[1]), int(match[2]), int(match[3])))
    active = {int(s): (int(v[0]), int(v[1])) for s, v in (state.get("active") or {}).items()}
    return S3TStoredState(shards=shards, slices=slices,
                          orderings=slice_orderings(slices, int(recipe_config.get("orderings", 1))),
                          adapters=frozenset(adapters), active=active)
