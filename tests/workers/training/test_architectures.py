"""The shared table of model architectures: every registered architecture joins it, builds from its
JSON config, runs a batch, and round-trips its weights through the artifact store (safetensors)."""

from __future__ import annotations

import pytest
import torch

import workers.model_families.entry_points  # noqa: F401  (registers the entry_point architecture, as workers do)
from workers.artifacts import ArtifactManifest, ArtifactStore
from workers.training.architectures import ARCHITECTURES, build_model

# name -> (config, one input batch, output shape)
CASES = {
    "mlp": ({"in_features": 30, "num_classes": 2, "hidden": [32], "input_norm": "batchnorm"},
            torch.randn(4, 30), (4, 2)),
    "small_cnn": ({"channels": [4, 8], "hidden": 16}, torch.zeros(2, 1, 28, 28), (2, 10)),
    "text_bag": ({}, torch.tensor([[5, 6, 0, 0]]), (1, 2)),
    # A module of the company's own installed package (tests/fixtures/company_models, installed by make venv).
    "entry_point": ({"entry_point": "company-tabular", "config": {"in_features": 30, "num_classes": 2, "hidden": 8}},
                    torch.randn(4, 30), (4, 2)),
    # A transformers sequence classifier the platform builds from its config, reading byte tokens.
    "transformers": ({"hf_config": {"model_type": "bert", "hidden_size": 16, "num_hidden_layers": 1,
                                    "num_attention_heads": 2, "intermediate_size": 32, "max_position_embeddings": 16,
                                    "num_labels": 3}},
                     torch.tensor([[72, 106, 0, 0], [105, 33, 34, 0]]), (2, 3)),
}


def test_every_registered_architecture_is_in_the_table():
    assert set(CASES) == set(ARCHITECTURES.names())


@pytest.mark.parametrize("name", sorted(CASES))
def test_builds_runs_and_round_trips_through_the_store(name, tmp_path):
    config, batch, shape = CASES[name]
    spec = {"name": name, "config": config}
    torch.manual_seed(0)
    model = build_model(spec).eval()
    with torch.no_grad():
        out = model(batch)
    assert out.shape == shape
    store = ArtifactStore(tmp_path)
    ref = store.put(ArtifactManifest(kind="model", architecture=spec), {"weights": model.state_dict()})
    rebuilt = build_model(spec).eval()
    rebuilt.load_state_dict(store.load(ref.artifact_id))
    with torch.no_grad():
        assert torch.equal(rebuilt(batch), out)
