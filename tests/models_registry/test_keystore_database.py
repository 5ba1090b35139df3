"""The keystore in a database of its own (KEYSTORE_DATABASE_URL, the object-store backend's): a
key destroyed by one worker is gone for every other worker process at its next read, and the
settings refuse a keystore in the platform's own database."""

from __future__ import annotations

import subprocess
import sys

import pytest

from models_registry.keystore import DatabaseKeystore, KeyDestroyed, keystore

KEK = b"a key-encryption key of 32 bytes or more"

# Another worker: a process of its own with its own connection, reading the key on each line.
_OTHER_WORKER = """
import sys
from models_registry.keystore import DatabaseKeystore, KeyDestroyed
keys = DatabaseKeystore(sys.argv[1], sys.argv[2].encode())
for line in sys.stdin:
    try:
        print(keys.data_key("subject:alice").hex(), flush=True)
    except KeyDestroyed:
        print("destroyed", flush=True)
"""


def test_a_destroyed_key_is_gone_for_another_worker_process_at_once(keystore_database_url):
    keys = DatabaseKeystore(keystore_database_url, KEK)
    key = keys.data_key("subject:alice", create=True)
    assert DatabaseKeystore(keystore_database_url, KEK).data_key("subject:alice", create=True) == key  # one key
    other = subprocess.Popen([sys.executable, "-c", _OTHER_WORKER, keystore_database_url, KEK.decode()],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        other.stdin.write("read\n")
        other.stdin.flush()
        assert other.stdout.readline().strip() == key.hex()  # it has read the key (and holds its connection)

        assert keys.destroy("subject:alice") is True

        other.stdin.write("read\n")
        other.stdin.flush()
        assert other.stdout.readline().strip() == "destroyed"  # the very next read, no wait, no cache
    finally:
        other.stdin.close()
        other.wait(timeout=30)
    assert keys.destroy("subject:alice") is False
    with pytest.raises(KeyDestroyed):
        keys.data_key("subject:alice")
    # The reference itself (a subject's pseudonym) is not stored, only its sha256.
    import psycopg

    with psycopg.connect(keystore_database_url) as conn:
        refs = [row[0] for row in conn.execute("SELECT ref_sha256 FROM platform_data_keys")]
    assert all("alice" not in ref for ref in refs)


def test_the_settings_pick_the_database_keystore(settings, keystore_database_url):
    settings.KEYSTORE_DATABASE_URL = keystore_database_url
    keys = keystore()
    assert isinstance(keys, DatabaseKeystore)
    nonce, ciphertext = keys.encrypt("subject:bob", b"record content")
    assert keystore().decrypt("subject:bob", nonce, ciphertext) == b"record content"


def test_the_keystore_database_must_not_be_the_platforms_own(monkeypatch):
    from deletion_platform import embedded

    url = embedded.services_for().database_url
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("CELERY_BROKER_URL", embedded.services_for().broker_url)
    monkeypatch.setenv("KEYSTORE_DATABASE_URL", url)
    monkeypatch.setenv("ARTIFACT_STORE", "s3")
    monkeypatch.setenv("ARTIFACT_S3_BUCKET", "artifacts")
    done = subprocess.run([sys.executable, "-c", "import deletion_platform.settings"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode != 0 and "KEYSTORE_DATABASE_URL must name another database" in done.stderr
    monkeypatch.delenv("KEYSTORE_DATABASE_URL")
    done = subprocess.run([sys.executable, "-c", "import deletion_platform.settings"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode != 0 and "KEYSTORE_DATABASE_URL must be set with ARTIFACT_STORE=s3" in done.stderr
