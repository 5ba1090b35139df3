"""Shadow models: the audit's reference. Per model version, N models of the same recipe and
config, each trained on a random half of the version's training records (its own seed), so that
every record has shadow models that saw it (IN) and models that did not (OUT). Each shadow is a
training run with its own membership and a stored artifact, so scoping finds it and a deletion
purges the shadows that saw a forgotten record like any other copy. The recipe's ``train_shadow``
trains each: a keep-out transfer model's shadows halve the recipe's inputs instead of its members
(static and non-static records: each half's non-static records bring the auxiliary examples they
selected; workers.training.keep_out_transfer)."""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from functools import partial

from django.db import transaction

from models_registry import services as registry
from models_registry.importing import training_membership_import
from models_registry.models import (
    ArtifactKind,
    ArtifactStatus,
    DataRecord,
    ExcludedRecord,
    ModelVersion,
    StoredArtifact,
    TrainingRun,
    VersionStatus,
)
from models_registry.selectors import current_source, keep_out_selection_of, lineage_root
from workers.jobs import JobDeferred
from workers.models import Job
from workers.runners.storage import artifact_store

SHADOW_FRACTION = 0.5
SHADOW_COUNT_DEFAULT = 32


def shadow_half(keys: list[str], *, version_id: int, index: int) -> list[str]:
    """A deterministic half of ``keys`` for shadow model ``index``. Shadows come in complementary
    pairs (indices 2i and 2i + 1): a hash of (version, pair, key) puts each key in one half of the
    pair and the other shadow of the pair takes exactly the other half, so with 2n shadows every
    record is OUT in exactly n of them (the audit's shadow policy counts them per record)."""
    pair, second = divmod(index, 2)

    def first_half(key: str) -> bool:
        return hashlib.sha256(f"shadow:{version_id}:{pair}:{key}".encode()).digest()[0] < 256 * SHADOW_FRACTION

    return sorted(k for k in keys if first_half(k) != bool(second))


def shadow_runs(*, version: ModelVersion) -> list[TrainingRun]:
    """The runs of the shadow models of ``version``'s lineage whose artifacts are still present."""
    present = StoredArtifact.objects.filter(kind=ArtifactKind.SHADOW_MODEL, status=ArtifactStatus.PRESENT)
    root = lineage_root(version)
    return list(TrainingRun.objects.filter(model=version.model, config__shadow_of=root.id,
                                           artifacts__in=present).distinct().order_by("id"))


def shadow_references(*, version: ModelVersion) -> list:
    """The shadow models of ``version``'s lineage as the method library's references
    (workers.unlearning.references.ShadowReference): index, member keys (from the registry) and a
    loader of the stored weights, so that a method loads only the models it reads."""
    from workers.training.storage import load_run
    from workers.unlearning.references import ShadowReference

    store = artifact_store()
    references = []
    for run in shadow_runs(version=version):
        artifact = StoredArtifact.objects.filter(training_run=run, kind=ArtifactKind.SHADOW_MODEL,
                                                 status=ArtifactStatus.PRESENT).first()
        if artifact is None:
            continue
        members = DataRecord.objects.filter(memberships__run=run).values_list("external_key", flat=True)
        references.append(ShadowReference(
            index=int(run.config.get("shadow_index", len(references))), members=frozenset(members),
            load=lambda sha256=artifact.sha256: load_run(store, sha256).model))
    return references


def shadow_keys(version: ModelVersion) -> list[str]:
    """The records new shadow models of ``version``'s lineage may train on: its run's active records
    without any that a version of the model not purged excludes. A version awaiting deployment
    excludes its request's records, which stay active until the request's end erases them, and the
    unlearning chain from the root breaks at the versions each purge destroys, so the chain's head
    (``current_source``) alone missed them: a purge's replenishing job took in exactly the records
    the purge was for (seen on the real stack). The records an unlearning job erased into a version not
    purged count too: a version the company's pipeline retrained has a run of its own without them, not
    exclusions (deletion.external_retrain)."""
    excluded = set(ExcludedRecord.objects.filter(version__model=version.model).exclude(
        version__status=VersionStatus.PURGED).values_list("record_id", flat=True))
    for forgotten in (Job.objects.filter(kind="unlearn", registered_model=version.model, status="succeeded",
                                         result_version__isnull=False)
                      .exclude(result_version__status=VersionStatus.PURGED).values_list("forget_record_ids", flat=True)):
        excluded.update(forgotten or [])
    return sorted(DataRecord.objects.filter(memberships__run=version.training_run, status="active")
                  .exclude(id__in=excluded).values_list("external_key", flat=True))


@contextmanager
def _file_gone_if_refused(store, sha256: str):
    """A shadow whose registration fails (the registry refuses it when a record it trained on was erased
    meanwhile: ImportRejected) leaves no file behind: the file holds the records and no row would ever
    name it for a purge."""
    try:
        yield
    except Exception:
        if (not StoredArtifact.objects.filter(sha256=sha256, status=ArtifactStatus.PRESENT).exists()
                and store.exists(sha256)):
            store.purge(sha256, include_parts=False)
        raise


def run_shadow_job(job: Job, progress) -> dict:
    from workers.artifacts import code_version
    from workers.canaries import with_canaries
    from workers.data_sources import dataset_split
    from workers.runners.training import load_recipes
    from workers.training.device import select_device

    # A deletion has a legal deadline, shadow models do not: they yield to an unlearning job on the
    # model that waits (a purge queues this job just before the next request's unlearning could run).
    waiting = Job.objects.filter(kind="unlearn", registered_model=job.registered_model,
                                 status__in=["pending", "running"]).order_by("id").first()
    if waiting is not None:
        raise JobDeferred(f"unlearning job {waiting.id} on the same model runs first", countdown=30.0)
    recipes = load_recipes()
    version = job.source_version
    count = int(job.config.get("count", SHADOW_COUNT_DEFAULT))
    store = artifact_store()
    # Recipe, config and membership come from the registry, not the (possibly purged) weights:
    # halves of what the lineage holds now, so records forgotten since are never taken in again.

    run_row = version.training_run
    latest = current_source(version)
    recipe_name = run_row.recipe
    base_config = {k: v for k, v in run_row.config.items() if k not in ("shadow_of", "shadow_index")}
    # A version trained elsewhere: its family's recipe with what the run recorded (set at upload).
    uploaded = lineage_root(version).metrics.get("uploaded_recipe")
    if uploaded:
        recipe_name, base_config = uploaded["name"], dict(uploaded["config"])
    dataset = version.training_run.datasets.get()
    data = with_canaries(dataset_split(dataset, "train"), dataset)  # the run's canaries are its records too
    device = select_device()
    # What a recipe whose inputs are not its members reads to train its shadows (keep-out transfer).
    lineage = {"keep_out_selection": keep_out_selection_of(version=latest)}
    done = {run.config.get("shadow_index") for run in shadow_runs(version=version)}
    trained = []
    for index in range(count):
        if index in done:  # a re-run after a crash keeps the shadows already recorded
            continue
        config = {**base_config, "seed": 10_000 + index}
        keys = shadow_keys(version)  # per shadow: a record erased meanwhile is not taken in again
        recipe = recipes.get(recipe_name)(config)
        shadow_progress = progress.scaled(100 * index / count, 100 / count)
        result = recipe.train_shadow(data, keys, half=partial(shadow_half, version_id=version.id, index=index),
                                     lineage=lineage, device=device, progress=shadow_progress)
        ref = recipe.save(store, result, extra={"shadow_of": version.artifact_sha256, "shadow_index": index})
        with _file_gone_if_refused(store, ref.artifact_id), transaction.atomic():
            run = registry.training_run_start(
                model=version.model, recipe=recipe_name,
                config={**recipe.config.to_dict(), "shadow_of": version.id, "shadow_index": index},
                seed=config["seed"], code_version=code_version(), datasets=[dataset])
            rows = [(i + 1, r.record_key, r.shard, r.slice, r.position) for i, r in enumerate(result.membership)]
            training_membership_import(run=run, dataset=dataset, rows=rows)
            registry.training_run_finish(run=run)
            registry.stored_artifact_register(
                sha256=ref.artifact_id, kind=ArtifactKind.SHADOW_MODEL, training_run=run,
                label=f"shadow model {index} of {version}",
            )
        trained.append(index)
    return {"device": str(device), "shadows_trained": trained, "shadows_total": count}
