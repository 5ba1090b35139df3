"""Files every worker host must see that are not artifacts: the reference datasets' folders
(``datasets``), uploads waiting for a worker's check (``pending-uploads``) and signed reports
(``reports``). One interface, the artifact store's two backends (docs/object_storage.md):

* :class:`LocalFiles`: a folder on this host (``DATASET_ROOT``, ``ARTIFACT_ROOT/pending-uploads``,
  ``REPORT_ROOT``), the embedded default, as before.
* :class:`S3Files`: objects under ``<prefix>/<area>/`` of the artifact store's bucket, each version
  sealed (AES-256-GCM) under a data key of its own in the keystore, ``file:<area>/<name>#<key id>``
  (the key id is in the object's metadata). A replace writes the new content as a new version
  first (a reader on another host sees the old file or the new one, never none), then deletes
  every older version and destroys its key; a delete removes every version and key. A copy left in
  a backup, a replica or a version Object Lock keeps can no longer be read; such a copy is
  returned as ``retained``, never counted as removed.

Nothing here touches a local disk with the S3 backend: datasets are read into memory. Plain Python,
no Django, no torch.
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from foundation.data_keys import DataKeys, KeyDestroyed
from foundation.files import atomic_write
from workers.object_store import S3Objects, SealedObjectUnreadable, seal, unseal

FILE_AREAS = ("datasets", "pending-uploads", "reports")
KEY_ID_METADATA = "data-key-id"  # the object metadata naming the key id of a version's data key
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*(/[A-Za-z0-9_][A-Za-z0-9_.\-]*)*")


class SharedFileError(Exception):
    """A shared file cannot be read: its data key is destroyed, or its bytes were changed."""


@dataclass
class FileRemoval:
    """What deleting (or replacing) a shared file did: whether a copy went, and the copies kept
    (Object Lock, replication), each with why."""

    name: str
    removed: bool = False
    retained: list[dict[str, Any]] = field(default_factory=list)


class SharedFiles(Protocol):
    """One area of shared files; names are relative (``mnist/train.npz``)."""

    backend: str
    area: str

    def put(self, name: str, data: bytes) -> FileRemoval: ...

    def get(self, name: str) -> bytes | None: ...

    def delete(self, name: str) -> FileRemoval: ...

    def names(self, prefix: str = "") -> list[str]: ...

    def location(self, name: str) -> str: ...


def check_name(name: str) -> str:
    """``name`` if it is a relative path of plain segments (no ``..``, no leading ``/``); else ValueError."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name.split("/"):
        raise ValueError(f"bad shared file name {name!r}: relative segments of letters, digits, '_', '.', '-'")
    return name


def check_area(area: str) -> str:
    if area not in FILE_AREAS:
        raise ValueError(f"unknown shared file area {area!r}; areas: {', '.join(FILE_AREAS)}")
    return area


class LocalFiles:
    """An area in a folder on this host (the embedded default)."""

    backend = "local"

    def __init__(self, root: str | os.PathLike[str], area: str, *, mode: int | None = None) -> None:
        self.root = Path(root)
        self.area = check_area(area)
        self.mode = mode

    def path(self, name: str) -> Path:
        return self.root / check_name(name)

    def location(self, name: str) -> str:
        return str(self.path(name))

    def put(self, name: str, data: bytes) -> FileRemoval:
        """Write (or replace) the file atomically; a local replace leaves no older copy."""
        path = self.path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        existed = path.exists()
        atomic_write(path, data, mode=self.mode)
        return FileRemoval(name=name, removed=existed)

    def get(self, name: str) -> bytes | None:
        try:
            return self.path(name).read_bytes()
        except FileNotFoundError:
            return None

    def delete(self, name: str) -> FileRemoval:
        path = self.path(name)
        try:
            path.unlink()
        except FileNotFoundError:
            return FileRemoval(name=name)
        return FileRemoval(name=name, removed=True)

    def names(self, prefix: str = "") -> list[str]:
        if not self.root.exists():
            return []
        found = (p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file())
        return sorted(n for n in found if n.startswith(prefix) and not Path(n).name.startswith("."))


class S3Files:
    """An area as objects ``<area>/<name>`` in the artifact store's bucket, each sealed under a
    data key of its own (see the module's docstring)."""

    backend = "s3"

    def __init__(self, objects: S3Objects, keys: DataKeys, area: str) -> None:
        self.objects = objects
        self.keys = keys
        self.area = check_area(area)

    def _relative(self, name: str) -> str:
        return f"{self.area}/{check_name(name)}"

    def key_ref(self, name: str, key_id: str = "") -> str:
        """The keystore reference of the data key of one version of the file (``key_id`` from its
        metadata; "" for a file written without one)."""
        return f"file:{self._relative(name)}" + (f"#{key_id}" if key_id else "")

    def current_key_ref(self, name: str) -> str | None:
        """The key reference of the file's current version (None when there is no file)."""
        metadata = self.objects.metadata(self._relative(name))
        return None if metadata is None else self.key_ref(name, metadata.get(KEY_ID_METADATA, ""))

    def location(self, name: str) -> str:
        return f"s3://{self.objects.location.bucket}/{self.objects.location.key(self._relative(name))}"

    def put(self, name: str, data: bytes) -> FileRemoval:
        """Write the file as a new version under a new data key; then delete every older version
        and destroy its key. What the replace could not delete is in the result's ``retained``."""
        relative = self._relative(name)
        old_ref = self.current_key_ref(name)
        key_id = secrets.token_hex(8)
        ref = self.key_ref(name, key_id)
        written = self.objects.put(relative, seal(self.keys.data_key(ref, create=True), ref, data),
                                   metadata={KEY_ID_METADATA: key_id})
        if old_ref is None:
            return FileRemoval(name=name)
        outcome = self.objects.delete(relative, keep_version=written) if written else None
        self.keys.destroy(old_ref)  # every older copy left anywhere is unreadable now
        if outcome is None:  # an unversioned bucket: the put replaced the only copy
            return FileRemoval(name=name, removed=True)
        return FileRemoval(name=name, removed=not outcome.retained, retained=list(outcome.retained))

    def get(self, name: str) -> bytes | None:
        for attempt in range(2):  # a replace on another host may destroy the key just read: read again
            found = self.objects.get_with_metadata(self._relative(name))
            if found is None:
                return None
            sealed, metadata = found
            ref = self.key_ref(name, metadata.get(KEY_ID_METADATA, ""))
            try:
                return unseal(self.keys.data_key(ref), ref, sealed)
            except SealedObjectUnreadable as exc:
                raise SharedFileError(str(exc)) from None
            except KeyDestroyed:
                if attempt:
                    raise SharedFileError(f"{self.location(name)} cannot be opened: its data key is destroyed") from None
        return None  # not reached

    def delete(self, name: str) -> FileRemoval:
        ref = self.current_key_ref(name)
        outcome = self.objects.delete(self._relative(name))
        if ref is not None:
            self.keys.destroy(ref)  # every copy left anywhere is unreadable now
        return FileRemoval(name=name, removed=bool(outcome.versions_deleted) and not outcome.retained,
                           retained=list(outcome.retained))

    def names(self, prefix: str = "") -> list[str]:
        strip = len(self.area) + 1
        return sorted(item.key[strip:] for item in self.objects.list(f"{self.area}/{prefix}"))


class StoredFolder:
    """A dataset folder kept as shared files (``<area>/<folder>/...``): what the dataset code reads
    and rewrites in memory (workers.datasets.reference accepts it wherever it takes a folder path).
    ``retained`` gathers the copies a rewrite could not delete."""

    def __init__(self, files: SharedFiles, folder: str) -> None:
        self.files = files
        self.folder = check_name(folder)
        self.retained: list[dict[str, Any]] = []

    def __str__(self) -> str:
        return self.files.location(self.folder)

    def read_bytes(self, filename: str) -> bytes:
        data = self.files.get(f"{self.folder}/{filename}")
        if data is None:
            raise FileNotFoundError(f"{self.files.location(f'{self.folder}/{filename}')}: no such file")
        return data

    def exists(self, filename: str) -> bool:
        return f"{self.folder}/{filename}" in self.files.names(f"{self.folder}/{filename}")

    def write_bytes(self, filename: str, data: bytes) -> None:
        self.retained += self.files.put(f"{self.folder}/{filename}", data).retained

    def location(self, filename: str) -> str:
        return self.files.location(f"{self.folder}/{filename}")
