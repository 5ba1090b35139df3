"""Worker-side services the web side may call (they only write rows and enqueue)."""

from __future__ import annotations

from typing import Any

from deletion_platform.errors import ValidationFailed
from models_registry.models import Dataset, RegisteredModel
from workers.jobs import job_create
from workers.models import Job, JobKind


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
