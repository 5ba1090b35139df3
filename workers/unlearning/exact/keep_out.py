"""Exact deletion from a keep-out transfer model (Sepahvand et al., arXiv 2405.10425; the recipe is
workers.training.keep_out_transfer).

A non-static record never entered training: the model depends on it only through the auxiliary
examples it selected. Its deletion drops its selection; if every example it selected is still
selected by another record, the training set is the same and so is the model (its weights are
kept as they are, same hash: training is a function of the training set's keys); otherwise the
model is retrained on the new selection. A deleted static record or auxiliary example trained the
model: it leaves the training set (and every selection that named it) and the model is retrained.
Either way every weight of the new model was computed from data without the deleted records.

In: ``model``, the stored TrainingRun (with its ``keep_out_selection``); context ``membership``
(the registry's rows) and ``selection`` (the registry's KeepOutSelection of the version) replace
the stored ones when given; ``retain``, a RecordDataset holding at least the new training set.
Out: the new TrainingRun and ``details``: ``retrained``, ``weights_unchanged``, ``reason`` (for the
report), ``non_static_forgotten``, ``members_forgotten``, ``auxiliary_dropped`` (examples no record
selects any more: the new version excludes them), ``records_forgotten``, ``not_members``,
``records_retained``, ``selections_before`` / ``selections_after``.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable
from typing import Any

from workers.training import RECIPES
from workers.training.base import TrainingRun
from workers.training.keep_out_transfer import keep_out_plan
from workers.unlearning.base import ProgressCallback, UnlearningResult, no_progress
from workers.unlearning.exact.common import (
    ExactMethod,
    check_disjoint,
    retain_dataset_of,
    training_run_of,
)


class KeepOutTransferDeletion(ExactMethod, name="keep_out_transfer"):
    """Drop the deleted records' selections; retrain only when the training set changed."""

    def unlearn(self, model: Any, forget: Iterable[Any], retain: Iterable[Any], *, device: str = "cpu",
                progress: ProgressCallback = no_progress, **context: Any) -> tuple[TrainingRun, UnlearningResult]:
        run = training_run_of(model, context)  # the registry's membership, when given
        selection = context.get("selection")
        if selection is None:
            selection = getattr(model, "keep_out_selection", None)
        if selection is None:
            raise ValueError("a keep-out transfer deletion needs the run's selection (which auxiliary examples each "
                             "non-static record selected): neither the stored run nor the job gave one")
        run = dataclasses.replace(run, keep_out_selection={k: tuple(v) for k, v in selection.items()})
        return super().unlearn(run, forget, retain, device=device, progress=progress)

    def replace(self, run: TrainingRun, forget_keys: list[str], retain: Any, *, device: str,
                progress: ProgressCallback) -> tuple[TrainingRun, int, dict[str, Any]]:
        retain_set = retain_dataset_of(retain)
        check_disjoint(forget_keys, retain_set)
        selection = run.keep_out_selection or {}
        members = [row.record_key for row in run.membership]
        plan = keep_out_plan(selection, members, forget_keys)
        if plan.retrain:
            new_run = RECIPES.get(run.recipe)(run.config).retrain_without(run, forget_keys, retain_set, device=device,
                                                                          progress=progress)
            steps = int(new_run.metrics.get("steps", 0))
        else:  # the same training set: the same model, kept as it is (a copy, so the source stays apart)
            new_run = TrainingRun(run.recipe, run.config, copy.deepcopy(run.model), list(run.membership),
                                  dict(run.metrics), keep_out_selection=plan.selection,
                                  keep_out_scaling=run.keep_out_scaling)
            steps = 0
            progress("unchanged", 1.0)
        return new_run, steps, {
            "recipe": run.recipe,
            "retrained": plan.retrain,
            "weights_unchanged": not plan.retrain,
            "reason": plan.reason,
            "non_static_forgotten": list(plan.non_static_deleted),
            "members_forgotten": list(plan.members_deleted),
            "auxiliary_dropped": list(plan.dropped_auxiliary),
            "records_forgotten": len(plan.non_static_deleted) + len(plan.members_deleted),
            "not_members": list(plan.not_members),
            "records_retained": len(new_run.membership),
            "selections_before": len(selection),
            "selections_after": len(plan.selection),
        }
