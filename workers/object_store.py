"""S3-compatible object storage (AWS S3, MinIO) for the artifact store, and what a purge can
promise there. Plain Python + boto3 (imported when a bucket is first used): no Django, no torch.

Every object is sealed before it leaves the host: AES-256-GCM under a data key of its own, kept
in the keystore (models_registry.keystore) under ``artifact:<kind>:<name>``, the key reference as
associated data. Deleting an object destroys its key, so a copy the platform cannot delete — an
object-store backup, a replica in another bucket, a version Object Lock retains — can no longer
be read (crypto-shredding, as for record content).

Deleting an object deletes every version of it (and the delete markers) where the bucket is
versioned. A version that Object Lock retains (a retention date not yet passed, a legal hold) is
not deleted — governance mode is not bypassed — and is returned as retained instead; so is the
replica a bucket replication rule keeps elsewhere. Nothing that keeps a copy is called deleted.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
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

SEALED_MAGIC = b"DPAEAD1\0"  # format of a sealed object: magic, 12-byte nonce, ciphertext + tag
SEALED_OVERHEAD = len(SEALED_MAGIC) + 12 + 16  # magic, nonce, GCM tag


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


def object_name(kind: str, name: str) -> str:
    """Where an artifact store's blob or manifest lives, relative to the store's prefix (the same
    layout as on a local disk)."""
    return f"blobs/{name}.safetensors" if kind == "blob" else f"{MANIFEST_DIR}/{name}.json"


def object_key_ref(kind: str, name: str) -> str:
    """The keystore reference of a stored object's data key."""
    return f"artifact:{kind}:{name}"


def sealed_read(objects: S3Objects, keys: DataKeys, kind: str, name: str) -> bytes | None:
    """The opened bytes of a store object (None when there is none). Raises ArtifactIntegrityError
    when it cannot be opened: its key destroyed, or its bytes changed."""
    sealed = objects.get(object_name(kind, name))
    if sealed is None:
        return None
    ref = object_key_ref(kind, name)
    try:
        return unseal(keys.data_key(ref), ref, sealed)
    except SealedObjectUnreadable as exc:
        raise ArtifactIntegrityError(f"{kind} {name}: {exc}") from None
    except KeyDestroyed:
        raise ArtifactIntegrityError(f"{kind} {name} cannot be opened: its data key is destroyed") from None


def sealed_manifest_read(objects: S3Objects, keys: DataKeys, artifact_id: str) -> ArtifactManifest:
    """The manifest of ``artifact_id`` in a bucket, checked against its name; read without torch
    (the web side's workers.runners.storage.artifact_manifest). Raises as manifest_read does."""
    data = sealed_read(objects, keys, "manifest", check_sha(artifact_id))
    if data is None:
        raise ArtifactNotFound(f"no artifact {artifact_id}")
    return manifest_from_bytes(data, artifact_id)


class S3Objects:
    """One bucket (and prefix) through boto3. Keys given here are relative to the prefix."""

    def __init__(self, location: S3Location, *, client_factory: Callable[[], Any] | None = None) -> None:
        self.location = location
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
        try:
            self.client.head_object(Bucket=self.location.bucket, Key=self.location.key(relative))
        except self._errors() as exc:
            if _code(exc) in {"NoSuchKey", "404", "NotFound"}:
                return False
            raise
        return True

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

    def put(self, relative: str, data: bytes, *, metadata: dict[str, str] | None = None) -> str | None:
        """Write the object unconditionally; its version id (None on an unversioned bucket)."""
        response = self.client.put_object(Bucket=self.location.bucket, Key=self.location.key(relative), Body=data,
                                          Metadata=metadata or {})
        version = response.get("VersionId")
        return None if version in (None, "null") else version

    def get_with_metadata(self, relative: str) -> tuple[bytes, dict[str, str]] | None:
        """The object's current bytes and user metadata, read in one request (None when there is none)."""
        try:
            response = self.client.get_object(Bucket=self.location.bucket, Key=self.location.key(relative))
        except self._errors() as exc:
            if _code(exc) in {"NoSuchKey", "404", "NotFound"}:
                return None
            raise
        return response["Body"].read(), dict(response.get("Metadata") or {})

    def metadata(self, relative: str) -> dict[str, str] | None:
        """The current object's user metadata (None when there is no object)."""
        try:
            head = self.client.head_object(Bucket=self.location.bucket, Key=self.location.key(relative))
        except self._errors() as exc:
            if _code(exc) in {"NoSuchKey", "404", "NotFound"}:
                return None
            raise
        return dict(head.get("Metadata") or {})

    def touch(self, relative: str) -> None:
        """Make the object young again (a copy onto itself: its LastModified becomes now)."""
        key = self.location.key(relative)
        self.client.copy_object(Bucket=self.location.bucket, Key=key, CopySource={"Bucket": self.location.bucket,
                                                                                 "Key": key},
                                MetadataDirective="REPLACE", Metadata={"put-at": _now_iso()})

    def list(self, relative_prefix: str) -> Iterator[StoredObject]:
        """The current objects under ``relative_prefix`` (names relative to the store's prefix)."""
        paginator = self.client.get_paginator("list_objects_v2")
        strip = len(self.location.key(""))
        for page in paginator.paginate(Bucket=self.location.bucket, Prefix=self.location.key(relative_prefix)):
            for item in page.get("Contents", []):
                yield StoredObject(key=item["Key"][strip:], size=int(item["Size"]),
                                   mtime=item["LastModified"].timestamp())

    def pending_uploads(self, relative_prefix: str = "") -> list[PendingUpload]:
        response = self.client.list_multipart_uploads(Bucket=self.location.bucket,
                                                      Prefix=self.location.key(relative_prefix))
        strip = len(self.location.key(""))
        return [PendingUpload(key=u["Key"][strip:], upload_id=u["UploadId"], mtime=u["Initiated"].timestamp())
                for u in response.get("Uploads", [])]

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
