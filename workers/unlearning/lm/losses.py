"""Token-level losses of a causal LM on an LM batch, and the NPO objective as a pure function.

An LM batch is a dict with ``input_ids``, ``attention_mask``, ``labels`` (``-100`` where a token
is not scored, e.g. padding) and ``record_keys``; see :mod:`workers.unlearning.lm.data`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def token_nll(model: Any, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token negative log-likelihood of the batch's labels under ``model``.

    In: a causal LM and an LM batch (tensors already on the model's device). Out: ``(nll, mask)``,
    both ``[batch, seq-1]``; ``nll`` is 0 where ``mask`` is False. Logits are shifted by one
    position, as in every causal LM.
    """
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logits = logits[:, :-1, :].float()
    labels = batch["labels"][:, 1:]
    nll = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)),
        labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    ).view_as(labels)
    return nll, labels != IGNORE_INDEX


def mean_token_nll(model: Any, batch: dict[str, Any]) -> torch.Tensor:
    """Mean NLL over the batch's scored tokens (the usual LM loss); a scalar tensor."""
    nll, mask = token_nll(model, batch)
    return nll.sum() / mask.sum().clamp(min=1)


def sequence_nll(model: Any, batch: dict[str, Any]) -> torch.Tensor:
    """Summed NLL of each sequence, ``[batch]``: minus the sequence's log-likelihood."""
    nll, _ = token_nll(model, batch)
    return nll.sum(dim=-1)


def npo_loss(policy_nll: torch.Tensor, reference_nll: torch.Tensor, beta: float) -> torch.Tensor:
    """Negative Preference Optimization loss (Zhang et al. 2024), averaged over sequences.

    In: per-sequence NLLs under the model being unlearned and under the frozen reference, and
    ``beta > 0``. Out: ``-(2/beta) * mean(logsigmoid(-beta * log(pi/pi_ref)))`` where
    ``log(pi/pi_ref) = reference_nll - policy_nll``. It equals ``(2/beta) ln 2`` when the two models
    agree and falls towards 0 as the model's likelihood of the forget text drops, so unlike gradient
    ascent its gradient fades instead of diverging.
    """
    log_ratio = reference_nll - policy_nll
    return -(2.0 / beta) * F.logsigmoid(-beta * log_ratio).mean()


@torch.no_grad()
def average_token_nll(model: Any, batches: Iterable[dict[str, Any]], device: str = "cpu") -> float:
    """Token-weighted mean NLL of ``model`` over all batches (eval mode, no gradients).

    In: a causal LM and LM batches. Out: nats per scored token; ``exp`` of it is the perplexity.
    Used to measure how well a model still knows the forget and retain texts.
    """
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for batch in batches:
        nll, mask = token_nll(model, to_device(batch, device))
        total += float(nll.sum())
        count += int(mask.sum())
    model.train(was_training)
    if count == 0:
        raise ValueError("no scored tokens in the batches")
    return total / count


def to_device(batch: dict[str, Any], device: str) -> dict[str, Any]:
    """The batch with its tensors on ``device`` (other values, e.g. record keys, unchanged)."""
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
