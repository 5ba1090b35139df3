"""The exact replay as an audit check: a second computation of an exact deletion's weights.

The replay itself runs on the worker side (:mod:`workers.unlearning.exact.replay`): the audit job,
which did not make the version, rebuilds it from the registry's records and the parent's recorded
clean checkpoints under the recorded environment and compares every tensor bit for bit. This
check turns what it found into a verdict:

* PASS: identical in every tensor and in the records held;
* FAIL: any difference (a tensor, a record the stored version holds that the rebuilt one does
  not, or the reverse). No tolerance: deterministic kernels in the recorded environment give the
  same bits, so a difference is a different computation;
* INCONCLUSIVE: the recorded environment could not be reproduced here (torch version, device
  type or card), so nothing was compared: never a tolerance match;
* NOT_APPLICABLE: no replay ran (none for this method, or one that runs on request only); the
  exact verdict then rests on the platform's execution record, and says so.

What a replay cannot show, printed with every result: a bug shared by both computations (the
recipe's training step), and a wrong record table in the registry (both start from it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from audits.checks.registry import CheckSpec, register_check
from audits.checks.result import CheckResult, Verdict, fmt

CANNOT_SHOW = ("A replay cannot show a bug shared by both computations (the recipe's training step) "
               "or a wrong record table in the registry, which both start from.")


@dataclass(frozen=True, kw_only=True)
class ReplayResult(CheckResult):
    """The replay's verdict with what it compared and where it ran."""

    method: str
    ran: bool
    tensors_compared: int
    differing_count: int
    differing: tuple[str, ...]
    records_only_stored: int
    records_only_replayed: int
    max_abs_difference: float | None
    recorded_environment: dict[str, Any]
    replay_environment: dict[str, Any]
    seconds: float
    cost: str
    cannot_show: str = CANNOT_SHOW


# Role "replay": decides the exact class together with the lineage proof (see verdict._exact).
# No inputs adapter: the audit runner runs the replay itself and hands its outcome here.
@register_check(CheckSpec(name="exact_replay", role="replay"))
def exact_replay(*, outcome: Mapping[str, Any]) -> ReplayResult:
    """Verdict on a replay outcome (``ReplayOutcome.to_dict()``: ``method``, ``ran``,
    ``not_run``, ``environment_problem``, the two environments, ``comparison``, ``seconds``,
    ``cost``)."""
    comparison = dict(outcome.get("comparison") or {})
    method = str(outcome.get("method", ""))
    rule = (
        f"Replay of the {method} deletion by the audit job: the retain set from the registry, the "
        "affected shards or slices recomputed from the parent's recorded checkpoints and seeds under "
        "the recorded environment, every tensor compared bit for bit (no tolerance) and the records "
        "held compared. PASS if identical; FAIL on any difference; INCONCLUSIVE if the recorded "
        "environment cannot be reproduced; NOT_APPLICABLE if no replay ran. " + CANNOT_SHOW
    )
    differing = tuple(comparison.get("differing", ()))
    only_stored = int(comparison.get("records_only_stored", 0))
    only_replayed = int(comparison.get("records_only_replayed", 0))
    if not outcome.get("ran"):
        reason = str(outcome.get("not_run") or "no replay ran")
        verdict = Verdict.INCONCLUSIVE if outcome.get("environment_problem") else Verdict.NOT_APPLICABLE
    elif comparison.get("identical"):
        verdict = Verdict.PASS
        reason = (f"The rebuilt version is identical to the stored one: {comparison.get('tensors_compared', 0)} "
                  "tensors bit for bit and the same records held.")
    else:
        verdict = Verdict.FAIL
        parts = []
        if comparison.get("differing_count"):
            parts.append(f"{comparison['differing_count']} of {comparison.get('tensors_compared', 0)} tensors "
                         f"differ (largest difference {fmt(comparison.get('max_abs_difference'))}; e.g. "
                         + ", ".join(differing[:3]) + ")")
        if comparison.get("missing"):
            parts.append(f"tensors present on one side only: {', '.join(comparison['missing'][:3])}")
        if only_stored:
            parts.append(f"the stored version holds {only_stored} record(s) the rebuilt one does not")
        if only_replayed:
            parts.append(f"the rebuilt version holds {only_replayed} record(s) the stored one does not")
        reason = ("The stored version is not what the deletion should have produced: " + "; ".join(parts) + ".")
    return ReplayResult(
        check="exact_replay", verdict=verdict, rule=rule, reason=reason, method=method,
        ran=bool(outcome.get("ran")), tensors_compared=int(comparison.get("tensors_compared", 0)),
        differing_count=int(comparison.get("differing_count", 0)), differing=differing,
        records_only_stored=only_stored, records_only_replayed=only_replayed,
        max_abs_difference=comparison.get("max_abs_difference"),
        recorded_environment=dict(outcome.get("recorded_environment") or {}),
        replay_environment=dict(outcome.get("replay_environment") or {}),
        seconds=float(outcome.get("seconds") or 0.0), cost=str(outcome.get("cost") or ""),
    )
