"""LoRA plumbing shared by the LM unlearning methods and LM fine-tuning.

The weights of a language model are changed only through a LoRA adapter (peft) that is merged back
at the end, so a method returns a plain transformers model that saves as safetensors. Target
modules are found automatically from the model's ``nn.Linear`` / transformers ``Conv1D`` layers
unless a config names them.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from workers.unlearning.base import ProgressCallback, no_progress

# Output heads are left alone: they are usually tied to the input embeddings, and adapting them
# changes every token's logit at once instead of the model's knowledge.
_EXCLUDED_TARGETS = frozenset({"lm_head", "embed_out", "output", "score", "classifier"})


def _linear_kinds() -> tuple[type[nn.Module], ...]:
    from transformers.pytorch_utils import Conv1D

    return (nn.Linear, Conv1D)


def find_lora_targets(model: nn.Module) -> list[str]:
    """Names (last path component, deduplicated, sorted) of the model's adaptable linear layers.

    In: any causal LM. Out: e.g. ``["c_attn", "c_fc", "c_proj"]`` for GPT-2, the ``*_proj`` names
    for Llama-style models. Output heads and layers whose weight is the output embedding are
    skipped. Raises ``ValueError`` when the model has no such layer.
    """
    output_embeddings = getattr(model, "get_output_embeddings", lambda: None)()
    tied_weight = getattr(output_embeddings, "weight", None)
    names: set[str] = set()
    for path, module in model.named_modules():
        if not isinstance(module, _linear_kinds()) or not path:
            continue
        leaf = path.rsplit(".", 1)[-1]
        if leaf in _EXCLUDED_TARGETS or module is output_embeddings:
            continue
        if tied_weight is not None and getattr(module, "weight", None) is tied_weight:
            continue
        names.add(leaf)
    if not names:
        raise ValueError(f"{type(model).__name__} has no Linear or Conv1D layer to adapt with LoRA")
    return sorted(names)


def attach_lora(
    model: nn.Module,
    *,
    r: int,
    alpha: float,
    dropout: float = 0.0,
    target_modules: Sequence[str] | None = None,
    seed: int = 0,
) -> Any:
    """Wrap ``model`` (changed in place) in a peft LoRA adapter; returns the ``PeftModel``.

    Only the adapter's parameters are trainable. The adapter's random initialisation is drawn from
    ``seed`` so that a stored config reproduces the same run.
    """
    from peft import LoraConfig, get_peft_model

    targets = list(target_modules) if target_modules else find_lora_targets(model)
    kinds = {
        type(module).__name__
        for path, module in model.named_modules()
        if path and path.rsplit(".", 1)[-1] in targets and isinstance(module, _linear_kinds())
    }
    if not kinds:
        raise ValueError(f"none of the LoRA target modules {targets} is a Linear or Conv1D layer")
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=targets,
        # GPT-2's Conv1D stores weights transposed; peft needs to be told.
        fan_in_fan_out=kinds == {"Conv1D"},
        bias="none",
    )
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        # peft 0.21 calls a transformers 5 method that warns of its own rename; nothing to act on.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        return get_peft_model(model, config)


def merge_lora(peft_model: Any, requires_grad: dict[str, bool] | None = None) -> nn.Module:
    """Merge the adapter into the base weights; returns the plain transformers model in eval mode.

    ``requires_grad`` restores the parameters' flags from before ``attach_lora`` (peft freezes
    them), so the returned model behaves like any freshly loaded one.
    """
    merged = peft_model.merge_and_unload()
    for name, parameter in merged.named_parameters():
        parameter.requires_grad_(True if requires_grad is None else requires_grad.get(name, True))
    # peft leaves a marker that makes transformers treat the model as an adapter holder.
    if hasattr(merged, "peft_config"):
        del merged.peft_config
    return merged.eval()


def optimise_lora(
    peft_model: Any,
    step_loss: Callable[[int], torch.Tensor],
    *,
    steps: int,
    lr: float,
    max_grad_norm: float,
    progress: ProgressCallback = no_progress,
    stage: str = "training",
    stop_after: Callable[[int], bool] | None = None,
) -> list[float]:
    """Run ``steps`` AdamW steps on the adapter's parameters; returns the loss of every step.
    ``stop_after(step)``, when given, is asked after every step and ends the run early when true.

    ``step_loss(step)`` builds the loss of one step (it picks its own batches). The base model
    stays in eval mode: dropout off keeps runs replayable and lets a frozen reference (the same
    network with the adapter disabled) match the policy exactly at step 0. ``progress`` is called
    after every step and may raise ``JobCancelled``. A non-finite loss raises
    ``FloatingPointError`` instead of silently writing NaN weights.
    """
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.0)
    peft_model.eval()
    losses: list[float] = []
    progress(stage, 0.0)
    for step in range(steps):
        loss = step_loss(step)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"{stage}: loss became {value} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(trainable, max_grad_norm)
        optimizer.step()
        losses.append(value)
        progress(stage, (step + 1) / steps)
        if stop_after is not None and stop_after(step):
            progress(stage, 1.0)
            break
    return losses


def rng_scope(device: str) -> Any:
    """A context that restores the global torch RNG state afterwards (CPU, and CUDA if used)."""
    dev = torch.device(device)
    devices = [dev.index or 0] if dev.type == "cuda" else []
    return torch.random.fork_rng(devices=devices)
