"""Membership is what the loaders yielded: a record that never reached the model is not a member,
whatever list the recipe was given."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from tests.workers.training.data import MLP, UnreadableRecords, blobs
from workers.training import RECIPES
from workers.training.membership import (
    DuplicateShardMembership,
    MembershipRow,
    MembershipSink,
    RecordingLoader,
    collate_records,
)


def test_sink_keeps_the_first_slice_and_numbers_positions_per_slice() -> None:
    sink = MembershipSink()
    sink.record(["b", "a"], shard=0, slice=0)
    sink.record(["a", "c", "b"], shard=0, slice=1)  # a, b seen again: they stay in slice 0
    sink.record(["d"], shard=1, slice=0)
    assert sink.rows() == [
        MembershipRow("b", 0, 0, 0), MembershipRow("a", 0, 0, 1),
        MembershipRow("c", 0, 1, 0), MembershipRow("d", 1, 0, 0),
    ]
    assert sink.yields == 6


def test_a_record_reaching_two_shards_is_an_error() -> None:
    sink = MembershipSink()
    sink.record(["a"], shard=0, slice=0)
    with pytest.raises(DuplicateShardMembership):
        sink.record(["a"], shard=1, slice=0)


def test_recording_loader_reports_exactly_the_keys_it_yields() -> None:
    dataset = UnreadableRecords(blobs(10), {"rec-003"})
    sink = MembershipSink()
    loader = DataLoader(dataset, batch_size=4, collate_fn=collate_records)
    yielded = [key for keys, _, _ in RecordingLoader(loader, sink, shard=2, slice=1) for key in keys]
    assert "rec-003" not in yielded and len(yielded) == 9
    assert sink.keys() == set(yielded)
    assert {(r.shard, r.slice) for r in sink.rows()} == {(2, 1)}


@pytest.mark.parametrize(
    ("recipe", "config"),
    [
        ("plain", {"epochs": 1}),
        ("sisa", {"epochs": 1, "shards": 2, "slices": 2}),
        ("dp", {"epochs": 1, "batch_size": 16}),
    ],
)
def test_a_record_dropped_inside_the_loader_is_absent_from_membership(recipe: str, config: dict) -> None:
    dataset = blobs(48)
    dropped = "rec-017"
    run = RECIPES.get(recipe)({"architecture": MLP, **config}).train(UnreadableRecords(dataset, {dropped}))
    keys = {row.record_key for row in run.membership}
    assert dropped in dataset.record_keys  # the recipe was asked to train on it ...
    assert dropped not in keys  # ... but it never reached the model
    if recipe != "dp":  # Poisson sampling may also skip records; the others yield the rest
        assert keys == set(dataset.record_keys) - {dropped}
    assert run.metrics["records_given"] == 48


def test_dp_membership_is_the_records_poisson_sampling_drew() -> None:
    dataset = blobs(48)
    run = RECIPES.get("dp")({"architecture": MLP, "epochs": 1, "batch_size": 4}).train(dataset)
    # One epoch of 12 Poisson draws at rate 1/12 leaves ~35% of records unsampled; they are
    # not members, and the metrics say so.
    assert run.metrics["records_yielded"] == len(run.membership) < 48
    assert torch.is_tensor(next(run.model.parameters()))
