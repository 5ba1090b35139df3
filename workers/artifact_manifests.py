"""What an artifact is, read without torch: its manifest (canonical JSON named by its sha256) and
the store's errors. The store itself (workers.artifacts) writes and loads tensors; the web side
reads manifests through this module alone (the planner: which adapters a stored S3T version keeps),
so that it never imports torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from foundation.registry import Hooks

MAX_MANIFEST_BYTES = 64 * 1024 * 1024
MANIFEST_DIR = "manifests"  # under the store's root
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")

# Where the worker's artifact store is, for code that imports no Django: a training recipe reads
# an input its config names by sha256 (an uploaded model's tokenizer) and the method library
# retrains through the recipes. workers.apps adds the settings' root.
STORE_ROOTS: Hooks[Callable[[], str | os.PathLike[str]]] = Hooks("artifact store root")


# The store itself (either backend, with its lock), for the same callers: workers.apps adds
# workers.runners.storage.artifact_store. Without one, a store under store_root() is used.
STORE_OPENERS: Hooks[Callable[[], Any]] = Hooks("artifact store")


def store_root() -> Path:
    """The artifact store's root (the first one added to :data:`STORE_ROOTS`)."""
    for root in STORE_ROOTS:
        return Path(root())
    raise RuntimeError("no artifact store root is known here: workers.apps adds it (STORE_ROOTS)")


class ArtifactError(Exception):
    """Base class of artifact store errors."""


class UnsafeArtifactError(ArtifactError):
    """A file is not a well-formed safetensors file (pickle, truncated, lying header, ...)."""


class ArtifactNotFound(ArtifactError, KeyError):
    """No artifact or blob with that id exists in the store."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "artifact not found"


class ArtifactIntegrityError(ArtifactError):
    """A stored file's bytes no longer match the sha256 it is named by."""


@dataclass
class ArtifactManifest:
    """What an artifact is. Stored as canonical JSON; its sha256 is the artifact id.

    ``kind``: "model", "checkpoint", "sisa_ensemble", "s3t_ensemble", ...
    ``architecture``: ``{"name": ..., "config": {...}}`` so the model can be rebuilt.
    ``recipe``: ``{"name": ..., "config": {...}}`` of the training recipe that made it.
    ``parent``: the artifact id this one was derived from (unlearning), or None.
    ``parts``: named references to other artifacts (a SISA ensemble's checkpoints).
    ``state``: JSON skeletons of flattened non-tensor state (optimizer param groups, RNG).
    ``files``: role -> ``{"sha256", "bytes"}``; filled in by the store.
    """

    kind: str
    architecture: dict[str, Any] | None = None
    config: dict[str, Any] = field(default_factory=dict)
    recipe: dict[str, Any] | None = None
    parent: str | None = None
    code_version: str = ""
    parts: dict[str, str] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": 1,
            "kind": self.kind,
            "architecture": self.architecture,
            "config": self.config,
            "recipe": self.recipe,
            "parent": self.parent,
            "code_version": self.code_version,
            "parts": dict(self.parts),
            "state": self.state,
            "extra": self.extra,
            "files": self.files,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ArtifactManifest:
        if data.get("format") != 1:
            raise ArtifactError(f"unknown manifest format {data.get('format')!r}")
        known = {
            "kind", "architecture", "config", "recipe", "parent", "code_version", "parts",
            "state", "extra", "files",
        }
        return cls(**{k: v for k, v in data.items() if k in known})


def check_sha(value: Any) -> str:
    if not isinstance(value, str) or not SHA256_HEX.match(value):
        raise ArtifactError(f"{value!r} is not a sha256 hex digest")
    return value


def manifest_path(root: str | os.PathLike[str], artifact_id: str) -> Path:
    """Where the manifest of ``artifact_id`` lives in the store rooted at ``root``."""
    return Path(root) / MANIFEST_DIR / f"{artifact_id}.json"


def manifest_read(root: str | os.PathLike[str], artifact_id: str) -> ArtifactManifest:
    """The manifest of ``artifact_id`` in the store rooted at ``root``, checked against its name
    (size, sha256, JSON). Raises ArtifactNotFound, UnsafeArtifactError, ArtifactIntegrityError or
    ArtifactError."""
    path = manifest_path(root, check_sha(artifact_id))
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ArtifactNotFound(f"no artifact {artifact_id}") from None
    if size > MAX_MANIFEST_BYTES:
        raise UnsafeArtifactError(f"manifest {artifact_id} is {size} bytes; refused")
    return manifest_from_bytes(path.read_bytes(), artifact_id)


def manifest_from_bytes(data: bytes, artifact_id: str) -> ArtifactManifest:
    """The manifest held in ``data``, checked against its name ``artifact_id`` (size, sha256,
    JSON), wherever the bytes came from (a file, an object store)."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise UnsafeArtifactError(f"manifest {artifact_id} is {len(data)} bytes; refused")
    if hashlib.sha256(data).hexdigest() != artifact_id:
        raise ArtifactIntegrityError(f"manifest {artifact_id} does not match its sha256")
    try:
        return ArtifactManifest.from_dict(json.loads(data))
    except (json.JSONDecodeError, TypeError) as exc:
        raise ArtifactError(f"manifest {artifact_id} is not a valid manifest: {exc}") from None
