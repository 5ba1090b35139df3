"""Blindspot (Tarun et al., "Deep Regression Unlearning", ICML 2023) at small scale on CPU.

The paper's claim, here: on scikit-learn's diabetes set (MLP 10-64-64-1, MSE, trained to memorise
its 354 training records), after forgetting 30 of them Blindspot's predictions on those records are
closer to a model retrained without them than fine-tuning's (retain-set MSE training with the same
optimizer, learning rate and epochs). Measured when written (seed 0): RMS distance to the retrained
model's forget-set predictions, original 75.8, fine-tune 77.7, Blindspot 61.5 (two retrained models
differ by 42.6 from each other: the floor).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from tests.workers.unlearning.test_method_harness import TensorRecords
from workers.datasets.reference import DIABETES_MLP
from workers.training.architectures import build_model
from workers.training.membership import collate_records
from workers.unlearning.base import ConfigError
from workers.unlearning.blindspot import (
    Blindspot,
    BlindspotConfig,
    activation_difference,
    attention_map,
)
from workers.unlearning.methods import load_all_methods

torch.set_num_threads(1)
load_all_methods()

FORGET = 30


def _fit(inputs: Tensor, targets: Tensor, *, seed: int, steps: int = 200) -> nn.Module:
    """Full-batch Adam on MSE: the model memorises its records (train RMSE ~10, held-out ~75)."""
    torch.manual_seed(seed)
    model = build_model(DIABETES_MLP)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.mse_loss(model(inputs).squeeze(-1), targets).backward()
        optimizer.step()
    return model.eval()


def _finetune(model: nn.Module, retain: DataLoader, config: BlindspotConfig) -> nn.Module:
    """The baseline: retain-set MSE with Blindspot's optimizer, learning rate and epochs."""
    tuned = copy.deepcopy(model).train()
    optimizer = torch.optim.Adam(tuned.parameters(), lr=config.lr)
    for _ in range(config.epochs):
        for _keys, inputs, targets in retain:
            optimizer.zero_grad()
            nn.functional.mse_loss(tuned(inputs).squeeze(-1), targets).backward()
            optimizer.step()
    return tuned.eval()


@pytest.fixture(scope="module")
def diabetes():
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True)
    inputs, targets = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    order = torch.randperm(len(targets), generator=torch.Generator().manual_seed(0))
    train = order[:354]
    records = TensorRecords(inputs[train], targets[train])
    keys = list(records.record_keys)
    return {
        "records": records, "forget_keys": keys[:FORGET], "retain_keys": keys[FORGET:],
        "original": _fit(inputs[train], targets[train], seed=0),
        "retrained": _fit(inputs[train[FORGET:]], targets[train[FORGET:]], seed=0),
        "forget_inputs": inputs[train[:FORGET]],
    }


def _loaders(data) -> tuple[DataLoader, DataLoader]:
    records = data["records"]
    return (DataLoader(records.subset(data["forget_keys"]), batch_size=64, collate_fn=collate_records),
            DataLoader(records.subset(data["retain_keys"]), batch_size=64, collate_fn=collate_records))


def _distance(model: nn.Module, reference: nn.Module, inputs: Tensor) -> float:
    """RMS difference of two models' predictions on ``inputs``."""
    with torch.no_grad():
        return float((model.eval()(inputs) - reference.eval()(inputs)).pow(2).mean().sqrt())


def test_blindspot_is_closer_to_the_retrained_model_than_fine_tuning(diabetes) -> None:
    forget, retain = _loaders(diabetes)
    config = BlindspotConfig()
    unlearned, result = Blindspot(config).unlearn(diabetes["original"], forget, retain)
    tuned = _finetune(diabetes["original"], retain, config)
    inputs, retrained = diabetes["forget_inputs"], diabetes["retrained"]
    blindspot, finetune = _distance(unlearned, retrained, inputs), _distance(tuned, retrained, inputs)
    original = _distance(diabetes["original"], retrained, inputs)
    assert blindspot < 0.9 * finetune, (blindspot, finetune, original)
    assert blindspot < 0.9 * original, (blindspot, finetune, original)
    assert result.guarantee_class == "approximate" and result.details["matched_layers"] == 2
    # The hooks that matched the layers are gone from the model handed back.
    assert all(not module._forward_hooks for module in unlearned.modules())


def test_a_classifier_or_class_labels_are_refused(diabetes) -> None:
    forget, retain = _loaders(diabetes)
    classifier = nn.Sequential(nn.Linear(10, 3))
    with pytest.raises(ValueError, match="one output per input; this model gives 3"):
        Blindspot().unlearn(classifier, forget, retain)
    labels = TensorRecords(torch.zeros(8, 10), torch.zeros(8, dtype=torch.int64))
    as_loader = DataLoader(labels, batch_size=4, collate_fn=collate_records)
    with pytest.raises(ValueError, match="targets are torch.int64 \\(class labels\\)"):
        Blindspot().unlearn(diabetes["original"], as_loader, as_loader)


def test_bad_configs_name_the_field() -> None:
    with pytest.raises(ConfigError, match="blindspot_epochs must be >= 1"):
        BlindspotConfig(blindspot_epochs=0).validate()
    with pytest.raises(ConfigError, match="nothing would move the forget set"):
        BlindspotConfig(forget_weight=0.0, activation_weight=0.0).validate()


def test_the_activation_term_is_zero_for_equal_maps_and_positive_otherwise() -> None:
    a = torch.tensor([[1.0, 2.0, 0.0]])
    assert torch.allclose(attention_map(a).norm(dim=1), torch.ones(1))
    assert float(activation_difference([a], [2 * a])) == pytest.approx(0.0, abs=1e-12)  # scale-free
    assert float(activation_difference([a], [torch.tensor([[0.0, 0.0, 1.0]])])) > 0.1
