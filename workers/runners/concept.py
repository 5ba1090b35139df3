"""Concept-erasure jobs: a new version of a model with an attribute erased from one layer (LEACE, or the
PEF-style coupling, whose stored version then needs each input's attribute at inference).

An unlearning job whose method is of kind ``concept`` (workers.unlearning.catalogue) comes here from
:func:`workers.runners.unlearning.run_unlearning_job`. Its config holds the method's config (``layer``,
``seed``) and ``concept``: the attribute's labels (record key -> integer), the dataset they belong to,
and the seed and share that split them into the eraser's fitting records and the audit's probe
records (workers.concept_layers.fitting_split). No record is erased: the new version keeps its
parent's weights and membership, with the eraser stored beside them as its own safetensors blob
(workers.training.plain), and its class is ``concept_erased``. The fitting records are recorded as the
eraser's lineage (models_registry.models.ConceptFitRecord): the eraser is derived from their data.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from foundation.strict_json import jsonable
from models_registry import services as registry
from models_registry.models import DataRecord, Dataset, ModelVersion, VersionStatus
from workers.concept_layers import fitting_split
from workers.models import Job
from workers.runners.storage import stored_artifacts_register

LOADER_BATCH = 256


def concept_of(job: Job) -> dict[str, Any]:
    """The ``concept`` part of a concept job's config; ``ValueError`` when it is missing."""
    concept = (job.config or {}).get("concept")
    if not concept or not concept.get("labels"):
        raise ValueError(f"job {job.id} ({job.method}) has no attribute labels in its config: a concept erasure "
                         "is filed as a concept request (POST /api/v1/concept-requests/)")
    return concept


def labelled_batches(dataset: Dataset, labels: dict[str, int], keys: list[str]) -> tuple[list, list[str]]:
    """``(batches, missing)``: batches of ``(keys, inputs, attribute labels)`` for the records ``keys`` of
    ``dataset``, read from whichever split holds each, and the keys no split holds any more (erased since
    the request was filed, or suppressed)."""
    import torch
    from torch.utils.data import DataLoader

    from workers.data_sources import dataset_split
    from workers.training.membership import collate_records

    splits: dict[str, list[str]] = {}
    for key, split in DataRecord.objects.filter(dataset=dataset, external_key__in=keys).values_list(
            "external_key", "split"):
        splits.setdefault(split, []).append(key)
    batches, found = [], set()
    for split, wanted in sorted(splits.items()):
        data = dataset_split(dataset, split)
        present = sorted(set(wanted) & set(data.record_keys))
        found.update(present)
        for record_keys, inputs, _targets in DataLoader(data.subset(present), batch_size=LOADER_BATCH,
                                                        collate_fn=collate_records):
            if record_keys:
                batches.append((record_keys, inputs, torch.tensor([labels[k] for k in record_keys])))
    return batches, sorted(set(keys) - found)


def run_concept_erasure(job: Job, *, source: ModelVersion, trained, store, progress) -> dict:
    """Fit the eraser on the fitting share of the labelled records, store the new version (class
    ``concept_erased``, parent ``source``, nothing excluded) and return the job's result."""
    from workers.training.base import TrainingRun
    from workers.training.device import select_device
    from workers.training.storage import load_run, save_run
    from workers.unlearning.base import METHODS
    from workers.unlearning.concept_erasure import erased_layers

    concept = concept_of(job)
    if trained.tokenizer is not None:
        raise ValueError(f"{source} is a language model: concept erasure here erases [batch, features] layers")
    dataset = Dataset.objects.get(pk=concept["dataset_id"])
    labels = {str(k): int(v) for k, v in concept["labels"].items()}
    fit, probe = fitting_split(labels, seed=concept["seed"], fit_share=concept["fit_share"])
    progress("reading the labelled records", 0.05)
    batches, missing = labelled_batches(dataset, labels, fit)
    method = METHODS.get(job.method)({k: v for k, v in job.config.items() if k != "concept"})
    device = str(select_device())
    new_model, result = method.unlearn(trained.model, batches, [], device=device,
                                       progress=progress.scaled(10, 70))
    progress("storing the new version", 0.85)
    details = {"attribute": concept["attribute"], "fit_records": len(fit) - len(missing), "probe_records": len(probe),
               "fit_records_missing": len(missing)}
    new_run = TrainingRun(trained.recipe, trained.config, new_model.cpu(), trained.membership, trained.metrics)
    ref = save_run(store, new_run, parent=source.artifact_sha256,
                   extra={"unlearning": jsonable(result.to_dict()), "concept": details})
    if not erased_layers(load_run(store, ref.artifact_id).model):
        # The stored version must serve the eraser; a recipe that drops it would claim an erasure it lacks.
        raise ValueError(f"the {trained.recipe} recipe did not keep the concept eraser when {source}'s new version "
                         "was stored; concept erasure needs a recipe that stores it (workers.concept_layers)")
    with transaction.atomic():
        locked = Job.objects.select_for_update().get(pk=job.pk)
        if locked.result_version_id:
            return {"skipped": "result already recorded", "version": locked.result_version_id}
        version = registry.model_version_create(
            model=source.model, artifact_sha256=ref.artifact_id, training_run=source.training_run, parent=source,
            status=VersionStatus.RETAINED, guarantee_class=result.guarantee_class, dp_epsilon=source.dp_epsilon,
            dp_delta=source.dp_delta)
        stored_artifacts_register(store=store, top_id=ref.artifact_id, run=source.training_run, version=version)
        # The eraser is derived from the fitting records (and from any eraser the source already had):
        # lineage, so that a person's request finds it.
        registry.concept_fit_records_inherit(version=version, source=source)
        registry.concept_fit_records_record(version=version, record_ids=DataRecord.objects.filter(
            dataset=dataset, external_key__in=sorted(set(fit) - set(missing))).values_list("id", flat=True))
        Job.objects.filter(pk=job.pk).update(result_version=version)
    return {"device": device, "artifact": ref.artifact_id, "version": version.id, "concept": details,
            "unlearning": jsonable(result.to_dict())}
