"""Exact SISA unlearning: retrain each affected shard from the checkpoint before the first
slice in which a forgotten record reached it (see workers.training.sisa.sisa_retrain)."""

from __future__ import annotations

from typing import Any

from workers.training.base import TrainingRun
from workers.training.sisa import sisa_retrain
from workers.unlearning.base import ProgressCallback
from workers.unlearning.exact.common import ExactMethod, retain_dataset_of


class SisaUnlearning(ExactMethod, name="sisa"):
    """``model``: a TrainingRun of the sisa recipe (its ensemble carries the checkpoints; its
    membership, or ``context["membership"]``, says where each record trained). ``retain``: the
    original training set without the forget set. Returns the new TrainingRun; the result's
    details name the shards retrained (shard -> first slice rerun), the number of slices rerun
    and the superseded checkpoints (to purge from the parent)."""

    def replace(self, run: TrainingRun, forget_keys: list[str], retain: Any, *, device: str,
                progress: ProgressCallback) -> tuple[TrainingRun, int, dict[str, Any]]:
        report = sisa_retrain(run, forget_keys, retain_dataset_of(retain), device=device, progress=progress)
        return report.run, report.steps, {
            "records_forgotten": len(report.forgotten),
            "not_members": report.not_members,
            "shards_retrained": {str(s): k for s, k in sorted(report.retrained.items())},
            "slices_retrained": report.slices_retrained,
            "superseded_checkpoints": [list(c) for c in report.superseded_checkpoints],
            "shards_total": run.config["shards"],
        }
