"""Strict settings from the environment (after healthchecks' envbool/envint).

Every reader names the variable in its error, so a malformed value stops start-up with a message
that says what to fix. A variable ``NAME`` may instead be given as ``NAME_FILE`` (a path whose
content is the value), the usual way to pass secrets to containers.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from urllib.parse import urlparse


class ImproperlyConfiguredEnv(Exception):
    """A setting from the environment is missing or malformed; the message names it."""


def _raw(name: str) -> str | None:
    file_path = os.environ.get(f"{name}_FILE")
    if file_path:
        try:
            return Path(file_path).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfiguredEnv(f"{name}_FILE={file_path!r} cannot be read: {exc}") from exc
    return os.environ.get(name)


def env_str(name: str, default: str | None = None, *, required: bool = False) -> str | None:
    value = _raw(name)
    if value is None or value == "":
        if required:
            raise ImproperlyConfiguredEnv(f"{name} must be set")
        return default
    return value


def env_bool(name: str, default: bool) -> bool:
    value = _raw(name)
    if value is None or value == "":
        return default
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfiguredEnv(f"{name}={value!r} is not a boolean (use true/false, 1/0, yes/no)")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    value = _raw(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfiguredEnv(f"{name}={value!r} is not an integer") from None
    if minimum is not None and number < minimum:
        raise ImproperlyConfiguredEnv(f"{name}={number} must be >= {minimum}")
    return number


def env_float(name: str, default: float, *, minimum: float | None = None, below: float | None = None) -> float:
    """A finite number; ``minimum`` inclusive, ``below`` exclusive."""
    value = _raw(name)
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except ValueError:
        raise ImproperlyConfiguredEnv(f"{name}={value!r} is not a number") from None
    if not math.isfinite(number) or (minimum is not None and number < minimum) or (below is not None and number >= below):
        bounds = " and ".join(x for x in (f">= {minimum}" if minimum is not None else "",
                                          f"< {below}" if below is not None else "") if x)
        raise ImproperlyConfiguredEnv(f"{name}={number} must be a finite number{' ' + bounds if bounds else ''}")
    return number


def env_list(name: str, default: list[str]) -> list[str]:
    value = _raw(name)
    if value is None or value == "":
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


def env_url(name: str, schemes: tuple[str, ...], default: str | None = None) -> str | None:
    """A URL whose scheme is one of ``schemes``; anything else fails naming the variable."""
    value = _raw(name)
    if value is None or value == "":
        return default
    parsed = urlparse(value)
    if parsed.scheme not in schemes:
        raise ImproperlyConfiguredEnv(
            f"{name} must be a URL with scheme {' or '.join(schemes)}, got {parsed.scheme or 'none'!r}"
        )
    if parsed.scheme.startswith("postgres") and not (parsed.path.strip("/") or parsed.query):
        raise ImproperlyConfiguredEnv(f"{name} must name a database, e.g. postgresql://user@host/dbname")
    return value


def env_json(name: str, default: object) -> object:
    """A JSON value (usually given as ``NAME_FILE``, a file the operator writes)."""
    import json

    value = _raw(name)
    if value is None or value == "":
        return default
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise ImproperlyConfiguredEnv(f"{name} is not valid JSON: {exc}") from None


def env_secret(name: str, *, minimum_length: int, dev_default: str | None) -> str:
    """A secret of at least ``minimum_length`` characters; ``dev_default`` is used only when unset
    and may be None to make the variable required."""
    value = _raw(name)
    if value is None or value == "":
        if dev_default is None:
            raise ImproperlyConfiguredEnv(f"{name} must be set (at least {minimum_length} characters)")
        return dev_default
    if len(value) < minimum_length:
        raise ImproperlyConfiguredEnv(f"{name} must be at least {minimum_length} characters long")
    return value


def parse_database_url(name: str, url: str) -> dict:
    """Django DATABASES entry from a postgresql:// URL. A unix-socket directory may be given
    as ``?host=/path`` (libpq style)."""
    from urllib.parse import parse_qs, unquote

    parsed = urlparse(url)
    query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
    host = query.pop("host", None) or (unquote(parsed.hostname) if parsed.hostname else "")
    try:
        port = parsed.port
    except ValueError:
        raise ImproperlyConfiguredEnv(f"{name} has a malformed port") from None
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parsed.path.lstrip("/")) or query.pop("dbname", ""),
        "USER": unquote(parsed.username or ""),
        "PASSWORD": unquote(parsed.password or ""),
        "HOST": host,
        "PORT": str(port or ""),
        "OPTIONS": query,
    }
