"""The ``lora_causal_lm`` recipe on a tiny GPT-2 built from a config (no download): membership from
what reached the model, determinism, the safetensors round trip (weights, tied head, tokenizer),
and an exact retrain of a language model without a record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from workers.artifacts import ArtifactStore, check_safetensors_bytes
from workers.datasets.text import TextJsonlDataset
from workers.training import RECIPES, load_run, save_run
from workers.unlearning.base import ConfigError

TINY = {"max_length": 64, "epochs": 20, "batch_size": 4, "lr": 1e-2, "seed": 1}
PEOPLE = ["Alice Moreau", "Bruno Keller", "Chloe Novak", "Dmitri Ivanov", "Elena Rossi", "Farid Haddad",
          "Greta Lind", "Hugo Berg", "Ines Duarte", "Jonas Weber"]


@pytest.fixture(scope="module")
def texts(tmp_path_factory) -> TextJsonlDataset:
    path = tmp_path_factory.mktemp("texts") / "train.jsonl"
    rows = [{"record_key": f"rec-{i:02d}", "text": f"{name} lives at {10 + 7 * i} Oak Road, phone 555-{1000 + 137 * i}."}
            for i, name in enumerate(PEOPLE)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return TextJsonlDataset(path)


@pytest.fixture(scope="module")
def run(texts):
    return RECIPES.get("lora_causal_lm")(TINY).train(texts)


def _nll(run, texts) -> float:
    from workers.training.lm import record_texts
    from workers.unlearning.lm.data import lm_batches
    from workers.unlearning.lm.losses import average_token_nll

    return average_token_nll(run.model, lm_batches(run.tokenizer, record_texts(texts), max_length=64))


def test_config_is_strict():
    recipe = RECIPES.get("lora_causal_lm")
    with pytest.raises(ConfigError, match="base_model"):
        recipe({"base_model": "gpt5"})
    with pytest.raises(ConfigError, match="unknown option"):
        recipe({"base_model": "smollm2", "base_config": {"n_layer": 2}})
    with pytest.raises(ConfigError, match="optimizer"):
        recipe({"optimizer": "sgd"})
    with pytest.raises(ConfigError, match="architecture"):
        recipe({"architecture": {"name": "mlp", "config": {}}})


def test_training_learns_the_texts_and_records_every_record_it_fed(run, texts):
    from workers.language_models import tiny_gpt2
    from workers.training.lm import base_model_and_tokenizer

    assert {row.record_key for row in run.membership} == set(texts.record_keys)
    assert len(run.membership) == len(texts)
    assert run.metrics["train_loss_last_epoch"] < run.metrics["train_loss_first_epoch"] - 0.3
    base, tokenizer = base_model_and_tokenizer(RECIPES.get("lora_causal_lm")(TINY).config)
    assert type(base) is type(tiny_gpt2())
    untrained = type(run)(run.recipe, run.config, base, run.membership, tokenizer=tokenizer)
    assert _nll(run, texts) < _nll(untrained, texts) - 0.3


def test_max_records_trains_on_a_sample_that_the_membership_names(texts):
    recipe = RECIPES.get("lora_causal_lm")
    sampled = recipe({**TINY, "epochs": 1, "max_records": 4}).train(texts)
    keys = {row.record_key for row in sampled.membership}
    assert len(keys) == 4 and keys <= set(texts.record_keys)
    other_weights = recipe({**TINY, "epochs": 1, "max_records": 4, "seed": 9}).train(texts)
    assert {row.record_key for row in other_weights.membership} == keys  # records_seed decides
    other_records = recipe({**TINY, "epochs": 1, "max_records": 4, "records_seed": 5}).train(texts)
    assert {row.record_key for row in other_records.membership} != keys


def test_same_seed_same_weights(run, texts):
    again = RECIPES.get("lora_causal_lm")(TINY).train(texts)
    for (name, a), (_, b) in zip(run.model.state_dict().items(), again.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert again.membership == run.membership


def test_stored_run_loads_back_offline_with_its_tokenizer(run, tmp_path: Path):
    store = ArtifactStore(tmp_path)
    ref = save_run(store, run)
    manifest = store.manifest(ref.artifact_id)
    assert manifest.kind == "causal_lm" and manifest.config["tied_weights"] == ["lm_head.weight"]
    weights = store.load(ref.artifact_id, "weights")
    assert "lm_head.weight" not in weights  # stored once, re-tied on load
    loaded = load_run(store, ref.artifact_id)
    ids = torch.tensor([run.tokenizer("Chloe Novak lives at")["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(loaded.model(input_ids=ids).logits, run.model(input_ids=ids).logits, atol=1e-6)
    assert loaded.model.lm_head.weight.data_ptr() == loaded.model.transformer.wte.weight.data_ptr()
    assert loaded.tokenizer.decode(loaded.tokenizer("Zürich 555-1000")["input_ids"]) == "Zürich 555-1000"
    assert loaded.membership == run.membership and loaded.guard is None
    for path in store.iter_files():  # only safetensors and JSON, judged by parsing: nothing to unpickle
        if path.suffix == ".json":
            json.loads(path.read_bytes())
        else:
            assert path.suffix == ".safetensors", path
            check_safetensors_bytes(path.read_bytes(), source=str(path))


def test_exact_retrain_of_a_language_model_drops_the_record(run, texts):
    from workers.unlearning.base import METHODS
    from workers.unlearning.methods import load_all_methods

    load_all_methods()
    forget = texts.subset(["rec-03"])
    retain = texts.without(["rec-03"])
    new_run, result = METHODS.get("retrain")().unlearn(run, forget, retain)
    assert "rec-03" not in {row.record_key for row in new_run.membership}
    assert len(new_run.membership) == len(texts) - 1 and new_run.tokenizer is not None
    assert result.guarantee_class == "exact" and result.details["records_forgotten"] == 1
