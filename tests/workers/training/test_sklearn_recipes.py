"""The scikit-learn recipes (sklearn, sklearn_sisa): they fit the template deterministically, store
and load back bit for bit through skops, and load a skops file only when every type it names is on
the allow-list, even where skops itself would trust more."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.workers.training.data import SCALER_AND_LOGISTIC_REGRESSION, SKLEARN_ARCHITECTURE, blobs
from workers.artifacts import ArtifactStore
from workers.training import RECIPES, load_run, save_run
from workers.training.sisa import keyed_assignment
from workers.training.sklearn_estimators import (
    SkopsRefused,
    class_probabilities,
    load_skops,
    seeded_clone,
    template_of,
    type_allowed,
)
from workers.unlearning.exact.replay import compare_runs

CONFIGS = {
    "sklearn": {"architecture": SKLEARN_ARCHITECTURE, "estimator": SCALER_AND_LOGISTIC_REGRESSION},
    "sklearn_sisa": {"architecture": SKLEARN_ARCHITECTURE, "estimator": SCALER_AND_LOGISTIC_REGRESSION,
                     "shards": 3, "shard_key": "k"},
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_the_recipes_learn_and_store_and_load_back_bit_for_bit(name: str, tmp_path: Path) -> None:
    train, held = blobs(72), blobs(40, seed=1, prefix="held")
    run = RECIPES.get(name)(CONFIGS[name]).train(train)
    assert sorted(row.record_key for row in run.membership) == sorted(train.record_keys)
    if name == "sklearn_sisa":  # one slice, the shard the keyed hash gives
        assert all((row.shard, row.slice) == keyed_assignment(row.record_key, key="k", shards=3, slices=1)
                   for row in run.membership)
    logits = run.model(held.inputs)
    assert logits.shape == (40, 2) and not logits.requires_grad
    assert (logits.argmax(1) == held.targets).float().mean() > 0.85
    store = ArtifactStore(tmp_path)
    loaded = load_run(store, save_run(store, run).artifact_id)
    assert compare_runs(loaded, run).identical
    assert torch.equal(loaded.model(held.inputs), logits)
    again = RECIPES.get(name)(CONFIGS[name]).train(train)
    assert compare_runs(again, run).identical


def test_an_unset_random_state_comes_from_the_seed_and_a_set_one_is_kept() -> None:
    from sklearn.linear_model import SGDClassifier

    train = blobs(72)
    unset = {"architecture": SKLEARN_ARCHITECTURE, "estimator": template_of(SGDClassifier(loss="log_loss"))}
    first, again, other = (RECIPES.get("sklearn")({**unset, "seed": seed}).train(train) for seed in (0, 0, 1))
    assert compare_runs(first, again).identical and not compare_runs(first, other).identical
    assert seeded_clone(SGDClassifier(random_state=7), 123).random_state == 7


def test_a_shard_that_saw_one_class_predicts_probability_zero_for_the_other() -> None:
    from sklearn.dummy import DummyClassifier

    one_class = DummyClassifier().fit(np.zeros((3, 2)), [1, 1, 1])
    assert class_probabilities(one_class, np.zeros((2, 2)), 3).tolist() == [[0, 1, 0], [0, 1, 0]]


class Smuggled:
    pass


def test_the_allow_list_refuses_types_outside_sklearn_numpy_scipy_even_where_skops_would_trust_them(
        monkeypatch) -> None:
    import skops.io

    assert type_allowed("sklearn.pipeline.Pipeline") and type_allowed("numpy.ndarray")
    assert type_allowed("builtins.list") and not type_allowed("builtins.eval")
    assert not type_allowed("functools.partial") and not type_allowed(f"{__name__}.Smuggled")
    data = skops.io.dumps([Smuggled()])
    monkeypatch.setattr(skops.io, "get_untrusted_types", lambda **kwargs: [])  # as if skops trusted it
    with pytest.raises(SkopsRefused, match=f"{__name__}.Smuggled") as refused:
        load_skops(data)
    assert refused.value.code == "untrusted_types"
