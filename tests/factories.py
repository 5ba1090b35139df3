"""Small factories for registry rows (plain functions, no factory library needed)."""

from __future__ import annotations

import io
import itertools

from models_registry import services
from models_registry.importing import dataset_records_import, training_membership_import
from models_registry.models import Dataset, ModelVersion, RegisteredModel, TrainingRun

_counter = itertools.count(1)


def dataset(name: str | None = None, **overrides) -> Dataset:
    fields = dict(
        name=name or f"dataset-{next(_counter)}", version="1", modality="tabular",
        storage_location="/tmp/none", purpose="testing", legal_basis="consent",
    )
    fields.update(overrides)
    return services.dataset_register(**fields)


def records_csv(rows: list[dict]) -> io.BytesIO:
    """CSV bytes from row dicts (columns = union of keys, in first-seen order)."""
    import csv

    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return io.BytesIO(text.getvalue().encode())


def import_records(ds: Dataset, rows: list[dict]):
    return dataset_records_import(dataset=ds, source=records_csv(rows), fmt="csv")


def registered_model(name: str | None = None, recipe: str = "plain", **kw) -> RegisteredModel:
    return services.registered_model_create(
        name=name or f"model-{next(_counter)}", task="classification", training_recipe=recipe, **kw
    )


def trained_version(model: RegisteredModel, ds: Dataset, keys_with_shards: list[tuple[str, int, int]],
                    *, status: str = "serving") -> tuple[TrainingRun, ModelVersion]:
    """A run over ``(record_key, shard, slice)`` rows and the version it produced."""
    run = services.training_run_start(model=model, recipe=model.training_recipe, config={}, seed=0,
                                      code_version="test", datasets=[ds])
    rows = [(i + 1, key, shard, slice_, i) for i, (key, shard, slice_) in enumerate(keys_with_shards)]
    training_membership_import(run=run, dataset=ds, rows=rows)
    services.training_run_finish(run=run)
    version = services.model_version_create(
        model=model, artifact_sha256="0" * 64, training_run=run, status=status
    )
    return run, version


def staff_user(username: str, *, role: str):
    """The user ``username`` (created where there is none: staff, in ``role``'s group where the
    role has one): a person, e.g. one an API token is bound to."""
    from django.contrib.auth.models import Group, User

    user, _ = User.objects.get_or_create(username=username, defaults={"is_staff": True})
    if role in ("dpo", "ml_engineer", "auditor"):
        user.groups.add(Group.objects.get_or_create(name=role)[0])
    return user
