"""Tabular CSV adapter: one row per record, a key column, a target column, numeric features."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from workers.datasets.base import IN_MEMORY, RecordDataset

# "class": an integer class label per record (classification); "real": a real number (regression).
TARGET_KINDS = ("class", "real")


def _finite_float(text: str) -> float:
    value = float(text)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"target {text!r} is not a finite number")
    return value


class TabularCsvDataset(RecordDataset):
    """Reads a CSV with a header into memory: ``(record_key, float32 features, int64 target)``;
    with ``target_kind="real"`` (a regression dataset) the target is a float32 real number.

    ``feature_columns`` defaults to every column except the key, the target and ``exclude``.
    A non-numeric feature, a non-integer target, an empty or repeated key raises ValueError
    naming the line. No statistics are fitted here: scaling belongs inside the model (fitted
    preprocessing across shards would break exact unlearning).
    """

    modality = "tabular"

    def __init__(
        self,
        path: str | os.PathLike[str] | bytes,
        *,
        key_column: str = "record_key",
        target_column: str = "target",
        feature_columns: Sequence[str] | None = None,
        exclude: Sequence[str] = (),
        target_kind: str = "class",
    ) -> None:
        if target_kind not in TARGET_KINDS:
            raise ValueError(f"target_kind must be one of {', '.join(TARGET_KINDS)}, got {target_kind!r}")
        parse_target = int if target_kind == "class" else _finite_float
        self.target_kind = target_kind
        # bytes: the file's content, read from shared storage (workers.shared_files), no local copy
        self.path = Path(IN_MEMORY if isinstance(path, bytes) else path)
        opened = (io.StringIO(path.decode("utf-8"), newline="") if isinstance(path, bytes)
                  else self.path.open(newline="", encoding="utf-8"))
        with opened as handle:
            reader = csv.reader(handle)
            try:
                header = next(reader)
            except StopIteration:
                raise ValueError(f"{self.path}: empty file, expected a header") from None
            for required in (key_column, target_column):
                if required not in header:
                    raise ValueError(f"{self.path}: no column {required!r} in the header")
            if feature_columns is None:
                skip = {key_column, target_column, *exclude}
                feature_columns = [c for c in header if c not in skip]
            missing = [c for c in feature_columns if c not in header]
            if missing:
                raise ValueError(f"{self.path}: feature column(s) not in the header: {missing}")
            key_at, target_at = header.index(key_column), header.index(target_column)
            feature_at = [header.index(c) for c in feature_columns]
            keys: list[str] = []
            features: list[list[float]] = []
            targets: list[int | float] = []
            seen: set[str] = set()
            for line, row in enumerate(reader, start=2):
                if len(row) != len(header):
                    raise ValueError(f"{self.path}:{line}: {len(row)} fields, header has {len(header)}")
                key = row[key_at]
                if not key or key in seen:
                    raise ValueError(f"{self.path}:{line}: record key {key!r} is empty or repeated")
                seen.add(key)
                try:
                    features.append([float(row[i]) for i in feature_at])
                    targets.append(parse_target(row[target_at]))
                except ValueError as exc:
                    raise ValueError(f"{self.path}:{line}: {exc}") from None
                keys.append(key)
        self.feature_columns = list(feature_columns)
        self._keys = keys
        self.features = torch.tensor(features, dtype=torch.float32).reshape(len(keys), len(feature_at))
        self.targets = torch.tensor(targets, dtype=torch.int64 if target_kind == "class" else torch.float32)

    @property
    def record_keys(self) -> Sequence[str]:
        return self._keys

    def __getitem__(self, index: int) -> tuple[str, torch.Tensor, torch.Tensor]:
        return self._keys[index], self.features[index], self.targets[index]

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "features": len(self.feature_columns), "target": self.target_kind}
