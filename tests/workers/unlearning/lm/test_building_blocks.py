"""Tokenisation into LM batches, LoRA target discovery, the NPO objective and LM fine-tuning."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from tests.workers.unlearning.lm.conftest import FORGET_KEYS, RECORDS
from workers.language_models import finetune_lora, tiny_gpt2
from workers.unlearning.lm.data import batch_texts, lm_batches
from workers.unlearning.lm.lora import find_lora_targets
from workers.unlearning.lm.losses import IGNORE_INDEX, average_token_nll, npo_loss


def test_lm_batches_pad_right_and_never_score_padding(tokenizer):
    records = [("short", "Hi."), ("long", "Hello there, world."), ("third", "Bye.")]
    batches = lm_batches(tokenizer, records, max_length=64, batch_size=2)
    assert [b["record_keys"] for b in batches] == [["short", "long"], ["third"]]
    first = batches[0]
    assert first["input_ids"].shape == (2, len("Hello there, world."))
    assert first["attention_mask"][0].tolist() == [1, 1, 1] + [0] * 16
    assert first["labels"][0, 3:].eq(IGNORE_INDEX).all()
    assert torch.equal(first["labels"][1], first["input_ids"][1])
    assert batch_texts(tokenizer, first) == records[:2]


def test_lm_batches_truncate_and_refuse_bad_input(tokenizer):
    (batch,) = lm_batches(tokenizer, {"k": "x" * 100}, max_length=10)
    assert batch["input_ids"].shape == (1, 10)
    with pytest.raises(ValueError, match="no records"):
        lm_batches(tokenizer, [])
    with pytest.raises(ValueError, match="duplicate"):
        lm_batches(tokenizer, [("a", "x"), ("a", "y")])
    with pytest.raises(ValueError, match="no tokens"):
        lm_batches(tokenizer, [("a", "")])


def test_lora_targets_are_found_for_gpt2_and_llama():
    assert find_lora_targets(tiny_gpt2()) == ["c_attn", "c_fc", "c_proj"]
    config = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=False,
    )  # fmt: skip
    targets = find_lora_targets(LlamaForCausalLM(config))
    assert targets == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
    with pytest.raises(ValueError, match="no Linear or Conv1D"):
        find_lora_targets(torch.nn.Sequential(torch.nn.Embedding(4, 4)))


def test_npo_loss_matches_its_closed_form():
    same = torch.tensor([5.0, 9.0])
    assert float(npo_loss(same, same, beta=0.5)) == pytest.approx((2 / 0.5) * math.log(2))
    # Forgetting (higher NLL than the reference) lowers the loss towards 0, never below.
    lower = float(npo_loss(same + 50.0, same, beta=0.5))
    assert 0 < lower < 1e-9 + (2 / 0.5) * math.exp(-25)
    assert float(npo_loss(same - 1.0, same, beta=0.5)) > float(npo_loss(same, same, beta=0.5))


def test_finetune_lora_memorises_and_returns_a_plain_model(tokenizer):
    texts = [RECORDS[k] for k in FORGET_KEYS]
    batches = lm_batches(tokenizer, [(k, RECORDS[k]) for k in FORGET_KEYS], max_length=64)
    base = tiny_gpt2(seed=3)
    before = average_token_nll(base, batches)
    tuned = finetune_lora(base, tokenizer, texts, epochs=30, lr=1e-2, max_length=64, seed=1)
    assert type(tuned) is GPT2LMHeadModel
    assert average_token_nll(tuned, batches) < before - 0.5
    assert average_token_nll(base, batches) == pytest.approx(before)  # input untouched
    again = finetune_lora(base, tokenizer, texts, epochs=30, lr=1e-2, max_length=64, seed=1)
    assert all(
        torch.equal(a, b) for a, b in zip(tuned.parameters(), again.parameters(), strict=True)
    )
    with pytest.raises(ValueError, match="no texts"):
        finetune_lora(base, tokenizer, [])
