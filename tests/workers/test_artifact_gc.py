"""The artifact store's garbage collector against the registry (real PostgreSQL): orphans a killed
job left are removed and written to the ledger; what the registry reaches, what is young and what
a live job may still register are kept; rows whose files are missing are reported, not fixed.
Every test runs on both backends (tests/workers/store_backends.py): a local folder and an S3 bucket."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest
import torch
from django.core.management import CommandError, call_command
from django.utils import timezone

from foundation.ledger.models import LedgerEvent
from models_registry import services as registry
from models_registry.models import StoredArtifact
from tests import factories
from tests.workers import store_backends as backends
from workers.artifact_gc import artifact_store_gc
from workers.artifacts import ArtifactManifest, ArtifactStore
from workers.models import Job
from workers.runners import storage

pytestmark = pytest.mark.django_db
HOUR = 3600.0


@pytest.fixture
def store(store_backend) -> ArtifactStore:
    # Under the test's own ARTIFACT_ROOT (tests/conftest.py), or its own prefix in the bucket.
    return storage.artifact_store()


def tensors(seed: int) -> dict[str, torch.Tensor]:
    return {"w": torch.randn(3, 2, generator=torch.Generator().manual_seed(seed))}


def put_model(store: ArtifactStore, seed: int, **manifest_fields):
    manifest = ArtifactManifest(kind=manifest_fields.pop("kind", "model"), code_version="test", **manifest_fields)
    return store.put(manifest, {"weights": tensors(seed), "membership": tensors(1000 + seed)})


def put_sisa(store: ArtifactStore, seed: int):
    """An ensemble whose two checkpoints are artifacts of their own (its ``parts``)."""
    parts = {}
    for shard in range(2):
        manifest = ArtifactManifest(kind="checkpoint", code_version="test", config={"shard": shard, "slice": 0})
        parts[f"shard{shard}/slice0"] = store.put(manifest, {"weights": tensors(seed * 10 + shard),
                                                             "optimizer": tensors(seed * 10 + shard + 5)}).artifact_id
    top = store.put(ArtifactManifest(kind="sisa_ensemble", code_version="test", parts=parts),
                    {"membership": tensors(seed * 10 + 9)})
    return top, parts


def files_of(store: ArtifactStore, artifact_id: str) -> set:
    """The manifest and blob files of ``artifact_id`` and everything its parts reach (handles)."""
    paths = set()
    for member in store.closure(artifact_id):
        paths.add(backends.handle(store, "manifest", member))
        paths |= {backends.handle(store, "blob", e["sha256"]) for e in store.manifest(member).files.values()}
    return paths


def exists(store: ArtifactStore, item) -> bool:
    return backends.exists(store, item)


def age(store: ArtifactStore, items, seconds: float) -> None:
    backends.age(store, items, seconds)


everything = backends.everything


def register(artifact_id: str, **fields) -> StoredArtifact:
    return registry.stored_artifact_register(sha256=artifact_id, kind=fields.pop("kind", "weights"), **fields)


def gc_events() -> list[dict]:
    return [json.loads(e.payload) for e in LedgerEvent.objects.order_by("seq")
            if json.loads(e.payload)["type"].startswith("artifacts.gc")]


# ---------------------------------------------------------------- orphans and what is kept


def test_an_orphan_older_than_the_grace_period_is_removed_and_ledgered(store):
    kept = put_model(store, 1)
    register(kept.artifact_id)
    orphan = put_model(store, 2)
    orphan_files = files_of(store, orphan.artifact_id)
    age(store, everything(store), 2 * HOUR)

    report = artifact_store_gc(min_age_seconds=HOUR)

    assert not any(exists(store, p) for p in orphan_files)
    assert all(exists(store, p) for p in files_of(store, kept.artifact_id))
    removed = {(f.kind, f.sha256) for f in report.removed}
    assert removed == {("manifest", orphan.artifact_id), *{("blob", s) for s in orphan.files.values()}}
    assert report.summary()["orphans_found"] == report.summary()["orphans_removed"] == 3
    started, finished = gc_events()
    assert started["type"] == "artifacts.gc_started" and started["data"]["orphans"] == 3
    assert finished["type"] == "artifacts.gc_finished"
    assert {f["sha256"] for f in finished["data"]["files"]} == {s for _, s in removed}
    # A second run finds nothing and writes nothing.
    assert artifact_store_gc(min_age_seconds=HOUR).orphans == [] and len(gc_events()) == 2


def test_referenced_artifacts_their_parts_and_shared_blobs_are_kept(store):
    top, parts = put_sisa(store, 1)
    register(top.artifact_id)  # only the top level has a row: its checkpoints are its children
    version_only = put_model(store, 3)  # named by a serving version (its row never written)
    model = factories.registered_model()
    registry.model_version_create(model=model, artifact_sha256=version_only.artifact_id, training_run=None,
                                  status="serving")
    # An orphan ensemble that shares one checkpoint with the registered one, and a blob with it.
    shared_part = parts["shard0/slice0"]
    orphan_top = store.put(ArtifactManifest(kind="sisa_ensemble", code_version="test",
                                            parts={"shard0/slice0": shared_part}),
                           {"membership": tensors(19)})  # the registered ensemble's membership bytes
    orphan_checkpoint = store.put(ArtifactManifest(kind="checkpoint", code_version="test", config={"shard": 7}),
                                  {"weights": tensors(777)})
    # The files of a purged row are not protected by it.
    purged = put_model(store, 4)
    row = register(purged.artifact_id)
    StoredArtifact.objects.filter(pk=row.pk).update(status="purged")
    referenced = files_of(store, top.artifact_id) | files_of(store, version_only.artifact_id)
    age(store, everything(store), 2 * HOUR)

    report = artifact_store_gc(min_age_seconds=HOUR)

    assert all(exists(store, p) for p in referenced), "a referenced file was removed"
    assert store.manifest(top.artifact_id).parts == parts
    removed = {f.sha256 for f in report.removed}
    assert removed == ({orphan_top.artifact_id, orphan_checkpoint.artifact_id, *orphan_checkpoint.files.values(),
                        purged.artifact_id, *purged.files.values()})
    assert report.referenced_manifests == 4  # the ensemble, its two checkpoints, the version's model
    assert report.missing == []


def test_a_young_orphan_and_what_a_young_manifest_reaches_are_kept(store):
    old_part = store.put(ArtifactManifest(kind="checkpoint", code_version="test"), {"weights": tensors(1)})
    age(store, everything(store), 2 * HOUR)
    young_top = store.put(ArtifactManifest(kind="sisa_ensemble", code_version="test",
                                           parts={"shard0/slice0": old_part.artifact_id}), {"membership": tensors(2)})

    report = artifact_store_gc(min_age_seconds=HOUR)

    assert report.removed == [] and report.orphans == []
    assert store.exists(young_top.artifact_id) and store.exists(old_part.artifact_id)
    assert exists(store, backends.handle(store, "blob", old_part.weights_sha256))
    assert report.young_kept == 4  # two manifests, two blobs
    # The same files, all old now, go.
    age(store, everything(store), 2 * HOUR)
    assert len(artifact_store_gc(min_age_seconds=HOUR).removed) == 4


def test_putting_stored_content_again_makes_it_young(store):
    orphan = put_model(store, 5)
    age(store, everything(store), 2 * HOUR)
    put_model(store, 5)  # a re-run of a killed job writes the same bytes: nothing is rewritten
    assert artifact_store_gc(min_age_seconds=HOUR).removed == []
    assert store.exists(orphan.artifact_id)


def test_files_written_since_a_live_job_started_are_kept_until_its_heartbeat_stops(store, settings):
    settings.JOB_STALE_AFTER_SECONDS = 60
    now = timezone.now()
    job = Job.objects.create(kind="unlearn", status="running", started_at=now - timedelta(hours=3),
                             heartbeat_at=now)
    before_job = put_model(store, 6)
    age(store, files_of(store, before_job.artifact_id), 5 * HOUR)
    during_job = put_model(store, 7)  # stored 2 h ago by the job, which registers at its end
    age(store, files_of(store, during_job.artifact_id), 2 * HOUR)

    report = artifact_store_gc(min_age_seconds=HOUR)
    assert {f.sha256 for f in report.removed} == {before_job.artifact_id, *before_job.files.values()}
    assert store.exists(during_job.artifact_id)

    Job.objects.filter(pk=job.pk).update(heartbeat_at=now - timedelta(minutes=10))  # its worker died
    assert {f.sha256 for f in artifact_store_gc(min_age_seconds=HOUR).removed} == {
        during_job.artifact_id, *during_job.files.values()}


def test_a_dry_run_removes_nothing(store):
    orphan = put_model(store, 8)
    partial = backends.start_partial_upload(store)  # what a writer killed mid-write leaves
    before = everything(store)
    age(store, before, 2 * HOUR)

    report = artifact_store_gc(dry_run=True, min_age_seconds=HOUR)

    assert everything(store) == before and report.removed == []
    assert {(f.kind, f.sha256) for f in report.orphans} == {
        ("manifest", orphan.artifact_id), *{("blob", s) for s in orphan.files.values()},
        ("partial", backends.partial_name(store, partial))}
    assert gc_events() == []
    # Without --dry-run the partial write goes too.
    artifact_store_gc(min_age_seconds=HOUR)
    assert partial not in everything(store) and not store.exists(orphan.artifact_id)


# ---------------------------------------------------------------- the reverse case, and safety


def test_rows_whose_files_are_missing_are_reported_and_left_as_they_are(store):
    gone = put_model(store, 9)
    gone_row = register(gone.artifact_id, label="weights of v9")
    backends.delete(store, backends.handle(store, "manifest", gone.artifact_id))
    top, parts = put_sisa(store, 2)
    register(top.artifact_id)
    lost_part_blobs = {e["sha256"] for e in store.manifest(parts["shard1/slice0"]).files.values()}
    backends.delete(store, backends.handle(store, "manifest", parts["shard1/slice0"]))  # one child checkpoint lost
    lost_blob = store.manifest(parts["shard0/slice0"]).files["optimizer"]["sha256"]
    backends.delete(store, backends.handle(store, "blob", lost_blob))
    age(store, everything(store), 2 * HOUR)

    report = artifact_store_gc(min_age_seconds=HOUR)

    found = {(m.row_id, m.sha256, m.missing.split(" ")[0]) for m in report.missing}
    assert (gone_row.id, gone.artifact_id, "the") in found  # "the artifact's manifest"
    assert any(m.missing == f"part {parts['shard1/slice0']}" for m in report.missing)
    assert any(m.missing.startswith(f"blob {lost_blob} (optimizer)") for m in report.missing)
    assert StoredArtifact.objects.get(pk=gone_row.pk).status == "present"  # not fixed silently
    # The lost manifests' blobs look like orphans, but may be what recovers them: all kept.
    assert {f.sha256 for f in report.orphans} == {*gone.files.values(), *lost_part_blobs}
    assert report.removed == [] and report.blobs_held
    assert all(exists(store, backends.handle(store, "blob", s)) for s in {*gone.files.values(), *lost_part_blobs})

    with pytest.raises(CommandError, match="3 registry row"):
        call_command("artifacts_gc", "--min-age", "3600")


def test_an_unreadable_referenced_manifest_stops_all_removal(store):
    live = put_model(store, 10)
    register(live.artifact_id)
    orphan = put_model(store, 11)
    backends.overwrite(store, backends.handle(store, "manifest", live.artifact_id), b'{"format": 1, "kind": "edited"}')
    age(store, everything(store), 2 * HOUR)

    report = artifact_store_gc(min_age_seconds=HOUR)

    assert report.refused and report.removed == [] and store.exists(orphan.artifact_id)
    assert report.unreadable[0]["sha256"] == live.artifact_id


def test_a_put_waits_while_the_collector_holds_the_store(store):
    finished = threading.Event()

    def put():
        put_model(store, 12)
        finished.set()

    with store.exclusively():
        writer = threading.Thread(target=put)
        writer.start()
        assert not finished.wait(0.5), "a put ran while the store was held alone"
    assert finished.wait(10)
    writer.join()


def test_the_command_and_the_beat_entry(store, settings, capsys):
    orphan = put_model(store, 13)
    age(store, everything(store), 2 * HOUR)
    call_command("artifacts_gc", "--dry-run", "--min-age", "60")
    out = capsys.readouterr().out
    assert f"would remove manifest {orphan.artifact_id}" in out and "3 orphans found, 0 removed" in out
    assert store.exists(orphan.artifact_id)
    call_command("artifacts_gc", "--min-age", "60")
    assert "3 orphans found, 3 removed" in capsys.readouterr().out and not store.exists(orphan.artifact_id)

    from workers.tasks import collect_orphaned_artifacts

    entry = settings.CELERY_BEAT_SCHEDULE["collect-orphaned-artifacts"]
    assert entry["task"] == collect_orphaned_artifacts.name
    assert collect_orphaned_artifacts.run()["orphans_found"] == 0


def test_uploads_in_flight_are_left_alone_for_the_grace_period(store):
    """A writer still uploading (a temporary file; an open multipart upload on S3) and what it
    has stored but not yet registered are young: the collector keeps them."""
    partial = backends.start_partial_upload(store)
    in_flight = put_model(store, 14)

    report = artifact_store_gc(min_age_seconds=HOUR)

    assert report.removed == [] and report.orphans == [] and report.young_kept == 4  # manifest, 2 blobs, partial
    assert partial in everything(store) and store.exists(in_flight.artifact_id)
