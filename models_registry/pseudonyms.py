"""Keyed pseudonyms: HMAC-SHA256 of a normalised identifier under a secret pepper.

Raw identifiers arrive at intake or import, are turned into digests here, and are dropped.
Each digest carries the version of the pepper that made it, so the pepper can be rotated:
lookups try every configured version, and a match under an old version is re-keyed.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import unicodedata

from django.conf import settings

from foundation.errors import ValidationFailed

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def normalise_identifier(kind: str, value: str) -> str:
    """The canonical form of an identifier, so that 'Ann@X.org ' and 'ann@x.org' match.

    Raises ValidationFailed naming the kind when the value cannot be one."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationFailed(f"{kind} must be a non-empty string", field=kind)
    text = unicodedata.normalize("NFKC", value).strip()
    if kind == "email":
        text = text.casefold()
        if not _EMAIL.match(text) or len(text) > 320:
            raise ValidationFailed("email is not a valid e-mail address", field=kind)
        return text
    if kind == "phone":
        digits = re.sub(r"[\s().-]", "", text)
        if not re.fullmatch(r"\+?\d{6,15}", digits):
            raise ValidationFailed("phone must be 6-15 digits, optionally with a leading +", field=kind)
        return digits
    if kind == "customer_id":
        if len(text) > 200:
            raise ValidationFailed("customer_id is longer than 200 characters", field=kind)
        return text
    raise ValidationFailed(f"unknown identifier kind {kind!r}", field="kind")


def _pepper(version: int) -> bytes:
    try:
        return settings.SUBJECT_PEPPERS[version].encode()
    except KeyError:
        raise ValidationFailed(f"no subject pepper of version {version} is configured") from None


def current_key_version() -> int:
    return settings.SUBJECT_PEPPER_VERSION


def identifier_digest(kind: str, value: str, *, key_version: int | None = None) -> bytes:
    """HMAC-SHA256(pepper[key_version], kind:normalised value); the current version by default."""
    version = current_key_version() if key_version is None else key_version
    message = f"{kind}:{normalise_identifier(kind, value)}".encode()
    return hmac.new(_pepper(version), message, hashlib.sha256).digest()


def identifier_digests_all_versions(kind: str, value: str) -> dict[int, bytes]:
    """The digest under every configured pepper version (for lookups across a rotation)."""
    normalised = normalise_identifier(kind, value)
    message = f"{kind}:{normalised}".encode()
    return {
        version: hmac.new(_pepper(version), message, hashlib.sha256).digest()
        for version in settings.SUBJECT_PEPPERS
    }


def content_fingerprint(content: bytes | str, *, key_version: int | None = None) -> tuple[bytes, int]:
    """Keyed fingerprint of a record's content, with the key version used (the current one by
    default; a reader checking a stored fingerprint passes the version it was made with).

    A separate key is derived from the pepper so a fingerprint never equals an identifier digest."""
    if isinstance(content, str):
        content = content.encode()
    version = current_key_version() if key_version is None else key_version
    return hmac.new(_content_key(_pepper(version)), content, hashlib.sha256).digest(), version


@functools.lru_cache(maxsize=8)
def _content_key(pepper: bytes) -> bytes:
    """The content key of a pepper, derived once (a source read checks every record's fingerprint)."""
    return hmac.new(pepper, b"record-content-fingerprint", hashlib.sha256).digest()
