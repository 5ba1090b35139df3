"""Image array adapter: a ``.npz`` with ``record_keys``, ``images`` (uint8) and ``targets``.

``images`` is ``[N, H, W]`` (one channel) or ``[N, C, H, W]``; items are float32 ``[C, H, W]``
in [0, 1]. The archive is opened with ``allow_pickle=False``: an object array is refused.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workers.datasets.base import IN_MEMORY, RecordDataset

NPZ_ARRAYS = ("record_keys", "images", "targets")


class ImageArrayDataset(RecordDataset):
    """Loads the whole archive into memory (reference sets are small)."""

    modality = "image"

    def __init__(self, path: str | os.PathLike[str] | bytes) -> None:
        # bytes: the file's content, read from shared storage (workers.shared_files), no local copy
        self.path = Path(IN_MEMORY if isinstance(path, bytes) else path)
        with np.load(io.BytesIO(path) if isinstance(path, bytes) else self.path, allow_pickle=False) as archive:
            missing = [name for name in NPZ_ARRAYS if name not in archive.files]
            if missing:
                raise ValueError(f"{self.path}: missing array(s) {missing}")
            keys, images, targets = (archive[name] for name in NPZ_ARRAYS)
        if keys.dtype.kind != "U" or keys.ndim != 1:
            raise ValueError(f"{self.path}: record_keys must be a 1-d unicode array")
        if images.dtype != np.uint8 or images.ndim not in (3, 4):
            raise ValueError(f"{self.path}: images must be uint8 [N,H,W] or [N,C,H,W]")
        if not (len(keys) == len(images) == len(targets)):
            raise ValueError(f"{self.path}: record_keys, images and targets differ in length")
        if len(set(keys.tolist())) != len(keys):
            raise ValueError(f"{self.path}: record keys repeat")
        if images.ndim == 3:
            images = images[:, None]
        self._keys = [str(k) for k in keys]
        self.images = torch.from_numpy(np.ascontiguousarray(images))
        self.targets = torch.from_numpy(targets.astype(np.int64))

    @property
    def record_keys(self) -> Sequence[str]:
        return self._keys

    def __getitem__(self, index: int) -> tuple[str, torch.Tensor, torch.Tensor]:
        return self._keys[index], self.images[index].to(torch.float32) / 255.0, self.targets[index]

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "shape": list(self.images.shape[1:])}


def write_npz(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray]) -> None:
    """Write :func:`npz_bytes` of ``arrays`` to ``path``."""
    Path(path).write_bytes(npz_bytes(arrays))


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """An uncompressed ``.npz`` whose bytes depend only on the arrays.

    ``np.savez`` stamps the current time into the zip entries; a fixed timestamp keeps
    materialised datasets byte-identical across runs, so their sha256 is stable.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            if array.dtype.hasobject:
                raise ValueError(f"array {name!r} holds Python objects; not storable without pickle")
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            payload = io.BytesIO()
            np.lib.format.write_array(payload, np.ascontiguousarray(array), allow_pickle=False)
            archive.writestr(info, payload.getvalue())
    return buffer.getvalue()
