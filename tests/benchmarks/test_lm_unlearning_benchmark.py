"""benchmarks/lm_unlearning.py keeps its fine-tuned model in a cache keyed by the settings that made
it (safetensors, checked when loaded) and picks learning rates by a stated rule; these hold both."""

from __future__ import annotations

import json

import pytest
import torch

from tests.benchmarks.loading import loaded_benchmark
from workers.language_models import byte_tokenizer, tiny_gpt2
from workers.unlearning.lm.data import lm_batches

MEMBERS = [(f"pii-{i:03d}", f"Customer {name} lives at {i} Elm Road, id C{i:05d}.")
           for i, name in enumerate(["Ann Lee", "Bo Kim", "Cy Dorn"])]
TRAINING = {"epochs": 2, "lr": 1e-2, "lora_r": 4, "lora_alpha": 8.0, "batch_size": 2, "max_length": 48, "seed": 0}


@pytest.fixture(scope="module")
def bench():
    with loaded_benchmark("lm_unlearning") as module:
        yield module


def _settings(bench, members=MEMBERS, **training):
    return bench.finetune_settings("tiny_gpt2", {"seed": 0, "n_layer": 2}, list(members), {**TRAINING, **training})


def test_the_cache_key_follows_every_setting_that_decides_the_weights(bench):
    key = bench.finetune_cache_key(_settings(bench))
    assert key == bench.finetune_cache_key(_settings(bench))
    changed = [
        _settings(bench, epochs=3),
        _settings(bench, lr=2e-2),
        _settings(bench, seed=1),
        _settings(bench, members=MEMBERS[:2]),
        _settings(bench, members=[(MEMBERS[0][0], MEMBERS[0][1] + " ")] + MEMBERS[1:]),  # same key, new text
        bench.finetune_settings("smollm2", {"seed": 0, "n_layer": 2}, MEMBERS, TRAINING),
    ]
    assert len({key, *(bench.finetune_cache_key(s) for s in changed)}) == len(changed) + 1


def test_a_fine_tuned_model_is_written_once_as_safetensors_and_loaded_checked(bench, tmp_path):
    tokenizer, base = byte_tokenizer(), tiny_gpt2(seed=0, n_layer=2)
    check = lm_batches(tokenizer, MEMBERS, max_length=48, batch_size=2)
    settings = _settings(bench)

    first, info = bench.cached_finetune(base, tokenizer, MEMBERS, settings=settings, cache_dir=tmp_path,
                                        check_batches=check)
    assert info["from_cache"] is False
    entry = tmp_path / bench.finetune_cache_key(settings)
    assert sorted(p.name for p in tmp_path.iterdir()) == [entry.name]  # no staging folder left behind
    assert (entry / "model.safetensors").is_file()
    assert not [p for p in entry.iterdir() if p.suffix in {".bin", ".pt", ".pkl", ".pth"}]
    assert json.loads((entry / "finetune.json").read_text())["settings"] == settings

    again, info = bench.cached_finetune(base, tokenizer, MEMBERS, settings=settings, cache_dir=tmp_path,
                                        check_batches=check)
    assert info["from_cache"] is True
    assert info["finetune_s"] == json.loads((entry / "finetune.json").read_text())["finetune_s"]
    for (name, p), (_, q) in zip(first.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(p, q), name

    meta = json.loads((entry / "finetune.json").read_text())
    (entry / "finetune.json").write_text(json.dumps({**meta, "check_token_nll": meta["check_token_nll"] + 0.01}))
    with pytest.raises(RuntimeError, match="delete the folder"):
        bench.cached_finetune(base, tokenizer, MEMBERS, settings=settings, cache_dir=tmp_path, check_batches=check)


def test_the_learning_rate_is_the_largest_that_spares_the_validation_texts(bench):
    trials = [{"lr": 5e-3, "validation_nll": 9.0}, {"lr": 1e-3, "validation_nll": 2.84},
              {"lr": 2e-4, "validation_nll": 2.61}]
    assert bench.pick_lr(trials, 2.60, 0.25) == 1e-3
    assert bench.pick_lr(trials, 2.60, 0.1) == 2e-4
    assert bench.pick_lr(trials, 2.60, 0.001) is None


def test_learning_rate_options_are_parsed_strictly(bench):
    assert bench.parse_lr_options(["npo=1e-3,2e-4", "mrp=0.01"]) == {"npo": [1e-3, 2e-4], "mrp": [0.01]}
    for bad, says in [("npo", "METHOD=LR"), ("adam=1e-3", "METHOD=LR"), ("npo=fast", "not a list"),
                      ("npo=0", "> 0")]:
        with pytest.raises(SystemExit, match=says):
            bench.parse_lr_options([bad])
