"""Exact S3T unlearning that learns from all the kept data again: the adapters whose slices held a
forgotten record are switched off and trained again on the kept records of their slices, from the
last clean adapter of each ordering (see workers.training.s3t.s3t_retrain). The planner offers it in
place of ``s3t`` when deactivation alone would leave the served model below the kept-data floor the
model's ML engineer set."""

from __future__ import annotations

from typing import Any

from workers.training.base import TrainingRun
from workers.training.s3t import adapter_name, s3t_retrain
from workers.unlearning.base import ProgressCallback
from workers.unlearning.exact.common import ExactMethod, check_disjoint, retain_dataset_of


class S3TRetrain(ExactMethod, name="s3t_retrain"):
    """``model``: a TrainingRun of the s3t recipe (its membership, or ``context["membership"]``,
    says which slice each record is in: the registry's, so that records an earlier deactivation
    stopped serving are learned from again). ``retain``: the kept records as a RecordDataset (or a
    DataLoader over one); it must hold every kept member and no forgotten record.
    Returns the new TrainingRun; the result's details list the adapters switched off by this
    deletion (to purge), those trained again, and the kept records (all of them learned from)."""

    def replace(self, run: TrainingRun, forget_keys: list[str], retain: Any, *, device: str,
                progress: ProgressCallback) -> tuple[TrainingRun, int, dict[str, Any]]:
        retain_set = retain_dataset_of(retain)
        check_disjoint(forget_keys, retain_set)
        outcome = s3t_retrain(run, forget_keys, retain_set, device=device, progress=progress)
        return outcome.run, outcome.steps, {
            "records_forgotten": len(outcome.forgotten),
            "not_members": outcome.not_members,
            "adapters_deactivated": [adapter_name(a) for a in outcome.deactivated],
            "adapters_retrained": [adapter_name(a) for a in outcome.retrained],
            "serving": {str(s): {"ordering": o, "active_adapters": n}
                        for s, (o, n) in sorted(outcome.run.model.active.items())},
            # The served model learns from every kept record again: what a retrain would use.
            "kept_records": outcome.kept_records,
            "kept_records_served": outcome.kept_records,
        }
