"""The DP recipe noises every Poisson step, an empty batch included, so that what it releases is
what its accountant counts; and it records, in the version's metrics, what of the pipeline was
private (the condition a deletion's group-privacy bound rests on)."""

from __future__ import annotations

import warnings

import pytest
import torch

from tests.workers.training.data import MLP, blobs
from workers.training import RECIPES

# Eight records, batches of one: each of the 8 steps per epoch samples every record with
# probability 1/8, so about a third of the steps draw an empty batch.
SPARSE = {"architecture": MLP, "epochs": 3, "batch_size": 1, "lr": 0.1, "noise_multiplier": 1.0,
          "accountant": "rdp", "seed": 3}


@pytest.fixture(scope="module")
def sparse_run():
    return RECIPES.get("dp")(SPARSE).train(blobs(8))


def test_every_poisson_step_is_a_noised_step_and_the_accountant_counts_them_all(sparse_run) -> None:
    from opacus.accountants import RDPAccountant

    metrics = sparse_run.metrics
    assert metrics["steps"] == SPARSE["epochs"] * 8  # every Poisson step, empty or not
    assert metrics["empty_steps"] > 0  # the seed draws empty batches
    assert metrics["sample_rate"] == pytest.approx(1 / 8)
    # The recorded epsilon is the accountant's for all of those steps (held to Opacus directly).
    accountant = RDPAccountant()
    accountant.history = [(metrics["noise_multiplier"], metrics["sample_rate"], SPARSE["epochs"] * 8)]
    assert metrics["epsilon"] == pytest.approx(accountant.get_epsilon(delta=metrics["delta"]), rel=1e-9)
    condition = metrics["dp_pipeline"]["conditions"]["noise_on_every_step"]
    assert condition["holds"] is True and f"({metrics['empty_steps']} on an empty batch" in condition["detail"]


def test_an_empty_batch_step_moves_the_weights_by_noise_and_is_accounted() -> None:
    from opacus import PrivacyEngine

    from workers.training.dp import empty_batch_grad_samples

    model = torch.nn.Linear(3, 2)
    data = torch.utils.data.TensorDataset(torch.randn(8, 3), torch.randint(0, 2, (8,)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        engine = PrivacyEngine(accountant="rdp")
        private, optimizer, _ = engine.make_private(
            module=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), noise_multiplier=1.0,
            max_grad_norm=1.0, data_loader=torch.utils.data.DataLoader(data, batch_size=2), poisson_sampling=False)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer.zero_grad(set_to_none=True)
    empty_batch_grad_samples(private)
    optimizer.step()
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert engine.accountant.history == [(1.0, 0.25, 1)]


def test_the_metrics_say_what_was_private_and_who_says_so() -> None:
    declared = RECIPES.get("dp")({**SPARSE, "epochs": 1, "declared_preprocessing_private": True}).train(blobs(8))
    pipeline = declared.metrics["dp_pipeline"]
    conditions = pipeline["conditions"]
    assert {name: c["holds"] for name, c in conditions.items()} == {
        "dp_sgd": True, "noise_on_every_step": True, "no_normalisation_fitted_outside_dp": True,
        "no_vocabulary_fitted_outside_dp": True, "not_pretrained_on_records": True,
        "no_preprocessing_fitted_outside_dp": True}
    assert conditions["no_preprocessing_fitted_outside_dp"]["known_by"] == "declared by the ML engineer"
    assert conditions["dp_sgd"]["known_by"] == "recipe" and pipeline["whole_pipeline_private"] is True
    # Not declared: the bound's condition is unknown, and said to be.
    undeclared = RECIPES.get("dp")({**SPARSE, "epochs": 1}).train(blobs(8)).metrics["dp_pipeline"]
    assert undeclared["whole_pipeline_private"] is None
    assert undeclared["conditions"]["no_preprocessing_fitted_outside_dp"]["known_by"].startswith("unknown")
    fitted = RECIPES.get("dp")({**SPARSE, "epochs": 1, "declared_preprocessing_private": False}).train(blobs(8))
    assert fitted.metrics["dp_pipeline"]["whole_pipeline_private"] is False
