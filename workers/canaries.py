"""Canaries planted in a training run (``canaries`` of a training request): drawn from the dataset's
held-out split (workers.training.canaries), added to the training set, and recorded in the registry as
canaries: records marked ``canary`` (no subject, split ``canary``) with their content, in the run's
membership like any record. The audit scores them on the lineage root's run (canary_power), beside
the forget records' own power and never in its place.

They are nobody's data: no request scopes them (models_registry.selectors), no record count or
export shows them, erasure and suppression pass them over. Every worker that reads a run's records
by its membership reads them through :func:`with_canaries` (shadow models, unlearning, audits).
"""

from __future__ import annotations

from foundation.errors import ValidationFailed
from models_registry.models import DataRecord, Dataset, TrainingRun

# The recipes that take canaries: one PyTorch classifier (or an ensemble of them) trained on
# the dataset's own records, which the audit's per-record test reads.
CANARY_RECIPES = ("plain", "sisa", "s3t", "dp")
# Inputs of one shape per record: a canary's elements are drawn per position.
CANARY_MODALITIES = ("tabular", "image")
MAX_CANARIES = 1000
HELD_OUT_SPLIT = "test"


def canary_request_problem(*, count: int, recipe: str, task: str, dataset: Dataset) -> str | None:
    """Why a training request cannot plant ``count`` canaries (None: it can, or none are asked)."""
    if count == 0:
        return None
    if not 0 < count <= MAX_CANARIES:
        return f"canaries must be between 0 and {MAX_CANARIES}, got {count}"
    if task != "classification" or recipe not in CANARY_RECIPES:
        return (f"canaries are planted in classifiers trained by the {', '.join(CANARY_RECIPES)} recipes (the "
                f"audit's per-record test reads them); this is the {recipe} recipe for a {task} model")
    if dataset.modality not in CANARY_MODALITIES:
        return (f"canaries are drawn element by element from held-out inputs of one shape ({', '.join(CANARY_MODALITIES)} "
                f"data); {dataset} is {dataset.modality}")
    if not DataRecord.objects.filter(dataset=dataset, split=HELD_OUT_SPLIT, canary=False).exists():
        return (f"canaries are drawn from the dataset's held-out split {HELD_OUT_SPLIT!r}, and {dataset} has no "
                "record in it")
    return None


def canary_request_check(*, count: int, recipe: str, task: str, dataset: Dataset) -> None:
    """ValidationFailed (field ``canaries``) with :func:`canary_request_problem`'s reason."""
    problem = canary_request_problem(count=count, recipe=recipe, task=task, dataset=dataset)
    if problem:
        raise ValidationFailed(problem, field="canaries", code="canaries_refused")


def canaries_plant(data, *, dataset: Dataset, count: int, seed: int, job_id: int):
    """``data`` with ``count`` canaries drawn from ``dataset``'s held-out split (deterministic in
    ``seed`` and that split), keyed ``canary-j<job>-NNNN``; returns ``(data with canaries, canaries)``."""
    from workers.data_sources import dataset_split
    from workers.training.canaries import WithCanaries, synthesise_canaries

    canaries = synthesise_canaries(dataset_split(dataset, HELD_OUT_SPLIT), count=count, seed=seed,
                                   key_prefix=f"canary-j{job_id}")
    return WithCanaries(data, canaries), canaries


def canaries_record(*, run: TrainingRun, dataset: Dataset, canaries, seed: int) -> None:
    """Record ``canaries`` (from :func:`canaries_plant`) as run ``run``'s, before its membership is imported."""
    from models_registry.services import canary_records_create
    from workers.training.canaries import KIND, canary_input_bytes

    canary_records_create(run=run, dataset=dataset, canaries=[
        {"key": c.key, "kind": KIND, "label": c.label, "look_alike": c.look_alike, "seed": seed,
         "inputs": canary_input_bytes(c.input)} for c in canaries])


def with_canaries(data, dataset: Dataset):
    """``data`` (a split of ``dataset``) with the active canaries planted in the dataset's training
    runs, for a reader that takes a run's records by its membership; ``data`` itself when none were."""
    from models_registry.selectors import dataset_canaries

    rows = dataset_canaries(dataset_id=dataset.id)
    if not rows:
        return data
    from workers.training.canaries import Canary, WithCanaries, canary_input_from_bytes

    return WithCanaries(data, [Canary(row.record.external_key, canary_input_from_bytes(row.inputs), row.label,
                                      row.look_alike) for row in rows])
