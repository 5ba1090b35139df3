"""The classifier of Acme's exam results: raw lab measurements in, a diagnosis out."""

from __future__ import annotations

import torch
from torch import nn


class ExamNet(nn.Module):
    """asinh on the raw measurements (their scales differ by orders of magnitude; no statistics of
    the training data are baked into the module), a hidden layer with layer norm, a linear classifier.
    Layer norm, unlike batch norm, works the same on a batch of one."""

    def __init__(self, in_features: int, num_classes: int, hidden: int) -> None:
        super().__init__()
        self.hidden = nn.Sequential(nn.Linear(in_features, hidden), nn.LayerNorm(hidden), nn.GELU())
        self.classifier = nn.Linear(hidden, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.hidden(torch.asinh(features.flatten(1))))


def build_exam_net(*, in_features: int, num_classes: int, hidden: int = 32) -> ExamNet:
    """The factory the entry point names: JSON keyword arguments in, a fresh module out."""
    return ExamNet(in_features, num_classes, hidden)
