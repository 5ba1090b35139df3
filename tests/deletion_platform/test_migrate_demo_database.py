"""A database that `make demo` filled on main before the layers (2026-12-06: the ledger and API
tokens still in the deletion app) migrates to today's shape: the models that changed app keep their
tables, rows, the ledger's SQL function, triggers and grants, and the ledger verifies.

The fixture is that demo's `pg_dump -Fc` (tests/fixtures/demo_database_2026-12-06.pgdump): 40
ledger entries, 3 API tokens, 3 completed requests with their reports."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
from django.conf import settings

from deletion_platform.embedded import _postgres_bindir

REPO = Path(__file__).resolve().parents[2]
DUMP = REPO / "tests" / "fixtures" / "demo_database_2026-12-06.pgdump"


def _server() -> dict:
    db = settings.DATABASES["default"]
    return {"host": db["HOST"], "port": db.get("PORT") or 5432, "user": db["USER"]}


@pytest.fixture
def demo_database():
    server, name = _server(), f"demo_migrate_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dbname="postgres", autocommit=True, **server) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        subprocess.run([str(_postgres_bindir() / "pg_restore"), "--no-owner", "--exit-on-error",
                        "-h", str(server["host"]), "-p", str(server["port"]), "-U", server["user"], "-d", name,
                        str(DUMP)], check=True, capture_output=True, text=True, timeout=120)
        yield name
    finally:
        with psycopg.connect(dbname="postgres", autocommit=True, **server) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _manage(database: str, data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    server = _server()
    env = {**os.environ, "DATA_DIR": str(data_dir), "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
           "DATABASE_URL": f"postgresql://{server['user']}@/{database}?host={server['host']}&port={server['port']}"}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)


def _query(database: str, sql: str, params=()) -> list[tuple]:
    with psycopg.connect(dbname=database, **_server()) as connection:
        return connection.execute(sql, params).fetchall()


def test_a_database_filled_by_the_demo_before_the_layers_migrates_and_its_ledger_verifies(demo_database, tmp_path):
    before = {table: _query(demo_database, f"SELECT count(*) FROM {table}")[0][0]
              for table in ("deletion_ledgerevent", "deletion_apitoken", "deletion_deletionrequest",
                            "audits_report")}
    assert before["deletion_ledgerevent"] == 40 and before["deletion_apitoken"] == 3
    head_before = _query(demo_database, "SELECT seq, hash FROM deletion_ledgerhead")

    migrated = _manage(demo_database, tmp_path, "migrate", "--noinput")
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    assert "Applying deletion.0014_ledger_and_tokens_move_down... OK" in migrated.stdout
    # Tokens gained the person who holds them: the demo's three tokens stay, bound to no one.
    assert "Applying access.0002_apitoken_user... OK" in migrated.stdout
    assert _query(demo_database, "SELECT count(*) FROM deletion_apitoken WHERE user_id IS NULL") == [(3,)]

    # Same tables, same rows, same head.
    after = {table: _query(demo_database, f"SELECT count(*) FROM {table}")[0][0] for table in before}
    assert after == before
    assert _query(demo_database, "SELECT seq, hash FROM deletion_ledgerhead") == head_before

    # The models now live in the foundation apps; their content types moved with them, so the
    # staff groups keep their permissions on the same rows.
    moved = dict(_query(demo_database, "SELECT model, app_label FROM django_content_type WHERE model IN "
                                       "('ledgerevent', 'ledgerhead', 'apitoken')"))
    assert moved == {"ledgerevent": "ledger", "ledgerhead": "ledger", "apitoken": "access"}
    assert _query(demo_database, "SELECT count(*) FROM auth_group g JOIN auth_group_permissions gp ON gp.group_id = g.id "
                                 "JOIN auth_permission p ON p.id = gp.permission_id JOIN django_content_type c "
                                 "ON c.id = p.content_type_id WHERE g.name = 'dpo' AND c.app_label = 'ledger' "
                                 "AND p.codename = 'view_ledgerevent'") == [(1,)]

    # The application role may still only append to the ledger, and the trigger still refuses edits.
    privileges = _query(demo_database, "SELECT has_table_privilege('deletion_platform_app', 'deletion_ledgerevent', "
                                       "'INSERT'), has_table_privilege('deletion_platform_app', "
                                       "'deletion_ledgerevent', 'UPDATE')")
    assert privileges == [(True, False)]
    with pytest.raises(psycopg.errors.RaiseException):
        _query(demo_database, "UPDATE deletion_ledgerevent SET payload = '{}' WHERE seq = 1")

    # The migrated chain verifies; the SQL function appends through the moved model's code, and the
    # chain still verifies. One process, after the migrate's own, runs the three steps: verify_ledger
    # as manage.py runs it (call_command; a break exits 1), each Django start-up costing seconds.
    checked = _manage(demo_database, tmp_path, "shell", "-c",
                      "from django.core.management import call_command\n"
                      "from django.db import transaction\n"
                      "from foundation.ledger.services import ledger_append\n"
                      "call_command('verify_ledger')\n"
                      "with transaction.atomic():\n"
                      "    print('appended', ledger_append(event_type='test.after_migration', actor='tests').seq)\n"
                      "call_command('verify_ledger')")
    assert checked.returncode == 0, checked.stderr[-2000:]
    lines = [line for line in checked.stdout.splitlines() if line.startswith(("ledger intact", "appended"))]
    assert lines[:2] == [f"ledger intact: 40 entries, head {bytes(head_before[0][1]).hex()}", "appended 41"], lines
    assert len(lines) == 3 and lines[2].startswith("ledger intact: 41 entries, head "), lines
