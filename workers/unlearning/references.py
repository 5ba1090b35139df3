"""Reference models a method may read: the platform's shadow models, handed over by the job.

A method whose declaration needs ``shadow_references`` (``MethodSpec.needs``) is called with the
context key ``references``: a sequence of :class:`ShadowReference`, one per shadow model of the
version's lineage that is still present (workers/runners/shadow.py trains them: complementary pairs
``2p`` and ``2p + 1``, each record in exactly one model of a pair). Each reference carries its
index, the keys of the records it was trained on, and a loader, so that a method loads only the
models it uses, one at a time.

The same shadow models are the audit's reference. A method that learns from them must leave the
audit shadows it did not read: :func:`shadow_split` takes a share of the pairs for the method
(the lowest pair numbers) and leaves the rest, and the method states the split in its result
(``details["shadow_split"]``) so that the audit can judge with the others.

Plain PyTorch, no Django.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

SHADOW_REFERENCES = "shadow_references"  # the need a MethodSpec declares; the context key is "references"


@dataclass(frozen=True)
class ShadowReference:
    """One shadow model: ``index`` (pairs are 2p, 2p + 1), the record keys it was trained on, and
    ``load()``, which returns the model (an ``nn.Module``; eval mode is set by the reader)."""

    index: int
    members: frozenset[str]
    load: Callable[[], nn.Module]

    @property
    def pair(self) -> int:
        return self.index // 2

    @classmethod
    def of_model(cls, index: int, model: nn.Module, members: Sequence[str]) -> ShadowReference:
        """A reference to a model already in memory (tests, benchmarks)."""
        return cls(index=index, members=frozenset(members), load=lambda: model)


@dataclass(frozen=True)
class ShadowSplit:
    """Which shadow models a method read and which it left for the audit."""

    method: tuple[ShadowReference, ...]
    audit: tuple[ShadowReference, ...]
    share: float

    def to_details(self) -> dict[str, Any]:
        """What the result states, so that the audit judges with shadows the method did not read."""
        return {
            "rule": (f"the method read the shadow models of the lowest {self.share:.0%} of the pair numbers "
                     "(pairs are shadow indices 2p and 2p + 1); the audit must judge with the others"),
            "method_shadow_indices": sorted(r.index for r in self.method),
            "audit_shadow_indices": sorted(r.index for r in self.audit),
        }


def shadow_split(references: Sequence[ShadowReference], share: float) -> ShadowSplit:
    """Split ``references`` by pair: the lowest ``floor(share * pairs)`` pair numbers (at least
    one) for the method, the rest for the audit. ``ValueError`` without references, or when the
    split would leave the audit no pair (fewer than two pairs)."""
    if not references:
        raise ValueError("no shadow models were handed over (context key 'references'); train them first "
                         "(the model's shadow models job)")
    if not 0 < share < 1:
        raise ValueError(f"the method's share of shadow pairs must be in (0, 1), got {share}")
    pairs = sorted({r.pair for r in references})
    if len(pairs) < 2:
        raise ValueError(f"{len(references)} shadow model(s) in {len(pairs)} pair(s): the method needs a pair "
                         "and the audit at least another one it did not read")
    taken = set(pairs[: max(1, math.floor(share * len(pairs)))])
    ordered = sorted(references, key=lambda r: r.index)
    return ShadowSplit(method=tuple(r for r in ordered if r.pair in taken),
                       audit=tuple(r for r in ordered if r.pair not in taken), share=share)


def inclusion_masks(references: Sequence[ShadowReference], keys: Sequence[str]) -> Tensor:
    """(models, records) 0/1 float64 tensor: 1 where the model was trained on the record."""
    return torch.tensor([[float(key in r.members) for key in keys] for r in references], dtype=torch.float64)


def centred_logits(logits: Tensor) -> Tensor:
    """Logits less their mean over the classes: softmax ignores a shift common to every class,
    so matching centred logits leaves it free (and averaging them over models is meaningful)."""
    return logits - logits.mean(dim=-1, keepdim=True)


@torch.no_grad()
def reference_outputs(references: Sequence[ShadowReference], inputs: Tensor, *, device: torch.device,
                      batch_size: int = 256) -> Tensor:
    """(models, records, classes) float64 centred logits of every reference on ``inputs``; each model
    is loaded, read and dropped in turn."""
    outputs = []
    for reference in references:
        model = reference.load().to(device).eval()
        outputs.append(model_outputs(model, inputs, device=device, batch_size=batch_size))
        del model
    return torch.stack(outputs)


@torch.no_grad()
def model_outputs(model: nn.Module, inputs: Tensor, *, device: torch.device, batch_size: int = 256) -> Tensor:
    """(records, classes) float64 centred logits of ``model`` (in its current mode) on ``inputs``."""
    parts = [model(inputs[i : i + batch_size].to(device)).double().cpu() for i in range(0, len(inputs), batch_size)]
    return centred_logits(torch.cat(parts))
