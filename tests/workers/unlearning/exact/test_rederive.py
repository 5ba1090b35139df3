"""Derived models (issue 22, finding 2), the library side: the distill and finetune recipes start
from a parent model and record the records they used; redistill and refinetune rebuild a child from
its parent's unlearned version without the forgotten records, equal bit for bit to deriving it
afresh from that version; a child's class is at most its parent's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.workers.training.data import MLP, blobs, state_dicts_close
from workers.artifacts import ArtifactStore
from workers.training import RECIPES, load_run, save_run
from workers.unlearning.base import METHODS
from workers.unlearning.catalogue import weakest_guarantee
from workers.unlearning.methods import load_all_methods

load_all_methods()

PLAIN = {"architecture": MLP, "epochs": 2, "batch_size": 8, "lr": 0.02}
CHILD = {"architecture": MLP, "epochs": 2, "batch_size": 8, "lr": 0.02, "seed": 3}
CASES = [("redistill", "distill", {**CHILD, "temperature": 2.5}), ("refinetune", "finetune", CHILD)]


@pytest.fixture(scope="module")
def parents():
    """A parent trained on rec-*, and its unlearned version trained without two of them."""
    data = blobs(48)
    forgotten = data.record_keys[:2]
    return (RECIPES.get("plain")(PLAIN).train(data), RECIPES.get("plain")(PLAIN).train(data.without(forgotten)),
            forgotten)


@pytest.mark.parametrize(("method", "recipe", "config"), CASES, ids=[c[0] for c in CASES])
def test_a_derived_recipe_needs_its_parent_and_records_only_its_own_records(method, recipe, config, parents):
    parent, _, _ = parents
    transfer = blobs(32, seed=4, prefix="transfer")
    with pytest.raises(ValueError, match="parent version's model, which was not given"):
        RECIPES.get(recipe)(config).train(transfer)
    run = RECIPES.get(recipe)(config, parent=parent.model).train(transfer)
    again = RECIPES.get(recipe)(config, parent=parent.model).train(transfer)
    assert {row.record_key for row in run.membership} == set(transfer.record_keys)
    assert state_dicts_close(run.model, again.model, atol=0.0)


def test_finetune_starts_from_the_parents_weights(parents):
    parent, _, _ = parents
    barely = RECIPES.get("finetune")({**CHILD, "epochs": 1, "lr": 1e-9}, parent=parent.model).train(blobs(8, prefix="t"))
    assert state_dicts_close(barely.model, parent.model, atol=1e-6)
    fresh = RECIPES.get("plain")({**CHILD, "epochs": 1, "lr": 1e-9}).train(blobs(8, prefix="t"))
    assert not state_dicts_close(fresh.model, parent.model, atol=1e-3)


def test_distill_matches_the_teachers_outputs(parents):
    parent, _, _ = parents
    transfer = blobs(64, seed=5, prefix="transfer")
    student = RECIPES.get("distill")({**CHILD, "epochs": 8, "temperature": 1.0}, parent=parent.model).train(transfer)
    inputs = torch.stack([transfer[i][1] for i in range(len(transfer))])
    with torch.no_grad():
        agree = (student.model(inputs).argmax(-1) == parent.model(inputs).argmax(-1)).float().mean()
    assert agree >= 0.9


@pytest.mark.parametrize(("method", "recipe", "config"), CASES, ids=[c[0] for c in CASES])
def test_rederiving_equals_deriving_afresh_from_the_unlearned_parent(method, recipe, config, parents, tmp_path: Path):
    parent, unlearned_parent, forgotten = parents
    # The child's own data held one forgotten record (a transfer set taken from the parent's data).
    own = blobs(48).subset(blobs(48).record_keys[1:30])
    store = ArtifactStore(tmp_path)
    child = load_run(store, save_run(store, RECIPES.get(recipe)(config, parent=parent.model).train(own)).artifact_id)
    forget = own.subset([k for k in forgotten if k in own.record_keys])
    retain = own.without(forgotten)
    new, result = METHODS.get(method)().unlearn(child, forget, retain, parent_model=unlearned_parent.model,
                                                parent={"version_id": 7, "artifact_sha256": "ab" * 32})
    afresh = RECIPES.get(recipe)(config, parent=unlearned_parent.model).train(retain)
    assert state_dicts_close(new.model, afresh.model, atol=0.0)
    assert {row.record_key for row in new.membership} == set(retain.record_keys)
    assert new.config["parent"] == {"version_id": 7, "artifact_sha256": "ab" * 32}
    assert result.guarantee_class == "exact" and result.details["records_forgotten"] == 1
    # A child that holds the records only through its parent: nothing of its own to forget.
    _, only_parent = METHODS.get(method)().unlearn(child, own.subset([]), own, parent_model=unlearned_parent.model,
                                                   parent={"version_id": 7, "artifact_sha256": "ab" * 32})
    assert only_parent.details["records_forgotten"] == 0
    with pytest.raises(ValueError, match="parent_model"):
        METHODS.get(method)().unlearn(child, forget, retain)


@pytest.mark.parametrize(("classes", "weakest"), [
    (("exact", "exact"), "exact"), (("exact", "approximate"), "approximate"),
    (("exact", "exact_attested"), "exact_attested"), (("exact", "dp_bounded"), "dp_bounded"),
    (("dp_bounded", "approximate"), "approximate"), (("exact", "suppressed"), "suppressed"),
    (("exact", ""), "exact"),
])
def test_a_child_promises_at_most_what_its_parent_does(classes, weakest):
    assert weakest_guarantee(*classes) == weakest
    with pytest.raises(ValueError, match="unknown guarantee class"):
        weakest_guarantee("exact", "roughly")
