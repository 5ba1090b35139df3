"""S3-compatible object storage (AWS S3, MinIO) for the artifact store, and what a purge can
promise there. Plain Python + boto3 (imported when a bucket is first used): no Django, no torch.

Every object is sealed before it leaves the host: AES-256-GCM under a data key of its own, kept
in the keystore (models_registry.keystore) under ``artifact:<kind>:<name>``, the key reference as
associated data. Deleting an object destroys its key, so a copy the platform cannot delete — an
object-store backup, a replica in another bucket, a version Object Lock retains — can no longer
be read (crypto-shredding, as for record content).

An object above the multipart threshold (ARTIFACT_S3_MULTIPART_THRESHOLD, 256 MiB by default; one
PUT cannot exceed 5 GB) is uploaded in parts (ARTIFACT_S3_PART_SIZE, 64 MiB) and sealed chunk by
chunk: each part is one chunk under a nonce of its own, authenticated by itself, so that writing
and reading hold a part or two of ciphertext at a time, never the whole (:func:`seal_stream`,
:func:`open_stream`).
An upload that fails is aborted, so it leaves no parts; one a killed writer left open is aborted by
the garbage collector after the grace period. Single-part objects keep their format and still read.

Deleting an object deletes every version of it (and the delete markers) where the bucket is
versioned. A version that Object Lock retains (a retention date not yet passed, a legal hold) is
not deleted — governance mode is not bypassed — and is returned as retained instead; so is the
replica a bucket replication rule keeps elsewhere. Nothing that keeps a copy is called deleted.
"""

from __future__ import annotations

import logging
import math
import secrets
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from foundation.data_keys import DataKeys, KeyDestroyed
from workers.artifact_manifests import (
    MANIFEST_DIR,
    ArtifactIntegrityError,
    ArtifactManifest,
    ArtifactNotFound,
    check_sha,
    manifest_from_bytes,
)

logger = logging.getLogger(__name__)

SEALED_MAGIC = b"DPAEAD1\0"  # format of a sealed object: magic, 12-byte nonce, ciphertext + tag
SEALED_OVERHEAD = len(SEALED_MAGIC) + 12 + 16  # magic, nonce, GCM tag
# A sealed stream (an object uploaded in parts): a header (magic, plaintext chunk size, a random
# 7-byte nonce prefix), then one record per chunk: its ciphertext and GCM tag. Chunk i's nonce is
# the prefix, i, and a byte marking the last chunk, so chunks cannot be reordered, dropped or cut
# off after (the STREAM construction); the header is associated data of every chunk.
SEALED_STREAM_MAGIC = b"DPAEAD2\0"
_STREAM_HEADER = struct.Struct(">8sI7s")
STREAM_HEADER_BYTES = _STREAM_HEADER.size
TAG_BYTES = 16
SEALED_FORMAT_METADATA = "sealed-format"  # object metadata of a sealed stream: "2" ...
PLAIN_BYTES_METADATA = "plain-bytes"  # ... and its plaintext's size

MiB = 1024 * 1024
S3_MIN_PART_BYTES = 5 * MiB  # every part but the last, on S3 and MinIO
S3_MAX_PART_BYTES = 5 * 1024 * MiB
S3_MAX_PARTS = 10_000
S3_MAX_COPY_BYTES = 5 * 1024 * MiB  # CopyObject's limit: a larger object is copied in parts
DEFAULT_PART_BYTES = 64 * MiB
DEFAULT_MULTIPART_THRESHOLD = 256 * MiB


class SealedObjectUnreadable(Exception):
    """A sealed object cannot be opened: its data key is destroyed, or its bytes were changed."""


@dataclass(frozen=True)
class S3Location:
    """Where the store lives: a bucket, a key prefix inside it, and how to reach it. Credentials
    left empty come from boto3's own chain (environment, instance profile, ...)."""

    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None  # MinIO or another S3-compatible server; None for AWS
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None

    def key(self, relative: str) -> str:
        return f"{self.prefix.strip('/')}/{relative}" if self.prefix.strip("/") else relative

    @property
    def name(self) -> str:
        """A stable name for the store (its lock's name)."""
        return f"s3://{self.bucket}/{self.prefix.strip('/')}"


@dataclass
class StoredObject:
    key: str
    size: int
    mtime: float  # the object's LastModified, seconds since the epoch


@dataclass
class PendingUpload:
    """A multipart upload that was started and neither completed nor aborted."""

    key: str
    upload_id: str
    mtime: float  # when it was initiated


@dataclass
class DeletedObject:
    key: str
    versions_deleted: int = 0
    retained: list[dict[str, Any]] = field(default_factory=list)  # copies kept, and why


def seal(data_key: bytes, key_ref: str, plaintext: bytes) -> bytes:
    nonce = secrets.token_bytes(12)
    return SEALED_MAGIC + nonce + AESGCM(data_key).encrypt(nonce, plaintext, key_ref.encode())


def unseal(data_key: bytes, key_ref: str, sealed: bytes) -> bytes:
    if not sealed.startswith(SEALED_MAGIC) or len(sealed) < len(SEALED_MAGIC) + 12 + 16:
        raise SealedObjectUnreadable(f"{key_ref}: not a sealed object")
    body = sealed[len(SEALED_MAGIC):]
    try:
        return AESGCM(data_key).decrypt(body[:12], body[12:], key_ref.encode())
    except InvalidTag:
        raise SealedObjectUnreadable(f"{key_ref}: the bytes do not open under its data key") from None


def stream_chunk_size(plain_size: int, part_size: int) -> int:
    """The plaintext chunk (= part) size for ``plain_size`` bytes: ``part_size``, or larger where
    that would need more parts than S3 allows."""
    return max(part_size, math.ceil(plain_size / S3_MAX_PARTS))


def stream_nonce(prefix: bytes, index: int, last: bool) -> bytes:
    """The 12-byte nonce of chunk ``index``: the object's 7-byte prefix, the index, a last-chunk byte."""
    return prefix + index.to_bytes(4, "big") + (b"\1" if last else b"\0")


def sealed_stream_size(plain_size: int, chunk_size: int) -> int:
    """How many bytes a sealed stream of ``plain_size`` plaintext bytes takes."""
    chunks = max(1, math.ceil(plain_size / chunk_size))
    return STREAM_HEADER_BYTES + plain_size + chunks * TAG_BYTES


def stream_chunk_lengths(sealed_size: int, chunk_size: int) -> list[int]:
    """The ciphertext record length (chunk + tag) of each chunk of a sealed stream of
    ``sealed_size`` bytes; SealedObjectUnreadable when no stream has that size."""
    body = sealed_size - STREAM_HEADER_BYTES
    record = chunk_size + TAG_BYTES
    full, rest = divmod(body, record)
    if body < TAG_BYTES or 0 < rest < TAG_BYTES:
        raise SealedObjectUnreadable(f"a sealed stream of {sealed_size} bytes with {chunk_size}-byte chunks "
                                     "cannot be whole (cut off?)")
    return [record] * full + ([rest] if rest else [])


def seal_stream(data_key: bytes, key_ref: str, plaintext: bytes | memoryview, chunk_size: int) -> Iterator[bytes]:
    """Seal ``plaintext`` chunk by chunk; yield one part per chunk (the first with the header).
    Each part is made when it is asked for: the whole is never sealed at once."""
    if not 0 < chunk_size < 2**32:
        raise ValueError(f"chunk size {chunk_size} must be between 1 and 2**32 - 1 bytes")
    view = memoryview(plaintext)
    header = _STREAM_HEADER.pack(SEALED_STREAM_MAGIC, chunk_size, secrets.token_bytes(7))
    prefix, aad, aead = header[-7:], key_ref.encode() + header, AESGCM(data_key)
    chunks = max(1, math.ceil(len(view) / chunk_size))
    if chunks > 2**32:
        raise ValueError(f"{len(view)} bytes in {chunk_size}-byte chunks: more than 2**32 chunks")
    for index in range(chunks):
        record = aead.encrypt(stream_nonce(prefix, index, index == chunks - 1),
                              view[index * chunk_size:(index + 1) * chunk_size], aad)
        yield header + record if index == 0 else record


def open_stream(data_key: bytes, key_ref: str, read: Callable[[int], bytes], sealed_size: int) -> Iterator[bytes]:
    """Open a sealed stream of ``sealed_size`` bytes read through ``read(n)``; yield each chunk's
    plaintext once its tag is checked. Raises SealedObjectUnreadable when a chunk does not open
    (changed, reordered, cut off) or the size is wrong."""
    header = _read_exactly(read, STREAM_HEADER_BYTES, key_ref)
    magic, chunk_size, prefix = _STREAM_HEADER.unpack(header)
    if magic != SEALED_STREAM_MAGIC or chunk_size == 0:
        raise SealedObjectUnreadable(f"{key_ref}: not a sealed stream")
    try:
        lengths = stream_chunk_lengths(sealed_size, chunk_size)
    except SealedObjectUnreadable as exc:
        raise SealedObjectUnreadable(f"{key_ref}: {exc}") from None
    aad, aead = key_ref.encode() + header, AESGCM(data_key)
    for index, length in enumerate(lengths):
        record = _read_exactly(read, length, key_ref)
        try:
            yield aead.decrypt(stream_nonce(prefix, index, index == len(lengths) - 1), record, aad)
        except InvalidTag:
            raise SealedObjectUnreadable(f"{key_ref}: chunk {index} of {len(lengths)} does not open under its "
                                         "data key (changed, reordered or cut off)") from None
    if read(1):
        raise SealedObjectUnreadable(f"{key_ref}: bytes after the last chunk")


def _read_exactly(read: Callable[[int], bytes], size: int, key_ref: str) -> bytes:
    parts, missing = [b""], size
    while missing:
        data = read(missing)
        if not data:
            raise SealedObjectUnreadable(f"{key_ref}: the object ends {missing} bytes early")
        parts.append(data)
        missing -= len(data)
    return parts[-1] if len(parts) <= 2 else b"".join(parts)


def sealed_write(objects: S3Objects, data_key: bytes, key_ref: str, relative: str, data: bytes, *,
                 if_absent: bool) -> bool:
    """Seal ``data`` and write it as ``relative``: one PUT up to the objects' multipart threshold,
    a sealed stream uploaded in parts above it. ``if_absent``: only when no object is there (False
    when one is; nothing is left behind). True when this call wrote it."""
    if len(data) <= objects.multipart_threshold:
        sealed = seal(data_key, key_ref, data)
        if if_absent:
            return objects.put_if_absent(relative, sealed)
        objects.put(relative, sealed)
        return True
    chunk_size = stream_chunk_size(len(data), objects.part_size)
    metadata = {SEALED_FORMAT_METADATA: "2", PLAIN_BYTES_METADATA: str(len(data))}
    return objects.put_parts(relative, seal_stream(data_key, key_ref, data, chunk_size), metadata=metadata,
                             if_absent=if_absent)


def object_name(kind: str, name: str) -> str:
    """Where an artifact store's blob or manifest lives, relative to the store's prefix (the same
    layout as on a local disk)."""
    return f"blobs/{name}.safetensors" if kind == "blob" else f"{MANIFEST_DIR}/{name}.json"


def object_key_ref(kind: str, name: str) -> str:
    """The keystore reference of a stored object's data key."""
    return f"artifact:{kind}:{name}"


def sealed_read(objects: S3Objects, keys: DataKeys, kind: str, name: str) -> bytes | None:
    """The opened bytes of a store object (None when there is none), read as a stream: a sealed
    stream chunk by chunk, each checked as it arrives. Raises ArtifactIntegrityError when it cannot
    be opened: its key destroyed, or its bytes changed."""
    found = objects.open(object_name(kind, name))
    if found is None:
        return None
    body, size = found
    ref = object_key_ref(kind, name)
    try:
        data_key = keys.data_key(ref)
        magic = _read_exactly(body.read, min(size, len(SEALED_MAGIC)), ref)
        if magic != SEALED_STREAM_MAGIC:
            return unseal(data_key, ref, magic + body.read())
        return b"".join(open_stream(data_key, ref, _Prepend(magic, body.read), size))
    except SealedObjectUnreadable as exc:
        raise ArtifactIntegrityError(f"{kind} {name}: {exc}") from None
    except KeyDestroyed:
        raise ArtifactIntegrityError(f"{kind} {name} cannot be opened: its data key is destroyed") from None
    finally:
        body.close()


class _Prepend:
    """``read(n)`` over bytes already read, then the rest of a stream."""

    def __init__(self, head: bytes, read: Callable[[int], bytes]) -> None:
        self.head, self._read = head, read

    def __call__(self, size: int) -> bytes:
        if self.head:
            taken, self.head = self.head[:size], self.head[size:]
            return taken
        return self._read(size)


def sealed_manifest_read(objects: S3Objects, keys: DataKeys, artifact_id: str) -> ArtifactManifest:
    """The manifest of ``artifact_id`` in a bucket, checked against its name; read without torch
    (the web side's workers.runners.storage.artifact_manifest). Raises as manifest_read does."""
    data = sealed_read(objects, keys, "manifest", check_sha(artifact_id))
    if data is None:
        raise ArtifactNotFound(f"no artifact {artifact_id}")
    return manifest_from_bytes(data, artifact_id)


class S3Objects:
    """One bucket (and prefix) through boto3. Keys given here are relative to the prefix."""

    def __init__(self, location: S3Location, *, client_factory: Callable[[], Any] | None = None,
                 part_size: int = DEFAULT_PART_BYTES, multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD,
                 copy_limit: int = S3_MAX_COPY_BYTES) -> None:
        if not S3_MIN_PART_BYTES <= part_size <= S3_MAX_PART_BYTES:
            raise ValueError(f"part_size={part_size} must be between {S3_MIN_PART_BYTES} (5 MiB, S3's smallest part) "
                             f"and {S3_MAX_PART_BYTES} (5 GiB)")
        if multipart_threshold < S3_MIN_PART_BYTES:
            raise ValueError(f"multipart_threshold={multipart_threshold} must be at least {S3_MIN_PART_BYTES} (5 MiB)")
        if not 0 < copy_limit <= S3_MAX_COPY_BYTES:
            raise ValueError(f"copy_limit={copy_limit} must be between 1 and {S3_MAX_COPY_BYTES} (5 GiB)")
        self.location = location
        self.part_size, self.multipart_threshold, self.copy_limit = part_size, multipart_threshold, copy_limit
        self._client_factory = client_factory
        self._client = None
        self._lock_configuration: dict[str, Any] | None = None

    @property
    def client(self):
        if self._client is None:
            self._client = self._client_factory() if self._client_factory else _client(self.location)
        return self._client

    def _errors(self):
        from botocore.exceptions import ClientError

        return ClientError

    # -- reading and writing

    def get(self, relative: str) -> bytes | None:
        """The object's current bytes, or None when there is none."""
        found = self.get_with_metadata(relative)
        return None if found is None else found[0]

    def exists(self, relative: str) -> bool:
        return self.head(relative) is not None

    def put_if_absent(self, relative: str, data: bytes) -> bool:
        """Write the object unless one is there (a conditional PUT, ``If-None-Match: *``); True
        when this call wrote it. Two hosts putting the same name at once: one writes, the other
        is told it exists."""
        try:
            self.client.put_object(Bucket=self.location.bucket, Key=self.location.key(relative), Body=data,
                                   IfNoneMatch="*")
        except self._errors() as exc:
            if _code(exc) in {"PreconditionFailed", "412", "ConditionalRequestConflict"}:
                return False
            raise
        return True

    def put_parts(self, relative: str, parts: Iterable[bytes], *, metadata: dict[str, str] | None = None,
                  if_absent: bool = False) -> bool:
        """Write the object as a multipart upload of ``parts`` (each at least 5 MiB but the last),
        one part in memory at a time. ``if_absent``: completed only when no object is there (a
        conditional complete, ``If-None-Match: *``), False when one is. On any failure the upload
        is aborted, so no part is left behind, and the error raised. True when this call wrote it."""
        bucket, key = self.location.bucket, self.location.key(relative)
        upload_id = self.client.create_multipart_upload(Bucket=bucket, Key=key, Metadata=metadata or {})["UploadId"]
        try:
            done = []
            for number, body in enumerate(parts, start=1):
                response = self.client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number,
                                                   Body=body)
                done.append({"PartNumber": number, "ETag": response["ETag"]})
            conditions = {"IfNoneMatch": "*"} if if_absent else {}
            self.client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id,
                                                  MultipartUpload={"Parts": done}, **conditions)
        except BaseException as exc:
            self._abort(key, upload_id)
            if isinstance(exc, self._errors()) and _code(exc) in {"PreconditionFailed", "412",
                                                                   "ConditionalRequestConflict"}:
                return False
            raise
        return True

    def _abort(self, key: str, upload_id: str) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.location.bucket, Key=key, UploadId=upload_id)
        except Exception:  # the garbage collector aborts it after the grace period
            logger.warning("could not abort multipart upload %s of %s; the garbage collector will", upload_id, key,
                           exc_info=True)

    def open(self, relative: str) -> tuple[Any, int] | None:
        """The object's current bytes as a stream (``.read(n)``, ``.close()``) and its size; None
        when there is none."""
        response = self._get_object(relative)
        return None if response is None else (response["Body"], int(response["ContentLength"]))

    def _get_object(self, relative: str) -> dict[str, Any] | None:
        """The GET response of the current object (its body not yet read), or None."""
        try:
            return self.client.get_object(Bucket=self.location.bucket, Key=self.location.key(relative))
        except self._errors() as exc:
            if _code(exc) in {"NoSuchKey", "404", "NotFound"}:
                return None
            raise

    def head(self, relative: str) -> tuple[int, dict[str, str]] | None:
        """The current object's size and user metadata (None when there is no object)."""
        try:
            head = self.client.head_object(Bucket=self.location.bucket, Key=self.location.key(relative))
        except self._errors() as exc:
            if _code(exc) in {"NoSuchKey", "404", "NotFound"}:
                return None
            raise
        return int(head["ContentLength"]), dict(head.get("Metadata") or {})

    def put(self, relative: str, data: bytes, *, metadata: dict[str, str] | None = None) -> str | None:
        """Write the object unconditionally; its version id (None on an unversioned bucket)."""
        response = self.client.put_object(Bucket=self.location.bucket, Key=self.location.key(relative), Body=data,
                                          Metadata=metadata or {})
        version = response.get("VersionId")
        return None if version in (None, "null") else version

    def get_with_metadata(self, relative: str) -> tuple[bytes, dict[str, str]] | None:
        """The object's current bytes and user metadata, read in one request (None when there is none)."""
        response = self._get_object(relative)
        return None if response is None else (response["Body"].read(), dict(response.get("Metadata") or {}))

    def metadata(self, relative: str) -> dict[str, str] | None:
        """The current object's user metadata (None when there is no object)."""
        found = self.head(relative)
        return None if found is None else found[1]

    def touch(self, relative: str) -> None:
        """Make the object young again (a copy onto itself: its LastModified becomes now), keeping
        its metadata. An object above CopyObject's limit (5 GiB) is copied onto itself in parts."""
        found = self.head(relative)
        if found is None:
            raise FileNotFoundError(f"no object {relative} to touch")
        size, metadata = found
        bucket, key = self.location.bucket, self.location.key(relative)
        metadata = {**metadata, "put-at": _now_iso()}
        if size <= self.copy_limit:
            self.client.copy_object(Bucket=bucket, Key=key, CopySource={"Bucket": bucket, "Key": key},
                                    MetadataDirective="REPLACE", Metadata=metadata)
            return
        upload_id = self.client.create_multipart_upload(Bucket=bucket, Key=key, Metadata=metadata)["UploadId"]
        try:
            step, done = stream_chunk_size(size, self.part_size), []
            for number, start in enumerate(range(0, size, step), start=1):
                response = self.client.upload_part_copy(
                    Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number,
                    CopySource={"Bucket": bucket, "Key": key},
                    CopySourceRange=f"bytes={start}-{min(start + step, size) - 1}")
                done.append({"PartNumber": number, "ETag": response["CopyPartResult"]["ETag"]})
            self.client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id,
                                                  MultipartUpload={"Parts": done})
        except BaseException:
            self._abort(key, upload_id)
            raise

    def list(self, relative_prefix: str) -> Iterator[StoredObject]:
        """The current objects under ``relative_prefix`` (names relative to the store's prefix)."""
        paginator = self.client.get_paginator("list_objects_v2")
        strip = len(self.location.key(""))
        for page in paginator.paginate(Bucket=self.location.bucket, Prefix=self.location.key(relative_prefix)):
            for item in page.get("Contents", []):
                yield StoredObject(key=item["Key"][strip:], size=int(item["Size"]),
                                   mtime=item["LastModified"].timestamp())

    def pending_uploads(self, relative_prefix: str = "") -> list[PendingUpload]:
        """Every multipart upload under ``relative_prefix`` neither completed nor aborted."""
        paginator = self.client.get_paginator("list_multipart_uploads")
        strip = len(self.location.key(""))
        return [PendingUpload(key=u["Key"][strip:], upload_id=u["UploadId"], mtime=u["Initiated"].timestamp())
                for page in paginator.paginate(Bucket=self.location.bucket, Prefix=self.location.key(relative_prefix))
                for u in page.get("Uploads", [])]

    def abort_upload(self, upload: PendingUpload) -> None:
        self.client.abort_multipart_upload(Bucket=self.location.bucket, Key=self.location.key(upload.key),
                                           UploadId=upload.upload_id)

    # -- deleting, and what keeps a copy

    def delete(self, relative: str, *, keep_version: str | None = None) -> DeletedObject:
        """Delete every version of the object (and its delete markers) that nothing retains, but
        ``keep_version`` (the version a replace just wrote); return how many went and, for each
        copy kept, why."""
        key = self.location.key(relative)
        outcome = DeletedObject(key=relative)
        versions = [v for v in self._versions(key) if keep_version is None or v != keep_version]
        locked = self._object_lock_enabled()
        for version_id in versions:
            if locked:
                held = self._retention(key, version_id)
                if held is not None:
                    outcome.retained.append(held)
                    continue
            try:
                arguments = {"VersionId": version_id} if version_id is not None else {}
                self.client.delete_object(Bucket=self.location.bucket, Key=key, **arguments)
            except self._errors() as exc:  # a lock this side did not see, a policy: say so, never "deleted"
                outcome.retained.append({"key": key, "version_id": version_id, "reason": f"delete refused: {exc}"})
                continue
            outcome.versions_deleted += 1
        replication = self._replication()
        if replication and outcome.versions_deleted:
            outcome.retained.append({"key": key, "reason": replication})
        return outcome

    def holds(self, relative: str) -> list[dict[str, Any]]:
        """What keeps a copy of the object now: each version Object Lock holds (retention not yet
        passed, a legal hold), with why. Deletes nothing; [] where the bucket has no Object Lock."""
        if not self._object_lock_enabled():
            return []
        key = self.location.key(relative)
        return [held for version_id in self._versions(key) if (held := self._retention(key, version_id)) is not None]

    def _versions(self, key: str) -> list[str | None]:
        """Every version id of ``key`` and of its delete markers; ``[None]`` for an unversioned
        bucket's object (``list_object_versions`` reports those as version "null")."""
        found: list[str | None] = []
        paginator = self.client.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=self.location.bucket, Prefix=key):
            for entry in page.get("Versions", []) + page.get("DeleteMarkers", []):
                if entry["Key"] == key:
                    found.append(entry.get("VersionId") or "null")
        return found

    def _object_lock_enabled(self) -> bool:
        if self._lock_configuration is None:
            try:
                self._lock_configuration = self.client.get_object_lock_configuration(
                    Bucket=self.location.bucket).get("ObjectLockConfiguration", {})
            except self._errors() as exc:
                if _code(exc) not in {"ObjectLockConfigurationNotFoundError", "404", "NotImplemented"}:
                    raise
                self._lock_configuration = {}
        return self._lock_configuration.get("ObjectLockEnabled") == "Enabled"

    def _retention(self, key: str, version_id: str | None) -> dict[str, Any] | None:
        """Why Object Lock keeps this version (retention not yet passed, legal hold), or None. Read
        from the version's HEAD (its x-amz-object-lock-* headers): one request, on S3 and MinIO."""
        arguments = {"VersionId": version_id} if version_id not in (None, "null") else {}
        try:
            head = self.client.head_object(Bucket=self.location.bucket, Key=key, **arguments)
        except self._errors() as exc:
            if _code(exc) in {"NoSuchKey", "404", "NotFound", "405", "MethodNotAllowed"}:
                return None  # a delete marker (no HEAD) holds nothing
            raise
        held: dict[str, Any] = {}
        until = head.get("ObjectLockRetainUntilDate")
        if until is not None and until > datetime.now(tz=UTC):
            held.update(mode=head.get("ObjectLockMode"), retain_until=until.isoformat())
        if head.get("ObjectLockLegalHoldStatus") == "ON":
            held["legal_hold"] = True
        if not held:
            return None
        reasons = []
        if "retain_until" in held:
            reasons.append(f"Object Lock retention ({held['mode']}) until {held['retain_until']}")
        if held.get("legal_hold"):
            reasons.append("an Object Lock legal hold")
        return {"key": key, "version_id": version_id, **held, "reason": " and ".join(reasons)}

    def _replication(self) -> str:
        """A sentence naming where the bucket replicates to, or "" when it does not."""
        try:
            rules = self.client.get_bucket_replication(Bucket=self.location.bucket)[
                "ReplicationConfiguration"].get("Rules", [])
        except self._errors() as exc:
            if _code(exc) in {"ReplicationConfigurationNotFoundError", "404", "NotImplemented"}:
                return ""
            raise
        targets = sorted({r.get("Destination", {}).get("Bucket", "?") for r in rules if r.get("Status") == "Enabled"})
        if not targets:
            return ""
        return (f"the bucket replicates to {', '.join(targets)}: the replica is not deleted here "
                "(it stays sealed under a destroyed data key)")


def _client(location: S3Location):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=location.endpoint_url or None,
        region_name=location.region or None,
        aws_access_key_id=location.access_key_id or None,
        aws_secret_access_key=location.secret_access_key or None,
        # Path-style addressing works with MinIO and AWS alike; retries for a busy server.
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 5, "mode": "standard"}),
    )


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", {}) or {}
    return str(response.get("Error", {}).get("Code", "")) or str(
        response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))


def _now_iso() -> str:
    return datetime.now(tz=UTC).isoformat()
