"""Reading an uploaded archive (zip, or tar plain or compressed with gzip, bzip2 or xz) without
extracting it to disk and without trusting what it says about itself.

Only regular files and folders are taken: a symbolic or hard link, a device, a FIFO, an encrypted
zip member or a member path that is absolute or climbs out of the archive (``..``, a backslash, a
drive letter) refuses the whole archive. Archive bombs are stopped twice: by the declared sizes and
member count before anything is decompressed, and by the bytes actually decompressed, counted
while reading (a member that expands beyond what it declared, or a compressed tar stream that
expands beyond the total, stops at the limit plus one byte). Plain Python, no torch, no Django.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import re
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import IO

from workers.model_families.base import UploadRefused

CHUNK = 1024 * 1024
# Tar headers (512 bytes each, PAX and long-name records) on top of the members' declared bytes.
TAR_OVERHEAD_PER_MEMBER = 64 * 1024


@dataclass(frozen=True)
class ArchiveLimits:
    """``members``: entries (files and folders); ``member_bytes``: one file, uncompressed;
    ``total_bytes``: every file together, uncompressed."""

    members: int
    member_bytes: int
    total_bytes: int


def archive_files(data: bytes, *, limits: ArchiveLimits) -> dict[str, bytes]:
    """The regular files of the archive ``data`` by path (folders dropped; a folder that holds
    every file is stripped, so ``my-model/config.json`` reads as ``config.json``). Raises
    :class:`UploadRefused` naming the problem: ``not_an_archive``, ``unsafe_archive_member``
    (links, devices, paths outside the archive, encryption, a path given twice) or
    ``archive_too_large`` (count and sizes, declared or actual)."""
    members = _zip_files(data, limits) if zipfile.is_zipfile(io.BytesIO(data)) else _tar_files(data, limits)
    files: dict[str, bytes] = {}
    for name, content in members:
        if name in files:
            raise _refuse(f"archive member {name!r} appears twice")
        files[name] = content
    return _without_common_folder(files)


def _refuse(message: str, code: str = "unsafe_archive_member") -> UploadRefused:
    return UploadRefused(message, code=code)


def member_path(name: str) -> str:
    """The member's path, normalised (``./a/b`` -> ``a/b``); refused when it is absolute or leaves
    the archive."""
    if not name or "\x00" in name or "\\" in name:
        raise _refuse(f"archive member {name!r}: a path with a backslash or NUL is not taken")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise _refuse(f"archive member {name!r}: an absolute path is not taken (path traversal)")
    parts = [part for part in PurePosixPath(name).parts if part != "."]
    if ".." in parts:
        raise _refuse(f"archive member {name!r}: '..' leaves the archive (path traversal)")
    if not parts:
        raise _refuse(f"archive member {name!r} has no name")
    return "/".join(parts)


def _read_capped(handle: IO[bytes], *, name: str, declared: int, cap: int) -> bytes:
    """Read a member, never more than ``cap + 1`` bytes; refuse one that is longer than ``cap``
    or than it declared."""
    chunks, size = [], 0
    while True:
        chunk = handle.read(min(CHUNK, cap + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if size > cap:
            raise _refuse(f"archive member {name!r} expands beyond {cap:,} bytes (archive bomb?)",
                          code="archive_too_large")
    if size != declared:
        raise _refuse(f"archive member {name!r} holds {size:,} bytes but declares {declared:,}")
    return b"".join(chunks)


def _check_declared(name: str, size: int, total: int, limits: ArchiveLimits) -> None:
    if size > limits.member_bytes:
        raise _refuse(f"archive member {name!r} declares {size:,} bytes uncompressed; the limit is "
                      f"{limits.member_bytes:,} per file (archive bomb?)", code="archive_too_large")
    if total > limits.total_bytes:
        raise _refuse(f"the archive declares more than {limits.total_bytes:,} bytes uncompressed in all "
                      "(archive bomb?)", code="archive_too_large")


def _too_many(limits: ArchiveLimits) -> UploadRefused:
    return _refuse(f"the archive holds more than {limits.members} members", code="archive_too_large")


def _zip_files(data: bytes, limits: ArchiveLimits) -> Iterator[tuple[str, bytes]]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise _refuse(f"the zip archive cannot be read: {exc}", code="not_an_archive") from None
    with archive:
        infos = archive.infolist()
        if len(infos) > limits.members:
            raise _too_many(limits)
        taken: list[tuple[str, zipfile.ZipInfo]] = []
        total = 0
        for info in infos:
            name = member_path(info.filename)
            kind = stat.S_IFMT(info.external_attr >> 16)
            if kind == stat.S_IFLNK:
                raise _refuse(f"archive member {info.filename!r} is a symbolic link; links are not taken")
            if info.is_dir():
                continue
            if kind not in (0, stat.S_IFREG):
                raise _refuse(f"archive member {info.filename!r} is not a regular file")
            if info.flag_bits & 0x1:
                raise _refuse(f"archive member {info.filename!r} is encrypted")
            total += info.file_size
            _check_declared(info.filename, info.file_size, total, limits)
            taken.append((name, info))
        remaining = limits.total_bytes
        for name, info in taken:
            try:
                with archive.open(info) as handle:
                    content = _read_capped(handle, name=info.filename, declared=info.file_size,
                                           cap=min(limits.member_bytes, remaining))
            except UploadRefused:
                raise
            except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError,
                    lzma.LZMAError, zlib.error, ValueError) as exc:
                raise _refuse(f"archive member {info.filename!r} cannot be read: {exc}",
                              code="not_an_archive") from None
            remaining -= len(content)
            yield name, content


class _CappedStream(io.RawIOBase):
    """A read-only stream that refuses to give more than ``cap`` bytes: what a compressed tar
    decompresses to, headers included, is bounded however it is built."""

    def __init__(self, inner: IO[bytes], cap: int) -> None:
        self.inner, self.cap, self.read_bytes = inner, cap, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.inner.read(len(buffer))
        self.read_bytes += len(data)
        if self.read_bytes > self.cap:
            raise _refuse(f"the archive expands beyond {self.cap:,} bytes (archive bomb?)", code="archive_too_large")
        buffer[: len(data)] = data
        return len(data)


def _decompressed(data: bytes) -> IO[bytes]:
    """The tar stream inside ``data`` (gzip, bzip2 and xz are decompressed lazily)."""
    raw = io.BytesIO(data)
    if data.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=raw)
    if data.startswith(b"BZh"):
        return bz2.BZ2File(raw)
    if data.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(raw)
    return raw


def _tar_files(data: bytes, limits: ArchiveLimits) -> Iterator[tuple[str, bytes]]:
    cap = limits.total_bytes + limits.members * TAR_OVERHEAD_PER_MEMBER
    stream = io.BufferedReader(_CappedStream(_decompressed(data), cap), buffer_size=CHUNK)
    try:
        archive = tarfile.open(fileobj=stream, mode="r|")  # a stream: one member after the other
    except (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError) as exc:
        raise _refuse(f"the upload is not a zip or tar archive ({exc}); send config.json, the safetensors "
                      "weights and the tokenizer files in one", code="not_an_archive") from None
    count, total = 0, 0
    try:
        with archive:
            for member in archive:
                count += 1
                if count > limits.members:
                    raise _too_many(limits)
                name = member_path(member.name)
                if member.issym() or member.islnk():
                    raise _refuse(f"archive member {member.name!r} is a {'symbolic' if member.issym() else 'hard'} "
                                  "link; links are not taken")
                if member.isdir():
                    continue
                if not member.isfile():
                    raise _refuse(f"archive member {member.name!r} is not a regular file (a device or FIFO)")
                total += member.size
                _check_declared(member.name, member.size, total, limits)
                handle = archive.extractfile(member)
                yield name, _read_capped(handle, name=member.name, declared=member.size,
                                         cap=min(limits.member_bytes, limits.total_bytes))
    except (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError) as exc:
        raise _refuse(f"the tar archive cannot be read: {exc}", code="not_an_archive") from None


def _without_common_folder(files: dict[str, bytes]) -> dict[str, bytes]:
    """Strip a first folder that holds every file (an archive of a model folder)."""
    heads = {path.split("/", 1)[0] for path in files}
    if len(heads) == 1 and all("/" in path for path in files):
        return {path.split("/", 1)[1]: content for path, content in files.items()}
    return files
