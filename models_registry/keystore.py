"""Per-subject data keys for stored record content (envelope encryption), kept outside the database.

Each subject's content is encrypted (AES-256-GCM) under its own data key; the data key is stored
wrapped by the platform's key-encryption key (RECORD_KEK) in a keystore apart from the database,
so a database backup holds ciphertext but no keys. Destroying a subject's key at erasure makes
every copy of that content — in old backups and replicas the platform cannot reach — unreadable
("crypto-shredding"). The objects of an S3 artifact store have data keys here too (one per object,
workers.object_store), destroyed when the object is purged.

Two homes, one interface: a folder (KEYSTORE_DIR, the embedded default, one host) or, with
KEYSTORE_DATABASE_URL (required with ARTIFACT_STORE=s3), a PostgreSQL database of its own with its
own credentials. A database rather than a bucket: destroying a key is one committed DELETE that
every worker host's next read sees, and a bucket's versioning, Object Lock or replication would
keep a deleted key's bytes as a copy — the thing a destroyed key must not have.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings

from foundation.data_keys import KeyDestroyed

__all__ = ["DatabaseKeystore", "KeyDestroyed", "Keystore", "keystore", "subject_key_ref"]


class Keystore:
    def __init__(self, root: Path, kek: bytes) -> None:
        self.root = Path(root)
        self._kek = AESGCM(hashlib.sha256(kek).digest())
        self._cache: dict[str, bytes] = {}

    def _path(self, key_ref: str) -> Path:
        digest = hashlib.sha256(key_ref.encode()).hexdigest()
        return self.root / digest[:2] / f"{digest}.key"

    def data_key(self, key_ref: str, *, create: bool = False) -> bytes:
        if key_ref in self._cache:
            return self._cache[key_ref]
        path = self._path(key_ref)
        if path.exists():
            blob = path.read_bytes()
            try:
                key = self._kek.decrypt(blob[:12], blob[12:], key_ref.encode())
            except InvalidTag:
                raise KeyDestroyed(f"the key of {key_ref} cannot be unwrapped") from None
        elif create:
            key = AESGCM.generate_key(bit_length=256)
            nonce = secrets.token_bytes(12)
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(nonce + self._kek.encrypt(nonce, key, key_ref.encode()))
            os.replace(tmp, path)
        else:
            raise KeyDestroyed(f"no data key for {key_ref}: it was destroyed (or never made)")
        self._cache[key_ref] = key
        return key

    def has_key(self, key_ref: str) -> bool:
        return key_ref in self._cache or self._path(key_ref).exists()

    def encrypt(self, key_ref: str, plaintext: bytes) -> tuple[bytes, bytes]:
        nonce = secrets.token_bytes(12)
        return nonce, AESGCM(self.data_key(key_ref, create=True)).encrypt(nonce, plaintext, key_ref.encode())

    def decrypt(self, key_ref: str, nonce: bytes, ciphertext: bytes) -> bytes:
        return AESGCM(self.data_key(key_ref)).decrypt(nonce, ciphertext, key_ref.encode())

    def destroy(self, key_ref: str) -> bool:
        """Overwrite and delete the key file; True when a key existed."""
        self._cache.pop(key_ref, None)
        path = self._path(key_ref)
        if not path.exists():
            return False
        size = path.stat().st_size
        with path.open("r+b") as handle:
            handle.write(secrets.token_bytes(size))
            handle.flush()
            os.fsync(handle.fileno())
        path.unlink()
        return True


class DatabaseKeystore(Keystore):
    """The keystore in a PostgreSQL database of its own (KEYSTORE_DATABASE_URL), for many hosts.

    One table, ``platform_data_keys``: the sha256 of the key reference (a subject's pseudonym is not
    stored in the clear) and the wrapped key. Made on first use, as is the table. Creating a key is
    an INSERT that keeps the first of two racing writers' keys; destroying one is a DELETE,
    committed before it returns, so another worker's next read finds no key. Nothing is cached:
    every read asks the database, so a key destroyed elsewhere is gone here at once."""

    TABLE = "platform_data_keys"
    _ready: set[str] = set()
    _ready_lock = threading.Lock()

    def __init__(self, url: str, kek: bytes) -> None:
        self.url = url
        self._kek = AESGCM(hashlib.sha256(kek).digest())
        self._connection = None

    def _db(self):
        if self._connection is None or self._connection.closed:
            import psycopg

            self._connection = psycopg.connect(self.url, autocommit=True)
            with DatabaseKeystore._ready_lock:
                if self.url not in DatabaseKeystore._ready:
                    self._connection.execute(
                        f"CREATE TABLE IF NOT EXISTS {self.TABLE} (ref_sha256 text PRIMARY KEY, wrapped bytea NOT NULL, "
                        "created_at timestamptz NOT NULL DEFAULT now())")
                    DatabaseKeystore._ready.add(self.url)
        return self._connection

    @staticmethod
    def _ref(key_ref: str) -> str:
        return hashlib.sha256(key_ref.encode()).hexdigest()

    def _wrapped(self, key_ref: str) -> bytes | None:
        row = self._db().execute(f"SELECT wrapped FROM {self.TABLE} WHERE ref_sha256 = %s",
                                 [self._ref(key_ref)]).fetchone()
        return bytes(row[0]) if row else None

    def data_key(self, key_ref: str, *, create: bool = False) -> bytes:
        blob = self._wrapped(key_ref)
        if blob is None and create:
            nonce = secrets.token_bytes(12)
            candidate = nonce + self._kek.encrypt(nonce, AESGCM.generate_key(bit_length=256), key_ref.encode())
            self._db().execute(f"INSERT INTO {self.TABLE} (ref_sha256, wrapped) VALUES (%s, %s) "
                               "ON CONFLICT (ref_sha256) DO NOTHING", [self._ref(key_ref), candidate])
            blob = self._wrapped(key_ref)  # ours, or the one another worker made first
        if blob is None:
            raise KeyDestroyed(f"no data key for {key_ref}: it was destroyed (or never made)")
        try:
            return self._kek.decrypt(blob[:12], blob[12:], key_ref.encode())
        except InvalidTag:
            raise KeyDestroyed(f"the key of {key_ref} cannot be unwrapped") from None

    def has_key(self, key_ref: str) -> bool:
        return self._wrapped(key_ref) is not None

    def destroy(self, key_ref: str) -> bool:
        """Delete the key (one committed statement); True when a key existed. The row's old bytes
        stay in the database's files until VACUUM reuses the space, wrapped by RECORD_KEK."""
        deleted = self._db().execute(f"DELETE FROM {self.TABLE} WHERE ref_sha256 = %s", [self._ref(key_ref)])
        return deleted.rowcount > 0

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()


def keystore() -> Keystore:
    """The keystore the settings name: the database (KEYSTORE_DATABASE_URL) when set, else the folder."""
    if settings.KEYSTORE_DATABASE_URL:
        return DatabaseKeystore(settings.KEYSTORE_DATABASE_URL, settings.RECORD_KEK.encode())
    return Keystore(settings.KEYSTORE_DIR, settings.RECORD_KEK.encode())


def subject_key_ref(subject_reference: str | None, dataset_id: int) -> str:
    """Content of a subject's records is under the subject's key; content with no subject under
    its dataset's key."""
    return f"subject:{subject_reference}" if subject_reference else f"dataset:{dataset_id}"
