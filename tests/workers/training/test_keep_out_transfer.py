"""Transfer training that keeps deletable data out of the weights (arXiv 2405.10425) on digits.

The company's training split is 5% static records and 95% non-static ones; the auxiliary pool is a
disjoint public split with its own labels. The recipe (static + the nearest auxiliary example of each
non-static record) beats training on the static records alone; no non-static record enters training;
deleting a record whose auxiliary example another record still selects leaves the model's hash as it
was, and one that changes the selection retrains without the dropped example.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from workers.training.keep_out_transfer import (
    KeepOutTransferConfig,
    keep_out_deletion,
    select_auxiliary,
    selected_auxiliary,
    train_keep_out,
    training_keys,
    weights_sha256,
)

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


@cache
def selection() -> dict[str, tuple[str, ...]]:
    split = digits_split()
    return select_auxiliary({k: split["features"][k] for k in split["non_static"]}, split["pool_keys"],
                            np.stack([split["features"][k] for k in split["pool_keys"]]), neighbours=1)


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


def test_bad_input_is_refused_by_name():
    chosen = selection()
    with pytest.raises(ValueError, match="not non-static records of this model: r-static"):
        keep_out_deletion(chosen, ["r-static"])
    with pytest.raises(ValueError, match="non-static records may not enter training"):
        training_keys([next(iter(chosen))], chosen)
    with pytest.raises(ValueError, match="neighbours must be between 1"):
        select_auxiliary({"a": np.zeros(2)}, ["p"], np.zeros((1, 2)), neighbours=2)
    with pytest.raises(ValueError, match="neighbours must be >= 1"):
        KeepOutTransferConfig.from_dict({"neighbours": 0})
    assert selected_auxiliary({"a": ("p2", "p1"), "b": ("p1",)}) == ["p1", "p2"]
