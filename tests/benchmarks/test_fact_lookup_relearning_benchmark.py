"""benchmarks/fact_lookup_relearning.py keeps one learning rate per localisation by a stated rule and
measures recovery as a share; benchmarks/lm_unlearning.py compares fact lookup with its baselines at
the same forgetting of the answers. Pure functions and configs only (the runs are the benchmark's)."""

from __future__ import annotations

import pytest

from tests.benchmarks.loading import loaded_benchmark


@pytest.fixture(scope="module")
def bench():
    with loaded_benchmark("fact_lookup_relearning") as module:
        yield module


def _trial(lr, reached, retain, forget):
    return {"lr": lr, "reached_target": reached, "retain_nll": retain, "forget_answer_nll": forget}


def test_pick_trial_prefers_the_target_reached_with_least_damage_else_most_forgetting(bench):
    trials = [_trial(3e-4, False, 0.05, 3.0), _trial(1e-3, True, 0.20, 5.0), _trial(3e-3, True, 0.60, 6.0)]
    assert bench.pick_trial(trials) == 1
    assert bench.pick_trial([_trial(3e-4, False, 0.05, 3.0), _trial(3e-3, False, 0.50, 4.5)]) == 1
    with pytest.raises(ValueError, match="no trials"):
        bench.pick_trial([])


def test_recovery_is_the_share_of_the_rise_undone(bench):
    assert bench.recovery(0.0, 4.0, 1.0) == pytest.approx(0.75)
    assert bench.recovery(0.0, 4.0, 4.0) == pytest.approx(0.0)
    assert bench.recovery(1.0, 1.02, 0.5) is None  # unlearning raised the NLL by under 0.05 nats


def test_synthetic_records_are_distinct_people_and_follow_the_seed(bench):
    records = bench.synthetic_records(12, seed=3)
    assert records == bench.synthetic_records(12, seed=3) != bench.synthetic_records(12, seed=4)
    names = [text.split(" lives at ")[0] for _, text in records]
    assert len(set(names)) == 12 and len({key for key, _ in records}) == 12


def test_lm_benchmark_compares_fact_lookup_rows_at_the_same_answer_target():
    with loaded_benchmark("lm_unlearning") as lm:
        rows = {name: config for name, method, config in lm.METHOD_ROWS if method == "fact_lookup"}
    assert {config.get("localisation", "fact_lookup") for config in rows.values()} == {
        "fact_lookup", "random", "all_layers"}
    for config in rows.values():
        assert config["stop_at_held_out_answers"] is True
        assert config["epochs"] == lm.FACT_LOOKUP_BASE["epochs"]
