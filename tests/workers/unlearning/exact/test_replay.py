"""The independent replay of an exact deletion (workers.unlearning.exact.replay).

A correct method's result is rebuilt bit for bit; a method that leaves one record in, and the
original model presented as the result, differ; an environment the replay cannot reproduce is
reported as such, and nothing is compared."""

from __future__ import annotations

import pytest
import torch

from tests.workers.training.data import MLP, blobs
from workers.training import RECIPES
from workers.training.base import TrainingRun
from workers.training.device import training_environment
from workers.unlearning.base import METHODS
from workers.unlearning.exact.replay import ReplayInputs, compare_runs, replay_exact, retain_keys
from workers.unlearning.methods import load_all_methods

load_all_methods()

SISA = {"architecture": MLP, "epochs": 2, "batch_size": 4, "lr": 0.02, "shards": 3, "slices": 3}
S3T = {"architecture": MLP, "epochs": 2, "batch_size": 4, "lr": 0.05, "shards": 2, "slices": 3,
       "orderings": 2, "lora_rank": 2}
PLAIN = {"architecture": MLP, "epochs": 2, "batch_size": 8, "lr": 0.02}
# rec-000..009 static, rec-010..039 the auxiliary pool, rec-040..059 non-static.
KEEP_OUT = {**PLAIN, "static_records": r"rec-00\d", "auxiliary_records": r"rec-0[1-3]\d"}
CONFIGS = {"sisa": ("sisa", SISA), "s3t": ("s3t", S3T), "retrain": ("plain", PLAIN),
           "keep_out_transfer": ("keep_out_transfer", KEEP_OUT)}

_RUNS: dict[str, TrainingRun] = {}


@pytest.fixture(scope="module")
def data():
    return blobs(60, seed=3)


def trained(method: str, data) -> TrainingRun:
    if method not in _RUNS:
        recipe, config = CONFIGS[method]
        _RUNS[method] = RECIPES.get(recipe)(config).train(data)
    return _RUNS[method]


def forget_of(run: TrainingRun) -> list[str]:
    """Two records, in different shards where there are shards, one in a late slice."""
    rows = sorted(run.membership, key=lambda r: (r.shard, -r.slice, r.record_key))
    first = rows[0]
    second = next((r for r in rows if r.shard != first.shard), rows[-1])
    return [first.record_key, second.record_key]


def unlearned(method: str, run: TrainingRun, data, forget: list[str]):
    retain = data.subset(retain_keys(run.membership, forget))
    return METHODS.get(method)().unlearn(run, data.subset(forget), retain)


def inputs_of(run: TrainingRun, data, forget: list[str]) -> ReplayInputs:
    return ReplayInputs(source=run, registry_membership=tuple(run.membership), forget_keys=frozenset(forget),
                        retain=data.subset(retain_keys(run.membership, forget)))


@pytest.mark.parametrize("method", ["sisa", "s3t", "retrain", "keep_out_transfer"])
def test_a_correct_exact_deletion_is_rebuilt_bit_for_bit(method, data):
    run = trained(method, data)
    forget = forget_of(run)
    new_run, result = unlearned(method, run, data, forget)
    assert result.details["environment"] == training_environment("cpu")
    outcome = replay_exact(method=method, inputs=inputs_of(run, data, forget), stored=new_run,
                           recorded_environment=result.details["environment"], device="cpu", requested=True)
    assert outcome.ran, outcome.not_run
    comparison = outcome.comparison
    assert comparison["identical"], comparison
    assert comparison["tensors_compared"] > 0 and comparison["max_abs_difference"] == 0.0


@pytest.mark.parametrize("method", ["sisa", "s3t", "retrain", "keep_out_transfer"])
def test_a_method_that_keeps_one_record_is_caught(method, data):
    run = trained(method, data)
    forget = forget_of(run)
    # The corrupted method forgets all but the first record; the registry says both are gone.
    corrupted, result = unlearned(method, run, data, forget[1:])
    outcome = replay_exact(method=method, inputs=inputs_of(run, data, forget), stored=corrupted,
                           recorded_environment=result.details["environment"], device="cpu", requested=True)
    assert outcome.ran
    assert not outcome.comparison["identical"]
    assert outcome.comparison["differing_count"] > 0 or outcome.comparison["records_only_stored"] > 0
    assert outcome.comparison["records_only_stored"] >= 1  # the record it kept


@pytest.mark.parametrize("method", ["sisa", "s3t", "retrain", "keep_out_transfer"])
def test_the_original_presented_as_the_result_is_caught(method, data):
    run = trained(method, data)
    forget = forget_of(run)
    outcome = replay_exact(method=method, inputs=inputs_of(run, data, forget), stored=run,
                           recorded_environment=training_environment("cpu"), device="cpu", requested=True)
    assert outcome.ran and not outcome.comparison["identical"]
    assert outcome.comparison["records_only_stored"] >= len(forget)  # s3t: whole slices


def test_an_environment_it_cannot_reproduce_is_not_compared(data):
    run = trained("sisa", data)
    forget = forget_of(run)
    new_run, result = unlearned("sisa", run, data, forget)
    recorded = {**result.details["environment"], "torch": "1.0.0"}
    outcome = replay_exact(method="sisa", inputs=inputs_of(run, data, forget), stored=new_run,
                           recorded_environment=recorded, device="cpu")
    assert not outcome.ran and outcome.comparison == {}
    assert "torch 1.0.0 recorded" in outcome.environment_problem
    cuda = {**result.details["environment"], "device_type": "cuda"}
    outcome = replay_exact(method="sisa", inputs=inputs_of(run, data, forget), stored=new_run,
                           recorded_environment=cuda, device="cpu")
    assert "device_type cuda recorded, cpu here" in outcome.not_run
    missing = replay_exact(method="sisa", inputs=inputs_of(run, data, forget), stored=new_run,
                           recorded_environment=None, device="cpu")
    assert not missing.ran and "recorded no environment" in missing.not_run


def test_a_full_retrain_replays_only_on_request_and_the_thread_count_is_restored(data):
    run = trained("retrain", data)
    forget = forget_of(run)
    new_run, result = unlearned("retrain", run, data, forget)
    outcome = replay_exact(method="retrain", inputs=inputs_of(run, data, forget), stored=new_run,
                           recorded_environment=result.details["environment"], device="cpu")
    assert not outcome.ran and "on request only" in outcome.not_run and "full training" in outcome.cost
    threads = torch.get_num_threads()
    recorded = {**result.details["environment"], "threads": 1}
    outcome = replay_exact(method="retrain", inputs=inputs_of(run, data, forget), stored=new_run,
                           recorded_environment=recorded, device="cpu", requested=True)
    assert outcome.replay_environment["threads"] == 1 and torch.get_num_threads() == threads


def test_an_unknown_method_has_no_replay(data):
    run = trained("sisa", data)
    outcome = replay_exact(method="finetune", inputs=inputs_of(run, data, forget_of(run)), stored=run,
                           recorded_environment={}, device="cpu")
    assert not outcome.ran and "no replay is registered for 'finetune'" in outcome.not_run


def test_compare_runs_names_a_single_flipped_bit(data):
    run = trained("retrain", data)
    copy = RECIPES.get("plain")(PLAIN).train(data)
    assert compare_runs(copy, run).identical
    with torch.no_grad():
        parameter = next(copy.model.parameters())
        flat = parameter.view(-1)
        flat[0] = torch.nextafter(flat[0], torch.tensor(float("inf")))
    comparison = compare_runs(copy, run)
    assert not comparison.identical and comparison.differing_count == 1
    assert 0 < comparison.max_abs_difference < 1e-6
