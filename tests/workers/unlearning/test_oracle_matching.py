"""Oracle matching's ``out_target``: the mean of the shadow models without a record (the paper's
oracle) or one of them drawn per record (``sampled``), on hand-made outputs and tiny models."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from tests.workers.unlearning.shadow_models import pair_masks, shadow_references, train_mlps
from workers.unlearning.base import METHODS, ConfigError
from workers.unlearning.methods import load_all_methods
from workers.unlearning.oracle_matching import out_model_means, sampled_out_model

load_all_methods()

# (models, records, classes): model m gives record r the logits (10m + r, -(10m + r)).
OUTPUTS = torch.tensor([[[10.0 * m + r, -(10.0 * m + r)] for r in range(3)] for m in range(4)])
# Record 0 is absent from models 1 and 2, record 1 from 0 and 2, record 2 from 0, 1 and 3.
MASKS = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]], dtype=torch.float64)
ABSENT = {0: {1, 2}, 1: {0, 2}, 2: {0, 1, 3}}


def test_a_sampled_target_is_one_model_without_the_record_drawn_uniformly() -> None:
    generator = torch.Generator().manual_seed(0)
    counts = [dict.fromkeys(sorted(ABSENT[r]), 0) for r in range(3)]
    for _ in range(600):
        drawn = sampled_out_model(OUTPUTS, MASKS, generator)
        for record in range(3):
            model = int(drawn[record, 0].item() - record) // 10
            assert torch.equal(drawn[record], OUTPUTS[model, record])
            counts[record][model] += 1  # KeyError for a model that trained on the record
    for record, seen in enumerate(counts):
        expected = 600 / len(ABSENT[record])
        assert all(abs(n - expected) < 0.25 * expected for n in seen.values()), (record, seen)
    # The mean target is the average over the same models, not any one of them.
    assert torch.allclose(out_model_means(OUTPUTS, MASKS)[:, 0], torch.tensor([15.0, 11.0, 46.0 / 3]))


def test_the_draw_repeats_with_the_seed_and_a_record_in_every_model_is_refused() -> None:
    first = sampled_out_model(OUTPUTS, MASKS, torch.Generator().manual_seed(3))
    assert torch.equal(first, sampled_out_model(OUTPUTS, MASKS, torch.Generator().manual_seed(3)))
    with pytest.raises(ValueError, match="every shadow model"):
        sampled_out_model(OUTPUTS, torch.ones_like(MASKS), torch.Generator().manual_seed(0))


def test_an_unknown_out_target_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="out_target"):
        METHODS.get("oracle_matching")({"out_target": "median"})


def test_the_result_states_the_target_it_matched() -> None:
    torch.manual_seed(0)
    inputs, targets = torch.randn(40, 5), torch.randint(0, 3, (40,))
    keys = [f"r{i:02d}" for i in range(40)]
    masks = pair_masks(40, 2, seed=0)
    references = shadow_references(train_mlps(inputs, targets, masks, seed=0, steps=20), masks, keys)
    original = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    records = list(zip(keys, inputs, targets, strict=True))
    forget, retain = records[:4], records[4:]

    def loader(rows):
        return DataLoader(rows, batch_size=16, collate_fn=lambda b: ([k for k, _, _ in b], torch.stack(
            [x for _, x, _ in b]), torch.stack([y for _, _, y in b])))

    for target in ("mean", "sampled"):
        _, result = METHODS.get("oracle_matching")({"out_target": target, "epochs": 1, "seed": 1}).unlearn(
            original, loader(forget), loader(retain), references=references)
        assert result.details["out_target"] == target
