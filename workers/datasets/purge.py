"""Rewriting a materialised dataset's files without erased records (the "cached dataset" copies)."""

from __future__ import annotations

import hashlib
from pathlib import PurePath


def dataset_files_without(directory, keys: set[str]) -> list[tuple[PurePath, str, int]]:
    """Rewrite every split file and records.jsonl of the dataset at ``directory`` (a path, or a
    DatasetFolder in shared storage: workers.shared_files.StoredFolder) without the records in
    ``keys``; returns (where, sha256, bytes) of each rewritten split file. A folder that is not a
    materialised dataset (no dataset.json) is left alone and gives []."""
    from workers.datasets.reference import _read_records, _write_dataset, as_folder, dataset_info

    folder = as_folder(directory)
    if not folder.exists("dataset.json"):
        return []
    info = dataset_info(folder)
    records = _read_records(folder, info)
    kept = [r for r in records if r.record_key not in keys]
    if len(kept) == len(records):
        return []
    _write_dataset(folder, {k: v for k, v in info.items() if k != "splits"}, kept)
    info = dataset_info(folder)
    out = []
    for meta in info["splits"].values():
        data = folder.read_bytes(meta["file"])
        out.append((PurePath(str(folder), meta["file"]), hashlib.sha256(data).hexdigest(), len(data)))
    return out
