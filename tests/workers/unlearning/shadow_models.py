"""Shadow models for the method tests: complementary pairs of small MLPs, trained together.

Like the platform's shadow job (workers/runners/shadow.py), model 2p trains on a random half of
the records and model 2p + 1 on the other half, so each record is absent from exactly one model of
every pair. All models train at once as one batched MLP (full-batch AdamW, each model's loss
weighted by its own subset), which keeps tens of models within a second or two on a CPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from workers.unlearning.references import ShadowReference

HIDDEN = 32


def train_mlps(inputs: Tensor, targets: Tensor, weights: Tensor, *, seed: int, steps: int = 200,
               lr: float = 0.02, weight_decay: float = 0.01, hidden: int = HIDDEN) -> list[nn.Module]:
    """One MLP per row of ``weights`` (models, records): 0/1 (or weighted) training subsets."""
    generator = torch.Generator().manual_seed(seed)
    count, features, classes = len(weights), inputs.shape[1], int(targets.max()) + 1
    w1 = (torch.randn(count, features, hidden, generator=generator) / features**0.5).requires_grad_()
    b1 = torch.zeros(count, 1, hidden, requires_grad=True)
    w2 = (torch.randn(count, hidden, classes, generator=generator) / hidden**0.5).requires_grad_()
    b2 = torch.zeros(count, 1, classes, requires_grad=True)
    optimizer = torch.optim.AdamW([w1, b1, w2, b2], lr=lr, weight_decay=weight_decay)
    repeated = targets.repeat(count)
    for _ in range(steps):
        optimizer.zero_grad()
        logits = torch.relu(inputs @ w1 + b1) @ w2 + b2
        loss = nn.functional.cross_entropy(logits.reshape(-1, classes), repeated, reduction="none")
        loss = loss.reshape(count, -1)
        ((loss * weights).sum(dim=1) / weights.sum(dim=1)).sum().backward()
        optimizer.step()
    models = []
    for i in range(count):
        model = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, classes))
        with torch.no_grad():
            model[0].weight.copy_(w1[i].T)
            model[0].bias.copy_(b1[i, 0])
            model[2].weight.copy_(w2[i].T)
            model[2].bias.copy_(b2[i, 0])
        models.append(model.eval())
    return models


def pair_masks(records: int, pairs: int, *, seed: int) -> Tensor:
    """(2 * pairs, records) 0/1 masks: row 2p a random half, row 2p + 1 its complement."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(pairs):
        half = (torch.rand(records, generator=generator) < 0.5).float()
        rows += [half, 1 - half]
    return torch.stack(rows)


def shadow_references(models: Sequence[nn.Module], masks: Tensor, keys: Sequence[str]) -> list[ShadowReference]:
    """References to ``models`` trained on the rows of ``masks`` over records ``keys``."""
    return [ShadowReference.of_model(i, model, [keys[j] for j in mask.nonzero().flatten().tolist()])
            for i, (model, mask) in enumerate(zip(models, masks, strict=True))]
