"""A derived child re-derived from its parent's unlearned version: ``redistill`` (a distilled child
is distilled again, from the new parent, on its transfer set without the forgotten records) and
``refinetune`` (a fine-tuned child is fine-tuned again from the new parent's weights on its own
records without the forgotten ones). Both run the child's own recipe and configuration from
scratch with the parent replaced; nothing of the child's old weights is read.

Every weight of the result was computed from the new parent and from records without the forgotten
ones, so the result is exact as far as the new parent is: the unlearning job caps the class at the
parent's (workers.unlearning.catalogue.weakest_guarantee), which this module cannot see.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from workers.training import RECIPES
from workers.training.base import TrainingRun
from workers.training.device import training_environment
from workers.unlearning.base import (
    ConfigError,
    MethodConfig,
    ProgressCallback,
    UnlearningMethod,
    UnlearningResult,
    no_progress,
)
from workers.unlearning.exact.common import (
    check_disjoint,
    record_keys_of,
    retain_dataset_of,
    training_run_of,
)


@dataclass
class RederiveConfig(MethodConfig):
    """``parent``: the version the child was derived from as the plan found it
    (``{"version_id": ..., "model": ..., "version": ..., "kind": ...}``); the job re-derives from that
    version's newest unlearned version."""

    parent: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        super().validate()
        if not isinstance(self.parent, dict):
            raise ConfigError("RederiveConfig.parent must be an object")


class RederiveMethod(UnlearningMethod):
    """``model``: the child's stored TrainingRun (``context["membership"]`` may replace its
    membership). ``forget``: the records to forget that the child trained on itself (may be empty:
    a child that holds them only through its parent). ``retain``: its own records without them (a
    RecordDataset). Context: ``parent_model`` (the parent's unlearned ``nn.Module``) and
    ``parent`` (``{"version_id", "artifact_sha256"}`` of that version, written into the new run's
    configuration). Returns the new TrainingRun."""

    config_class = RederiveConfig

    def unlearn(self, model: Any, forget: Any, retain: Any, *, device: str = "cpu",
                progress: ProgressCallback = no_progress, **context: Any) -> tuple[TrainingRun, UnlearningResult]:
        started = time.perf_counter()
        for key in ("parent_model", "parent"):
            if context.get(key) is None:
                raise ValueError(f"{self.name} needs context[{key!r}]: the parent's unlearned version")
        run = training_run_of(model, context)
        forget_keys = list(dict.fromkeys(record_keys_of(forget)))
        retain_set = retain_dataset_of(retain)
        check_disjoint(forget_keys, retain_set)
        config = {**run.config, "parent": dict(context["parent"])}
        new_run = RECIPES.get(run.recipe)(config, parent=context["parent_model"]).train(
            retain_set, device=device, progress=progress)
        members = {row.record_key for row in run.membership}
        return new_run, self._result(
            started, device, steps=int(new_run.metrics.get("steps", 0)), environment=training_environment(device),
            recipe=run.recipe, parent=dict(context["parent"]),
            records_forgotten=len(set(forget_keys) & members), records_retained=len(new_run.membership))


class Redistill(RederiveMethod, name="redistill"):
    """Distil the child again from its parent's unlearned version (its recipe: distill)."""


class Refinetune(RederiveMethod, name="refinetune"):
    """Fine-tune the child again from its parent's unlearned version (its recipe: finetune)."""
