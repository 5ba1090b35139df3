"""eraser_drop (deletion.concept_erasers): records a version holds only through its concept eraser are
forgotten by taking the eraser off; the weights, never trained on them, are kept. Records the weights
were trained on are refused (that is a retrain)."""

from __future__ import annotations

import pytest
import torch

from tests.workers.unlearning.test_concept_erasure import LAYER, digits_classifier, parity_batches
from workers.training.base import TrainingRun
from workers.training.membership import MembershipRow
from workers.unlearning.concept_erasure import erased_layers
from workers.unlearning.exact.eraser_drop import EraserDrop
from workers.unlearning.pef_coupling import PefCoupling


def test_the_eraser_is_taken_off_and_the_weights_kept_and_trained_records_are_refused():
    model, inputs, digits = digits_classifier()
    coupled, _ = PefCoupling({"layer": LAYER, "cells": 8}).unlearn(model, parity_batches(inputs, digits), [])
    membership = [MembershipRow(f"d{i:04d}", 0, 0, i) for i in range(100)]
    run = TrainingRun("plain", {}, coupled, membership)
    new_run, result = EraserDrop().unlearn(run, [], [])
    assert result.guarantee_class == "exact" and result.details["erasers_dropped"] == [LAYER]
    assert not erased_layers(new_run.model) and erased_layers(run.model)  # the stored run is untouched
    # No attribute needed any more: the layer serves what the (unchanged) weights compute.
    assert torch.equal(new_run.model(inputs[:10]), model(inputs[:10]))
    assert new_run.membership == membership
    again, result = EraserDrop().unlearn(new_run, [], [])  # nothing left to take off: the same model
    assert result.details["erasers_dropped"] == [] and torch.equal(again.model(inputs[:3]), model(inputs[:3]))
    with pytest.raises(ValueError, match="trained on 1 of the records to forget .d0007.: retrain instead"):
        EraserDrop().unlearn(run, ["d0007", "x-1"], [])
