"""benchmarks/fact_lookup_relearning.py keeps one learning rate per localisation by a stated rule and
measures recovery as a share; benchmarks/lm_unlearning.py compares fact lookup with its baselines at
the same forgetting of the answers. Pure functions and configs only (the runs are the benchmark's)."""

from __future__ import annotations

import pytest
import torch

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


def test_fact_world_states_each_fact_through_templates_ending_in_its_value(bench):
    people = bench.fact_world(40, seed=1)
    assert people == bench.fact_world(40, seed=1) != bench.fact_world(40, seed=2)
    assert len({name for name, _ in people}) == 40
    texts = bench.fact_texts(people[:2], range(3))
    assert len(texts) == len({key for key, _ in texts}) == 2 * len(bench.ATTRIBUTES) * 3
    name, values = people[0]
    assert f"resident {name} lives in {values['city']}" in dict(texts).values()
    # Every template word belongs to one template: its bigrams are that template's own.
    words = [w for templates in bench.TEMPLATES.values() for template in templates for w in template]
    assert len(words) == len(set(words))
    tokenizer = bench.word_tokenizer()
    ids = tokenizer(dict(texts)[next(iter(dict(texts)))])["input_ids"]
    assert len(ids) == 6 and tokenizer.pad_token_id not in ids  # every word known, one token each


def test_the_methods_marking_finds_the_facts_values_at_the_worlds_share_not_the_default(bench):
    from workers.unlearning.lm.data import lm_batches
    from workers.unlearning.lm.fact_lookup import mark_answers

    people = bench.fact_world(64, seed=0)
    tokenizer = bench.word_tokenizer()
    forget = lm_batches(tokenizer, bench.fact_texts(people[:16], range(2)), max_length=16, batch_size=16)
    retain = lm_batches(tokenizer, bench.fact_texts(people[16:], range(2)), max_length=16, batch_size=16)

    def marked(share):
        copies = [dict(b) for b in forget]
        mark_answers(copies, retain[: len(forget)], share)
        return copies

    expected = bench._values_marked(*forget)
    default_share = 0.25  # the method's: each of the six templates is a sixth of these texts, under it
    assert all(torch.equal(a["answer_mask"], b["answer_mask"]) for a, b in zip(marked(0.08), expected, strict=True))
    with pytest.raises(ValueError, match="cannot be localised"):  # all after the first word look record-specific
        marked(default_share)
