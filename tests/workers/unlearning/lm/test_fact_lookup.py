"""Fact-lookup localised unlearning beyond the shared harness: the position and localisation maths
with hand-made numbers, training that touches only the localised MLP, baselines of the same size, and
the paper's relearning claim measured at small scale (the tiny GPT-2 of conftest.py, 2 layers)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from tests.workers.unlearning.lm.conftest import FORGET_KEYS, RECORDS
from workers.unlearning.base import METHODS, ConfigError
from workers.unlearning.lm.data import lm_batches
from workers.unlearning.lm.fact_lookup import (
    _answer_nll,
    _mark_positions,
    denoised_share,
    pick_extraction_layer,
    specific_positions,
    subject_and_answer,
    top_layers,
)
from workers.unlearning.lm.losses import average_token_nll, mean_token_nll

# One budget for every localisation (the paper compares localisations at equal steps and learning rate).
BUDGET = {"lr": 3e-3, "epochs": 30}
RELEARN_STEPS = 5
RELEARN_LR = 1e-3


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


def test_texts_without_a_specific_subject_are_refused(memorised_model):
    same = lm_batches(_tokenizer(), [("a", "the same text"), ("b", "the same text")], max_length=32)
    with pytest.raises(ValueError, match="fact lookup cannot be localised"):
        METHODS.get("fact_lookup")({"epochs": 1}).unlearn(memorised_model, same, same)


def _tokenizer():
    from workers.language_models import byte_tokenizer

    return byte_tokenizer()


@pytest.fixture(scope="module")
def runs(memorised_model, forget_batches, retain_batches):
    out = {}
    for localisation in ("fact_lookup", "random", "all_layers"):
        model, result = METHODS.get("fact_lookup")({**BUDGET, "localisation": localisation}).unlearn(
            memorised_model, forget_batches, retain_batches)
        out[localisation] = (model, result)
    return out


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


def _relearned_other_half(model, tokenizer, retain_batches):
    """Relearning attack (the paper's): a few steps of fine-tuning on half of the forgotten records;
    returns the answer NLL of the other half before and after."""
    trained_on = lm_batches(tokenizer, [(k, RECORDS[k]) for k in FORGET_KEYS[:2]], max_length=64)
    measured = lm_batches(tokenizer, [(k, RECORDS[k]) for k in FORGET_KEYS[2:]], max_length=64)
    _mark_positions(measured, retain_batches, 0.25, "test")
    before = _answer_nll(model, measured)
    attacker = copy.deepcopy(model).train()
    optimiser = torch.optim.Adam(attacker.parameters(), lr=RELEARN_LR)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for _ in range(RELEARN_STEPS):
            loss = mean_token_nll(attacker, trained_on[0])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return before, _answer_nll(attacker.eval(), measured)


@pytest.mark.xfail(strict=True, reason=(
    "does not reproduce on the 2-layer, 64-wide GPT-2: after 5 relearning steps on half of the forgotten "
    "records the other half's answer NLL is lower (more relearned) for fact-lookup than for all-layer "
    "unlearning of the same budget; see the figures this test prints and the benchmark"))
def test_localised_unlearning_recovers_less_under_relearning_than_all_layer(runs, retain_batches, heldout_batches):
    tokenizer = _tokenizer()
    figures = {}
    for localisation, (model, _) in runs.items():
        before, after = _relearned_other_half(model, tokenizer, retain_batches)
        figures[localisation] = (round(before, 3), round(after, 3), round(average_token_nll(model, heldout_batches), 3))
    print("answer NLL of the other half before -> after relearning, held-out NLL:", figures)
    assert figures["fact_lookup"][1] > figures["all_layers"][1], figures
