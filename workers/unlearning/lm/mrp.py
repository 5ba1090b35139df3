"""MRP: Metamorphosis Representation Projection (Wu et al. 2025, arXiv 2508.15449).

Instead of changing weights, MRP removes directions from the hidden states two decoder layers pass
on: ``h <- h - h Qᵀ Q`` with ``Q``'s rows orthonormal. Per request it trains ``rank`` new directions
per layer, ``W``, with the loss ``-forget_weight * NLL(forget) + retain_weight * NLL(retain)``
(GradDiff's loss; the paper's retain weight is 1.2), by plain gradient descent on ``W`` through
``Q = orthonormalise([Q_before; W])`` (the reference code's update). The directions of earlier
requests stay in ``Q`` (continual unlearning: a later request can only add to what is projected
out), so a projection never has to be undone to forget more. The model's weights are not changed.

Defaults are the paper's reference code: ``rank`` 2 per layer and request, learning rate 2e-4,
2 epochs, retain weight 1.2, two layers drawn at random (here from the seed; a model already
projected keeps its layers), no gradient clipping. Where we depart: the reference code starts
``W`` from principal components of hidden states; here ``W`` starts at the directions the forget
texts' hidden states use most *per unit of the retain texts' use* (``start="ratio"``: top
generalised eigenvectors of their second-moment matrices, the retain one with a ridge, outside the
directions already projected out), so that training starts where the forget texts live and the
retain texts do not. The first version started at the top eigenvectors of the *difference* of the
two matrices (``start="difference"``, kept to reproduce its figures): on SmolLM2-135M those are the
few hidden dimensions with activations of norm ~150 that every text uses, and projecting them out
took the held-out NLL from 2.60 to 7.54 before the first step (random directions: 2.69; the ratio
start: 2.59; measured 2026-12-07 on the LM benchmark's fine-tuned model, layers 13 and 14). The
LoRA fields of the shared LM config are not used.

In: a transformers causal LM (not changed), LM batches to forget and to retain, optional context
``held_out`` (LM batches never seen: their NLL is the stop target, as for the other LM methods).
Out: a copy of the model carrying every projection (:mod:`workers.unlearning.lm.projections`;
the store keeps them beside the unchanged weights), and a result whose details name the projected
layers, how many directions each had before and has after, and the forget/retain NLL before and
after.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from workers.unlearning.base import (
    ConfigError,
    MethodConfig,
    ProgressCallback,
    UnlearningResult,
    no_progress,
)
from workers.unlearning.lm.grad_diff import GradDiff, GradDiffConfig
from workers.unlearning.lm.losses import average_token_nll
from workers.unlearning.lm.projections import (
    decoder_layers,
    layer_projection,
    orthonormal_rows,
    projected_layers,
)

# How a request's new directions start (see MRPConfig.start and contrast_directions).
START_RULES = ("ratio", "difference")


@dataclass
class MRPConfig(GradDiffConfig):
    """GradDiff's loss weights plus the projection: ``rank`` directions added per layer and
    request, on ``layers`` (decoder layer indices; None: the layers the model already projects,
    else two drawn from ``seed``). ``lr`` is the step of plain gradient descent on the directions.
    ``start``: how the new directions start (module docstring); ``start_ridge``: the ratio rule's
    ridge, as a fraction of the retain texts' median second moment per dimension."""

    lr: float = 2e-4
    epochs: int = 2
    retain_weight: float = 1.2
    max_grad_norm: float = 0.0
    rank: int = 2
    layers: list[int] | None = None
    start: str = "ratio"
    start_ridge: float = 0.1

    def validate(self) -> None:
        super().validate()
        owner = type(self).__name__
        if self.start not in START_RULES:
            raise ConfigError(f"{owner}.start must be one of {sorted(START_RULES)}, got {self.start!r}")
        if (isinstance(self.start_ridge, bool) or not isinstance(self.start_ridge, (int, float))
                or not self.start_ridge > 0):
            raise ConfigError(f"{owner}.start_ridge must be a number > 0, got {self.start_ridge!r}")
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ConfigError(f"{owner}.rank must be an integer >= 1, got {self.rank!r}")
        if self.layers is not None and (
            not isinstance(self.layers, list) or not self.layers
            or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in self.layers)
            or len(set(self.layers)) != len(self.layers)
        ):
            raise ConfigError(f"{owner}.layers must be null or a non-empty list of distinct layer indices >= 0")


class MRP(GradDiff, name="mrp"):
    config_class: ClassVar[type[MethodConfig]] = MRPConfig
    config: MRPConfig

    def unlearn(self, model: Any, forget: Any, retain: Any, *, device: str = "cpu",
                progress: ProgressCallback = no_progress, **context: Any) -> tuple[Any, UnlearningResult]:
        started = time.perf_counter()
        cfg = self.config
        forget_batches, retain_stream, forget_keys = self._inputs(forget, retain, device)

        work = copy.deepcopy(model).to(device).eval()
        requires_grad = {n: p.requires_grad for n, p in work.named_parameters()}
        work.requires_grad_(False)
        layers = self._layers(work)
        ranks_before = {i: int(basis.shape[0]) for i, basis in projected_layers(work).items()}
        forget_nll_before = average_token_nll(work, forget_batches, device)
        probe = [self._prepare(b, device) for b in retain_stream.peek(len(forget_batches))] if retain_stream else []
        retain_nll_before = average_token_nll(work, probe, device) if probe else None
        held_out = list(context.get("held_out") or [])
        target, target_source = self._stop_target(work, held_out, device)

        projections = {i: layer_projection(work, i, create=True) for i in layers}
        starts = contrast_directions(work, layers, forget_batches, probe or forget_batches[:0], cfg.rank,
                                     rule=cfg.start, ridge=cfg.start_ridge)
        directions = {i: starts[i].clone().requires_grad_(True) for i in layers}
        for i in layers:
            projections[i].pending = directions[i]

        def update(loss: torch.Tensor) -> None:
            grads = torch.autograd.grad(loss, [directions[i] for i in layers])
            scale = 1.0
            if cfg.max_grad_norm > 0:
                norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))
                scale = min(1.0, cfg.max_grad_norm / (norm + 1e-6))
            with torch.no_grad():
                for i, grad in zip(layers, grads, strict=True):
                    directions[i] -= cfg.lr * scale * grad

        losses = self._descend(work, forget_batches, retain_stream, device=device, target=target,
                               progress=progress, update=update)
        with torch.no_grad():
            for projection in projections.values():
                projection.basis = projection.current_basis().detach()
                projection.pending = None
        for name, parameter in work.named_parameters():
            parameter.requires_grad_(requires_grad.get(name, True))
        work.eval()
        ranks_after = {i: int(basis.shape[0]) for i, basis in projected_layers(work).items()}
        details = self._run_details(
            work, forget_batches, forget_keys, device=device, forget_nll_before=forget_nll_before, losses=losses,
            target=target, target_source=target_source, held_out=held_out, probe=probe,
            retain_nll_before=retain_nll_before,
            projection_layers=layers, projection_start=cfg.start,
            # JSON object keys are strings; the layer index as text.
            projection_rank_before={str(i): r for i, r in sorted(ranks_before.items())},
            projection_rank_after={str(i): r for i, r in sorted(ranks_after.items())},
            weights_changed_via="none: representation projections stored beside the unchanged weights")
        return work, self._result(started, device, steps=len(losses), **details)

    def _layers(self, model: Any) -> list[int]:
        """The decoder layers this request projects (see :class:`MRPConfig`)."""
        count = len(decoder_layers(model))
        if self.config.layers is not None:
            beyond = [i for i in self.config.layers if i >= count]
            if beyond:
                raise ValueError(f"{self.name}: layers {beyond} do not exist; the model has layers 0..{count - 1}")
            return sorted(self.config.layers)
        already = sorted(projected_layers(model))
        if already:
            return already
        generator = torch.Generator().manual_seed(self.config.seed)
        return sorted(torch.randperm(count, generator=generator)[: min(2, count)].tolist())


def contrast_directions(model: Any, layers: list[int], forget: list[dict[str, Any]],
                        retain: list[dict[str, Any]], rank: int, *, rule: str = "ratio",
                        ridge: float = 0.1) -> dict[int, torch.Tensor]:
    """Per layer, ``rank`` orthonormal directions (``[rank, hidden]``) the forget texts' hidden
    states at that layer's output use most compared with the retain texts', orthogonal to the
    layer's current basis: by ``rule`` "ratio" (:func:`ratio_directions`) or "difference" (top
    eigenvectors of ``E_forget[h hᵀ] - E_retain[h hᵀ]``). In: the model (projections of earlier
    requests in place), the layers, LM batches; no retain batches: the forget texts' second moment
    alone (both rules)."""
    states: dict[int, dict[str, list[torch.Tensor]]] = {i: {"forget": [], "retain": []} for i in layers}
    modules = decoder_layers(model)
    which = {"set": "forget"}
    mask_now: dict[str, torch.Tensor] = {}

    def collect(index: int):
        def hook(layer: Any, args: Any, output: Any) -> None:
            hidden = output[0] if isinstance(output, tuple) else output
            states[index][which["set"]].append(hidden[mask_now["mask"]].detach().float())
        return hook

    handles = [modules[i].register_forward_hook(collect(i)) for i in layers]
    try:
        with torch.no_grad():
            for name, batches in (("forget", forget), ("retain", retain)):
                which["set"] = name
                for batch in batches:
                    mask_now["mask"] = batch["attention_mask"].bool()
                    model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    finally:
        for handle in handles:
            handle.remove()
    starts = {}
    for i in layers:
        basis = layer_projection(model, i).basis
        forget_states = torch.cat(states[i]["forget"])
        contrast = forget_states.T @ forget_states / len(forget_states)
        if not states[i]["retain"]:
            starts[i] = top_directions(contrast, basis, rank)
            continue
        retain_states = torch.cat(states[i]["retain"])
        retain_moment = retain_states.T @ retain_states / len(retain_states)
        if rule == "ratio":
            starts[i] = ratio_directions(contrast, retain_moment, basis, rank, ridge=ridge)
        else:
            starts[i] = top_directions(contrast - retain_moment, basis, rank)
    return starts


def _projectors(exclude: torch.Tensor, width: int, rank: int, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The projectors onto the span of ``exclude``'s rows (orthonormal) and onto its orthogonal
    complement, ``[width, width]`` each; ``ValueError`` when ``rank`` more directions do not fit."""
    if exclude.shape[0] + rank > width:
        raise ValueError(f"{exclude.shape[0]} directions are already projected out of {width}; "
                         f"{rank} more do not fit")
    excluded = exclude.float().T @ exclude.float()
    return excluded, torch.eye(width, device=device) - excluded


def ratio_directions(forget_moment: torch.Tensor, retain_moment: torch.Tensor, exclude: torch.Tensor,
                     rank: int, *, ridge: float) -> torch.Tensor:
    """The ``rank`` directions ``v`` with the largest ``vᵀ F v / vᵀ (R + λI) v`` (``F``, ``R``: the
    forget and retain texts' second-moment matrices; ``λ = ridge · median(diag R)``, which keeps
    the ratio finite where the retain texts leave a direction unused), within the orthogonal
    complement of the rows of ``exclude``; returned as orthonormal rows spanning them. A direction
    every text uses strongly scores about 1 however large its norm, so it is not chosen: projecting
    it out would cost the retain texts as much as the forget texts."""
    width = forget_moment.shape[0]
    _, complement = _projectors(exclude, width, rank, forget_moment.device)
    forget_c = complement @ forget_moment.float() @ complement
    retain_c = complement @ retain_moment.float() @ complement
    retain_c = (retain_c + retain_c.T) / 2
    # The ridge scales with the median direction's use, not the mean: a few huge dimensions would set the mean.
    scale = float(torch.diagonal(retain_moment.float()).median().clamp_min(1e-12))
    retain_c = retain_c + ridge * scale * torch.eye(width, device=forget_moment.device)
    lower = torch.linalg.cholesky(retain_c)
    inverse = torch.linalg.inv(lower)
    whitened = inverse @ forget_c @ inverse.T
    _, vectors = torch.linalg.eigh((whitened + whitened.T) / 2)
    chosen = (inverse.T @ vectors[:, -rank:].flip(-1)).T @ complement
    return orthonormal_rows(torch.cat([exclude.float(), chosen]))[exclude.shape[0]:]


def top_directions(matrix: torch.Tensor, exclude: torch.Tensor, rank: int) -> torch.Tensor:
    """The ``rank`` eigenvectors (rows, orthonormal) of the symmetric ``matrix`` with the largest
    eigenvalues, within the orthogonal complement of the rows of ``exclude`` (orthonormal, may be
    empty). Raises ``ValueError`` when fewer than ``rank`` dimensions are left."""
    excluded, complement = _projectors(exclude, matrix.shape[0], rank, matrix.device)
    restricted = complement @ matrix.float() @ complement
    # The excluded directions get the lowest eigenvalues, so that none of them is chosen.
    restricted = (restricted + restricted.T) / 2 - (restricted.abs().max() + 1) * excluded
    _, vectors = torch.linalg.eigh(restricted)
    chosen = vectors[:, -rank:].flip(-1).T
    # Remove what numerical error left of the excluded directions, then make the rows orthonormal.
    chosen = chosen @ complement
    return orthonormal_rows(torch.cat([exclude.float(), chosen]))[exclude.shape[0]:]
