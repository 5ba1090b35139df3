"""An orphan that Object Lock keeps (a retention date not yet passed, a legal hold) is reported by
the garbage collector once, recorded as held with its date and hold, re-checked on every later run
without being reported or ledgered again, and deleted, saying so, on the first run after its hold
is gone. Against moto's S3 server (tests/s3_server.py), on its bucket with Object Lock."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import torch
from django.core.management import call_command

from foundation.ledger.models import LedgerEvent
from tests.workers import store_backends as backends
from workers.artifact_gc import artifact_store_gc
from workers.artifacts import ArtifactManifest
from workers.models import HeldOrphan

pytestmark = pytest.mark.django_db
HOUR = 3600.0


def gc_events() -> list[dict]:
    return [p for p in (json.loads(e.payload) for e in LedgerEvent.objects.order_by("seq"))
            if p["type"].startswith("artifacts.gc")]


def _versions(store, kind: str, name: str) -> list[str]:
    key = store.objects.location.key(store._relative(kind, name))
    listed = store.objects.client.list_object_versions(Bucket=store.objects.location.bucket, Prefix=key)
    return [v["VersionId"] for v in listed.get("Versions", []) if v["Key"] == key]


def _lock(store, kind: str, name: str, **arguments) -> None:
    """Set a legal hold (``LegalHold=``) or a retention (``Retention=``) on every version."""
    key = store.objects.location.key(store._relative(kind, name))
    client, bucket = store.objects.client, store.objects.location.bucket
    for version in _versions(store, kind, name):
        if "LegalHold" in arguments:
            client.put_object_legal_hold(Bucket=bucket, Key=key, VersionId=version, **arguments)
        else:
            client.put_object_retention(Bucket=bucket, Key=key, VersionId=version, BypassGovernanceRetention=True,
                                        **arguments)


def test_a_held_orphan_is_reported_once_rechecked_and_removed_when_released(s3_server, tmp_path: Path, capsys, monkeypatch):
    store = backends.s3_store(s3_server, tmp_path, bucket=s3_server.locked_bucket)
    orphan = store.put(ArtifactManifest(kind="model", code_version="test"),
                       {"weights": {"w": torch.randn(3, 2)}, "membership": {"m": torch.arange(4)}})
    until = (datetime.now(tz=UTC) + timedelta(days=30)).replace(microsecond=0)
    _lock(store, "manifest", orphan.artifact_id, Retention={"Mode": "GOVERNANCE", "RetainUntilDate": until})
    _lock(store, "blob", orphan.files["weights"], LegalHold={"Status": "ON"})
    backends.age(store, backends.everything(store), 2 * HOUR)

    # First run: the unheld blob goes; the two held objects are reported, with what holds them.
    first = artifact_store_gc(min_age_seconds=HOUR, store=store)
    assert [f.sha256 for f in first.removed] == [orphan.files["membership"]]
    assert {(r["kind"], r["sha256"]) for r in first.retained} == {("manifest", orphan.artifact_id),
                                                                  ("blob", orphan.files["weights"])}
    rows = {row.kind: row for row in HeldOrphan.objects.all()}
    assert rows["manifest"].retain_until == until and not rows["manifest"].legal_hold
    assert "retention (GOVERNANCE) until" in rows["manifest"].reason
    assert rows["blob"].legal_hold and rows["blob"].retain_until is None and "legal hold" in rows["blob"].reason
    assert len(gc_events()) == 2

    # Later runs: re-checked, not reported again, nothing ledgered; the command says they are held.
    second = artifact_store_gc(min_age_seconds=HOUR, store=store)
    assert second.retained == [] and second.orphans == [] and second.removed == [] and second.released == []
    assert {(h["sha256"], h["legal_hold"], h["retain_until"]) for h in second.still_held} == {
        (orphan.artifact_id, False, until.isoformat()), (orphan.files["weights"], True, None)}
    assert len(gc_events()) == 2 and HeldOrphan.objects.count() == 2
    assert backends.exists(store, ("manifest", orphan.artifact_id))
    monkeypatch.setattr("workers.artifact_gc.artifact_store", lambda: store)
    call_command("artifacts_gc", "--min-age", "3600")
    out = capsys.readouterr()
    assert f"still held: manifest {orphan.artifact_id}" in out.out and "KEPT BY" not in out.err
    assert "0 orphans found" in out.out and len(gc_events()) == 2

    # The holds end: the legal hold is lifted, the retention date passes (moto's clock cannot be
    # moved: the date is set in the past, as an operator with governance bypass may).
    _lock(store, "blob", orphan.files["weights"], LegalHold={"Status": "OFF"})
    _lock(store, "manifest", orphan.artifact_id,
          Retention={"Mode": "GOVERNANCE", "RetainUntilDate": datetime.now(tz=UTC) - timedelta(seconds=1)})
    third = artifact_store_gc(min_age_seconds=HOUR, store=store)

    assert {(f.kind, f.sha256) for f in third.removed} == {("manifest", orphan.artifact_id),
                                                           ("blob", orphan.files["weights"])}
    assert {(r["sha256"], r["was_held_by"] != "") for r in third.released} == {(orphan.artifact_id, True),
                                                                               (orphan.files["weights"], True)}
    assert third.retained == [] and third.still_held == [] and HeldOrphan.objects.count() == 0
    assert not backends.exists(store, ("manifest", orphan.artifact_id))
    assert _versions(store, "blob", orphan.files["weights"]) == []
    finished = gc_events()[-1]
    assert finished["type"] == "artifacts.gc_finished"
    assert {r["sha256"] for r in finished["data"]["released"]} == {orphan.artifact_id, orphan.files["weights"]}
    # And nothing is left to report.
    fourth = artifact_store_gc(min_age_seconds=HOUR, store=store)
    assert (fourth.orphans, fourth.retained, fourth.still_held, fourth.released) == ([], [], [], [])
