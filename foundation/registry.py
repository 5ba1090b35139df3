"""A strict name -> class registry shared by unlearning methods, training recipes and audit checks.

Modelled on opacus' accountant registry: registering a name twice raises, and asking for a name
that was never registered raises ``ValueError`` listing the names that exist. Plain Python, no
Django, so the method library and the audit checks can use it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Holds named entries of one kind (``kind`` appears in error messages)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@REGISTRY.register("finetune")`` on a class or function."""
        if not name or not name.replace("_", "").isalnum() or name != name.lower():
            raise ValueError(f"{self.kind} name {name!r} must be lower_snake_case")

        def decorate(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = entry
            return entry

        return decorate

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "none"
            raise ValueError(f"unknown {self.kind} {name!r}; registered: {known}") from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


class Hooks(Generic[T]):
    """An ordered set of callables of one kind that a lower layer calls and higher layers fill
    (from ``AppConfig.ready()``): the lower layer names no app above it. Adding the same callable
    twice raises, as a duplicate registry name does."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: list[T] = []

    def add(self, entry: T) -> T:
        if entry in self._entries:
            raise ValueError(f"{self.kind} {getattr(entry, '__qualname__', entry)!r} is already added")
        self._entries.append(entry)
        return entry

    def __iter__(self) -> Iterator[T]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)
