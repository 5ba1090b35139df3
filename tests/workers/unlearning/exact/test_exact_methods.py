"""Exact unlearning: proofs by recomputation.

* sisa: the unlearned ensemble's weights equal (atol 1e-6) those of the same recipe trained from
  scratch without the forgotten records; only affected shards are retrained, from the checkpoint
  before the first affected slice;
* s3t: no adapter left active was trained on a slice that held a forgotten record; the kept
  adapters equal those of an S3T run trained from scratch without the record, and the new
  model's outputs equal those of a model composed from the remaining adapters alone;
* s3t_retrain: the adapters s3t would switch off are trained again on the kept records of their
  slices; they equal (bit for bit) those of an S3T run trained from scratch on the kept records;
* retrain: the recipe again, without the forget set;
* sklearn_sisa: only the shards that held a forgotten record are refit, and the ensemble equals,
  bit for bit, the recipe fitted from scratch without the record.

Plus one harness (``CASES``) every exact method joins: registry and guarantee class, membership
without the forgotten records, refusals, the original left untouched.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.workers.training.data import (
    MLP,
    SCALER_AND_LOGISTIC_REGRESSION,
    SKLEARN_ARCHITECTURE,
    blobs,
    state_dicts_close,
)
from workers.artifacts import ArtifactStore
from workers.training import RECIPES, load_run, save_run
from workers.training.base import TrainingRun
from workers.training.s3t import S3TEnsemble
from workers.unlearning.base import METHODS, JobCancelled
from workers.unlearning.catalogue import TRAINING_RUN, method_specs
from workers.unlearning.methods import load_all_methods

load_all_methods()

SISA = {"architecture": MLP, "epochs": 2, "batch_size": 4, "lr": 0.02, "shards": 3, "slices": 3}
S3T = {"architecture": MLP, "epochs": 2, "batch_size": 4, "lr": 0.05, "shards": 2, "slices": 3,
       "orderings": 2, "lora_rank": 2}
PLAIN = {"architecture": MLP, "epochs": 2, "batch_size": 8, "lr": 0.02}
SKLEARN = {"architecture": SKLEARN_ARCHITECTURE, "estimator": SCALER_AND_LOGISTIC_REGRESSION}
SKLEARN_SISA = {**SKLEARN, "shards": 3}
# rec-000..009 static, rec-010..039 the auxiliary pool, rec-040..071 non-static (in no membership).
KEEP_OUT = {**PLAIN, "static_records": r"rec-00\d", "auxiliary_records": r"rec-0[1-3]\d"}


@dataclass(frozen=True)
class ExactCase:
    method: str
    recipe: str
    config: dict[str, Any] = field(default_factory=dict)


CASES = [
    ExactCase("retrain", "plain", PLAIN),
    ExactCase("retrain", "sisa", SISA),
    ExactCase("sisa", "sisa", SISA),
    ExactCase("s3t", "s3t", S3T),
    ExactCase("s3t_retrain", "s3t", S3T),
    ExactCase("retrain", "sklearn", SKLEARN),
    ExactCase("sklearn_sisa", "sklearn_sisa", SKLEARN_SISA),
    ExactCase("keep_out_transfer", "keep_out_transfer", KEEP_OUT),
    ExactCase("retrain", "keep_out_transfer", KEEP_OUT),
]
CASE_IDS = [f"{c.method}-{c.recipe}" for c in CASES]


@pytest.fixture(scope="module")
def train_set():
    return blobs(72)


_RUNS: dict[str, TrainingRun] = {}


def trained(recipe: str, config: dict, dataset) -> TrainingRun:
    """Training runs are cached per recipe/config on the full training set (module scope)."""
    key = f"{recipe}:{sorted(config.items())!r}:{len(dataset)}"
    if key not in _RUNS:
        _RUNS[key] = RECIPES.get(recipe)(config).train(dataset)
    return _RUNS[key]


def row_of(run: TrainingRun, key: str):
    return next(row for row in run.membership if row.record_key == key)


def key_in(run: TrainingRun, *, slice: int, shard: int | None = None) -> str:
    return next(r.record_key for r in run.membership
                if r.slice == slice and (shard is None or r.shard == shard))


def sample_keys(run: TrainingRun, count: int) -> list[str]:
    """``count`` member keys from the latest slices first (every recipe has slice 0)."""
    rows = sorted(run.membership, key=lambda r: (-r.slice, r.shard, r.position))
    return [row.record_key for row in rows[:count]]


def checkpoint_tensors(run: TrainingRun) -> dict[str, torch.Tensor]:
    """Every tensor a run's model carries besides its weights (SISA checkpoints, S3T adapters)."""
    tensors: dict[str, torch.Tensor] = {}
    for (shard, slice_), checkpoint in getattr(run.model, "checkpoints", {}).items():
        tensors.update({f"{shard}/{slice_}/w/{k}": v for k, v in checkpoint.weights.items()})
        for index, state in checkpoint.optimizer["state"].items():
            tensors.update({f"{shard}/{slice_}/o/{index}/{k}": v for k, v in state.items()})
    for adapter, weights in getattr(run.model, "adapters", {}).items():
        tensors.update({f"{adapter}/{k}": v for k, v in weights.items()})
    return {k: v.clone() for k, v in tensors.items()}


# ---------------------------------------------------------------- the shared harness


def test_every_exact_method_has_a_case_on_the_recipe_the_planner_picks_it_for() -> None:
    # Methods that re-derive a child from its parent (redistill, refinetune) take a parent model and
    # may have nothing of their own to forget: their table is test_rederive.py. eraser_drop keeps the
    # weights and takes a concept eraser off, with nothing to forget in them: test_eraser_drop.py.
    declared = [spec for spec in method_specs(kind=TRAINING_RUN) if not spec.rederives and spec.name != "eraser_drop"]
    assert {spec.name for spec in declared} == {case.method for case in CASES}
    for spec in declared:
        if spec.recipe is not None:
            assert (spec.name, spec.recipe) in {(case.method, case.recipe) for case in CASES}


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_method_is_registered_as_exact(case: ExactCase) -> None:
    assert METHODS.get(case.method).guarantee_class == "exact"


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_membership_excludes_the_forgotten_and_the_original_is_untouched(case: ExactCase, train_set) -> None:
    run = trained(case.recipe, case.config, train_set)
    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    carried_before = checkpoint_tensors(run)
    membership_before = list(run.membership)
    forget = sample_keys(run, 2)
    new, result = METHODS.get(case.method)().unlearn(run, forget, train_set.without(forget))
    assert isinstance(new, TrainingRun) and new.model is not run.model
    keys = {row.record_key for row in new.membership}
    assert not keys & set(forget)
    assert keys <= set(train_set.record_keys) - set(forget)
    # s3t also drops the slices it can no longer serve; keep_out_transfer trains on the static records and
    # the selected auxiliary examples only (its own tests: tests/workers/training/test_keep_out_transfer.py)
    if case.method != "s3t" and case.recipe != "keep_out_transfer":
        assert keys == set(train_set.record_keys) - set(forget)
    assert result.guarantee_class == "exact" and result.method == case.method
    assert result.details["records_forgotten"] == 2 and result.details["not_members"] == []
    assert run.membership == membership_before
    assert all(torch.equal(before[k], v) for k, v in run.model.state_dict().items())
    carried_after = checkpoint_tensors(run)
    assert carried_after.keys() == carried_before.keys()
    assert all(torch.equal(carried_before[k], v) for k, v in carried_after.items())


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_unknown_records_are_reported_as_not_members(case: ExactCase, train_set) -> None:
    run = trained(case.recipe, case.config, train_set)
    forget = sample_keys(run, 1) + ["never-trained"]
    _, result = METHODS.get(case.method)().unlearn(run, forget, train_set.without(forget))
    assert result.details["not_members"] == ["never-trained"]


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_refuses_forgetting_what_the_retain_set_still_holds(case: ExactCase, train_set) -> None:
    run = trained(case.recipe, case.config, train_set)
    with pytest.raises(ValueError, match="retain set"):
        METHODS.get(case.method)().unlearn(run, [key_in(run, slice=0)], train_set)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_refuses_an_empty_forget_set_and_a_bare_module(case: ExactCase, train_set) -> None:
    run = trained(case.recipe, case.config, train_set)
    with pytest.raises(ValueError, match="empty"):
        METHODS.get(case.method)().unlearn(run, [], train_set)
    with pytest.raises(TypeError, match="TrainingRun"):
        METHODS.get(case.method)().unlearn(run.model, ["rec-000"], train_set.without(["rec-000"]))


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_the_new_run_stores_and_loads(case: ExactCase, train_set, tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    run = trained(case.recipe, case.config, train_set)
    parent = save_run(store, run)
    forget = sample_keys(run, 1)
    new, _ = METHODS.get(case.method)().unlearn(load_run(store, parent.artifact_id), forget,
                                                 train_set.without(forget))
    child = save_run(store, new, parent=parent.artifact_id)
    loaded = load_run(store, child.artifact_id)
    assert store.manifest(child.artifact_id).parent == parent.artifact_id
    assert loaded.membership == new.membership
    inputs = torch.stack([train_set[i][1] for i in range(8)])
    with torch.no_grad():
        assert torch.allclose(loaded.model(inputs), new.model(inputs), atol=1e-6)


# ---------------------------------------------------------------- sisa: proof by recomputation


@pytest.mark.parametrize("slice_", [0, 1, 2])
def test_sisa_unlearning_equals_training_from_scratch_without_the_record(slice_: int, train_set) -> None:
    run = trained("sisa", SISA, train_set)
    forgotten = key_in(run, slice=slice_)
    shard = row_of(run, forgotten).shard
    new, result = METHODS.get("sisa")().unlearn(run, [forgotten], train_set.without([forgotten]))
    scratch = RECIPES.get("sisa")(SISA).train(train_set.without([forgotten]))
    for s in range(SISA["shards"]):
        assert state_dicts_close(new.model.members[s], scratch.model.members[s], atol=1e-6), s
    # Not vacuous: the affected shard really changed.
    assert not state_dicts_close(new.model.members[shard], run.model.members[shard])
    assert result.details["shards_retrained"] == {str(shard): slice_}
    assert result.details["slices_retrained"] == SISA["slices"] - slice_
    assert sorted(new.membership) == sorted(scratch.membership)


def test_sisa_many_deletions_in_one_shard_cost_one_retrain(train_set) -> None:
    run = trained("sisa", SISA, train_set)
    forget = [key_in(run, shard=1, slice=k) for k in (2, 1, 2)]
    forget = list(dict.fromkeys(forget + [key_in(run, shard=1, slice=1)]))
    new, result = METHODS.get("sisa")().unlearn(run, forget, train_set.without(forget))
    assert result.details["shards_retrained"] == {"1": 1}
    assert result.details["slices_retrained"] == 2
    assert result.details["superseded_checkpoints"] == [[1, 1], [1, 2]]
    for s in (0, 2):  # untouched shards keep their very objects' weights
        assert state_dicts_close(new.model.members[s], run.model.members[s], atol=0.0)
    scratch = RECIPES.get("sisa")(SISA).train(train_set.without(forget))
    assert state_dicts_close(new.model.members[1], scratch.model.members[1], atol=1e-6)


def test_sisa_deletions_in_sequence_equal_one_training_without_both(train_set) -> None:
    run = trained("sisa", SISA, train_set)
    first, second = key_in(run, slice=2, shard=0), key_in(run, slice=1, shard=2)
    once, _ = METHODS.get("sisa")().unlearn(run, [first], train_set.without([first]))
    twice, _ = METHODS.get("sisa")().unlearn(once, [second], train_set.without([first, second]))
    scratch = RECIPES.get("sisa")(SISA).train(train_set.without([first, second]))
    assert state_dicts_close(twice.model, scratch.model, atol=1e-6)


def test_sisa_from_the_store_is_exact_and_purging_the_parent_removes_only_superseded_checkpoints(
    train_set, tmp_path: Path,
) -> None:
    store = ArtifactStore(tmp_path)
    parent = save_run(store, trained("sisa", SISA, train_set))
    run = load_run(store, parent.artifact_id)
    forgotten = key_in(run, slice=1, shard=0)
    new, result = METHODS.get("sisa")().unlearn(run, [forgotten], train_set.without([forgotten]))
    scratch = RECIPES.get("sisa")(SISA).train(train_set.without([forgotten]))
    assert state_dicts_close(new.model, scratch.model, atol=1e-6)

    save_run(store, new, parent=parent.artifact_id)
    parts = store.manifest(parent.artifact_id).parts
    report = store.purge(parent.artifact_id)
    removed = set(report.artifact_ids)
    assert removed == {parent.artifact_id, parts["shard0/slice1"], parts["shard0/slice2"]}
    assert parts["shard0/slice0"] in report.kept_shared and store.exists(parts["shard1/slice2"])
    assert result.details["superseded_checkpoints"] == [[0, 1], [0, 2]]


def test_sisa_unlearning_reports_progress_and_can_be_cancelled(train_set) -> None:
    run = trained("sisa", SISA, train_set)
    forget = [key_in(run, slice=0)]
    seen: list[float] = []
    METHODS.get("sisa")().unlearn(run, forget, train_set.without(forget),
                                  progress=lambda stage, fraction: seen.append(fraction))
    assert seen and seen[-1] == pytest.approx(1.0)

    def cancel(stage: str, fraction: float) -> None:
        raise JobCancelled(stage)

    with pytest.raises(JobCancelled):
        METHODS.get("sisa")().unlearn(run, forget, train_set.without(forget), progress=cancel)


def test_sisa_uses_the_membership_given_in_context(train_set) -> None:
    run = trained("sisa", SISA, train_set)
    forgotten = key_in(run, slice=2, shard=0)
    # The database says the record first reached shard 0 at slice 1 (say a loader yielded it
    # early); the method trusts the lineage it is given and reruns from slice 1.
    membership = [row.to_dict() | ({"slice": 1} if row.record_key == forgotten else {})
                  for row in run.membership]
    _, result = METHODS.get("sisa")().unlearn(run, [forgotten], train_set.without([forgotten]),
                                              membership=membership)
    assert result.details["shards_retrained"] == {"0": 1}


# ---------------------------------------------------------------- s3t


def test_s3t_no_active_adapter_saw_the_record_and_kept_adapters_equal_a_clean_training(train_set) -> None:
    run = trained("s3t", S3T, train_set)
    forgotten = key_in(run, slice=1, shard=0)
    started = time.perf_counter()
    new, result = METHODS.get("s3t")().unlearn(run, [forgotten], None)
    assert time.perf_counter() - started < 1.0
    model: S3TEnsemble = new.model
    orderings = model.orderings  # [[0, 1, 2], [2, 0, 1]]
    # The record's slice is the slice its shard's loaders first yielded it in.
    assert row_of(run, forgotten).slice == 1
    for shard in model.serving_shards():
        for _, o, p in model.active_adapters(shard):
            trained_on = orderings[o][: p + 1]
            assert shard != 0 or 1 not in trained_on
    # Shard 0: ordering 0 keeps adapter 0 (slice 0); ordering 1 keeps adapters 0, 1 (slices 2, 0)
    # and is served. Every adapter from slice 1's position on is deactivated and reported.
    assert model.active[0] == (1, 2) and model.active[1] == (0, 3)
    assert result.details["adapters_deactivated"] == ["s0o0p1", "s0o0p2", "s0o1p2"]
    # What it still learned from: the kept records of the slices its active adapters saw (shard 0
    # serves slices 2 and 0 of ordering 1; shard 1 all three), fewer than a retrain would use.
    kept = [row for row in run.membership if row.record_key != forgotten]
    served = sum(1 for row in kept if row.shard == 1 or row.slice in (0, 2))
    assert (result.details["kept_records"], result.details["kept_records_served"]) == (len(kept), served)
    assert served < len(kept)
    assert set(model.adapters) == set(run.model.adapters) - {(0, 0, 1), (0, 0, 2), (0, 1, 2)}
    # Proof by recomputation: an S3T run trained without the record has the same kept adapters
    # (they never saw slice 1 of shard 0), while the deactivated ones differ.
    scratch = RECIPES.get("s3t")(S3T).train(train_set.without([forgotten]))
    for adapter, weights in model.adapters.items():
        assert all(torch.allclose(weights[k], scratch.model.adapters[adapter][k], atol=1e-6)
                   for k in weights), adapter
    assert not all(torch.allclose(run.model.adapters[(0, 0, 1)][k], scratch.model.adapters[(0, 0, 1)][k])
                   for k in run.model.adapters[(0, 0, 1)])


def test_s3t_outputs_equal_a_model_composed_of_the_remaining_adapters_only(train_set) -> None:
    run = trained("s3t", S3T, train_set)
    forgotten = key_in(run, slice=1, shard=0)
    new, _ = METHODS.get("s3t")().unlearn(run, [forgotten], None)
    model: S3TEnsemble = new.model
    serving = {a: model.adapters[a] for s in model.serving_shards() for a in model.active_adapters(s)}
    composed = S3TEnsemble(model.config, model.base_state, serving, model.active)
    inputs = torch.stack([train_set[i][1] for i in range(16)])
    with torch.no_grad():
        assert torch.allclose(new.model(inputs), composed(inputs), atol=1e-6)
        assert not torch.allclose(new.model(inputs), run.model(inputs), atol=1e-4)


def test_s3t_membership_drops_slices_no_remaining_adapter_covers(train_set) -> None:
    run = trained("s3t", {**S3T, "orderings": 1}, train_set)
    forgotten = key_in(run, slice=0, shard=1)
    new, result = METHODS.get("s3t")().unlearn(run, [forgotten], None)
    assert result.details["shards_out"] == [1]
    assert {row.shard for row in new.membership} == {0}
    with pytest.raises(ValueError, match="retrain"):
        METHODS.get("s3t")().unlearn(new, [key_in(new, slice=0, shard=0)], None)


def test_s3t_kept_data_figure_counts_every_kept_record_after_deletions_in_sequence(train_set) -> None:
    """Given the registry's membership (context), a second deletion counts the kept records of the
    slices the first one stopped serving too: the figure is against all the kept data."""
    run = trained("s3t", {**S3T, "orderings": 1}, train_set)
    first, second = key_in(run, slice=2, shard=0), key_in(run, slice=1, shard=1)
    once, _ = METHODS.get("s3t")().unlearn(run, [first], None)
    registry = [row for row in run.membership if row.record_key != first]
    _, result = METHODS.get("s3t")().unlearn(once, [second], None, membership=registry)
    assert result.details["kept_records"] == len(run.membership) - 2
    served = sum(1 for row in run.membership if row.record_key not in (first, second)
                 and (row.slice in (0, 1) if row.shard == 0 else row.slice == 0))
    assert result.details["kept_records_served"] == served


# ---------------------------------------------------------------- s3t_retrain


def test_s3t_retrain_equals_an_s3t_training_from_scratch_on_the_kept_records(train_set) -> None:
    run = trained("s3t", S3T, train_set)
    forget = [key_in(run, slice=1, shard=0), key_in(run, slice=2, shard=1)]
    new, result = METHODS.get("s3t_retrain")().unlearn(run, forget, train_set.without(forget))
    # The adapters whose slices held the records were switched off and trained again ...
    assert result.details["adapters_deactivated"] == ["s0o0p1", "s0o0p2", "s0o1p2", "s1o0p2", "s1o1p0",
                                                      "s1o1p1", "s1o1p2"]
    assert result.details["adapters_retrained"] == result.details["adapters_deactivated"]
    assert result.steps > 0
    # ... on the kept records only: the served model learned from every one of them again.
    kept = {row.record_key for row in run.membership} - set(forget)
    assert {row.record_key for row in new.membership} == kept
    assert (result.details["kept_records"], result.details["kept_records_served"]) == (len(kept), len(kept))
    model: S3TEnsemble = new.model
    assert model.active == {0: (0, 3), 1: (0, 3)}
    assert set(model.adapters) == set(run.model.adapters)
    # Proof by recomputation: the recipe from scratch on the kept records, with the same seeds,
    # gives the same weights, bit for bit (the recipe is deterministic on the CPU).
    scratch = RECIPES.get("s3t")(S3T).train(train_set.without(forget))
    for adapter, weights in model.adapters.items():
        assert all(torch.equal(weights[k], scratch.model.adapters[adapter][k]) for k in weights), adapter
    # Not vacuous: a retrained adapter differs from the one that saw the records.
    assert not all(torch.equal(run.model.adapters[(0, 0, 1)][k], model.adapters[(0, 0, 1)][k])
                   for k in model.adapters[(0, 0, 1)])
    inputs = torch.stack([train_set[i][1] for i in range(16)])
    with torch.no_grad():
        assert torch.equal(new.model(inputs), scratch.model(inputs))


def test_s3t_retrain_learns_again_from_slices_an_earlier_deactivation_stopped_serving(train_set) -> None:
    """After s3t served less (a first deletion), the retrain variant on a second deletion trains
    every missing adapter again, from the registry's membership, and ends where a training from
    scratch without both records ends."""
    config = {**S3T, "orderings": 1}
    run = trained("s3t", config, train_set)
    first, second = key_in(run, slice=2, shard=0), key_in(run, slice=1, shard=1)
    once, _ = METHODS.get("s3t")().unlearn(run, [first], None)
    assert {row.record_key for row in once.membership} < {row.record_key for row in run.membership} - {first}
    registry = [row for row in run.membership if row.record_key != first]
    retain = train_set.without([first, second])
    new, result = METHODS.get("s3t_retrain")().unlearn(once, [second], retain, membership=registry)
    assert result.details["adapters_deactivated"] == ["s1o0p1", "s1o0p2"]
    assert result.details["adapters_retrained"] == ["s0o0p2", "s1o0p1", "s1o0p2"]
    assert result.details["kept_records_served"] == result.details["kept_records"] == len(run.membership) - 2
    scratch = RECIPES.get("s3t")(config).train(retain)
    for adapter, weights in new.model.adapters.items():
        assert all(torch.equal(weights[k], scratch.model.adapters[adapter][k]) for k in weights), adapter
    # Without the registry's rows the slices an earlier deletion dropped are unknown: refused
    # rather than trained on records the run does not list.
    with pytest.raises(ValueError, match="lacks"):
        METHODS.get("s3t_retrain")().unlearn(once, [second], retain.subset(retain.record_keys[:10]),
                                             membership=registry)


def test_s3t_retrain_never_trains_on_a_forgotten_record_even_when_the_data_holds_it(train_set, monkeypatch) -> None:
    """Every record a retrained adapter was fed, recorded at the training step: none is forgotten,
    though the data given (the whole training set, past the method's own retain-set check) holds them."""
    import workers.training.s3t as s3t

    run = trained("s3t", S3T, train_set)
    forget = [key_in(run, slice=0, shard=0), key_in(run, slice=2, shard=1)]
    fed: set[str] = set()
    original = s3t.train_stage

    def recording(model, optimizer, data, **kwargs):
        fed.update(data.record_keys)
        return original(model, optimizer, data, **kwargs)

    monkeypatch.setattr(s3t, "train_stage", recording)
    outcome = s3t.s3t_retrain(run, forget, train_set)
    assert fed and not fed & set(forget)
    assert not {row.record_key for row in outcome.run.membership} & set(forget)
    assert len(outcome.retrained) == 9  # shard 0: five adapters, shard 1: four


# ---------------------------------------------------------------- retrain


def test_retrain_equals_the_recipe_from_scratch_and_uses_the_recipe_seed(train_set) -> None:
    run = trained("plain", PLAIN, train_set)
    forget = [key_in(run, slice=0)]
    new, result = METHODS.get("retrain")({"seed": 99}).unlearn(run, forget, train_set.without(forget))
    scratch = RECIPES.get("plain")(PLAIN).train(train_set.without(forget))
    assert state_dicts_close(new.model, scratch.model, atol=0.0)
    assert result.details["recipe"] == "plain"


# ---------------------------------------------------------------- sklearn_sisa: proof by recomputation


def test_sklearn_sisa_refits_only_the_affected_shard_and_equals_a_fit_from_scratch(train_set) -> None:
    from workers.unlearning.exact.replay import compare_runs

    run = trained("sklearn_sisa", SKLEARN_SISA, train_set)
    forgotten = key_in(run, slice=0, shard=1)
    new, result = METHODS.get("sklearn_sisa")().unlearn(run, [forgotten], train_set.without([forgotten]))
    scratch = RECIPES.get("sklearn_sisa")(SKLEARN_SISA).train(train_set.without([forgotten]))
    comparison = compare_runs(new, scratch)
    assert comparison.identical and comparison.tensors_compared > 20, comparison
    assert result.details["shards_refit"] == [1]
    assert [new.model.estimators[s] is run.model.estimators[s] for s in range(3)] == [True, False, True]
    # Not vacuous: the comparison sees the refit shard's change.
    assert not compare_runs(new, run).identical
    assert not torch.equal(*(RECIPES.get("sklearn_sisa").comparable_state(r)["shard1/steps/1/1/coef_"]
                             for r in (new, run)))

