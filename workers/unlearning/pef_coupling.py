"""PEF-style concept erasure: "stop using attribute X" where a linear-only guarantee is not enough.

Each attribute group's representations at one layer are transported onto one shared distribution (the
Wasserstein barycenter of the groups' distributions over a k-means codebook), as the perfect erasure
functions of Basu Roy Chowdhury et al. (AISTATS 2025) do on discrete supports; the math and the eraser
are in :mod:`workers.unlearning.concept_coupling`. The erased layer's output is then (approximately)
independent of the attribute, so non-linear probes read it at chance too, where after LEACE
(:mod:`workers.unlearning.concept_erasure`) an MLP probe still reads it.

The price, said wherever the method is offered: the map is class-conditional, so **the served model
needs the attribute of every input at inference** (a forward pass without it raises), and the layer's
output keeps only what it shares with no value of the attribute (the task loses what it learned from
the attribute). Class ``concept_erased``: never a person's erasure.

In: ``forget``: ``(record_keys, inputs, attribute_labels)`` batches, the records the eraser is fitted on
(integer labels, at least two values); ``retain`` is not read. Out: the model (a copy) with the eraser on
``config.layer`` (stored like LEACE's, as its own safetensors tensors); ``result.details``: ``layer``,
``records_fitted``, ``attribute_values``, ``cells`` (after merging small cells; ``cells_asked``: the config's), ``transport_cost`` (mean squared distance a fitting
representation is moved), ``mean_shift`` (mean L2 change of the fitted representations relative to their
mean norm), ``needs_attribute_at_inference`` (True).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from workers.unlearning.base import (
    ConfigError,
    MethodConfig,
)
from workers.unlearning.concept_coupling import (
    attribute_given,
    coupling_erasers,
    fit_coupling_eraser,
)
from workers.unlearning.concept_erasure import ConceptEraserMethod


@dataclass
class PefCouplingConfig(MethodConfig):
    """``layer``: the dotted name of the module whose output is erased (``model.get_submodule``), output
    ``[batch, features]`` (required when the method runs). ``cells``: the codebook's size; more cells keep
    more of the representation but estimate each group's share of a cell from fewer records, and give the
    probes more discrete outputs to overfit, so their out-of-fold AUCs scatter further from chance (digits'
    parity on a 32-unit hidden layer, 1,200 fitting records, 597 probed, 4 seeds, 2026-12-07: linear AUC at
    most 0.048 from chance with 8 cells, 0.056 with 16, 0.070 with 32, 0.074 with 64; digit accuracy
    0.40-0.46, 0.41-0.48, 0.41-0.48, 0.46-0.52; ``benchmarks/leace_concept_probe.py --cells``, 64 units,
    gives the same kind of figures). ``seed`` seeds k-means and the coupling's draws."""

    layer: str = ""
    cells: int = 16

    def validate(self) -> None:
        super().validate()
        if not 2 <= self.cells <= 1024:
            raise ConfigError(f"PefCouplingConfig.cells must be in [2, 1024], got {self.cells}")


class PefCoupling(ConceptEraserMethod, name="pef_coupling"):
    """The coupling eraser on one layer's output w.r.t. one attribute (see the module docstring)."""

    config_class = PefCouplingConfig

    def refuse(self, model: nn.Module) -> None:
        if coupling_erasers(model):
            raise ValueError("the model already has a class-conditional (pef_coupling) eraser, which needs its own "
                             "attribute at inference; erase the attributes together from its parent instead")

    def fit(self, features: torch.Tensor, labels: torch.Tensor) -> tuple[nn.Module, torch.Tensor, dict[str, Any]]:
        config: PefCouplingConfig = self.config  # type: ignore[assignment]
        eraser, transport_cost = fit_coupling_eraser(features, labels, cells=config.cells, seed=config.seed)
        with attribute_given(eraser, labels):
            erased = eraser(features)
        return eraser, erased, {"cells": int(eraser.centroids.shape[0]), "cells_asked": config.cells,
                                "transport_cost": transport_cost,
                                "needs_attribute_at_inference": True}
