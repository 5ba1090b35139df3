"""Purging a version's copies through the registry (workers.purge) on both store backends, and on an
S3 bucket whose Object Lock keeps a copy: the purge says so instead of calling it destroyed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import torch

from models_registry import services as registry
from models_registry.models import StoredArtifact
from tests import factories
from tests.workers import store_backends as backends
from workers.artifacts import ArtifactIntegrityError, ArtifactManifest
from workers.purge import version_purge
from workers.runners import storage

pytestmark = pytest.mark.django_db


def _version_with_weights(store, seed: int):
    weights = {"w": torch.randn(3, 2, generator=torch.Generator().manual_seed(seed))}
    ref = store.put(ArtifactManifest(kind="model", code_version="test"), {"weights": weights})
    version = registry.model_version_create(model=factories.registered_model(), artifact_sha256=ref.artifact_id,
                                            training_run=None, status="serving")
    registry.stored_artifact_register(sha256=ref.artifact_id, kind="weights", model_version=version,
                                      label=f"weights of {version}")
    return ref, version


def test_a_version_purge_destroys_its_files_on_either_backend(store_backend):
    store = storage.artifact_store()
    ref, version = _version_with_weights(store, 1)

    [entry] = version_purge(version=version)

    assert {(f["kind"], f["sha256"]) for f in entry["files"]} == {("manifest", ref.artifact_id),
                                                                  ("blob", ref.weights_sha256)}
    assert "retained" not in entry and not store.exists(ref.artifact_id)
    assert StoredArtifact.objects.get(sha256=ref.artifact_id).status == "purged"


def test_a_copy_object_lock_keeps_is_reported_not_destroyed(s3_server, settings, keystore_database_url, monkeypatch):
    settings.KEYSTORE_DATABASE_URL = keystore_database_url
    from foundation.locks import AdvisoryStoreLock
    from models_registry.keystore import keystore
    from workers.artifacts import S3ArtifactStore
    from workers.object_store import S3Objects

    objects = S3Objects(s3_server.location("purge-locked", bucket=s3_server.locked_bucket))
    store = S3ArtifactStore(objects, keys=keystore(), lock=AdvisoryStoreLock("test locked store"))
    monkeypatch.setattr("workers.purge.artifact_store", lambda: store)
    ref, version = _version_with_weights(store, 2)
    key = objects.location.key(store._relative("manifest", ref.artifact_id))
    for listed in objects.client.list_object_versions(Bucket=objects.location.bucket, Prefix=key)["Versions"]:
        objects.client.put_object_legal_hold(Bucket=objects.location.bucket, Key=key, VersionId=listed["VersionId"],
                                             LegalHold={"Status": "ON"})
        objects.client.put_object_retention(Bucket=objects.location.bucket, Key=key, VersionId=listed["VersionId"],
                                            Retention={"Mode": "GOVERNANCE",
                                                       "RetainUntilDate": datetime.now(tz=UTC) + timedelta(days=1)})

    [entry] = version_purge(version=version)

    assert [f["kind"] for f in entry["files"]] == ["blob"]  # the manifest is not listed as destroyed
    [held] = entry["retained"]
    assert held["sha256"] == ref.artifact_id and held["legal_hold"] and held["mode"] == "GOVERNANCE"
    assert "legal hold" in held["reason"] and "retention (GOVERNANCE)" in held["reason"]
    assert backends.exists(store, ("manifest", ref.artifact_id))
    with pytest.raises(ArtifactIntegrityError, match="data key is destroyed"):
        store.manifest(ref.artifact_id)
