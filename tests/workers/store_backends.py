"""The artifact store's backends as one test table: a test that takes ``store_backend`` (or a
store fixture built on it) runs once on a local folder and once on an S3 bucket of the session's
moto server (tests/s3_server.py), each test under a prefix of its own.

Tests look at stored objects through the helpers here, which speak of ``(kind, name)`` handles
("manifest"/"blob"/"partial" and the sha256) on both backends. moto cannot backdate an object's
LastModified, so on S3 :func:`age` records the age a test gives an object and the store's scan
reports it until the object is put again (AgedS3Store): the clock is the only thing simulated.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest

STORE_BACKENDS = ("local", "s3")


def _keystore_for_tests(root: Path):
    from models_registry.keystore import Keystore

    return Keystore(root, b"test key-encryption key, 32 bytes or more")


def s3_store(s3_server, root: Path, *, keys=None, bucket: str | None = None, lock=None):
    """An S3 store under a fresh prefix; without Django: a folder keystore and ``flock``."""
    from workers.artifacts import FileStoreLock
    from workers.object_store import S3Objects

    objects = S3Objects(s3_server.location(f"t-{uuid.uuid4().hex[:12]}", bucket=bucket))
    return AgedS3Store(objects, keys=keys or _keystore_for_tests(root / "keystore"),
                       lock=lock or FileStoreLock(root / ".lock"))


def _aged_class():
    from workers.artifacts import S3ArtifactStore

    class _AgedS3Store(S3ArtifactStore):
        """An S3 store whose scan reports the ages tests set (see the module's docstring)."""

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.mtimes: dict[tuple[str, str], float] = {}

        def _write_once(self, kind: str, name: str, data: bytes) -> None:
            self.mtimes.pop((kind, name), None)  # put again: young again
            super()._write_once(kind, name, data)

        def scan(self):
            manifests, blobs, partials = super().scan()
            for kind, found in (("manifest", manifests), ("blob", blobs), ("partial", partials)):
                for name, entry in found.items():
                    if (kind, name) in self.mtimes:
                        entry.mtime = self.mtimes[(kind, name)]
            return manifests, blobs, partials

    return _AgedS3Store


def AgedS3Store(*args, **kwargs):  # noqa: N802 (a class made on first use: workers.artifacts imports torch)
    return _aged_class()(*args, **kwargs)


# ---------------------------------------------------------------- handles on both backends


def handle(store, kind: str, name: str):
    """A stored object's handle: its path on a local store, ``(kind, name)`` on S3."""
    if store.backend == "local":
        return store.blob_path(name) if kind == "blob" else store.manifest_path(name)
    return (kind, name)


def exists(store, item) -> bool:
    if store.backend == "local":
        return Path(item).exists()
    kind, name = item
    return store.objects.exists(store._relative(kind, name))


def raw_bytes(store, item) -> bytes:
    """What is stored: a local file's bytes, an S3 object's sealed bytes."""
    if store.backend == "local":
        return Path(item).read_bytes()
    return store.objects.get(store._relative(*item))


def overwrite(store, item, data: bytes) -> None:
    """Replace a stored object's bytes behind the store's back (damage, smuggling)."""
    if store.backend == "local":
        Path(item).write_bytes(data)
    else:
        store.objects.put(store._relative(*item), data)


def delete(store, item) -> None:
    """Lose a stored object behind the store's back (its data key stays)."""
    if store.backend == "local":
        Path(item).unlink()
    else:
        store.objects.delete(store._relative(*item))


def everything(store) -> set:
    """Every stored object, and every partial write, as handles."""
    if store.backend == "local":
        return set(store.blob_dir.iterdir()) | set(store.manifest_dir.iterdir())
    manifests, blobs, partials = store.scan()
    return ({("manifest", n) for n in manifests} | {("blob", n) for n in blobs}
            | {("partial", n) for n in partials})


def count(store, kind: str) -> int:
    return len(store._names(kind))


def age(store, items, seconds: float) -> None:
    """Make ``items`` look last put ``seconds`` ago."""
    then = time.time() - seconds
    for item in items:
        if store.backend == "local":
            os.utime(item, (then, then))
        else:
            store.mtimes[item] = then


def start_partial_upload(store) -> object:
    """What a writer killed mid-write leaves: a temporary file, or an open multipart upload."""
    if store.backend == "local":
        partial = store.blob_dir / ".abc.safetensors.x1y2.tmp"
        partial.write_bytes(b"half a file")
        return partial
    location = store.objects.location
    upload = store.objects.client.create_multipart_upload(Bucket=location.bucket,
                                                          Key=location.key("blobs/abc.safetensors"))
    item = ("partial", f"blobs/abc.safetensors?uploadId={upload['UploadId']}")
    store.mtimes[item] = time.time()  # moto reports every upload as initiated in 2010; S3 says when
    return item


def partial_name(store, item) -> str:
    """How the garbage collector's report names a partial."""
    if store.backend == "local":
        return Path(item).name
    return item[1].rsplit("/", 1)[-1]


# ---------------------------------------------------------------- the platform's store, by settings


@pytest.fixture(scope="session")
def keystore_database_url(django_db_setup, django_db_blocker):
    """A database of its own for the data keys (KEYSTORE_DATABASE_URL), beside the test database."""
    import psycopg
    from django.conf import settings

    db = settings.DATABASES["default"]
    name = f"{db['NAME']}_keys"
    admin = f"postgresql://{db['USER']}@/postgres?host={db['HOST']}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql://{db['USER']}@/{name}?host={db['HOST']}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=STORE_BACKENDS)
def store_backend(request, settings, monkeypatch):
    """Run the test on each backend: the settings name it, and on S3 workers.runners.storage's
    artifact_store() returns one AgedS3Store for the test (its ages; its own prefix)."""
    if request.param == "s3":
        server = request.getfixturevalue("s3_server")
        settings.ARTIFACT_STORE = "s3"
        settings.KEYSTORE_DATABASE_URL = request.getfixturevalue("keystore_database_url")
        location = server.location(f"t-{uuid.uuid4().hex[:12]}")
        settings.ARTIFACT_S3_BUCKET, settings.ARTIFACT_S3_PREFIX = location.bucket, location.prefix
        settings.ARTIFACT_S3_ENDPOINT_URL, settings.ARTIFACT_S3_REGION = location.endpoint_url, location.region
        settings.ARTIFACT_S3_ACCESS_KEY_ID = location.access_key_id
        settings.ARTIFACT_S3_SECRET_ACCESS_KEY = location.secret_access_key
        from workers.runners import storage

        real = storage.artifact_store
        made = real()
        aged = AgedS3Store(made.objects, keys=made.keys, lock=made._store_lock)

        def artifact_store():
            fresh = real()  # a fresh keystore handle, as in production; the ages are the test's
            aged.keys = fresh.keys
            return aged

        monkeypatch.setattr(storage, "artifact_store", artifact_store)
        for module in ("workers.artifact_gc", "workers.purge"):
            monkeypatch.setattr(f"{module}.artifact_store", artifact_store)
    return request.param
