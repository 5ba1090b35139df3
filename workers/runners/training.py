"""Training jobs: run a recipe on a registered dataset and record its lineage.

Membership comes from what the recipe's loaders yielded and goes through the platform's own
import service (so suppressed or erased records are refused). The job's final transaction
creates the run, its membership, the version and the artifact rows, and marks the job's result,
so a job redelivered after that commit finds its result and does nothing twice.
"""

from __future__ import annotations

from django.db import transaction

from models_registry import services as registry
from models_registry.importing import training_membership_import
from models_registry.models import DataRecord, Dataset, ModelVersion, RecordStatus, VersionStatus
from workers.models import Job
from workers.runners.storage import artifact_store, stored_artifacts_register


def training_dataset(dataset: Dataset, split: str = "train"):
    """The dataset's split as a RecordDataset, limited to records that are still active and not
    suppressed (a source's read does that itself); what the read found is on ``source_read``."""
    from workers.data_sources import dataset_split, has_source

    data = dataset_split(dataset, split)
    if has_source(dataset):
        return data
    active = set(DataRecord.objects.filter(dataset=dataset, status=RecordStatus.ACTIVE)
                 .values_list("external_key", flat=True))
    kept = data.subset([k for k in data.record_keys if k in active])
    kept.source_read = data.source_read
    return kept


def load_recipes():
    """Import the recipes (the package registers them) and return the registry."""
    from workers.training import RECIPES

    return RECIPES


def run_training_job(job: Job, progress) -> dict:
    from workers.artifacts import code_version
    from workers.training.device import select_device

    RECIPES = load_recipes()

    if job.result_version_id:  # finished before a crash lost the job's last update
        return {"skipped": "result already recorded", "version": job.result_version_id}
    dataset = Dataset.objects.get(pk=job.config["dataset_id"])
    recipe_name = job.config["recipe"]
    parent = _parent_version(job)
    if parent is None:
        recipe = RECIPES.get(recipe_name)(job.config.get("recipe_config", {}))
    else:  # distill, finetune: the recipe starts from the parent's model
        from workers.training.storage import load_run

        recipe = RECIPES.get(recipe_name)(job.config.get("recipe_config", {}),
                                          parent=load_run(artifact_store(), parent.artifact_sha256).model)
    data = training_dataset(dataset, job.config.get("split", "train"))
    planted = []
    if job.config.get("canaries"):  # drawn from the held-out split with the run's seed (workers.canaries)
        from workers.canaries import canaries_plant

        data, planted = canaries_plant(data, dataset=dataset, count=int(job.config["canaries"]),
                                       seed=recipe.config.seed, job_id=job.id)
    device = select_device()
    result = recipe.train(data, device=device, progress=progress.scaled(0, 90))
    if job.registered_model.task == "classification":
        result.metrics["test_accuracy"] = _held_out_accuracy(result.model, dataset, device)
    elif job.registered_model.task == "regression":
        result.metrics.update(_held_out_errors(result.model, dataset, device))
    store = artifact_store()
    ref = recipe.save(store, result)
    progress("recording lineage", 0.95)
    with transaction.atomic():
        locked = Job.objects.select_for_update().get(pk=job.pk)
        if locked.result_version_id:
            return {"skipped": "result already recorded", "version": locked.result_version_id}
        run = registry.training_run_start(
            model=job.registered_model, recipe=recipe_name, config=recipe.config.to_dict(),
            seed=recipe.config.seed, code_version=code_version(), datasets=[dataset],
        )
        if planted:  # recorded as canaries before the membership that names them
            from workers.canaries import canaries_record

            canaries_record(run=run, dataset=dataset, canaries=planted, seed=recipe.config.seed)
        rows = [(i + 1, row.record_key, row.shard, row.slice, row.position)
                for i, row in enumerate(result.membership)]
        training_membership_import(run=run, dataset=dataset, rows=rows)
        registry.training_run_finish(run=run)
        version = registry.model_version_create(
            model=job.registered_model, artifact_sha256=ref.artifact_id, training_run=run,
            status=VersionStatus.SERVING, guarantee_class="",
            dp_epsilon=result.metrics.get("epsilon"), dp_delta=result.metrics.get("delta"),
            # Figures, and a DP run's record of what was private (the condition of its privacy bound).
            metrics={**{k: v for k, v in result.metrics.items()
                        if isinstance(v, (int, float, str)) or k == "dp_pipeline"},
                     **_left_out(data), **({"canaries": len(planted)} if planted else {})},
        )
        stored_artifacts_register(store=store, top_id=ref.artifact_id, run=run, version=version)
        if result.keep_out_selection is not None:  # keep-out transfer: what each non-static record selected
            registry.keep_out_selection_record(version=version, dataset=dataset, selection=result.keep_out_selection)
        if parent is not None:  # the child may hold what its parent held: scoping follows this edge
            from workers.training_catalogue import RECIPE_SPECS

            registry.model_lineage_edge_add(parent=parent, child=version, kind=RECIPE_SPECS.get(recipe_name).derives)
        Job.objects.filter(pk=job.pk).update(result_version=version)
    read = getattr(data, "source_read", None)
    # The record count leaves the canaries out (nobody's records); they are counted apart.
    planted_keys = {c.key for c in planted}
    return {"device": str(device), "artifact": ref.artifact_id, "version": version.id,
            "members": sum(r.record_key not in planted_keys for r in result.membership), "metrics": version.metrics,
            **({"canaries": len(planted)} if planted else {}),
            **({"source": read.to_dict()} if read is not None else {})}


def _parent_version(job: Job) -> ModelVersion | None:
    """The version a deriving recipe (distill, finetune) starts from, or None. Refused when it is no
    longer held (purged or withdrawn since the job was queued): its weights may be gone, and a
    child of a withdrawn model would carry what the withdrawal took out of service."""
    parent_id = (job.config or {}).get("parent_version_id")
    if parent_id is None:
        return None
    parent = ModelVersion.objects.get(pk=parent_id)
    if parent.status not in (VersionStatus.SERVING, VersionStatus.RETAINED):
        raise ValueError(f"the parent version {parent} is {parent.status}: a model is derived only from a version "
                         "still held")
    return parent


def _left_out(data) -> dict[str, int]:
    """How many suppressed records the dataset's read left out (a count, never which), for the version's metrics."""
    read = getattr(data, "source_read", None)
    return {"suppressed_records_left_out": read.suppressed} if read is not None else {}


def _held_out_errors(model, dataset: Dataset, device) -> dict[str, float]:
    """A regression model's mean absolute and root mean squared error on the dataset's test split
    (``test_mae``, ``test_rmse``, in the target's unit), when it has one."""
    from workers.data_sources import dataset_split
    from workers.training.evaluate import regression_errors

    try:
        test = dataset_split(dataset, "test")
    except (FileNotFoundError, KeyError, ValueError):
        return {}
    if not len(test):
        return {}
    errors = regression_errors(model.to(device), test, device=device)
    return {f"test_{name}": round(value, 4) for name, value in errors.items()}


def _held_out_accuracy(model, dataset: Dataset, device) -> float | None:
    """Accuracy on the dataset's test split (records no training run may use), when it has one."""
    from workers.data_sources import dataset_split
    from workers.training.evaluate import accuracy

    try:
        test = dataset_split(dataset, "test")
    except (FileNotFoundError, KeyError, ValueError):
        return None
    return round(accuracy(model.to(device), test, device=device), 4) if len(test) else None
