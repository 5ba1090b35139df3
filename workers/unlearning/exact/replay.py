"""Independent replay of an exact deletion: rebuild the new version from the registry's records and
compare it with the stored one bit for bit.

An exact method's claim is that the weights it stored are the weights training without the
records gives. The unlearning job's own bookkeeping cannot show that (it writes what it believes
it did), so the audit job, which did not make the version, rebuilds it:

* the retain set comes from the registry's membership rows (what the run trained on, minus the
  records every version of the chain excluded, minus this request's), not from the producing
  job's manifest;
* the affected shards or slices are recomputed from the parent's recorded clean checkpoints and
  the recipe's seeds, under the recorded environment (torch version, device type, threads;
  deterministic kernels, which the recipes switch on);
* every tensor the version serves or a later deletion resumes from is compared exactly
  (:meth:`TrainingRecipe.comparable_state`), and so is the set of records it holds.

A replay is its own short implementation of each method's rule on the recipe's training
primitives, so a bug in a method's bookkeeping (a record left out of the forget set, a shard not
rerun) shows as a difference; a bug in the shared primitive (``train_shard``, the recipe's
``train``) or a wrong record table in the registry does not, and the report says so.

One replay per method, registered in :data:`REPLAYS`; ``on_request`` replays (a full retrain:
it costs one more training) run only when asked.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from foundation.registry import Registry
from workers.datasets.base import RecordDataset
from workers.training import RECIPES
from workers.training.base import TrainingRun
from workers.training.device import environment_difference, recorded_threads, training_environment
from workers.training.membership import MembershipRow
from workers.unlearning.catalogue import METHOD_SPECS

# How many differing tensor names a comparison lists (the count is always given).
DIFFERENCES_LISTED = 10


@dataclass(frozen=True)
class ReplayInputs:
    """What a replay starts from. ``source``: the parent run as stored (its checkpoints and
    adapters are the recorded clean states); ``registry_membership``: the parent's membership as
    the registry holds it (records, shard, slice); ``forget_keys``: this request's records;
    ``retain``: the registry's retain set as data (the records the new version must hold)."""

    source: TrainingRun
    registry_membership: tuple[MembershipRow, ...]
    forget_keys: frozenset[str]
    retain: RecordDataset


@dataclass(frozen=True)
class ReplaySpec:
    """One method's replay: ``rebuild`` returns the run the method should have produced. When it
    runs (every audit, or on request) and what it costs are declared with the method, in
    :mod:`workers.unlearning.catalogue` (``MethodSpec.replay``, ``replay_cost``)."""

    method: str
    rebuild: Callable[[ReplayInputs, str], TrainingRun]

    @property
    def on_request(self) -> bool:
        return METHOD_SPECS.get(self.method).replay == "on request"

    @property
    def cost(self) -> str:
        return METHOD_SPECS.get(self.method).replay_cost


REPLAYS: Registry[ReplaySpec] = Registry("exact replay")


def register_replay(spec: ReplaySpec) -> ReplaySpec:
    REPLAYS.register(spec.method)(spec)
    return spec


@dataclass(frozen=True)
class WeightComparison:
    """Two runs compared tensor by tensor and record by record."""

    identical: bool
    tensors_compared: int
    differing: tuple[str, ...]  # the first DIFFERENCES_LISTED names
    differing_count: int
    missing: tuple[str, ...]  # tensors the replay has and the stored version lacks, or the reverse
    max_abs_difference: float
    records_only_stored: int  # records the stored version holds that the replay does not
    records_only_replayed: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def compare_runs(replayed: TrainingRun, stored: TrainingRun) -> WeightComparison:
    """Every comparable tensor of the two runs (same names, shapes, dtypes and bits) and their
    record sets. Bit for bit: ``torch.equal`` on the same dtype, no tolerance."""
    recipe = RECIPES.get(stored.recipe)
    if replayed.recipe != stored.recipe:
        raise ValueError(f"cannot compare a {replayed.recipe} run with a {stored.recipe} run")
    left, right = recipe.comparable_state(replayed), recipe.comparable_state(stored)
    missing = tuple(sorted(set(left) ^ set(right)))
    differing, worst = [], 0.0
    for name in sorted(set(left) & set(right)):
        a, b = left[name], right[name]
        if a.dtype != b.dtype or a.shape != b.shape:
            differing.append(name)
            worst = float("inf")
        elif not torch.equal(a, b):
            differing.append(name)
            if a.is_floating_point():
                worst = max(worst, float((a.double() - b.double()).abs().max()))
    replayed_keys = {row.record_key for row in replayed.membership}
    stored_keys = {row.record_key for row in stored.membership}
    only_stored, only_replayed = len(stored_keys - replayed_keys), len(replayed_keys - stored_keys)
    identical = not differing and not missing and not only_stored and not only_replayed
    return WeightComparison(
        identical=identical, tensors_compared=len(set(left) & set(right)),
        differing=tuple(differing[:DIFFERENCES_LISTED]), differing_count=len(differing), missing=missing[:DIFFERENCES_LISTED],
        max_abs_difference=worst, records_only_stored=only_stored, records_only_replayed=only_replayed,
    )


@dataclass(frozen=True)
class ReplayOutcome:
    """What the replay found, as plain data for the audit check (:mod:`audits.checks.replay`).
    ``ran`` is False when it did not run: ``not_run`` says why (an environment it cannot
    reproduce, a replay only on request, no replay for the method)."""

    method: str
    ran: bool
    not_run: str = ""
    environment_problem: str = ""
    recorded_environment: dict[str, Any] = field(default_factory=dict)
    replay_environment: dict[str, Any] = field(default_factory=dict)
    comparison: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    cost: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def replay_exact(*, method: str, inputs: ReplayInputs, stored: TrainingRun, recorded_environment: dict | None,
                 device: str, requested: bool = False) -> ReplayOutcome:
    """Rebuild ``method``'s result from ``inputs`` under the recorded environment and compare it
    with ``stored``. Runs nothing when the method has no replay, when its replay runs only on
    request and none was made, or when this process cannot reproduce the recorded environment
    (torch version, device type and card): those outcomes say why, and the audit reads them as
    "no independent evidence" (an environment problem is INCONCLUSIVE, never a tolerance match)."""
    if method not in REPLAYS:
        return ReplayOutcome(method=method, ran=False, not_run=f"no replay is registered for {method!r}")
    spec = REPLAYS.get(method)
    if spec.on_request and not requested:
        return ReplayOutcome(method=method, ran=False, cost=spec.cost,
                             not_run=f"a replay of {method!r} runs on request only ({spec.cost})")
    recorded = dict(recorded_environment or {})
    problem = environment_difference(recorded, device)
    if problem:
        return ReplayOutcome(method=method, ran=False, environment_problem=problem, recorded_environment=recorded,
                             replay_environment=training_environment(device), cost=spec.cost,
                             not_run=f"the recorded environment cannot be reproduced here: {problem}")
    started = time.perf_counter()
    with recorded_threads(recorded.get("threads")):
        here = training_environment(device)
        replayed = spec.rebuild(inputs, device)
    comparison = compare_runs(replayed, stored)
    return ReplayOutcome(method=method, ran=True, recorded_environment=recorded, replay_environment=here,
                         comparison=comparison.to_dict(), seconds=round(time.perf_counter() - started, 3),
                         cost=spec.cost)


# ---------------------------------------------------------------- the replays


def _registry_rows(inputs: ReplayInputs) -> dict[str, MembershipRow]:
    return {row.record_key: row for row in inputs.registry_membership}


def _first_affected(inputs: ReplayInputs, slices: int) -> dict[int, int]:
    """Shard -> the first slice a forgotten record reached, from the registry's rows."""
    first: dict[int, int] = {}
    rows = _registry_rows(inputs)
    for key in inputs.forget_keys & rows.keys():
        row = rows[key]
        first[row.shard] = min(first.get(row.shard, slices), row.slice)
    return first


def _replay_sisa(inputs: ReplayInputs, device: str) -> TrainingRun:
    """Each shard a forgotten record reached, retrained from the parent's checkpoint before that
    slice on the registry's retain records of the shard; the other shards as the parent had them."""
    from workers.training.membership import MembershipSink
    from workers.training.sisa import SisaEnsemble, SisaRecipe

    source = inputs.source
    recipe = SisaRecipe(source.config)
    slices = recipe.config.slices
    parent: SisaEnsemble = source.model  # type: ignore[assignment]
    first = _first_affected(inputs, slices)
    groups = recipe.partition(inputs.retain.record_keys)
    members, checkpoints = list(parent.members), dict(parent.checkpoints)
    sink = MembershipSink()
    for shard, start in sorted(first.items()):
        resume = parent.checkpoints[(shard, start - 1)] if start > 0 else None
        members[shard], rerun, _ = recipe.train_shard(inputs.retain, groups, shard, start_slice=start, resume=resume,
                                                      sink=sink, device=torch.device(device), progress=_quiet)
        checkpoints.update(rerun)
    sizes = [sum(len(groups.get((shard, k), ())) for k in range(slices)) for shard in range(recipe.config.shards)]
    return TrainingRun(source.recipe, source.config, SisaEnsemble(recipe.config, members, checkpoints, sizes).eval(),
                       _held(inputs), source.metrics)


def _replay_s3t(inputs: ReplayInputs, device: str) -> TrainingRun:
    """The adapters whose training slices hold no forgotten record of their shard, and per affected
    shard the ordering with the longest run of such adapters from its start (the lowest ordering
    on a tie); the other shards serve what the parent served. No training."""
    from workers.training.s3t import S3TEnsemble

    source = inputs.source
    parent: S3TEnsemble = source.model  # type: ignore[assignment]
    rows = _registry_rows(inputs)
    tainted: dict[int, set[int]] = {}
    for key in inputs.forget_keys & rows.keys():
        tainted.setdefault(rows[key].shard, set()).add(rows[key].slice)
    adapters = {(shard, o, p): weights for (shard, o, p), weights in parent.adapters.items()
                if not tainted.get(shard, set()) & set(parent.orderings[o][: p + 1])}
    active = dict(parent.active)
    for shard in tainted:
        lengths = []
        for o in range(len(parent.orderings)):
            length = 0
            while (shard, o, length) in adapters:
                length += 1
            lengths.append(length)
        best = max(lengths)
        active[shard] = (lengths.index(best), best)
    model = S3TEnsemble(parent.config, parent.base_state, adapters, active).eval()
    # The records the version holds: those of a slice some kept adapter trained on.
    learned = {(shard, k) for shard, o, p in adapters for k in parent.orderings[o][: p + 1]}
    held = [row for row in _held(inputs) if (row.shard, row.slice) in learned]
    return TrainingRun(source.recipe, source.config, model, held, source.metrics)


def _replay_sklearn_sisa(inputs: ReplayInputs, device: str) -> TrainingRun:
    """Each shard the registry places a forgotten record in, refit on the registry's retain
    records of that shard; the other shards' estimators as the parent had them. (Estimators have
    no checkpoints: a shard is refit from scratch.)"""
    from workers.training.membership import MembershipSink
    from workers.training.sklearn_estimators import EstimatorClassifier, SklearnSisaRecipe

    source = inputs.source
    recipe = SklearnSisaRecipe(source.config)
    rows = _registry_rows(inputs)
    affected = sorted({rows[key].shard for key in inputs.forget_keys & rows.keys()})
    held = _held(inputs)
    estimators = list(source.model.estimators)
    sink = MembershipSink()
    for shard in affected:
        keys = {row.record_key for row in held if row.shard == shard}
        estimators[shard] = recipe.fit_shard(inputs.retain, keys, shard, sink)
    return TrainingRun(source.recipe, source.config, EstimatorClassifier(estimators, recipe.config.num_classes),
                       held, source.metrics)


def _replay_retrain(inputs: ReplayInputs, device: str) -> TrainingRun:
    """The recipe trained from scratch on the registry's retain set. A keep-out transfer run
    (workers.training.keep_out_transfer) is trained on the static records and the selection its
    deletion plan leaves, from the registry's membership and the parent's stored selection: for a
    deletion that kept the weights, this retrain shows they are what training without the record gives."""
    recipe = RECIPES.get(inputs.source.recipe)(inputs.source.config)
    if inputs.source.keep_out_selection is not None:
        source = dataclasses.replace(inputs.source, membership=list(inputs.registry_membership))
        return recipe.retrain_without(source, sorted(inputs.forget_keys), inputs.retain, device=device)
    return recipe.train(inputs.retain, device=device)


def _held(inputs: ReplayInputs) -> list[MembershipRow]:
    keep = set(inputs.retain.record_keys)
    return [row for row in inputs.registry_membership if row.record_key in keep]


def _quiet(stage: str, fraction: float) -> None:
    return None


register_replay(ReplaySpec(method="sisa", rebuild=_replay_sisa))
register_replay(ReplaySpec(method="s3t", rebuild=_replay_s3t))
register_replay(ReplaySpec(method="retrain", rebuild=_replay_retrain))
register_replay(ReplaySpec(method="keep_out_transfer", rebuild=_replay_retrain))
# s3t_retrain's claim is that its result equals S3T trained from scratch on the kept records: the
# replay checks exactly that (a full S3T training, cheap for the adapter models S3T is used with).
register_replay(ReplaySpec(method="s3t_retrain", rebuild=_replay_retrain))
register_replay(ReplaySpec(method="sklearn_sisa", rebuild=_replay_sklearn_sisa))


def retain_keys(registry_membership: Iterable[MembershipRow], forget_keys: Iterable[str]) -> list[str]:
    """The registry's retain set: every record of the parent's membership but the forgotten ones."""
    forget = set(forget_keys)
    return sorted({row.record_key for row in registry_membership} - forget)
