"""Membership rows as the chunks the platform's upload takes: CSV with a header, ``chunk_rows`` rows
each. The same rows in the same order give the same chunks byte for byte, which is what lets a
resumed upload skip the chunks the platform holds and a retried chunk be recognised as a repeat."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from typing import Any

HEADER = ("record_key", "shard", "slice", "position")


def membership_chunks(rows: Iterable[Sequence[Any]], chunk_rows: int = 50_000) -> Iterator[tuple[bytes, int]]:
    """(CSV body, number of rows) per chunk of ``rows`` ((record_key, shard, slice, position, ...))."""
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be at least 1")
    rows = iter(rows)
    while chunk := list(islice(rows, chunk_rows)):
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(HEADER)
        writer.writerows(map(_wire, chunk))
        yield out.getvalue().encode("utf-8"), len(chunk)


def _wire(row: Sequence[Any]) -> Sequence[Any]:
    if isinstance(row, str) or len(row) < 4:
        raise TypeError(f"a membership row is (record_key, shard, slice, position), got {row!r}")
    return row[:4]
