"""Exact SISA unlearning: retrain each affected shard from the checkpoint before the first
slice in which a forgotten record reached it (see workers.training.sisa.sisa_retrain)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from workers.training.base import TrainingRun
from workers.training.sisa import sisa_retrain
from workers.unlearning.base import (
    MethodConfig,
    ProgressCallback,
    UnlearningMethod,
    UnlearningResult,
    no_progress,
)
from workers.unlearning.exact.common import forget_keys_of, retain_dataset_of, training_run_of


class SisaUnlearning(UnlearningMethod, name="sisa"):
    """``model``: a TrainingRun of the sisa recipe (its ensemble carries the checkpoints; its
    membership, or ``context["membership"]``, says where each record trained). ``retain``: the
    original training set without the forget set. Returns the new TrainingRun; the result's
    details name the shards retrained (shard -> first slice rerun), the number of slices rerun
    and the superseded checkpoints (to purge from the parent)."""

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
        report = sisa_retrain(run, forget_keys_of(forget), retain_dataset_of(retain),
                              device=device, progress=progress)
        return report.run, self._result(
            started, device, steps=report.steps,
            records_forgotten=len(report.forgotten),
            not_members=report.not_members,
            shards_retrained={str(s): k for s, k in sorted(report.retrained.items())},
            slices_retrained=report.slices_retrained,
            superseded_checkpoints=[list(c) for c in report.superseded_checkpoints],
            shards_total=run.config["shards"],
        )
