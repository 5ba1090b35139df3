"""Exact S3T unlearning: deactivate the adapter of each affected slice and every later adapter
of its ordering; no training (see workers.training.s3t.s3t_deactivate)."""

from __future__ import annotations

from typing import Any

from workers.training.base import TrainingRun
from workers.training.s3t import adapter_name, s3t_deactivate
from workers.unlearning.base import ProgressCallback
from workers.unlearning.exact.common import ExactMethod, check_disjoint, retain_dataset_of


class S3TUnlearning(ExactMethod, name="s3t"):
    """``model``: a TrainingRun of the s3t recipe. ``retain`` may be None (nothing is trained);
    when given it must not hold a forgotten record.
    Returns the new TrainingRun; the result's details list the deactivated adapters (to purge),
    what each shard now serves and the shards left without any adapter."""

    def replace(self, run: TrainingRun, forget_keys: list[str], retain: Any, *, device: str,
                progress: ProgressCallback) -> tuple[TrainingRun, int, dict[str, Any]]:
        if retain is not None:  # not needed, but a retain set holding a forgotten record is a bug
            check_disjoint(forget_keys, retain_dataset_of(retain))
        progress("deactivate", 0.0)
        outcome = s3t_deactivate(run, forget_keys)
        progress("deactivate", 1.0)
        return outcome.run, 0, {
            "records_forgotten": len(outcome.forgotten),
            "not_members": outcome.not_members,
            "adapters_deactivated": [adapter_name(a) for a in outcome.deactivated],
            "serving": {str(s): {"ordering": o, "active_adapters": n} for s, (o, n) in sorted(outcome.serving.items())},
            "shards_out": outcome.shards_out,
            # Not what a retrain would give: the served model learned from fewer of the kept records.
            "kept_records": outcome.kept_records,
            "kept_records_served": outcome.kept_records_served,
        }
