"""The ledger: append-only by trigger, and every kind of tampering is found by verify_ledger."""

import pytest
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction

from foundation.ledger.services import (
    ledger_append,
    ledger_checkpoint_write,
    ledger_head,
    ledger_verify,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _checkpoints_in_tmp(settings, tmp_path):
    settings.DATA_DIR = tmp_path


def _append(n):
    for i in range(n):
        ledger_append(event_type="test", actor="alice", index=i)


def _as_attacker(sql, params=()):
    """What someone with raw database access could do: switch triggers off and change rows."""
    with connection.cursor() as cursor:
        cursor.execute("SET session_replication_role = replica")
        cursor.execute(sql, params)
        cursor.execute("SET session_replication_role = DEFAULT")


def test_chain_verifies_and_head_advances():
    start, _ = ledger_head()
    _append(5)
    seq, _ = ledger_head()
    assert seq == start + 5
    assert ledger_verify() == []


@pytest.mark.parametrize("statement", [
    "UPDATE deletion_ledgerevent SET payload = 'x' WHERE seq = (SELECT max(seq) FROM deletion_ledgerevent)",
    "DELETE FROM deletion_ledgerevent",
])
def test_trigger_refuses_changes(statement):
    _append(2)
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(statement)


def test_edited_entry_is_found():
    _append(5)
    _as_attacker("UPDATE deletion_ledgerevent SET payload = replace(payload, 'alice', 'mallory') "
                 "WHERE seq = (SELECT min(seq) + 2 FROM deletion_ledgerevent)")
    problems = ledger_verify()
    assert problems and "edited" in problems[0].problem
    first = problems[0].seq
    with connection.cursor() as cursor:
        cursor.execute("SELECT min(seq) + 2 FROM deletion_ledgerevent")
        assert first == cursor.fetchone()[0]


def test_deleted_entry_is_found():
    _append(5)
    _as_attacker("DELETE FROM deletion_ledgerevent WHERE seq = (SELECT min(seq) + 1 FROM deletion_ledgerevent)")
    problems = ledger_verify()
    assert problems and "missing" in problems[0].problem


def test_reordered_entries_are_found():
    _append(4)
    _as_attacker("""
        WITH s AS (SELECT min(seq) AS a FROM deletion_ledgerevent)
        UPDATE deletion_ledgerevent e SET payload = CASE WHEN e.seq = s.a THEN n.payload ELSE f.payload END
        FROM s, deletion_ledgerevent f, deletion_ledgerevent n
        WHERE f.seq = s.a AND n.seq = s.a + 1 AND e.seq IN (s.a, s.a + 1)
    """)
    assert ledger_verify()


def test_truncated_tail_is_found_by_the_anchor():
    _append(3)
    ledger_checkpoint_write()
    # Cut the newest entry and rewind the head consistently: the chain alone still verifies...
    _as_attacker("DELETE FROM deletion_ledgerevent WHERE seq = (SELECT max(seq) FROM deletion_ledgerevent)")
    _as_attacker("UPDATE deletion_ledgerhead SET seq = seq - 1, hash = "
                 "(SELECT hash FROM deletion_ledgerevent ORDER BY seq DESC LIMIT 1) WHERE id = 1")
    problems = ledger_verify()
    assert problems and "truncated" in problems[0].problem
    # ... and the management command exits non-zero naming the entry.
    with pytest.raises(SystemExit) as caught:
        call_command("verify_ledger")
    assert caught.value.code == 1


def test_forged_checkpoint_is_refused(tmp_path):
    _append(1)
    path = ledger_checkpoint_write()
    path.write_text(path.read_text().replace('"seq":', '"seq":9').replace("9", "9", 1))
    assert any("signature" in p.problem for p in ledger_verify())


@pytest.mark.parametrize("statement", [
    "UPDATE deletion_ledgerevent SET payload = '{}'",
    "DELETE FROM deletion_ledgerevent",
    "TRUNCATE deletion_ledgerevent",
])
def test_the_application_role_may_only_append_and_read(statement):
    """As the role the web and worker processes use, the ledger is SELECT and INSERT only —
    refused by privilege even with the triggers switched off — while the request tables stay
    writable and the append function works."""
    from psycopg.errors import InsufficientPrivilege

    from foundation.ledger.models import LedgerEvent

    _append(2)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL ROLE deletion_platform_app")
        ledger_append(event_type="test", actor="app-role", index=3)
        assert LedgerEvent.objects.count() == 3
        cursor.execute("UPDATE deletion_ledgerhead SET seq = seq")  # ordinary tables: writable
        with pytest.raises(DatabaseError) as refused, transaction.atomic():
            cursor.execute(statement)
        assert isinstance(refused.value.__cause__, InsufficientPrivilege)
        with pytest.raises(DatabaseError), transaction.atomic():
            cursor.execute("SET LOCAL session_replication_role = replica")  # superuser only
    assert ledger_verify() == []


def test_worker_processes_of_the_tests_connect_as_the_application_role(settings):
    """The real worker processes of the worker-path tests use the application's role, so those
    tests show the whole job path works without UPDATE or DELETE on the ledger."""
    from tests import worker_process

    if not settings.DATABASES["default"]["HOST"].startswith("/"):
        pytest.skip("an external database: its roles are the deployment's")
    assert worker_process.test_database_url().startswith("postgresql://deletion_app@/")


def test_a_value_the_ledger_refuses_stops_a_transition_before_it_starts():
    import uuid

    from django.utils import timezone

    from deletion.models import DeletionRequest, RequestStatus
    from deletion.transitions import transition

    now = timezone.now()
    request = DeletionRequest.objects.create(public_id=uuid.uuid4(), jurisdiction="GDPR", legal_ground="art17_1_b",
                                             channel="test", received_at=now, due_at=now, body_fingerprint="x")
    head = ledger_head()
    with pytest.raises(ValueError, match="ledger event 'request.cancelled' cannot be written: Out of range float"):
        transition(request, (RequestStatus.RECEIVED,), RequestStatus.CANCELLED, actor="tests",
                   event="request.cancelled", decision_reason="x", cost=float("nan"))
    # Nothing moved: the request is where it was and the chain has no new entry.
    assert DeletionRequest.objects.get(pk=request.pk).status == RequestStatus.RECEIVED
    assert ledger_head() == head


def test_an_event_that_is_not_json_is_refused_naming_it():
    from foundation.ledger.services import ledger_event

    with pytest.raises(TypeError, match="ledger event 'x.y' cannot be written: Object of type set"):
        ledger_event(event_type="x.y", actor="tests", ids={1, 2})
