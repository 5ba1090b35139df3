"""Per-subject data keys for stored record content (envelope encryption), kept outside the database.

Each subject's content is encrypted (AES-256-GCM) under its own data key; the data key is stored
wrapped by the platform's key-encryption key (RECORD_KEK) in a keystore folder apart from the
database, so a database backup holds ciphertext but no keys. Destroying a subject's key at erasure
makes every copy of that content — in old backups and replicas the platform cannot reach —
unreadable ("crypto-shredding").
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings


class KeyDestroyed(Exception):
    """The data key of this content was destroyed: the content can never be read again."""


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


def keystore() -> Keystore:
    return Keystore(settings.KEYSTORE_DIR, settings.RECORD_KEK.encode())


def subject_key_ref(subject_reference: str | None, dataset_id: int) -> str:
    """Content of a subject's records is under the subject's key; content with no subject under
    its dataset's key."""
    return f"subject:{subject_reference}" if subject_reference else f"dataset:{dataset_id}"
