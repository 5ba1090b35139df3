"""Exact SISA unlearning of scikit-learn ensembles: refit each shard a forgotten record trained,
from scratch, on its kept records (an estimator has no checkpoints to resume from; see
workers.training.sklearn_estimators.sklearn_sisa_refit)."""

from __future__ import annotations

from typing import Any

from workers.training.base import TrainingRun
from workers.training.sklearn_estimators import sklearn_sisa_refit
from workers.unlearning.base import ProgressCallback
from workers.unlearning.exact.common import ExactMethod, retain_dataset_of


class SklearnSisaUnlearning(ExactMethod, name="sklearn_sisa"):
    """``model``: a TrainingRun of the sklearn_sisa recipe (its membership, or
    ``context["membership"]``, says which shard each record trained). ``retain``: the original
    training set without the forget set. Returns the new TrainingRun; the result's details name
    the shards refit and how many there are."""

    def replace(self, run: TrainingRun, forget_keys: list[str], retain: Any, *, device: str,
                progress: ProgressCallback) -> tuple[TrainingRun, int, dict[str, Any]]:
        refit = sklearn_sisa_refit(run, forget_keys, retain_dataset_of(retain), progress=progress)
        return refit.run, len(refit.shards_refit), {
            "records_forgotten": len(refit.forgotten),
            "not_members": refit.not_members,
            "shards_refit": refit.shards_refit,
            "shards_total": run.config["shards"],
        }
