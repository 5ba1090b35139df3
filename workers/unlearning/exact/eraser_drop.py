"""Exact unlearning of records that only a concept eraser holds: the eraser is taken off.

A concept eraser (workers.unlearning.concept_erasure, pef_coupling) is fitted on the representations of
labelled records, which need not be training records (a test-split record may be labelled). When a
person's records are held by a version only through its eraser (scoping's ``concept_eraser`` lineage,
models_registry.models.ConceptFitRecord), the weights never saw them: the new version keeps the weights and
drops the eraser, the only part derived from the records. It no longer erases the attribute; the plan says so
(deletion.concept_erasers). A record the weights were trained on is refused: that is a retrain.

In: the stored TrainingRun (its model normally carries an eraser; one without is returned as it is), the records to forget among its
members (none: an empty forget set is what this method is planned for). Out: the same run without the
eraser; ``details``: ``erasers_dropped`` (the layers), ``records_forgotten`` (0).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Iterable
from typing import Any

from workers.training.base import TrainingRun
from workers.training.device import training_environment
from workers.unlearning.base import ProgressCallback, UnlearningResult, no_progress
from workers.unlearning.concept_erasure import erasers_detach
from workers.unlearning.exact.common import ExactMethod, record_keys_of, training_run_of


class EraserDrop(ExactMethod, name="eraser_drop"):
    """The run's model without its concept erasers (see the module docstring)."""

    def unlearn(self, model: Any, forget: Iterable[Any], retain: Iterable[Any], *, device: str = "cpu",
                progress: ProgressCallback = no_progress, **context: Any) -> tuple[TrainingRun, UnlearningResult]:
        started = time.perf_counter()
        run = training_run_of(model, context)
        # Unlike the other exact methods, an empty forget set is the normal case here.
        new_run, steps, details = self.replace(run, record_keys_of(forget), retain, device=device, progress=progress)
        return new_run, self._result(started, device, steps=steps, environment=training_environment(device),
                                     **details)

    def replace(self, run: TrainingRun, forget_keys: list[str], retain: Any, *, device: str,
                progress: ProgressCallback) -> tuple[TrainingRun, int, dict[str, Any]]:
        trained_on = sorted(set(forget_keys) & {row.record_key for row in run.membership})
        if trained_on:
            raise ValueError(f"eraser_drop keeps the weights, but they were trained on {len(trained_on)} of the records "
                             f"to forget ({', '.join(trained_on[:5])}): retrain instead")
        model = copy.deepcopy(run.model)
        # None left (an earlier job of another request already retrained or dropped it): the records are
        # held nowhere in this run, and the new version is the same model.
        dropped = erasers_detach(model)
        progress("eraser dropped", 1.0)
        return dataclasses.replace(run, model=model), 0, {"erasers_dropped": dropped, "records_forgotten": 0}
