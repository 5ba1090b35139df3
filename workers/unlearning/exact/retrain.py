"""Exact unlearning by retraining: the same recipe and config, from scratch, without the forget
set. Works for every recipe (plain, sisa, s3t, dp); the most expensive and the simplest proof."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from workers.training import RECIPES
from workers.training.base import TrainingRun
from workers.unlearning.base import (
    MethodConfig,
    ProgressCallback,
    UnlearningMethod,
    UnlearningResult,
    no_progress,
)
from workers.unlearning.exact.common import (
    check_disjoint,
    forget_keys_of,
    retain_dataset_of,
    training_run_of,
)


class Retrain(UnlearningMethod, name="retrain"):
    """``model``: the TrainingRun to replace. ``retain``: the original training set without the
    forget set (RecordDataset or a DataLoader over one). Returns a new TrainingRun.
    The recipe's own seed is used (``config.seed`` is not), so the result equals training the
    recipe from scratch on ``retain``."""

    config_class = MethodConfig

    def unlearn(
        self,
        model: Any,
        forget: Iterable[Any],
        retain: Iterable[Any],
        *,
        device: str = "cpu",
        progress: ProgressCallback = no_progress,
        **context: Any,
    ) -> tuple[TrainingRun, UnlearningResult]:
        started = time.perf_counter()
        run = training_run_of(model, context)
        forget_keys = forget_keys_of(forget)
        retain_set = retain_dataset_of(retain)
        check_disjoint(forget_keys, retain_set)
        recipe = RECIPES.get(run.recipe)(run.config)
        new_run = recipe.train(retain_set, device=device, progress=progress)
        members = {row.record_key for row in run.membership}
        return new_run, self._result(
            started, device, steps=int(new_run.metrics.get("steps", 0)),
            recipe=run.recipe,
            records_forgotten=len(set(forget_keys) & members),
            not_members=sorted(set(forget_keys) - members),
            records_retained=len(new_run.membership),
        )
