"""Exact unlearning by retraining: the same recipe and config, from scratch, without the forget
set. Works for every recipe (plain, sisa, s3t, dp); the most expensive and the simplest proof."""

from __future__ import annotations

from typing import Any

from workers.training import RECIPES
from workers.training.base import TrainingRun
from workers.unlearning.base import ProgressCallback
from workers.unlearning.exact.common import ExactMethod, check_disjoint, retain_dataset_of


class Retrain(ExactMethod, name="retrain"):
    """``model``: the TrainingRun to replace. ``retain``: the original training set without the
    forget set (RecordDataset or a DataLoader over one). Returns a new TrainingRun.
    The recipe's own seed is used (``config.seed`` is not), so the result equals training the
    recipe from scratch on ``retain``."""

    def replace(self, run: TrainingRun, forget_keys: list[str], retain: Any, *, device: str,
                progress: ProgressCallback) -> tuple[TrainingRun, int, dict[str, Any]]:
        retain_set = retain_dataset_of(retain)
        check_disjoint(forget_keys, retain_set)
        recipe = RECIPES.get(run.recipe)(run.config)
        if run.keep_out_selection is not None:
            # Keep-out transfer: the non-static records are in no retain set; the recipe retrains on the
            # training set the deletion leaves (workers.training.keep_out_transfer.keep_out_plan).
            new_run = recipe.retrain_without(run, forget_keys, retain_set, device=device, progress=progress)
        else:
            new_run = recipe.train(retain_set, device=device, progress=progress)
        members = {row.record_key for row in run.membership}
        return new_run, int(new_run.metrics.get("steps", 0)), {
            "recipe": run.recipe,
            "records_forgotten": len(set(forget_keys) & members),
            "not_members": sorted(set(forget_keys) - members),
            "records_retained": len(new_run.membership),
        }
