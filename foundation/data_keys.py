"""Data keys for crypto-shredding: what a keystore offers (models_registry.keystore keeps them)
and what the code that encrypts under them needs to know, without importing Django."""

from __future__ import annotations

from typing import Protocol


class KeyDestroyed(Exception):
    """The data key of this content was destroyed: the content can never be read again."""


class DataKeys(Protocol):
    """A keystore: a data key by reference (made when ``create``; KeyDestroyed when there is
    none), whether one exists, and destroying one (True when it existed)."""

    def data_key(self, key_ref: str, *, create: bool = False) -> bytes: ...

    def has_key(self, key_ref: str) -> bool: ...

    def destroy(self, key_ref: str) -> bool: ...
