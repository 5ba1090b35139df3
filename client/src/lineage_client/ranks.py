"""The membership of a distributed run: every rank records what its own loader drew, and the run's
membership is their merge.

With torch.distributed initialised the ranks gather each other's rows (``all_gather_object``);
otherwise (processes that share no process group) they exchange files in a directory all of them
see, one directory per run. Merging keeps each record's earliest slice and epoch; a record that
reached two shards is refused, as a sharded recipe's exact deletion would miss one of them.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from lineage_client.recording import MembershipRecorder, MembershipRow


def merge_rank_rows(per_rank: Sequence[Iterable[Sequence[Any]]]) -> list[MembershipRow]:
    """One membership from each rank's rows (``per_rank[r]``: rows or tuples of rank ``r``). Positions
    are renumbered per shard and slice in the order the ranks drew together: by epoch, then each
    rank's own position (ranks step in lockstep), then rank."""
    drawn = sorted((row.slice, row.epoch, row.position, rank, row)
                   for rank, rows in enumerate(per_rank) for row in map(_row, rows))
    merged = MembershipRecorder()
    for _, _, _, _, row in drawn:
        merged.record([row.record_key], shard=row.shard, slice=row.slice, epoch=row.epoch)
    return merged.rows()


def gather_membership(recorder: MembershipRecorder, *, rank: int | None = None, world_size: int | None = None,
                      directory: str | Path | None = None, timeout: float = 3600.0) -> list[MembershipRow]:
    """The whole run's membership, on every rank. ``rank`` and ``world_size`` default to the
    environment's ``RANK`` and ``WORLD_SIZE`` (torchrun, accelerate set them); ``directory`` is needed
    only without an initialised torch.distributed and with more than one rank."""
    dist = _torch_distributed()
    if dist is not None:
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, [tuple(row) for row in recorder.rows()])
        return merge_rank_rows(gathered)
    rank = int(os.environ.get("RANK", "0")) if rank is None else rank
    world_size = int(os.environ.get("WORLD_SIZE", "1")) if world_size is None else world_size
    if world_size == 1:
        return recorder.rows()
    if directory is None:
        raise ValueError(f"rank {rank} of {world_size} without torch.distributed: give a directory every rank "
                         "sees (one per run) to exchange their membership in")
    return merge_rank_rows(exchange_rank_rows(recorder.rows(), rank=rank, world_size=world_size,
                                              directory=Path(directory), timeout=timeout))


def exchange_rank_rows(rows: Iterable[Sequence[Any]], *, rank: int, world_size: int, directory: Path,
                       timeout: float = 3600.0, poll: float = 0.2) -> list[list[MembershipRow]]:
    """Write this rank's rows to ``directory`` and wait for every rank's; each rank's rows, by rank.
    A file appears whole (written aside, then renamed), so a reader never sees half of one."""
    directory.mkdir(parents=True, exist_ok=True)
    mine = _rank_file(directory, rank, world_size)
    partial = mine.with_suffix(".partial")
    with partial.open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(list(row)) + "\n")
    os.replace(partial, mine)
    deadline = time.monotonic() + timeout
    files = [_rank_file(directory, r, world_size) for r in range(world_size)]
    while missing := [r for r, path in enumerate(files) if not path.exists()]:
        if time.monotonic() > deadline:
            raise TimeoutError(f"rank(s) {missing} of {world_size} wrote no membership to {directory} "
                               f"within {timeout:.0f} s")
        time.sleep(poll)
    return [[MembershipRow(*json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines()]
            for path in files]


def _rank_file(directory: Path, rank: int, world_size: int) -> Path:
    return directory / f"membership-rank-{rank:05d}-of-{world_size:05d}.jsonl"


def _row(row: Sequence[Any]) -> MembershipRow:
    return row if isinstance(row, MembershipRow) else MembershipRow(*row)


def _torch_distributed() -> Any:
    """torch.distributed when this process initialised a process group (never imports torch: a
    process that has not imported it has no group)."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist
    return None
