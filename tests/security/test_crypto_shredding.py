"""Crypto-shredding: record content is stored under per-subject data keys kept outside the
database; after erasure, an old database backup restored elsewhere no longer yields the erased
subject's content, while other subjects' content still decrypts."""

import subprocess

import psycopg
import pytest
from django.conf import settings

from models_registry.keystore import KeyDestroyed, keystore
from models_registry.models import DataRecord, RecordContent
from tests import factories
from workers.purge import request_data_erase

SECRET_CONTENT = "diagnosis: stage II, account 4417-0032"


def _psql_bin(name: str) -> str:
    from deletion_platform.embedded import _postgres_bindir

    return str(_postgres_bindir() / name)


@pytest.mark.django_db(transaction=True)
def test_old_backup_is_unreadable_for_an_erased_subject():
    db = settings.DATABASES["default"]
    ds = factories.dataset()
    factories.import_records(ds, [
        {"record_key": "gone", "content": SECRET_CONTENT, "email": "erase.me@example.org"},
        {"record_key": "kept", "content": "kept content", "email": "stay@example.org"},
    ])
    stored = RecordContent.objects.get(record__external_key="gone")
    assert SECRET_CONTENT.encode() not in bytes(stored.ciphertext)  # encrypted at rest
    assert keystore().decrypt(stored.key_ref, bytes(stored.nonce), bytes(stored.ciphertext)).decode() == SECRET_CONTENT

    backup = subprocess.run([_psql_bin("pg_dump"), "-h", db["HOST"], "-U", db["USER"], "-d", db["NAME"],
                             "--no-owner"], capture_output=True, check=True, timeout=120).stdout
    gone = DataRecord.objects.get(external_key="gone")
    request_data_erase(record_ids=[gone.id], subjects=[gone.subject], reason="test")
    assert not RecordContent.objects.filter(record=gone).exists()

    restored = f"{db['NAME']}_restored"
    admin = f"postgresql://{db['USER']}@/postgres?host={db['HOST']}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{restored}"')
        conn.execute(f'CREATE DATABASE "{restored}"')
    try:
        subprocess.run([_psql_bin("psql"), "-q", "-h", db["HOST"], "-U", db["USER"], "-d", restored,
                        "-v", "ON_ERROR_STOP=0"], input=backup, capture_output=True, check=True, timeout=300)
        with psycopg.connect(f"postgresql://{db['USER']}@/{restored}?host={db['HOST']}") as conn:
            rows = dict(((key, (ref, bytes(nonce), bytes(ct))) for key, ref, nonce, ct in conn.execute(
                "SELECT r.external_key, c.key_ref, c.nonce, c.ciphertext FROM models_registry_recordcontent c "
                "JOIN models_registry_datarecord r ON r.id = c.record_id")))
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{restored}"')
    assert set(rows) == {"gone", "kept"}  # the old backup still holds the erased ciphertext...
    fresh = keystore()
    with pytest.raises(KeyDestroyed):
        fresh.decrypt(*rows["gone"])  # ...but nobody can read it any more
    assert fresh.decrypt(*rows["kept"]).decode() == "kept content"
