"""Transfer training that keeps deletable data out of the weights (arXiv 2405.10425) on digits.

The company's training split is 5% static records and 95% non-static ones; the auxiliary pool is a
disjoint public split with its own labels. The recipe (static + the nearest auxiliary example of each
non-static record) beats training on the static records alone; no non-static record enters training;
deleting a record whose auxiliary example another record still selects leaves the model's hash as it
was, and one that changes the selection retrains without the dropped example. The same holds of the
registered recipe (``keep_out_transfer``, the plain recipe's loop on an mlp); its deletion plan, the
records' roles and the stored selection are checked with hand-made keys. The selection measures
distances on standardised features: a feature of huge range does not decide it.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from workers.artifacts import ArtifactStore
from workers.datasets.memory import TensorRecordDataset
from workers.training import RECIPES, load_run, save_run
from workers.training.evaluate import accuracy as dataset_accuracy
from workers.training.keep_out_transfer import (
    FeatureScaling,
    KeepOutTransferConfig,
    keep_out_deletion,
    keep_out_plan,
    record_roles,
    select_auxiliary,
    selected_auxiliary,
    selection_from_tensors,
    selection_to_tensors,
    train_keep_out,
    training_keys,
    weights_sha256,
)
from workers.unlearning.base import ConfigError

CONFIG = KeepOutTransferConfig(seed=0, neighbours=1)


@cache
def digits_split() -> dict:
    images, digits = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(digits))
    company, pool, test = order[:800], order[800:1400], order[1400:]
    features = {f"r{i}": images[i] / 16.0 for i in range(len(digits))}
    labels = {f"r{i}": int(digits[i]) for i in range(len(digits))}
    static = [f"r{i}" for i in company[:40]]  # 5% of the company's training split
    non_static = [f"r{i}" for i in company[40:]]
    pool_keys = [f"r{i}" for i in pool]
    return {"features": features, "labels": labels, "static": static, "non_static": non_static,
            "pool_keys": pool_keys, "test": [f"r{i}" for i in test]}


def scaled_selection(features: dict[str, np.ndarray], scaling: FeatureScaling | None = None
                     ) -> dict[str, tuple[str, ...]]:
    """The split's selection on ``features``, standardised with the pool's and the static records'
    statistics (or with ``scaling``)."""
    split = digits_split()
    pool = np.stack([features[k] for k in split["pool_keys"]])
    if scaling is None:
        scaling = FeatureScaling.fit(np.concatenate([pool, np.stack([features[k] for k in split["static"]])]))
    return select_auxiliary({k: features[k] for k in split["non_static"]}, split["pool_keys"], pool, neighbours=1,
                            scaling=scaling)


@cache
def selection() -> dict[str, tuple[str, ...]]:
    return scaled_selection(digits_split()["features"])


def accuracy(model, keys) -> float:
    split = digits_split()
    x = torch.tensor(np.stack([split["features"][k] for k in keys]), dtype=torch.float32)
    y = torch.tensor([split["labels"][k] for k in keys])
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def test_the_recipe_beats_static_data_alone_and_keeps_non_static_records_out(capsys):
    split = digits_split()
    keys = training_keys(split["static"], selection())
    assert not set(keys) & set(split["non_static"])  # the membership holds no non-static record
    assert set(selection()) == set(split["non_static"])  # the lineage: what each record selected
    recipe = train_keep_out(split["features"], split["labels"], keys, classes=10, config=CONFIG)
    static_only = train_keep_out(split["features"], split["labels"], split["static"], classes=10, config=CONFIG)
    with_recipe, alone = accuracy(recipe, split["test"]), accuracy(static_only, split["test"])
    with capsys.disabled():
        print(f"\nkeep-out transfer on digits, 5% static: test accuracy {with_recipe:.3f} "
              f"(static + {len(keys) - len(split['static'])} auxiliary) vs {alone:.3f} (static alone)")
    assert with_recipe > alone + 0.05


def test_a_deletion_that_changes_no_selection_leaves_the_model_hash_unchanged():
    split = digits_split()
    chosen = selection()
    choosers: dict[str, list[str]] = {}
    for key, aux in chosen.items():
        choosers.setdefault(aux[0], []).append(key)
    shared = next(keys[0] for keys in choosers.values() if len(keys) > 1)
    alone = next(keys[0] for keys in choosers.values() if len(keys) == 1)
    model = train_keep_out(split["features"], split["labels"], training_keys(split["static"], chosen),
                           classes=10, config=CONFIG)

    unchanged = keep_out_deletion(chosen, [shared])
    assert not unchanged.retrain and unchanged.dropped_auxiliary == ()
    assert shared not in unchanged.selection and "unchanged" in unchanged.reason
    # Nothing to retrain; and retraining anyway on the (same) training set gives the same weights.
    again = train_keep_out(split["features"], split["labels"], training_keys(split["static"], unchanged.selection),
                           classes=10, config=CONFIG)
    assert weights_sha256(again) == weights_sha256(model)

    changed = keep_out_deletion(chosen, [alone])
    assert changed.retrain and changed.dropped_auxiliary == chosen[alone]
    new_keys = training_keys(split["static"], changed.selection)
    assert not set(chosen[alone]) & set(new_keys) and "retrained" in changed.reason
    retrained = train_keep_out(split["features"], split["labels"], new_keys, classes=10, config=CONFIG)
    assert weights_sha256(retrained) != weights_sha256(model)


def test_a_feature_of_huge_range_no_longer_decides_the_selection():
    split = digits_split()
    features, pool_keys, non_static = split["features"], split["pool_keys"], split["non_static"]
    column = int(np.argmax(np.stack([features[k] for k in pool_keys]).std(axis=0)))
    # One pixel blown up by 2**20 (about a million): exact in floating point, so the standardised
    # distances (and the selection) are the same bits as before.
    huge = {k: v * np.where(np.arange(v.size) == column, 2.0 ** 20, 1.0) for k, v in features.items()}
    assert scaled_selection(huge) == selection()

    def pixel_gap(key: str, auxiliary: str) -> float:
        return abs(huge[key][column] - huge[auxiliary][column])

    smallest = {k: min(pixel_gap(k, a) for a in pool_keys) for k in non_static}
    # Unscaled Euclidean distance (the identity scaling: what the selection measured before) picks,
    # for every record, an example nearest in that one pixel; the standardised selection mostly not.
    width = features[pool_keys[0]].size
    unscaled = scaled_selection(huge, FeatureScaling(mean=np.zeros(width), scale=np.ones(width)))
    assert all(pixel_gap(k, unscaled[k][0]) == smallest[k] for k in non_static)
    decided = sum(pixel_gap(k, selection()[k][0]) == smallest[k] for k in non_static) / len(non_static)
    assert decided < 0.75, decided  # 0.45 on this split; 1.0 unscaled
    # The recipe fits its scaling on the pool and the static records (never the non-static ones),
    # in the order it reads them (the pool's keys, then the static ones, each sorted), and stores it.
    train, _ = digits_records()
    by_key = dict(zip(train.record_keys, train.inputs.double().numpy(), strict=True))
    read = sorted(k for k in by_key if k.startswith("public-")) + sorted(k for k in by_key if k.startswith("static-"))
    assert recipe_run().keep_out_scaling == FeatureScaling.fit(np.stack([by_key[k] for k in read]))


def test_bad_input_is_refused_by_name():
    chosen = selection()
    with pytest.raises(ValueError, match="not non-static records of this model: r-static"):
        keep_out_deletion(chosen, ["r-static"])
    with pytest.raises(ValueError, match="non-static records may not enter training"):
        training_keys([next(iter(chosen))], chosen)
    with pytest.raises(ValueError, match="neighbours must be between 1"):
        select_auxiliary({"a": np.zeros(2)}, ["p"], np.zeros((1, 2)), neighbours=2,
                         scaling=FeatureScaling.fit(np.zeros((1, 2))))
    with pytest.raises(ValueError, match="must be finite"):
        FeatureScaling.fit(np.array([[0.0, np.inf]]))
    with pytest.raises(ValueError, match="do not fit a scaling of width"):
        FeatureScaling.fit(np.zeros((2, 3))).apply(np.zeros(2))
    with pytest.raises(ValueError, match="neighbours must be >= 1"):
        KeepOutTransferConfig.from_dict({"neighbours": 0})
    assert selected_auxiliary({"a": ("p2", "p1"), "b": ("p1",)}) == ["p1", "p2"]


# ---------------------------------------------------------------- the registered recipe


MLP = {"name": "mlp", "config": {"in_features": 64, "num_classes": 10, "hidden": [32], "input_norm": "none"}}
RECIPE = {"architecture": MLP, "epochs": 30, "batch_size": 64, "lr": 0.01, "seed": 0,
          "static_records": r"static-\d+", "auxiliary_records": r"public-\d+", "neighbours": 1}


@cache
def digits_records() -> tuple[TensorRecordDataset, TensorRecordDataset]:
    """The digits split as the company's records: ``static-<i>`` (5% of its training split),
    ``public-<i>`` (the auxiliary pool), ``user-<i>`` (non-static); and the test split."""
    split = digits_split()
    role = {**{k: "static" for k in split["static"]}, **{k: "user" for k in split["non_static"]},
            **{k: "public" for k in split["pool_keys"]}}
    keys = sorted(role)
    features, labels = split["features"], split["labels"]
    train = TensorRecordDataset([f"{role[k]}-{k[1:]}" for k in keys],
                                torch.tensor(np.stack([features[k] for k in keys]), dtype=torch.float32),
                                torch.tensor([labels[k] for k in keys]))
    test = TensorRecordDataset(split["test"], torch.tensor(np.stack([features[k] for k in split["test"]]),
                                                           dtype=torch.float32),
                               torch.tensor([labels[k] for k in split["test"]]))
    return train, test


@cache
def recipe_run():
    return RECIPES.get("keep_out_transfer")(RECIPE).train(digits_records()[0])


def test_the_registered_recipe_keeps_non_static_records_out_and_beats_static_data_alone(capsys):
    train, test = digits_records()
    run = recipe_run()
    members = {row.record_key for row in run.membership}
    users = {k for k in train.record_keys if k.startswith("user-")}
    static = {k for k in train.record_keys if k.startswith("static-")}
    assert set(run.keep_out_selection) == users and not members & users
    assert members == static | set(selected_auxiliary(run.keep_out_selection))
    assert run.metrics["static_records"] == 40 and run.metrics["non_static_records"] == len(users)
    plain = RECIPES.get("plain")({k: v for k, v in RECIPE.items() if k in ("architecture", "epochs", "batch_size",
                                                                           "lr", "seed")})
    alone = plain.train(train.subset(sorted(static)))
    with_recipe, static_only = dataset_accuracy(run.model, test), dataset_accuracy(alone.model, test)
    with capsys.disabled():
        print(f"\nkeep_out_transfer recipe on digits, 5% static: test accuracy {with_recipe:.3f} "
              f"(static + {len(members) - len(static)} auxiliary) vs {static_only:.3f} (plain, static alone)")
    assert with_recipe > static_only + 0.05


def test_the_recipe_is_deterministic_keeps_its_selection_in_the_store_and_retrains_to_the_same_weights(tmp_path):
    train, _ = digits_records()
    run = recipe_run()
    recipe = RECIPES.get("keep_out_transfer")(RECIPE)
    stored = load_run(ArtifactStore(tmp_path), save_run(ArtifactStore(tmp_path), run).artifact_id)
    assert stored.keep_out_selection == run.keep_out_selection and stored.membership == run.membership
    assert stored.keep_out_scaling == run.keep_out_scaling is not None
    # Training is a function of the training set's keys: a deletion that leaves them as they were
    # leaves the weights as they were (what the exact method relies on to keep them).
    static = sorted(k for k in train.record_keys if k.startswith("static-"))
    again = recipe.train_selected(train, static=static, selection=run.keep_out_selection)
    assert weights_sha256(again.model) == weights_sha256(run.model)
    with pytest.raises(ValueError, match="stored with its selection"):
        recipe.save(ArtifactStore(tmp_path), type(run)(run.recipe, run.config, run.model, run.membership))


def test_the_recipe_refuses_a_record_with_two_roles_and_bad_selectors():
    keys = ["static-1", "public-1", "public-2", "user-1"]
    assert record_roles(keys, static_records=r"static-\d+", auxiliary_records=r"public-\d+") == (
        ["static-1"], ["public-1", "public-2"], ["user-1"])
    with pytest.raises(ValueError, match="'public-1' matches both static_records"):
        record_roles(keys, static_records=r"(static|public)-1", auxiliary_records=r"public-\d+")
    config_class = RECIPES.get("keep_out_transfer").config_class
    with pytest.raises(ConfigError, match="static_records must be a regular expression"):
        config_class.from_dict({**RECIPE, "static_records": ""})
    with pytest.raises(ConfigError, match="auxiliary_records is not a regular expression"):
        config_class.from_dict({**RECIPE, "auxiliary_records": "public-("})
    with pytest.raises(ConfigError, match="neighbours must be an integer >= 1"):
        config_class.from_dict({**RECIPE, "neighbours": 0})
    with pytest.raises(ValueError, match="readable auxiliary example"):
        RECIPES.get("keep_out_transfer")({**RECIPE, "auxiliary_records": "nothing"}).train(digits_records()[0])


def test_the_deletion_plan_for_non_static_records_members_and_strangers():
    selection = {"n1": ("a1",), "n2": ("a1",), "n3": ("a2", "a1")}
    members = {"s1", "a1", "a2"}
    shared = keep_out_plan(selection, members, ["n1"])
    assert not shared.retrain and shared.selection == {"n2": ("a1",), "n3": ("a2", "a1")}
    assert shared.dropped_auxiliary == () and "unchanged" in shared.reason
    changed = keep_out_plan(selection, members, ["n3"])
    assert changed.retrain and changed.dropped_auxiliary == ("a2",) and "selection changed" in changed.reason
    example = keep_out_plan(selection, members, ["a1", "x"])
    assert example.retrain and example.members_deleted == ("a1",) and example.not_members == ("x",)
    assert example.selection == {"n1": (), "n2": (), "n3": ("a2",)} and example.static == ("s1",)
    assert "trained the model" in example.reason
    static = keep_out_plan(selection, members, ["s1"])
    assert static.retrain and static.static == () and static.selection == selection
    stranger = keep_out_plan(selection, members, ["x"])
    assert not stranger.retrain and stranger.not_members == ("x",)
    assert selection_from_tensors(selection_to_tensors(selection)) == selection
    assert selection_from_tensors(selection_to_tensors({})) == {}


def test_keeping_the_weights_is_what_a_full_retrain_gives_and_a_changed_selection_retrains():
    from workers.unlearning.base import METHODS
    from workers.unlearning.methods import load_all_methods

    load_all_methods()
    train, _ = digits_records()
    run = recipe_run()
    choosers: dict[str, list[str]] = {}
    for key, chosen in run.keep_out_selection.items():
        choosers.setdefault(chosen[0], []).append(key)
    shared = next(keys[0] for keys in choosers.values() if len(keys) > 1)
    alone = next(keys[0] for keys in choosers.values() if len(keys) == 1)
    for deleted, changes in ((shared, False), (alone, True)):
        retain = train.without([deleted])
        kept, result = METHODS.get("keep_out_transfer")().unlearn(run, [deleted], retain)
        retrained, _ = METHODS.get("retrain")().unlearn(run, [deleted], retain)
        assert result.details["weights_unchanged"] is not changes and result.guarantee_class == "exact"
        assert weights_sha256(kept.model) == weights_sha256(retrained.model)  # bit for bit, either way
        assert (weights_sha256(kept.model) != weights_sha256(run.model)) is changes
        assert kept.keep_out_selection == retrained.keep_out_selection
        assert deleted not in kept.keep_out_selection
