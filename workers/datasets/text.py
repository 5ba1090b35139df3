"""Text adapter: JSON Lines, one record per line: ``{"record_key", "text", "label"?}``.

Items are ``(record_key, input_ids [max_length] int64, target)``. Tokens are UTF-8 bytes + 1
(0 is padding), so nothing needs downloading; a caller with a real tokenizer passes
``tokenize``. ``target="label"`` gives the integer label (classification); ``target="lm"``
gives the input ids with padding set to -100 (language modelling labels).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from workers.datasets.base import IN_MEMORY, RecordDataset

PAD_ID = 0
BYTE_VOCAB_SIZE = 257
IGNORE_INDEX = -100


def byte_tokenize(text: str) -> list[int]:
    """UTF-8 bytes shifted by one, so that id 0 stays free for padding."""
    return [b + 1 for b in text.encode("utf-8")]


class TextRecordDataset(RecordDataset):
    """Texts held in memory: ``keys[i]``, ``texts[i]``, ``labels[i]`` (keys unique)."""

    modality = "text"

    def __init__(
        self,
        keys: Sequence[str],
        texts: Sequence[str],
        labels: Sequence[int],
        *,
        max_length: int = 256,
        target: str = "label",
        tokenize: Callable[[str], list[int]] = byte_tokenize,
    ) -> None:
        if target not in ("label", "lm"):
            raise ValueError(f"target must be 'label' or 'lm', got {target!r}")
        if max_length <= 0:
            raise ValueError("max_length must be > 0")
        if not (len(keys) == len(texts) == len(labels)):
            raise ValueError("keys, texts and labels differ in length")
        if len(set(keys)) != len(keys):
            raise ValueError("record keys repeat")
        self.max_length = max_length
        self.target = target
        self.tokenize = tokenize
        self._keys = list(keys)
        self.texts = list(texts)
        self.labels = [int(label) for label in labels]

    @property
    def record_keys(self) -> Sequence[str]:
        return self._keys

    def encode(self, text: str) -> torch.Tensor:
        """Token ids, truncated or padded to ``max_length``."""
        ids = self.tokenize(text)[: self.max_length]
        return torch.tensor(ids + [PAD_ID] * (self.max_length - len(ids)), dtype=torch.int64)

    def __getitem__(self, index: int) -> tuple[str, torch.Tensor, torch.Tensor]:
        ids = self.encode(self.texts[index])
        if self.target == "label":
            return self._keys[index], ids, torch.tensor(self.labels[index], dtype=torch.int64)
        labels = ids.clone()
        labels[ids == PAD_ID] = IGNORE_INDEX
        return self._keys[index], ids, labels

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "max_length": self.max_length, "target": self.target}


class TextJsonlDataset(TextRecordDataset):
    """Reads ``{"record_key", "text", "label"?}`` lines."""

    def __init__(
        self,
        path: str | os.PathLike[str] | bytes,
        *,
        max_length: int = 256,
        target: str = "label",
        tokenize: Callable[[str], list[int]] = byte_tokenize,
    ) -> None:
        # bytes: the file's content, read from shared storage (workers.shared_files), no local copy
        self.path = Path(IN_MEMORY if isinstance(path, bytes) else path)
        keys: list[str] = []
        texts: list[str] = []
        labels: list[int] = []
        seen: set[str] = set()
        opened = io.StringIO(path.decode("utf-8")) if isinstance(path, bytes) else self.path.open(encoding="utf-8")
        with opened as handle:
            for line, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue
                try:
                    row = json.loads(raw)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{self.path}:{line}: not JSON ({exc})") from None
                key, text = row.get("record_key"), row.get("text")
                if not isinstance(key, str) or not key or key in seen:
                    raise ValueError(f"{self.path}:{line}: record_key missing, empty or repeated")
                if not isinstance(text, str):
                    raise ValueError(f"{self.path}:{line}: text must be a string")
                label = row.get("label", 0)
                if target == "label" and (not isinstance(label, int) or isinstance(label, bool)):
                    raise ValueError(f"{self.path}:{line}: label must be an integer")
                seen.add(key)
                keys.append(key)
                texts.append(text)
                labels.append(int(label) if isinstance(label, int) else 0)
        super().__init__(keys, texts, labels, max_length=max_length, target=target, tokenize=tokenize)
