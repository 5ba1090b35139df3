"""Locks that hold across hosts: PostgreSQL session advisory locks.

Every worker host shares the database, so a lock taken there holds for all of them (a ``flock``
holds only on one host's disk). Each acquisition opens its own connection, apart from Django's
connection of the calling thread: the lock outlives none of that thread's transactions, a failed
transaction cannot leave it held, and a worker that dies drops the connection and with it the lock.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator


def advisory_lock_key(name: str) -> int:
    """The signed 64-bit key PostgreSQL's advisory locks take, derived from ``name``."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextlib.contextmanager
def advisory_lock(name: str, *, shared: bool) -> Iterator[None]:
    """Hold the advisory lock ``name`` (shared with other shared holders, or alone) in the
    database the ``default`` connection names, waiting for it as long as it takes."""
    from django.db import connections

    key = advisory_lock_key(name)
    suffix = "_shared" if shared else ""
    connection = connections.create_connection("default")  # a fresh one, not the thread's own
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT pg_advisory_lock{suffix}(%s)", [key])
        try:
            yield
        finally:
            with connection.cursor() as cursor:
                cursor.execute(f"SELECT pg_advisory_unlock{suffix}(%s)", [key])
    finally:
        connection.close()


class AdvisoryStoreLock:
    """An artifact store's lock (workers.artifacts): puts share it, purges and the garbage
    collector hold it alone, on every host at once."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, *, shared: bool) -> contextlib.AbstractContextManager[None]:
        return advisory_lock(self.name, shared=shared)
