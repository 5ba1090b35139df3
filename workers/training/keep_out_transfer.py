"""Transfer training that keeps deletable data out of the weights (Sepahvand et al., arXiv 2405.10425).

The company's records are split into *static* ones (never deleted: consented, contractual, public)
and *non-static* ones (their subjects may ask for erasure). The model is fine-tuned on the static
records plus, for each non-static record, its ``k`` nearest examples in an *auxiliary* pool (public
data, with the pool's own labels). The non-static records never enter training; they only choose
auxiliary examples. A deletion of a non-static record therefore needs no change to the weights once
the auxiliary examples it chose are dropped from the selection: if no other record still chooses
them, the selection (the training set) changes and the model is retrained on the new selection (an
exact deletion); if every one of them is still chosen by a remaining record, the training set is the
same, nothing is retrained, and the model's hash stays the same.

Pure pieces here (selection, training set, the deletion's plan) and one deterministic trainer; the
recipe registration, lineage rows and the deletion job are listed as left in issue 25's note.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from safetensors.torch import save
from torch import nn

from workers.unlearning.base import ConfigError, MethodConfig


@dataclass
class KeepOutTransferConfig(MethodConfig):
    """``neighbours``: auxiliary examples each non-static record selects (``k``); the rest trains a
    linear-then-MLP head with full-batch Adam, deterministic for a given ``seed``."""

    neighbours: int = 1
    hidden: int = 64
    epochs: int = 200
    lr: float = 0.01

    def validate(self) -> None:
        super().validate()
        if self.neighbours < 1:
            raise ConfigError(f"KeepOutTransferConfig.neighbours must be >= 1, got {self.neighbours}")
        if self.hidden < 1:
            raise ConfigError(f"KeepOutTransferConfig.hidden must be >= 1, got {self.hidden}")


def select_auxiliary(non_static: Mapping[str, np.ndarray], pool_keys: Sequence[str], pool_features: np.ndarray,
                     *, neighbours: int) -> dict[str, tuple[str, ...]]:
    """For each non-static record (key -> feature vector), the keys of its ``neighbours`` nearest
    auxiliary examples (Euclidean; ties broken by pool order). Out: key -> selected pool keys."""
    pool = np.asarray(pool_features, dtype=np.float64)
    if pool.ndim != 2 or len(pool) != len(pool_keys):
        raise ValueError(f"pool_features {pool.shape} must be [{len(pool_keys)}, d]")
    if not 1 <= neighbours <= len(pool_keys):
        raise ValueError(f"neighbours must be between 1 and the pool's {len(pool_keys)} examples, got {neighbours}")
    selection: dict[str, tuple[str, ...]] = {}
    squared_norms = (pool ** 2).sum(axis=1)
    for key in sorted(non_static):
        vector = np.asarray(non_static[key], dtype=np.float64)
        if vector.shape != pool.shape[1:]:
            raise ValueError(f"record {key!r} has {vector.shape} features, the pool {pool.shape[1:]}")
        distances = squared_norms - 2.0 * pool @ vector
        nearest = np.argsort(distances, kind="stable")[:neighbours]
        selection[key] = tuple(pool_keys[i] for i in nearest)
    return selection


def selected_auxiliary(selection: Mapping[str, Sequence[str]]) -> list[str]:
    """Every auxiliary example some non-static record selects, sorted: what training uses of the pool."""
    return sorted({aux for chosen in selection.values() for aux in chosen})


@dataclass(frozen=True)
class KeepOutDeletion:
    """What deleting non-static records does: the new selection, whether the training set changed
    (then the model is retrained on it), the auxiliary examples no record selects any more, and why."""

    selection: dict[str, tuple[str, ...]]
    retrain: bool
    dropped_auxiliary: tuple[str, ...]
    reason: str
    records_deleted: tuple[str, ...] = field(default=())


def keep_out_deletion(selection: Mapping[str, Sequence[str]], deleted: Sequence[str]) -> KeepOutDeletion:
    """Drop the deleted non-static records and the auxiliary examples they selected. ``ValueError``
    for a key that is not a non-static record of this selection (a static record cannot be deleted
    this way: it is in the weights, and needs the recipe's exact retrain)."""
    unknown = sorted(set(deleted) - set(selection))
    if unknown:
        raise ValueError(f"not non-static records of this model: {', '.join(unknown)}")
    kept = {key: tuple(chosen) for key, chosen in selection.items() if key not in set(deleted)}
    before, after = set(selected_auxiliary(selection)), set(selected_auxiliary(kept))
    dropped = tuple(sorted(before - after))
    if dropped:
        reason = (f"the deleted record(s) selected {len(dropped)} auxiliary example(s) no other record selects "
                  f"({', '.join(dropped)}): the selection changed, and the model was retrained on the new "
                  "selection without them (exact). The deleted records never entered training.")
    else:
        reason = ("every auxiliary example the deleted record(s) selected is still selected by another record: "
                  "the training set is unchanged, so the model is unchanged (same hash). The deleted records "
                  "never entered training, and their selections were dropped from the lineage.")
    return KeepOutDeletion(selection=kept, retrain=bool(dropped), dropped_auxiliary=dropped, reason=reason,
                           records_deleted=tuple(sorted(deleted)))


def training_keys(static_keys: Sequence[str], selection: Mapping[str, Sequence[str]]) -> list[str]:
    """The records training reads: the static ones and the selected auxiliary examples, never a
    non-static record (``ValueError`` if a non-static key is also listed as static or auxiliary)."""
    keys = sorted(set(static_keys) | set(selected_auxiliary(selection)))
    leaked = sorted(set(keys) & set(selection))
    if leaked:
        raise ValueError(f"non-static records may not enter training: {', '.join(leaked)}")
    return keys


def train_keep_out(features: Mapping[str, np.ndarray], labels: Mapping[str, int], keys: Sequence[str], *,
                   classes: int, config: KeepOutTransferConfig) -> nn.Module:
    """Train a one-hidden-layer classifier on ``keys`` (looked up in ``features`` / ``labels``: the
    static records' and the auxiliary pool's own labels), in key order, deterministic for the config."""
    ordered = sorted(keys)
    x = torch.tensor(np.stack([features[k] for k in ordered]), dtype=torch.float32)
    y = torch.tensor([int(labels[k]) for k in ordered])
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        model = nn.Sequential(nn.Linear(x.shape[1], config.hidden), nn.ReLU(), nn.Linear(config.hidden, classes))
        optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
        for _ in range(config.epochs):
            optimiser.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimiser.step()
    return model.eval()


def weights_sha256(model: nn.Module) -> str:
    """The sha256 of the model's weights as a safetensors blob (the artifact store's fingerprint)."""
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    return hashlib.sha256(save(state)).hexdigest()
