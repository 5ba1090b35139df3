"""Worker-side services the web side may call (they only write rows and enqueue)."""

from __future__ import annotations

from typing import Any

from foundation.errors import ValidationFailed
from models_registry import services as registry
from models_registry.models import Dataset, RegisteredModel, VersionStatus
from workers.jobs import job_create
from workers.models import Job, JobKind
from workers.runners.storage import artifact_store


def model_train(*, model: RegisteredModel, dataset: Dataset, recipe_config: dict[str, Any],
                split: str = "train", enqueue: bool = True) -> Job:
    """Queue a training job for ``model`` on ``dataset`` with its registered recipe."""
    if not isinstance(recipe_config, dict):
        raise ValidationFailed("recipe_config must be an object", field="recipe_config")
    return job_create(
        kind=JobKind.TRAIN, registered_model=model, method=model.training_recipe, enqueue=enqueue,
        config={"dataset_id": dataset.id, "recipe": model.training_recipe, "recipe_config": recipe_config,
                "split": split},
    )


def shadow_models_train(*, version, count: int = 16, enqueue: bool = True) -> Job:
    """Queue the training of ``count`` shadow models of ``version`` (at least 16 for audits)."""
    if count < 2:
        raise ValidationFailed("at least 2 shadow models are needed (16 for audits)", field="count")
    return job_create(kind=JobKind.SHADOW, registered_model=version.model, source_version=version,
                      method=version.model.training_recipe, config={"count": count}, enqueue=enqueue)


MAX_CHECKPOINT_BYTES = 2 * 1024**3


def model_version_upload(*, model: RegisteredModel, training_run, data: bytes):
    """Register weights trained elsewhere as a new version of ``model`` whose lineage is the
    (already imported) membership of ``training_run``. The file must be safetensors whose tensors
    fit the model's registered architecture; anything else (a pickle, a truncated file, a lying
    header, other shapes) is refused with the reason and nothing is stored. Nothing is unpickled.
    """
    from django.db import transaction

    from workers.artifacts import (
        ArtifactManifest,
        UnsafeArtifactError,
        check_safetensors_bytes,
        code_version,
    )

    if training_run.model_id != model.id:
        raise ValidationFailed("the training run belongs to another model", field="training_run")
    if len(data) > MAX_CHECKPOINT_BYTES:
        raise ValidationFailed(f"checkpoint larger than {MAX_CHECKPOINT_BYTES} bytes", field="body")
    try:
        table = check_safetensors_bytes(data, source="uploaded checkpoint")
    except UnsafeArtifactError as exc:
        raise ValidationFailed(str(exc), field="body", code="unsafe_checkpoint") from None
    if not model.architecture:
        raise ValidationFailed("the model has no registered architecture to check the weights against",
                               field="architecture")
    from workers.artifacts import safetensors_from_bytes
    from workers.training.architectures import build_model

    expected = {name: tuple(t.shape) for name, t in build_model(model.architecture).state_dict().items()}
    got = {name: info.shape for name, info in table.items()}
    if expected != got:
        missing = sorted(set(expected) - set(got))[:3]
        unexpected = sorted(set(got) - set(expected))[:3]
        wrong = sorted(n for n in set(expected) & set(got) if expected[n] != got[n])[:3]
        raise ValidationFailed(f"the weights do not fit architecture {model.architecture.get('name')!r}: "
                               f"missing {missing}, unexpected {unexpected}, wrong shape {wrong}",
                               field="body", code="architecture_mismatch")
    tensors = safetensors_from_bytes(data, source="uploaded checkpoint")
    store = artifact_store()
    manifest = ArtifactManifest(kind="model", architecture=model.architecture, code_version=code_version(),
                                recipe={"name": "plain", "config": {"architecture": model.architecture}},
                                extra={"uploaded": True})
    ref = store.put(manifest, {"weights": tensors})
    with transaction.atomic():
        version = registry.model_version_create(model=model, artifact_sha256=ref.artifact_id,
                                                training_run=training_run, status=VersionStatus.RETAINED)
        registry.stored_artifact_register(sha256=ref.artifact_id, kind="weights", model_version=version,
                                          training_run=training_run, size_bytes=len(data),
                                          label=f"uploaded weights of {version}", origin_version=version)
    return version
