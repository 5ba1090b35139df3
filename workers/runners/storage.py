"""Registering what a recipe stored, so that scoping and purging know which artifact holds what."""

from __future__ import annotations

from django.conf import settings

from models_registry import services as registry
from models_registry.models import (
    ArtifactKind,
    ArtifactStatus,
    ModelVersion,
    StoredArtifact,
    TrainingRun,
)


def artifact_store():
    """The artifact store the settings name (ARTIFACT_STORE): a folder under ARTIFACT_ROOT, or an
    S3-compatible bucket (ARTIFACT_S3_*) whose objects are sealed under data keys in the keystore.
    Either way its lock is a PostgreSQL advisory lock, which holds for every worker host."""
    from foundation.locks import AdvisoryStoreLock

    if settings.ARTIFACT_STORE == "s3":
        from models_registry.keystore import keystore
        from workers.artifacts import S3ArtifactStore

        objects = _s3_objects()
        return S3ArtifactStore(objects, keys=keystore(), lock=AdvisoryStoreLock(f"artifact store {objects.location.name}"))
    from workers.artifacts import ArtifactStore

    return ArtifactStore(settings.ARTIFACT_ROOT, lock=AdvisoryStoreLock(f"artifact store {settings.ARTIFACT_ROOT}"))


def _s3_objects():
    from workers.object_store import S3Location, S3Objects

    return S3Objects(S3Location(
        bucket=settings.ARTIFACT_S3_BUCKET, prefix=settings.ARTIFACT_S3_PREFIX,
        endpoint_url=settings.ARTIFACT_S3_ENDPOINT_URL, region=settings.ARTIFACT_S3_REGION,
        access_key_id=settings.ARTIFACT_S3_ACCESS_KEY_ID, secret_access_key=settings.ARTIFACT_S3_SECRET_ACCESS_KEY),
        part_size=settings.ARTIFACT_S3_PART_SIZE, multipart_threshold=settings.ARTIFACT_S3_MULTIPART_THRESHOLD)


STORED_FOLDER_PREFIX = "object store: datasets/"  # a Dataset's storage_location when its folder is shared files


def shared_files(area: str):
    """The shared files of ``area`` (workers.shared_files: ``datasets``, ``pending-uploads``,
    ``reports``) on the backend the settings name: a folder on this host (DATASET_ROOT,
    ARTIFACT_ROOT/pending-uploads, REPORT_ROOT), or sealed objects in the artifact store's bucket."""
    from workers.shared_files import LocalFiles, S3Files, check_area

    check_area(area)
    if settings.ARTIFACT_STORE == "s3":
        from models_registry.keystore import keystore

        return S3Files(_s3_objects(), keystore(), area)
    roots = {"datasets": settings.DATASET_ROOT, "pending-uploads": settings.ARTIFACT_ROOT / "pending-uploads",
             "reports": settings.REPORT_ROOT}
    return LocalFiles(roots[area], area, mode=0o640 if area == "reports" else None)


def dataset_folder(storage_location: str):
    """A reference dataset's folder from its storage_location: the path on this host, or the
    folder in shared storage (``object store: datasets/<name>``), read and rewritten in memory."""
    from pathlib import Path

    from workers.shared_files import StoredFolder

    if storage_location.startswith(STORED_FOLDER_PREFIX):
        return StoredFolder(shared_files("datasets"), storage_location[len(STORED_FOLDER_PREFIX):])
    return Path(storage_location)


def artifact_root():
    """The artifact store's root from the settings (added to workers.artifact_manifests.STORE_ROOTS)."""
    return settings.ARTIFACT_ROOT


def artifact_manifest(artifact_id: str):
    """The manifest of a stored artifact (what it is, its parts and state; no weights), read without
    torch, so that the web side may call it. Raises workers.artifact_manifests.ArtifactError."""
    if settings.ARTIFACT_STORE == "s3":
        from models_registry.keystore import keystore
        from workers.object_store import sealed_manifest_read

        return sealed_manifest_read(_s3_objects(), keystore(), artifact_id)
    from workers.artifact_manifests import manifest_read

    return manifest_read(settings.ARTIFACT_ROOT, artifact_id)


def _artifact_bytes(store, artifact_id: str) -> int:
    manifest = store.manifest(artifact_id)
    return sum(int(f.get("bytes", 0)) for f in manifest.files.values())


def stored_artifacts_register(*, store, top_id: str, run: TrainingRun, version: ModelVersion) -> list[StoredArtifact]:
    """One StoredArtifact row per artifact in ``top_id``'s closure (checkpoints and adapters with
    the shard and slices whose records they hold; the top-level one as the version's weights).
    Rows of this run that exist already (shared with a parent version) are reused. Another model
    trained to the same bytes gets its own rows for the same files: each model's copies are
    purged by its own deletions, and a file goes when its last row does (workers.purge)."""
    rows = []
    for artifact_id in store.closure(top_id):
        manifest = store.manifest(artifact_id)
        shard = slices = None
        if artifact_id == top_id:
            kind = ArtifactKind.WEIGHTS
        elif manifest.kind == "checkpoint":
            kind = ArtifactKind.CHECKPOINT
            shard, stage = manifest.config["shard"], manifest.config["slice"]
            slices = list(range(stage + 1))  # a checkpoint after slice j saw slices 0..j
        elif manifest.kind == "lora_adapter":
            kind = ArtifactKind.ADAPTER
            shard, slices = manifest.config["shard"], list(manifest.config["slices"])
        else:
            kind = ArtifactKind.WEIGHTS
        existing = StoredArtifact.objects.filter(sha256=artifact_id, status=ArtifactStatus.PRESENT, training_run=run).first()
        if existing is not None:
            rows.append(existing)
            continue
        rows.append(registry.stored_artifact_register(
            sha256=artifact_id, kind=kind, size_bytes=_artifact_bytes(store, artifact_id),
            model_version=version if artifact_id == top_id else None, training_run=run,
            shard=shard, slices=slices, label=f"{manifest.kind} of {version}", origin_version=version,
        ))
    return rows
