"""LAF forgets a class without reading a label (Shen et al., ICLR 2024, at small scale on CPU).

The paper's claim, here: on digits (2 x 256 MLP), forgetting one class takes its accuracy to at
most 10% while retain accuracy stays within 3 points of the original's, through datasets whose
labels raise when read. Measured at the defaults for every digit class (see workers/unlearning/laf.py):
forget accuracy 0%, retain accuracy -0.7 to -5.5 points (within 3 for 8 of 10 classes); this test
forgets digit 3 (-1.1 points on the training records, -1.1 on held-out ones).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from tests.workers.unlearning.digits_classes import (
    LabelRead,
    LabelsWithheld,
    WithheldLabel,
    digit_classes,
    unlabelled_loader,
)
from workers.unlearning.base import METHODS
from workers.unlearning.laf import (
    Laf,
    alignment_loss,
    bounded_reconstruction_error,
    extractor_unlearning_loss,
    head_layer,
)
from workers.unlearning.methods import load_all_methods

torch.set_num_threads(1)
load_all_methods()

DIGIT = 3


def test_laf_forgets_a_class_without_reading_a_label() -> None:
    digits = digit_classes()
    forget_keys = digits.forget_keys(DIGIT)
    forget = LabelsWithheld(digits.train.subset(forget_keys))
    retain = LabelsWithheld(digits.train.without(forget_keys))
    model, result = Laf().unlearn(digits.original, unlabelled_loader(forget, batch_size=32, shuffle=True),
                                  unlabelled_loader(retain, batch_size=64, shuffle=True))
    assert forget.reads == retain.reads == [0]
    before, after = digits.accuracies(digits.original, DIGIT), digits.accuracies(model, DIGIT)
    assert before["forget"] >= 0.95 and before["test_forget"] >= 0.9, before
    assert after["forget"] <= 0.10 and after["test_forget"] <= 0.10, after
    assert after["retain"] >= before["retain"] - 0.03, (before, after)
    assert after["test_retain"] >= before["test_retain"] - 0.03, (before, after)
    # The head is the original's: LAF changes only the representation.
    head, original_head = head_layer(model), head_layer(digits.original)
    assert torch.equal(head.weight, original_head.weight) and torch.equal(head.bias, original_head.bias)
    assert result.guarantee_class == "approximate" and result.details["representation_dim"] == 256


def test_the_withheld_labels_stop_a_method_that_reads_them() -> None:
    """Negative control: fine-tuning reads its retain labels, and the wrapper catches it."""
    digits = digit_classes()
    forget_keys = digits.forget_keys(DIGIT)
    forget = LabelsWithheld(digits.train.subset(forget_keys))
    retain = LabelsWithheld(digits.train.without(forget_keys))
    with pytest.raises(LabelRead):
        METHODS.get("finetune")().unlearn(digits.original, unlabelled_loader(forget, batch_size=32, shuffle=False),
                                          unlabelled_loader(retain, batch_size=64, shuffle=False))
    assert retain.reads[0] >= 1
    label = WithheldLabel([0])
    for use in (lambda: label.to("cpu"), lambda: int(label), lambda: label == 3, lambda: torch.as_tensor(label),
                lambda: nn.functional.cross_entropy(torch.zeros(1, 2), label), lambda: len(label)):
        with pytest.raises((LabelRead, TypeError)):
            use()
    # The platform's own collate stacks targets, so it too is caught.
    with pytest.raises(LabelRead):
        next(iter(DataLoader(forget, batch_size=4)))


def test_bounded_reconstruction_error_on_hand_made_numbers() -> None:
    e = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    reconstruction = torch.tensor([[1.0, 1.0], [1.0, 3.0]])  # mean squared errors 0 and 5
    error = bounded_reconstruction_error(reconstruction, e)
    assert error.tolist() == pytest.approx([1.0, torch.exp(torch.tensor(5 / 6)).item()])
    assert float(bounded_reconstruction_error(reconstruction * 1e6, e).max()) < torch.e


def test_extractor_unlearning_and_alignment_losses_on_hand_made_numbers() -> None:
    assert extractor_unlearning_loss(torch.tensor([1.0, 1.5]), torch.tensor([2.0])).item() == pytest.approx(-0.75)
    same = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    opposite_side = torch.tensor([[0.0, 1.0]])
    # Retain representations equal to the original's (distance 0); one forget representation at
    # right angles to its original (distance 1): 0 - logsumexp([1]) = -1.
    loss = alignment_loss(same, same, opposite_side, torch.tensor([[1.0, 0.0]]), temperature=1.0)
    assert loss.item() == pytest.approx(-1.0)
    # A lower temperature weights the forget distances more.
    colder = alignment_loss(same, same, opposite_side, torch.tensor([[1.0, 0.0]]), temperature=0.5)
    assert colder.item() == pytest.approx(-2.0)
