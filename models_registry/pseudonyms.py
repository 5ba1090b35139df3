"""Keyed pseudonyms: HMAC-SHA256 of a normalised identifier under a secret pepper.

Raw identifiers arrive at intake or import, are turned into digests here, and are dropped.
Each digest carries the version of the pepper that made it, so the pepper can be rotated:
lookups try every configured version, and a match under an old version is re-keyed.

Record content is fingerprinted the same way under keys of its own (CONTENT_FINGERPRINT_KEY), so a
pepper rotation never touches a content fingerprint; a rotation of the content key is followed by
re-keying the stored fingerprints (models_registry.services.content_fingerprints_rekey).
"""

from __future__ import annotations

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


def current_content_key_version() -> int:
    return settings.CONTENT_FINGERPRINT_KEY_VERSION


def content_fingerprint(content: bytes | str, *, key_version: int | None = None) -> tuple[bytes, int]:
    """Keyed fingerprint of a record's content, with the key version used (the current one by
    default; a reader checking a stored fingerprint passes the version it was made with).

    Keyed by the content fingerprint keys, never by the pepper: a pepper rotation leaves every
    content fingerprint as it was. The fingerprint under version n is chained through keys 1..n
    (see :func:`content_fingerprint_rekey`)."""
    version = current_content_key_version() if key_version is None else key_version
    return content_fingerprints_all_versions(content, up_to=version)[version], version


def content_fingerprints_all_versions(content: bytes | str, *, up_to: int | None = None) -> dict[int, bytes]:
    """The content's fingerprint under every key version 1..``up_to`` (default: the current one),
    for matching stored fingerprints that were not re-keyed yet."""
    if isinstance(content, str):
        content = content.encode()
    last = current_content_key_version() if up_to is None else up_to
    out: dict[int, bytes] = {}
    digest = content
    for version in range(1, last + 1):
        digest = hmac.new(_content_key(version), digest, hashlib.sha256).digest()
        out[version] = digest
    return out


def content_fingerprint_rekey(fingerprint: bytes, *, from_version: int, to_version: int | None = None) -> bytes:
    """A stored fingerprint under ``from_version`` moved to ``to_version`` (default: the current one)
    without the content: F_n = HMAC(key_n, F_{n-1}) with F_0 the content itself.

    Why a chain: suppression must keep matching erased content, and erased content is destroyed
    (its subject's key shredded), so no fingerprint of it can ever be computed afresh. Re-keying by
    wrapping needs only the stored fingerprint; a fingerprint under the newest version can be tested
    against a guessed content only by someone who holds every key up to it, so an old key that
    leaked no longer opens re-keyed fingerprints. The price: no key version may be dropped."""
    version = current_content_key_version() if to_version is None else to_version
    if from_version > version:
        raise ValidationFailed(f"a content fingerprint of key version {from_version} cannot go back to {version}")
    digest = bytes(fingerprint)
    for step in range(from_version + 1, version + 1):
        digest = hmac.new(_content_key(step), digest, hashlib.sha256).digest()
    return digest


def _content_key(version: int) -> bytes:
    try:
        return settings.CONTENT_FINGERPRINT_KEYS[version].encode()
    except KeyError:
        raise ValidationFailed(f"no content fingerprint key of version {version} is configured") from None
