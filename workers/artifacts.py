"""A content-addressed artifact store for model weights, optimizer and RNG state.

Layout under the store's root::

    blobs/<sha256>.safetensors   tensors (weights, optimizer state, RNG state, ...), named by the
                                 sha256 of the file bytes, so identical content is one file
    manifests/<sha256>.json      canonical JSON naming the blobs of one artifact (by role), its
                                 architecture, config, recipe, parent, code version and extras;
                                 the sha256 of the manifest bytes is the artifact's id

The store's lock is held shared by writers and alone by the garbage collector and purges: a
PostgreSQL advisory lock for the platform's store (workers.runners.storage), which holds across
hosts; ``flock`` on ``.lock`` for a store built by hand with no database. :class:`S3ArtifactStore`
keeps the same layout in an S3-compatible bucket, each object sealed under a data key of its own
(workers.object_store; docs/object_storage.md).

An artifact may reference other artifacts (``parts``: a SISA ensemble names its per-slice
checkpoints). Purging an artifact removes its manifest and every blob and part that no remaining
artifact still references, and returns what was removed (path, sha256, bytes) for the report.

Loading never unpickles: a blob is read into memory, its safetensors header is parsed and checked
here (length, JSON, dtypes, shapes, offsets against the file size) and only then handed to the
safetensors library. A pickle, a ``torch.save`` zip, a truncated file or a header that claims
gigabytes is refused with :class:`UnsafeArtifactError`; a file is judged by parsing it, and only one
that failed is named by what its first bytes resemble (a valid file's first bytes are its header
length, which can read like a pickle or a zip: workers/file_formats.py). Writes are atomic (temporary file in the
same folder, fsync, rename). Putting content that is already stored refreshes the file's
modification time, so that its age is the time since it was last put: the garbage collector
(workers/artifact_gc.py) spares young files, which a job may be about to register. Plain Python +
torch, no Django.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import math
import os
import struct
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as _safetensors_load
from safetensors.torch import save as _safetensors_save

from foundation.data_keys import DataKeys
from foundation.files import atomic_write
from foundation.strict_json import canonical_json, fields_once

# The manifest side is torch-free (the web side reads manifests); re-exported here.
from workers.artifact_manifests import (  # noqa: F401
    MANIFEST_DIR,
    MAX_MANIFEST_BYTES,
    SHA256_HEX,
    ArtifactError,
    ArtifactIntegrityError,
    ArtifactManifest,
    ArtifactNotFound,
    UnsafeArtifactError,
    check_sha,
    manifest_path,
    manifest_read,
)
from workers.file_formats import foreign_format
from workers.object_store import (
    PLAIN_BYTES_METADATA,
    S3_MIN_PART_BYTES,
    SEALED_OVERHEAD,
    PendingUpload,
    S3Objects,
    object_key_ref,
    object_name,
    sealed_manifest_read,
    sealed_read,
    sealed_write,
)

logger = logging.getLogger(__name__)

# The safetensors library itself refuses headers above 100 MB; a header of a real checkpoint is
# a few hundred bytes per tensor, so 100 MB is far beyond anything legitimate.
MAX_HEADER_BYTES = 100 * 1024 * 1024

DTYPE_SIZES: dict[str, int] = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}

class ArtifactInUse(ArtifactError):
    """The artifact to purge is still a part of another artifact (``refuse_if_referenced``)."""


# ---------------------------------------------------------------- safetensors checking


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int


def check_safetensors_bytes(data: bytes, *, source: str = "file") -> dict[str, TensorInfo]:
    """Validate a complete safetensors file held in ``data``; return its tensor table.

    Raises UnsafeArtifactError naming ``source`` and the problem. Nothing is deserialised
    beyond a JSON header, so a hostile file cannot run code here.
    """
    try:
        return _parse_safetensors(data, source)
    except UnsafeArtifactError:
        # Only a file that is not safetensors is named as something else: a valid file's first
        # bytes are its header length, which may begin like a pickle or a zip (640 = 80 02 ...).
        foreign = foreign_format(data)
        if foreign is None:
            raise
        raise UnsafeArtifactError(f"{source}: {foreign}") from None


def _parse_safetensors(data: bytes, source: str) -> dict[str, TensorInfo]:
    size = len(data)
    if size < 8:
        raise UnsafeArtifactError(f"{source}: {size} bytes, too short for a safetensors header")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > MAX_HEADER_BYTES:
        raise UnsafeArtifactError(
            f"{source}: header claims {header_len} bytes (cap {MAX_HEADER_BYTES}); refused"
        )
    if 8 + header_len > size:
        raise UnsafeArtifactError(
            f"{source}: header claims {header_len} bytes but the file has only {size - 8} after "
            "the length field (truncated?)"
        )
    try:
        header = json.loads(
            data[8 : 8 + header_len].decode("utf-8"), object_pairs_hook=fields_once
        )
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
        raise UnsafeArtifactError(f"{source}: header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise UnsafeArtifactError(f"{source}: header is not a JSON object")

    buffer_len = size - 8 - header_len
    metadata = header.pop("__metadata__", None)
    if metadata is not None and not (
        isinstance(metadata, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
    ):
        raise UnsafeArtifactError(f"{source}: __metadata__ must map strings to strings")

    table: dict[str, TensorInfo] = {}
    for name, entry in header.items():
        table[name] = _check_entry(source, name, entry, buffer_len)

    # The tensors must tile the data buffer exactly: no gaps, no overlaps, no trailing bytes.
    cursor = 0
    for name, info in sorted(table.items(), key=lambda item: (item[1].start, item[1].end)):
        if info.start != cursor:
            raise UnsafeArtifactError(
                f"{source}: tensor {name!r} starts at {info.start}, expected {cursor} "
                "(gap or overlap in the data buffer)"
            )
        cursor = info.end
    if cursor != buffer_len:
        raise UnsafeArtifactError(
            f"{source}: tensors cover {cursor} bytes but the data buffer has {buffer_len}"
        )
    return table


def _check_entry(source: str, name: str, entry: Any, buffer_len: int) -> TensorInfo:
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise UnsafeArtifactError(
            f"{source}: tensor {name!r} must have exactly dtype, shape and data_offsets"
        )
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in DTYPE_SIZES:
        raise UnsafeArtifactError(f"{source}: tensor {name!r} has unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(_is_index(d) for d in shape):
        raise UnsafeArtifactError(f"{source}: tensor {name!r} has a bad shape {shape!r}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_index(o) for o in offsets)):
        raise UnsafeArtifactError(f"{source}: tensor {name!r} has bad data_offsets {offsets!r}")
    start, end = offsets
    if not start <= end <= buffer_len:
        raise UnsafeArtifactError(
            f"{source}: tensor {name!r} offsets {offsets} fall outside the {buffer_len}-byte buffer"
        )
    expected = math.prod(shape) * DTYPE_SIZES[dtype]
    if end - start != expected:
        raise UnsafeArtifactError(
            f"{source}: tensor {name!r} spans {end - start} bytes, its dtype and shape need {expected}"
        )
    return TensorInfo(dtype=dtype, shape=tuple(shape), start=start, end=end)


def _is_index(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def safetensors_from_bytes(data: bytes, *, source: str = "file") -> dict[str, torch.Tensor]:
    """Check ``data`` (see :func:`check_safetensors_bytes`) and return its tensors."""
    check_safetensors_bytes(data, source=source)
    try:
        return _safetensors_load(data)
    except Exception as exc:  # the library's own checks; keep one error type for callers
        raise UnsafeArtifactError(f"{source}: safetensors refused the file: {exc}") from None


def read_safetensors(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read, check and load a safetensors file (never unpickles). Raises UnsafeArtifactError."""
    path = Path(path)
    data = path.read_bytes()
    return safetensors_from_bytes(data, source=str(path))


def tensors_to_bytes(tensors: Mapping[str, torch.Tensor]) -> bytes:
    """Serialise tensors to safetensors bytes (CPU, contiguous, unshared copies)."""
    prepared = {}
    for name, tensor in tensors.items():
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{name!r} is a {type(tensor).__name__}, not a tensor")
        prepared[name] = tensor.detach().to("cpu").contiguous().clone()
    return _safetensors_save(prepared)


# ---------------------------------------------------------------- nested state <-> tensors


def flatten_state(state: Any, prefix: str = "") -> tuple[dict[str, torch.Tensor], Any]:
    """Split a nested structure (an optimizer state_dict, RNG states) into tensors and JSON.

    Returns ``(tensors, skeleton)``: tensors under dotted names, and a JSON-able skeleton in which
    each tensor is ``{"__tensor__": name}``. Dicts with non-string keys and tuples are tagged so
    :func:`unflatten_state` restores them exactly. Anything that is neither JSON nor a tensor
    raises TypeError (it could not be restored without pickle).
    """
    tensors: dict[str, torch.Tensor] = {}

    def walk(value: Any, path: str) -> Any:
        if isinstance(value, torch.Tensor):
            tensors[path] = value
            return {"__tensor__": path}
        if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
            return value
        if isinstance(value, float):
            if not math.isfinite(value):
                return {"__float__": repr(value)}
            return value
        if isinstance(value, tuple):
            return {"__tuple__": [walk(v, f"{path}.{i}") for i, v in enumerate(value)]}
        if isinstance(value, list):
            return [walk(v, f"{path}.{i}") for i, v in enumerate(value)]
        if isinstance(value, dict):
            if all(isinstance(k, str) and not k.startswith("__") for k in value):
                return {k: walk(v, f"{path}.{k}" if path else k) for k, v in value.items()}
            items = []
            for k, v in value.items():
                if not isinstance(k, (str, int)) or isinstance(k, bool):
                    raise TypeError(f"cannot store a {type(k).__name__} dict key at {path!r}")
                items.append([k, walk(v, f"{path}.{k}" if path else str(k))])
            return {"__items__": items}
        raise TypeError(f"cannot store a {type(value).__name__} at {path or 'top level'!r}")

    skeleton = walk(state, prefix)
    return tensors, skeleton


def unflatten_state(tensors: Mapping[str, torch.Tensor], skeleton: Any) -> Any:
    """Inverse of :func:`flatten_state`."""

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(v) for v in node]
        if isinstance(node, dict):
            if set(node) == {"__tensor__"}:
                return tensors[node["__tensor__"]]
            if set(node) == {"__tuple__"}:
                return tuple(walk(v) for v in node["__tuple__"])
            if set(node) == {"__float__"}:
                return float(node["__float__"])
            if set(node) == {"__items__"}:
                return {k: walk(v) for k, v in node["__items__"]}
            return {k: walk(v) for k, v in node.items()}
        return node

    return walk(skeleton)


# ---------------------------------------------------------------- manifests and the store


@dataclass(frozen=True)
class ArtifactRef:
    """A stored artifact: its id (manifest sha256) and the sha256 of each of its blobs."""

    artifact_id: str
    files: dict[str, str]

    @property
    def weights_sha256(self) -> str | None:
        return self.files.get("weights")


@dataclass(frozen=True)
class RemovedFile:
    kind: str  # "manifest" or "blob"
    path: str
    sha256: str
    bytes: int


@dataclass
class PurgeReport:
    """What a purge removed, what it kept because another artifact still references it, and the
    copies it could not remove (``retained``: an object store's Object Lock, a replica), each with
    why: an artifact with a retained copy is not purged, whatever else went."""

    artifact_ids: list[str] = field(default_factory=list)
    removed: list[RemovedFile] = field(default_factory=list)
    kept_shared: list[str] = field(default_factory=list)
    referenced_by: list[str] = field(default_factory=list)
    retained: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "artifact_ids": list(self.artifact_ids),
            "removed": [vars(r) for r in self.removed],
            "kept_shared": list(self.kept_shared),
            "referenced_by": list(self.referenced_by),
            "retained": list(self.retained),
        }


@dataclass
class StoreEntry:
    """One stored file as the garbage collector sees it (workers.artifact_gc)."""

    location: str  # a path, or s3://bucket/key
    size: int
    mtime: float  # seconds since the epoch: when it was last put


StoreLock = Callable[..., contextlib.AbstractContextManager[None]]  # lock(shared=bool)


class FileStoreLock:
    """``flock`` on one file: the lock of a store used without a database (unit tests, tools on
    one host). The platform's own store takes a PostgreSQL advisory lock instead
    (foundation.locks.AdvisoryStoreLock, through workers.runners.storage), which holds across hosts."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    @contextlib.contextmanager
    def __call__(self, *, shared: bool) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


class ArtifactStore:
    """The content-addressed store on a local filesystem, rooted at ``root`` (created if missing).

    The logic (content addressing, write-once, closures, purges) is written against a few object
    primitives (``_stored``, ``_read``, ``_write_once``, ``_delete``, ``_names``, ``scan``), which
    :class:`S3ArtifactStore` implements on an S3-compatible bucket: one interface, two backends.
    ``lock`` is the store's lock (see :meth:`_lock`); without one, ``flock`` on ``root/.lock``.
    """

    backend = "local"

    def __init__(self, root: str | os.PathLike[str], *, lock: StoreLock | None = None) -> None:
        self.root = Path(root)
        self.blob_dir = self.root / "blobs"
        self.manifest_dir = self.root / MANIFEST_DIR
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self.manifest_dir.mkdir(parents=True, exist_ok=True)
        self._store_lock = lock or FileStoreLock(self.root / ".lock")

    # -- object primitives (kind: "blob" or "manifest"; name: its sha256)

    def _path(self, kind: str, name: str) -> Path:
        return self.blob_path(name) if kind == "blob" else self.manifest_path(name)

    def _stored(self, kind: str, name: str) -> bool:
        return self._path(kind, name).exists()

    def _read(self, kind: str, name: str) -> bytes | None:
        try:
            return self._path(kind, name).read_bytes()
        except FileNotFoundError:
            return None

    def _write_once(self, kind: str, name: str, data: bytes) -> None:
        _write_once(self._path(kind, name), data)

    def _delete(self, kind: str, name: str) -> tuple[RemovedFile | None, list[dict[str, Any]]]:
        """Remove one stored file; return what was removed (None when it was not there) and the
        copies that stay (none on a local disk)."""
        path = self._path(kind, name)
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return None, []
        return RemovedFile(kind=kind, path=str(path), sha256=name, bytes=size), []

    def _names(self, kind: str) -> list[str]:
        folder, suffix = (self.blob_dir, ".safetensors") if kind == "blob" else (self.manifest_dir, ".json")
        return sorted(p.name.removesuffix(suffix) for p in folder.glob(f"*{suffix}")
                      if SHA256_HEX.match(p.name.removesuffix(suffix)))

    def scan(self) -> tuple[dict[str, StoreEntry], dict[str, StoreEntry], dict[str, StoreEntry]]:
        """Every manifest and blob by sha256, and the temporary files writers killed mid-write
        left (by location), each with its size and the time it was last put."""
        found: list[dict[str, StoreEntry]] = [{}, {}]
        partials: dict[str, StoreEntry] = {}
        for index, (folder, suffix) in enumerate(((self.manifest_dir, ".json"), (self.blob_dir, ".safetensors"))):
            for path in folder.iterdir():
                try:
                    stat = path.stat()
                except FileNotFoundError:
                    continue
                entry = StoreEntry(str(path), stat.st_size, stat.st_mtime)
                stem = path.name.removesuffix(suffix)
                if path.name.endswith(suffix) and SHA256_HEX.match(stem):
                    found[index][stem] = entry
                elif path.name.startswith(".") and path.name.endswith(".tmp"):
                    partials[str(path)] = entry
                else:
                    logger.warning("artifact store: %s is not a store file; left alone", path)
        return found[0], found[1], partials

    @property
    def name(self) -> str:
        """The store's name in messages and records (its root; s3://bucket/prefix on S3)."""
        return str(self.root)

    def held_copies(self, kind: str, name: str) -> list[dict[str, Any]]:
        """What keeps a stored object that a removal would not delete, with why (none on a local disk)."""
        return []

    def remove_scanned(self, kind: str, name: str, entry: StoreEntry) -> tuple[bool, list[dict[str, Any]]]:
        """Remove what :meth:`scan` found (the garbage collector's orphans; a partial by its
        location). Returns (removed, copies that stay)."""
        try:
            Path(entry.location).unlink()
        except FileNotFoundError:  # removed meanwhile by something that ignores the lock
            return False, []
        return True, []

    # -- writing

    def put_blob(self, tensors: Mapping[str, torch.Tensor]) -> str:
        """Store tensors as one safetensors blob; return its sha256 (the file's name)."""
        with self._lock(shared=True):
            return self._put_blob(tensors)[0]

    def _put_blob(self, tensors: Mapping[str, torch.Tensor]) -> tuple[str, int]:
        data = tensors_to_bytes(tensors)
        digest = hashlib.sha256(data).hexdigest()
        self._write_once("blob", digest, data)  # identical content stored twice is one file
        return digest, len(data)

    def put(
        self,
        manifest: ArtifactManifest,
        files: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
    ) -> ArtifactRef:
        """Store the blobs of ``files`` (role -> tensors) and the manifest naming them.

        Every artifact named in ``manifest.parts`` must already be in the store. Returns the
        artifact's reference; storing the same manifest and content again returns the same id.
        """
        with self._lock(shared=True):
            return self._put(manifest, files)

    def _put(self, manifest: ArtifactManifest,
             files: Mapping[str, Mapping[str, torch.Tensor]] | None) -> ArtifactRef:
        recorded = dict(manifest.files)
        for role, tensors in (files or {}).items():
            digest, size = self._put_blob(tensors)
            recorded[role] = {"sha256": digest, "bytes": size}
        for role, entry in recorded.items():
            if not self._stored("blob", check_sha(entry.get("sha256"))):
                raise ArtifactNotFound(f"blob {entry['sha256']} of role {role!r} is not stored")
        for part, artifact_id in manifest.parts.items():
            if not self._stored("manifest", check_sha(artifact_id)):
                raise ArtifactNotFound(f"part {part!r} refers to unknown artifact {artifact_id}")
        manifest.files = recorded
        data = canonical_json(manifest.to_dict()).encode("utf-8")
        artifact_id = hashlib.sha256(data).hexdigest()
        self._write_once("manifest", artifact_id, data)
        return ArtifactRef(artifact_id, {role: e["sha256"] for role, e in recorded.items()})

    # -- reading

    def exists(self, artifact_id: str) -> bool:
        return self._stored("manifest", check_sha(artifact_id))

    def manifest(self, artifact_id: str) -> ArtifactManifest:
        """The manifest of ``artifact_id``, checked against its name."""
        return manifest_read(self.root, artifact_id)

    def load_blob(self, sha256: str) -> dict[str, torch.Tensor]:
        """Load one blob by sha256: integrity, then header checks, then safetensors."""
        data = self._read("blob", check_sha(sha256))
        if data is None:
            raise ArtifactNotFound(f"no blob {sha256}")
        if hashlib.sha256(data).hexdigest() != sha256:
            raise ArtifactIntegrityError(f"blob {sha256} does not match its sha256")
        return safetensors_from_bytes(data, source=f"blob {sha256}")

    def load(self, artifact_id: str, role: str = "weights") -> dict[str, torch.Tensor]:
        """The tensors of one role ("weights", "optimizer", "rng", ...) of an artifact."""
        manifest = self.manifest(artifact_id)
        try:
            entry = manifest.files[role]
        except KeyError:
            raise ArtifactNotFound(
                f"artifact {artifact_id} has no {role!r} file; it has {sorted(manifest.files)}"
            ) from None
        return self.load_blob(entry["sha256"])

    def artifact_ids(self) -> list[str]:
        return self._names("manifest")

    def blob_path(self, sha256: str) -> Path:
        return self.blob_dir / f"{sha256}.safetensors"

    def manifest_path(self, artifact_id: str) -> Path:
        return manifest_path(self.root, artifact_id)

    def _lock(self, *, shared: bool) -> contextlib.AbstractContextManager[None]:
        """The store's lock: writers share it; :meth:`exclusively` holds it alone. Not re-entrant
        across modes: never put while holding it exclusively."""
        return self._store_lock(shared=shared)

    def exclusively(self) -> contextlib.AbstractContextManager[None]:
        """Hold the store alone: no put runs meanwhile, so what is referenced, and how old each
        file is, cannot change between a check and a removal (garbage collection, purges)."""
        return self._lock(shared=False)

    def closure(self, artifact_id: str, *, skip_missing: bool = False) -> list[str]:
        """``artifact_id`` and every artifact reachable through ``parts``, each once.
        ``skip_missing`` passes over parts already purged instead of raising ArtifactNotFound."""
        seen: list[str] = []
        stack = [artifact_id]
        while stack:
            current = stack.pop()
            if current in seen:
                continue
            if skip_missing and current != artifact_id and not self.exists(current):
                continue
            seen.append(current)
            stack.extend(self.manifest(current).parts.values())
        return seen

    # -- purging

    def purge(
        self, artifact_id: str, *, include_parts: bool = True, refuse_if_referenced: bool = False
    ) -> PurgeReport:
        """Remove an artifact's manifest and every file no other artifact still references.

        With ``include_parts`` the artifacts it references through ``parts`` are purged too,
        except those another remaining artifact still references (an unlearned SISA version
        shares its unaffected shards' checkpoints with its parent). The artifact asked for is
        removed even when another manifest names it as a part (its data must go; that manifest
        is listed in ``referenced_by`` and can no longer be loaded whole) unless
        ``refuse_if_referenced``, which raises ArtifactInUse instead. Blobs whose bytes another
        remaining artifact also holds are kept and listed in ``kept_shared``. The store is held
        alone meanwhile: a put that shares a blob cannot slip in between the check and the removal.
        Copies the backend cannot remove are listed in ``retained`` (see :class:`PurgeReport`).
        """
        with self.exclusively():
            return self._purge(artifact_id, include_parts, refuse_if_referenced)

    def _purge(self, artifact_id: str, include_parts: bool, refuse_if_referenced: bool) -> PurgeReport:
        if not self.exists(artifact_id):
            raise ArtifactNotFound(f"no artifact {artifact_id}")
        targets = self.closure(artifact_id, skip_missing=True) if include_parts else [artifact_id]
        target_set = set(targets)
        referenced_by: list[str] = []
        # References held by artifacts that stay.
        kept_parts: set[str] = set()
        kept_blobs: set[str] = set()
        for other in self.artifact_ids():
            if other in target_set:
                continue
            manifest = self.manifest(other)
            if artifact_id in manifest.parts.values():
                referenced_by.append(other)
            kept_parts.update(manifest.parts.values())
            kept_blobs.update(e["sha256"] for e in manifest.files.values())
        if referenced_by and refuse_if_referenced:
            raise ArtifactInUse(f"artifact {artifact_id} is a part of {', '.join(referenced_by)}")
        # A part referenced from outside keeps its own parts and blobs alive too (never the
        # artifact asked for).
        protected: set[str] = set()
        for part in [t for t in targets if t in kept_parts and t != artifact_id]:
            protected.update(self.closure(part, skip_missing=True))
        protected.discard(artifact_id)
        report = PurgeReport(referenced_by=referenced_by)
        blobs_to_check: list[str] = []
        for target in targets:
            if target in protected:
                report.kept_shared.append(target)
                continue
            manifest = self.manifest(target)
            blobs_to_check.extend(e["sha256"] for e in manifest.files.values())
            self._purge_one(report, "manifest", target)
            report.artifact_ids.append(target)
        for target in protected:
            kept_blobs.update(e["sha256"] for e in self.manifest(target).files.values())
        for digest in dict.fromkeys(blobs_to_check):
            if digest in kept_blobs:
                report.kept_shared.append(digest)
                continue
            self._purge_one(report, "blob", digest)
        return report

    def _purge_one(self, report: PurgeReport, kind: str, name: str) -> None:
        removed, retained = self._delete(kind, name)
        if removed is not None:
            report.removed.append(removed)
        report.retained += [{"kind": kind, "sha256": name, **held} for held in retained]

    def iter_files(self) -> Iterator[Path]:
        yield from sorted(self.blob_dir.glob("*"))
        yield from sorted(self.manifest_dir.glob("*"))

    def foreign_looking_blobs(self) -> list[ForeignLookingBlob]:
        """Valid stored blobs whose first bytes look like a pickle or a zip (their header length
        does), with the artifacts that name them: what releases before 2026-12-06 refused to load,
        judging by those bytes. Reads the first 8 bytes of every blob, and checks only those."""
        found = []
        for sha256 in self._names("blob"):
            head = self._head("blob", sha256)
            if head is None or foreign_format(head) is None:
                continue
            try:
                self.load_blob(sha256)
            except ArtifactError:
                continue  # really foreign or damaged: refused today as before, not this bug
            found.append(ForeignLookingBlob(sha256=sha256, bytes=self._size("blob", sha256),
                                            looked_like=foreign_format(head), artifact_ids=[]))
        if found:
            by_sha = {blob.sha256: blob for blob in found}
            for artifact_id in self.artifact_ids():
                try:
                    files = self.manifest(artifact_id).files
                except ArtifactError:
                    continue
                for entry in files.values():
                    if entry.get("sha256") in by_sha:
                        by_sha[entry["sha256"]].artifact_ids.append(artifact_id)
        return found

    def _head(self, kind: str, name: str) -> bytes | None:
        try:
            with self._path(kind, name).open("rb") as handle:
                return handle.read(8)
        except FileNotFoundError:
            return None

    def _size(self, kind: str, name: str) -> int:
        return self._path(kind, name).stat().st_size


class S3ArtifactStore(ArtifactStore):
    """The same store in an S3-compatible bucket (workers.object_store): the same names under
    the location's prefix (``blobs/<sha256>.safetensors``, ``manifests/<sha256>.json``), each
    object sealed under a data key of its own in ``keys`` (the keystore), which a purge or the
    garbage collector destroys with the object's versions. A sha256 names the plaintext, so an
    artifact has the same id on both backends and is checked against it after opening.

    Write-once is a conditional PUT; putting content already stored makes it young again (a copy
    onto itself), as a local put refreshes a file's modification time. ``lock`` must hold across
    hosts (foundation.locks.AdvisoryStoreLock). No temporary files: a PUT is whole or absent; a
    multipart upload left open is what the garbage collector sees as a partial.
    """

    backend = "s3"

    def __init__(self, objects: S3Objects, *, keys: DataKeys, lock: StoreLock) -> None:
        self.objects = objects
        self.keys = keys
        self._store_lock = lock
        self.root = Path(objects.location.name)  # a name for messages; nothing is written there

    _relative = staticmethod(object_name)
    key_ref = staticmethod(object_key_ref)  # the keystore reference of a stored object's data key

    def location(self, kind: str, name: str) -> str:
        return f"s3://{self.objects.location.bucket}/{self.objects.location.key(self._relative(kind, name))}"

    def _stored(self, kind: str, name: str) -> bool:
        return self.objects.exists(self._relative(kind, name))

    def _read(self, kind: str, name: str) -> bytes | None:
        return sealed_read(self.objects, self.keys, kind, name)

    def _write_once(self, kind: str, name: str, data: bytes) -> None:
        """Store ``data`` sealed (in parts above the multipart threshold: workers.object_store),
        unless it is there already, which makes it young again."""
        relative, ref = self._relative(kind, name), self.key_ref(kind, name)
        if self.objects.exists(relative):
            if self.keys.has_key(ref):
                self.objects.touch(relative)
                return
            # A copy a purge could not delete (Object Lock) under its destroyed key: the content
            # is stored anew under a new key, as a new version.
            sealed_write(self.objects, self.keys.data_key(ref, create=True), ref, relative, data, if_absent=False)
            return
        if not sealed_write(self.objects, self.keys.data_key(ref, create=True), ref, relative, data, if_absent=True):
            self.objects.touch(relative)  # another host put the same content meanwhile

    def _delete(self, kind: str, name: str) -> tuple[RemovedFile | None, list[dict[str, Any]]]:
        relative = self._relative(kind, name)
        size = self._plain_size(kind, name)
        outcome = self.objects.delete(relative)
        self.keys.destroy(self.key_ref(kind, name))  # every copy left anywhere is unreadable now
        if outcome.retained:  # not removed: a copy stays (sealed under the destroyed key)
            return None, [{**held, "versions_deleted": outcome.versions_deleted} for held in outcome.retained]
        if not outcome.versions_deleted:
            return None, []
        return RemovedFile(kind=kind, path=self.location(kind, name), sha256=name, bytes=size), []

    def _plain_size(self, kind: str, name: str) -> int:
        found = self.objects.head(self._relative(kind, name))
        return 0 if found is None else _plain_bytes(*found)

    def _names(self, kind: str) -> list[str]:
        folder = "blobs/" if kind == "blob" else f"{MANIFEST_DIR}/"
        suffix = ".safetensors" if kind == "blob" else ".json"
        names = (item.key[len(folder):].removesuffix(suffix) for item in self.objects.list(folder))
        return sorted(n for n in names if SHA256_HEX.match(n))

    def scan(self) -> tuple[dict[str, StoreEntry], dict[str, StoreEntry], dict[str, StoreEntry]]:
        found: list[dict[str, StoreEntry]] = [{}, {}]
        for index, (folder, suffix) in enumerate(((f"{MANIFEST_DIR}/", ".json"), ("blobs/", ".safetensors"))):
            for item in self.objects.list(folder):
                stem = item.key[len(folder):].removesuffix(suffix)
                if item.key.endswith(suffix) and SHA256_HEX.match(stem):
                    kind = "manifest" if index == 0 else "blob"
                    # An object uploaded in parts is above 5 MiB and says its plaintext size.
                    size = (self._plain_size(kind, stem) if item.size > S3_MIN_PART_BYTES
                            else max(0, item.size - SEALED_OVERHEAD))
                    found[index][stem] = StoreEntry(self.location(kind, stem), size, item.mtime)
                else:
                    logger.warning("artifact store: %s is not a store object; left alone", item.key)
        partials = {f"{upload.key}?uploadId={upload.upload_id}": StoreEntry(
            f"s3://{self.objects.location.bucket}/{self.objects.location.key(upload.key)}?uploadId={upload.upload_id}",
            0, upload.mtime) for upload in self.objects.pending_uploads()}
        return found[0], found[1], partials

    @property
    def name(self) -> str:
        return self.objects.location.name

    def held_copies(self, kind: str, name: str) -> list[dict[str, Any]]:
        return self.objects.holds(self._relative(kind, name))

    def remove_scanned(self, kind: str, name: str, entry: StoreEntry) -> tuple[bool, list[dict[str, Any]]]:
        if kind == "partial":
            key, _, upload_id = name.partition("?uploadId=")
            self.objects.abort_upload(PendingUpload(key=key, upload_id=upload_id, mtime=entry.mtime))
            return True, []
        removed, retained = self._delete(kind, name)
        return removed is not None, retained

    def manifest(self, artifact_id: str) -> ArtifactManifest:
        return sealed_manifest_read(self.objects, self.keys, artifact_id)

    def blob_path(self, sha256: str) -> Path:
        raise NotImplementedError("an S3 store has no local paths; use location()")

    def manifest_path(self, artifact_id: str) -> Path:
        raise NotImplementedError("an S3 store has no local paths; use location()")

    def iter_files(self) -> Iterator[Path]:
        raise NotImplementedError("an S3 store has no local files")

    def _head(self, kind: str, name: str) -> bytes | None:
        data = self._read(kind, name)
        return None if data is None else data[:8]

    def _size(self, kind: str, name: str) -> int:
        return self._plain_size(kind, name)


def _plain_bytes(sealed_size: int, metadata: Mapping[str, str]) -> int:
    """A sealed object's plaintext size: what a sealed stream's metadata says, else the single-part
    format's size less its overhead."""
    stated = metadata.get(PLAIN_BYTES_METADATA, "")
    return int(stated) if stated.isdigit() else max(0, sealed_size - SEALED_OVERHEAD)


@dataclass
class ForeignLookingBlob:
    """A valid safetensors blob whose header length begins like another format (see
    :meth:`ArtifactStore.foreign_looking_blobs`)."""

    sha256: str
    bytes: int
    looked_like: str
    artifact_ids: list[str]


def _write_once(path: Path, data: bytes) -> None:
    """Write a content-addressed file, or, when it is there already, refresh its modification
    time (its age is the time since it was last put; see the module's docstring)."""
    try:
        os.utime(path)
    except FileNotFoundError:
        atomic_write(path, data)


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """The version of the worker code that produced an artifact.

    ``DELETION_PLATFORM_CODE_VERSION`` when set (a release or git sha), else a digest of the
    worker sources, so a manifest says which code made it even from an uncommitted tree.
    """
    explicit = os.environ.get("DELETION_PLATFORM_CODE_VERSION")
    if explicit:
        return explicit
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        if "migrations" in path.parts:
            continue
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return "src-" + digest.hexdigest()[:16]
