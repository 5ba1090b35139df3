"""Rewriting a materialised dataset's files without erased records (the "cached dataset" copies)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def dataset_files_without(directory: str | os.PathLike[str], keys: set[str]) -> list[tuple[Path, str, int]]:
    """Rewrite every split file and records.jsonl of the dataset at ``directory`` without the
    records in ``keys``; returns (path, sha256, bytes) of each rewritten split file. A folder that
    is not a materialised dataset (no dataset.json) is left alone and gives []."""
    from workers.datasets.reference import _read_records, _write_dataset, dataset_info

    directory = Path(directory)
    if not (directory / "dataset.json").exists():
        return []
    info = dataset_info(directory)
    records = _read_records(directory, info)
    kept = [r for r in records if r.record_key not in keys]
    if len(kept) == len(records):
        return []
    _write_dataset(directory, {k: v for k, v in info.items() if k != "splits"}, kept)
    info = dataset_info(directory)
    out = []
    for meta in info["splits"].values():
        path = directory / meta["file"]
        out.append((path, hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_size))
    return out
