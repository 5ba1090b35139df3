"""Predictions and accuracy of any trained model (plain module or ensemble) on a RecordDataset."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader

from workers.datasets.base import RecordDataset
from workers.training.membership import collate_records


@torch.no_grad()
def predict_proba(model: nn.Module, dataset: RecordDataset, *, batch_size: int = 256,
                  device: str | torch.device = "cpu") -> tuple[list[str], torch.Tensor]:
    """(record keys, class probabilities [N, C]) in the dataset's order."""
    model.eval()
    keys: list[str] = []
    chunks: list[torch.Tensor] = []
    for batch_keys, inputs, _ in DataLoader(dataset, batch_size=batch_size, collate_fn=collate_records):
        if not batch_keys:
            continue
        keys.extend(batch_keys)
        chunks.append(torch.softmax(model(inputs.to(device)), dim=-1).cpu())
    return keys, torch.cat(chunks) if chunks else torch.empty(0)


@torch.no_grad()
def accuracy(model: nn.Module, dataset: RecordDataset, *, batch_size: int = 256,
             device: str | torch.device = "cpu") -> float:
    """Fraction of records whose arg-max class equals the target."""
    model.eval()
    correct = total = 0
    for keys, inputs, targets in DataLoader(dataset, batch_size=batch_size, collate_fn=collate_records):
        if not keys:
            continue
        predicted = model(inputs.to(device)).argmax(-1).cpu()
        correct += int((predicted == targets).sum())
        total += len(keys)
    return correct / total if total else float("nan")


@torch.no_grad()
def regression_errors(model: nn.Module, dataset: RecordDataset, *, batch_size: int = 256,
                      device: str | torch.device = "cpu") -> dict[str, float]:
    """``{"mae", "rmse"}`` of a one-output regression model on ``dataset`` (nan for no records):
    mean absolute error and root mean squared error, in the target's unit."""
    model.eval()
    errors: list[torch.Tensor] = []
    for keys, inputs, targets in DataLoader(dataset, batch_size=batch_size, collate_fn=collate_records):
        if not keys:
            continue
        predicted = model(inputs.to(device)).reshape(len(keys), -1)[:, 0].float().cpu()
        errors.append(predicted - targets.float())
    if not errors:
        return {"mae": float("nan"), "rmse": float("nan")}
    error = torch.cat(errors)
    return {"mae": float(error.abs().mean()), "rmse": float(error.pow(2).mean().sqrt())}
