"""Fact-lookup localised unlearning beyond the shared harness: the position and localisation maths
with hand-made numbers, training that touches only the localised MLP, baselines of the same size
driven to the same forgetting level, and the paper's relearning claim measured at small scale (the
tiny GPT-2 of conftest.py, 2 layers; over seeds and 4 layers: benchmarks/fact_lookup_relearning.py)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from tests.workers.unlearning.lm.conftest import FORGET_KEYS, RECORDS
from workers.unlearning.base import METHODS, ConfigError
from workers.unlearning.lm.data import lm_batches
from workers.unlearning.lm.fact_lookup import (
    answer_token_nll,
    denoised_share,
    mark_answers,
    pick_extraction_layer,
    specific_positions,
    subject_and_answer,
    top_layers,
)
from workers.unlearning.lm.losses import mean_token_nll

# The paper's comparison (arXiv 2410.12949, its code's per-localisation configs): every localisation
# gets the same epochs and loss but its own learning rate (the non-localised one a smaller rate), and
# all reach about the same forgetting. Here each stops at the same answer target, the memorised
# model's answer NLL on held-out people, within the same cap, at the rate of 3e-4, 1e-3 and 3e-3
# that the benchmark's rule (benchmarks/fact_lookup_relearning.py pick_trial: reached the target with
# the lowest kept-record NLL, else forgot most) picks on this model: all layers reach the target at
# 1e-3 in 26 steps; fact lookup (5.45 of 5.87 nats) and random MLPs (4.84) do not in 60.
RATES = {"fact_lookup": 3e-3, "random": 3e-3, "all_layers": 1e-3}
MATCHED = {"epochs": 60, "stop_at_held_out_answers": True}
RELEARN_STEPS = 5
RELEARN_LR = 1e-3
# Differences in recovery within this were seen between seeds of one setting (the benchmark).
SEED_SPREAD = 0.1


def test_record_specific_positions_subject_first_then_answer():
    # Three texts share a template (tokens 1, 2 and 9); 5 6 and 7 8 are specific to the first.
    rows = [[1, 5, 6, 2, 9, 7, 8], [1, 3, 4, 2, 9, 3, 3], [1, 4, 3, 2, 9, 4, 4]]
    marks = specific_positions(rows, share=0.34)
    # Bigrams (1,5) (5,6) (6,2) are the first text's only; (2,9) is in all three; (9,7) (7,8) its own.
    assert marks[0] == [False, True, True, True, False, True, True]
    assert subject_and_answer(marks[0]) == ([1, 2, 3], [5, 6])
    assert subject_and_answer([False, False]) == ([], [])
    assert subject_and_answer([False, True, True]) == ([1, 2], [])


def test_denoising_share_extraction_layer_and_top_layers():
    assert denoised_share(-5.0, clean=-1.0, corrupted=-9.0) == pytest.approx(0.5)
    assert math.isnan(denoised_share(-3.0, clean=-3.0, corrupted=-3.0))
    assert pick_extraction_layer([1.0, 0.8, 0.4, 0.1], share=0.5) == 2
    assert pick_extraction_layer([1.0, 0.9], share=0.5) == 2
    assert top_layers({0: 0.1, 1: 0.7, 2: 0.7, 3: 0.2}, 2) == [1, 2]


def test_config_is_strict():
    cls = METHODS.get("fact_lookup")
    with pytest.raises(ConfigError, match="localisation must be one of"):
        cls({"localisation": "output_tracing"})
    with pytest.raises(ConfigError, match="mlp_layers"):
        cls({"mlp_layers": 0})
    with pytest.raises(ConfigError, match="extraction_share"):
        cls({"extraction_share": 1.0})
    with pytest.raises(ConfigError, match="stop_at_answer_nll must be > 0"):
        cls({"stop_at_answer_nll": 0.0})


def test_texts_without_a_specific_subject_are_refused(memorised_model):
    same = lm_batches(_tokenizer(), [("a", "the same text"), ("b", "the same text")], max_length=32)
    with pytest.raises(ValueError, match="fact lookup cannot be localised"):
        METHODS.get("fact_lookup")({"epochs": 1}).unlearn(memorised_model, same, same)


def _tokenizer():
    from workers.language_models import byte_tokenizer

    return byte_tokenizer()


@pytest.fixture(scope="module")
def runs(memorised_model, forget_batches, retain_batches, heldout_batches):
    out = {}
    for localisation, lr in RATES.items():
        model, result = METHODS.get("fact_lookup")({**MATCHED, "lr": lr, "localisation": localisation}).unlearn(
            memorised_model, forget_batches, retain_batches, held_out=heldout_batches)
        out[localisation] = (model, result)
    return out


def _marked(batches, retain_batches):
    copies = [dict(b) for b in batches]
    mark_answers(copies, retain_batches)
    return copies


def test_every_localisation_is_driven_to_the_held_out_answer_target(runs, memorised_model, forget_batches,
                                                                    retain_batches, heldout_batches):
    # The target: how unlikely the memorised model finds the answers of people it never saw.
    target = answer_token_nll(memorised_model, _marked(heldout_batches, retain_batches))
    assert target > 2.0
    for localisation, (_, result) in runs.items():
        details = result.details
        assert details["stop_answer_nll_target"] == pytest.approx(target, rel=1e-5), localisation
        assert details["stop_target_nll"] is None  # the answer target replaces the forget-NLL one
        stopped = result.steps < MATCHED["epochs"] * len(forget_batches)
        assert stopped == details["stopped_early"]
        if stopped:  # stops at the first epoch that reached it, else runs every epoch
            assert details["answer_token_nll_after"] >= target, localisation
        # Every localisation forgot far beyond the memorised level (0.04) and the held-out texts' NLL.
        assert details["answer_token_nll_after"] > 0.75 * target, (localisation, details["answer_token_nll_after"])
    assert runs["all_layers"][1].details["stopped_early"]  # it reaches the target at 1e-3 (see RATES)


def test_only_the_localised_mlp_changes_and_the_answers_are_forgotten(runs, memorised_model, baseline):
    model, result = runs["fact_lookup"]
    details = result.details
    layers = details["trained_mlp_layers"]
    assert layers and all(layer < details["localisation_extraction_layer"] for layer in layers)
    assert details["localisation_restored_by_layer"][0] == pytest.approx(1.0)
    trained = {f"transformer.h.{i}.mlp." for i in layers}
    before, after = memorised_model.state_dict(), model.state_dict()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed and all(any(name.startswith(prefix) for prefix in trained) for name in changed)
    assert details["trainable_parameters"] == sum(
        p.numel() for i in layers for p in memorised_model.transformer.h[i].mlp.parameters())
    # The answers (the record-specific tokens after the name) went from memorised to beyond unseen text.
    assert details["answer_token_nll_before"] < 0.2
    assert details["answer_token_nll_after"] > baseline["heldout"], details


def test_baselines_have_the_same_size_or_every_layer(runs):
    flu = runs["fact_lookup"][1].details
    random = runs["random"][1].details
    assert random["trainable_parameters"] == flu["trainable_parameters"]
    assert not set(random["trained_mlp_layers"]) & set(flu["trained_mlp_layers"])
    assert runs["all_layers"][1].details["trained_mlp_layers"] == "all"
    assert runs["all_layers"][1].details["trainable_parameters"] > 2 * flu["trainable_parameters"]


def _recovery_of_other_half(memorised, model, tokenizer, retain_batches):
    """Relearning attack (the paper's): a few full-weight steps on half of the forgotten records plus
    the kept ones; returns the other half's answer NLL memorised, unlearned, relearned and the
    recovery ``(unlearned - relearned) / (unlearned - memorised)``."""
    trained_on = lm_batches(tokenizer, [(k, RECORDS[k]) for k in FORGET_KEYS[:2]], max_length=64)
    measured = _marked(lm_batches(tokenizer, [(k, RECORDS[k]) for k in FORGET_KEYS[2:]], max_length=64),
                       retain_batches)
    attacker = copy.deepcopy(model).train()
    optimiser = torch.optim.Adam(attacker.parameters(), lr=RELEARN_LR)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for _ in range(RELEARN_STEPS):
            loss = mean_token_nll(attacker, trained_on[0]) + mean_token_nll(attacker, retain_batches[0])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    nll = [answer_token_nll(m, measured) for m in (memorised, model, attacker.eval())]
    return [round(v, 3) for v in nll] + [round((nll[1] - nll[2]) / (nll[1] - nll[0]), 3)]


@pytest.mark.xfail(strict=True, reason=(
    "does not reproduce on tiny GPT-2s when every localisation is driven to the same answer target at its "
    "own picked rate: here recovery 0.524 (fact lookup) vs 0.525 (all layers); over 6 seeds of "
    "benchmarks/fact_lookup_relearning.py (8 records forgotten, rates picked per seed) fact lookup recovered "
    "less than all layers in 4/6 seeds (2 layers, by -0.01 to 0.11) and 3/4 (4 layers, -0.02 to 0.25), less "
    "than all MLPs in 3/6 and 2/4; with every run trained its full 40 epochs, less than all layers in 1/4 and "
    "than all MLPs in 0/4 (README after the 'Third sitting' table); nor with lookup-stored facts (--world facts) "
    "or the capitals SmolLM2-135M knows from pretraining (--world pretrained, 2 seeds: 2/2 after 5 steps by "
    "0.03-0.17, within the seed-to-seed spread and at unequal forgetting)"))
def test_localised_unlearning_recovers_less_under_relearning_than_all_layer(runs, memorised_model, retain_batches):
    """The paper's claim, with a margin: fact lookup's recovery below all-layer unlearning's by more
    than the seed-to-seed spread (SEED_SPREAD) after RELEARN_STEPS steps on half the forgotten records.
    Measured on this model: 0.524 vs 0.525 (random MLPs 0.714, which forgot less: 4.96 vs 5.26-5.73
    nats). It holds only with all-layer unlearning at a 10x smaller rate that stops short of the target
    (0.71 here; 0.44 vs 0.70 over 6 seeds), and then all MLPs recover as little as fact lookup (0.44)."""
    tokenizer = _tokenizer()
    figures = {loc: _recovery_of_other_half(memorised_model, model, tokenizer, retain_batches)
               for loc, (model, _) in runs.items()}
    print("other half's answer NLL memorised, unlearned, relearned; recovery:", figures)
    assert figures["fact_lookup"][3] < figures["all_layers"][3] - SEED_SPREAD, figures
