"""The one interface of every training recipe, and the loop they share.

A recipe is a small class: a config dataclass (stored with the run, reproducible from it; the
seed is part of it), ``train`` and the pair ``save``/``load`` that put a run into the artifact
store and back. ``train`` returns a :class:`TrainingRun`: the model (an ``nn.Module``; ensembles
return log-probabilities from ``forward``), the membership rows written from what the training
loaders actually yielded, and metrics.

Every recipe is deterministic on CPU for a given config: seeds come from ``config.seed`` through
:func:`workers.training.device.derive_seed`, deterministic kernels are switched on while it
trains, and data order comes from explicit generators.

Adding a recipe: the checklist in docs/EXTENDING.md.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from foundation.registry import Registry
from workers.artifacts import ArtifactManifest, ArtifactRef, ArtifactStore
from workers.datasets.base import RecordDataset
from workers.training.membership import (
    MembershipRow,
    MembershipSink,
    RecordingLoader,
    collate_records,
)
from workers.unlearning.base import (
    ConfigError,
    MethodConfig,
    ProgressCallback,
    no_progress,
)

OPTIMIZERS = ("adam", "sgd")


@dataclass
class RecipeConfig(MethodConfig):
    """Shared fields of every recipe config.

    ``architecture`` is ``{"name": ..., "config": {...}}`` (see workers.training.architectures).
    """

    architecture: dict[str, Any] = field(default_factory=dict)
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0

    def validate(self) -> None:
        super().validate()
        name = type(self).__name__
        if not isinstance(self.architecture, dict) or not isinstance(self.architecture.get("name"), str):
            raise ConfigError(f"{name}.architecture must be {{'name': ..., 'config': {{...}}}}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"{name}.optimizer must be one of {', '.join(OPTIMIZERS)}")


@dataclass
class TrainingRun:
    """What a recipe produced: enough to serve the model, write lineage and store artifacts."""

    recipe: str
    config: dict[str, Any]
    model: nn.Module
    membership: list[MembershipRow]
    metrics: dict[str, Any] = field(default_factory=dict)
    # Language models only: the tokenizer that goes with ``model``, and for a guarded version
    # the stored guard (workers.unlearning.guard.storage.StoredGuard) that must wrap it.
    tokenizer: Any = None
    guard: Any = None
    # Keep-out transfer runs only (workers.training.keep_out_transfer): each non-static record's
    # key -> the auxiliary examples it selected, nearest first (those records are in no membership).
    keep_out_selection: dict[str, tuple[str, ...]] | None = None
    # and the feature scaling the selection's distances were measured on (FeatureScaling; None for
    # a run stored before selections were standardised).
    keep_out_scaling: Any = None

    def membership_dicts(self) -> list[dict[str, Any]]:
        return [row.to_dict() for row in self.membership]


class TrainingRecipe(ABC):
    """Base class of every recipe. A subclass registers itself under its name by naming it in the
    class statement (``class PlainRecipe(TrainingRecipe, name="plain")``), sets ``config_class``
    and implements ``train``, ``save`` and ``load``."""

    name: ClassVar[str]
    config_class: ClassVar[type[RecipeConfig]] = RecipeConfig

    def __init_subclass__(cls, *, name: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if name is not None:  # a concrete recipe; a shared base (SingleModelStorage) names none
            cls.name = name
            RECIPES.register(name)(cls)

    def __init__(self, config: RecipeConfig | dict[str, Any] | None = None) -> None:
        self.config: Any = self.config_class.of(config, owner=self.name)

    @abstractmethod
    def train(self, dataset: RecordDataset, *, device: str | torch.device = "cpu",
              progress: ProgressCallback = no_progress) -> TrainingRun:
        """Train on ``dataset`` and return the run (model, membership, metrics)."""

    def train_shadow(self, dataset: RecordDataset, members: Sequence[str], *,
                     half: Callable[[Sequence[str]], list[str]], lineage: Mapping[str, Any],
                     device: str | torch.device = "cpu", progress: ProgressCallback = no_progress) -> TrainingRun:
        """One shadow model of a version this recipe trained: the recipe on a random half of the
        version's ``members`` (``half`` draws it from a list of keys, seeded by the version and the
        shadow's index). ``lineage``: what the registry holds about the version's training beyond its
        membership (``keep_out_selection``), for a recipe whose inputs are not its members."""
        return self.train(dataset.subset(half(members)), device=device, progress=progress)

    @abstractmethod
    def save(
        self,
        store: ArtifactStore,
        run: TrainingRun,
        *,
        parent: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> ArtifactRef:
        """Store the run's artifacts; return the reference of its top-level manifest."""

    @classmethod
    @abstractmethod
    def load(cls, store: ArtifactStore, manifest: ArtifactManifest) -> TrainingRun:
        """Rebuild a stored run (model, membership) from its manifest."""

    @classmethod
    def comparable_state(cls, run: TrainingRun) -> dict[str, torch.Tensor]:
        """Every tensor that decides what ``run`` serves and what a later deletion starts from, by
        name, on the CPU: what a bit-for-bit replay compares. By default the model's state dict;
        recipes that keep checkpoints or adapters beside it add them."""
        return {f"model/{k}": v.detach().cpu() for k, v in run.model.state_dict().items()}


RECIPES: Registry[type[TrainingRecipe]] = Registry("training recipe")


# ---------------------------------------------------------------- shared loop


def make_optimizer(params: Sequence[nn.Parameter] | Any, config: RecipeConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                           weight_decay=config.weight_decay)


def sorted_by_key(dataset: RecordDataset, keys: set[str] | None = None) -> RecordDataset:
    """The records of ``dataset`` (or only ``keys``) ordered by record key.

    Training stages order their data by key, not by the dataset's item order, so that the same
    records give the same model whichever order a caller's dataset lists them in."""
    all_keys = dataset.record_keys
    index = sorted(range(len(all_keys)), key=all_keys.__getitem__)
    if keys is not None:
        index = [i for i in index if all_keys[i] in keys]
    from workers.datasets.base import RecordSubset

    return RecordSubset(dataset, index)


@dataclass
class StageStats:
    steps: int = 0
    examples: int = 0
    loss_sum: float = 0.0


def train_stage(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: RecordDataset,
    *,
    epochs: int,
    batch_size: int,
    generator: torch.Generator,
    sink: MembershipSink,
    shard: int,
    slice: int,
    device: torch.device,
    on_epoch: Any = None,
    loss_fn: Any = F.cross_entropy,
) -> StageStats:
    """Train ``model`` on ``data`` for ``epochs`` epochs, batches in an order drawn from
    ``generator``; report every yielded record to ``sink`` at (shard, slice).

    ``on_epoch(epoch)`` is called after each epoch (progress; may raise JobCancelled).
    ``loss_fn(outputs, targets)``: cross-entropy (classifiers) unless a recipe names another
    (the regression recipe's mean squared error).
    """
    stats = StageStats()
    model.train()
    for epoch in range(epochs):
        if len(data) == 0:
            break
        order = torch.randperm(len(data), generator=generator).tolist()
        loader = DataLoader(data, batch_size=batch_size, sampler=order, collate_fn=collate_records)
        for keys, inputs, targets in RecordingLoader(loader, sink, shard=shard, slice=slice):
            if not keys:  # every record of the batch was unreadable
                continue
            inputs, targets = inputs.to(device), targets.to(device)
            optimizer.zero_grad(set_to_none=True)
            with running_statistics_for_single_examples(model, (inputs, targets)):
                loss = loss_fn(model(inputs), targets)
            loss.backward()
            optimizer.step()
            stats.steps += 1
            stats.examples += len(keys)
            stats.loss_sum += float(loss.detach()) * len(keys)
        if on_epoch is not None:
            on_epoch(epoch)
    return stats


class Timer:
    def __init__(self) -> None:
        self.started = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started


def rng_state_tensors(generator: torch.Generator) -> dict[str, torch.Tensor]:
    """The random state a resumed stage needs: the data-order generator and torch's global RNG
    (used by dropout and by DataLoader's seeding), plus CUDA's when present."""
    state = {"order_generator": generator.get_state(), "torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for index, cuda_state in enumerate(torch.cuda.get_rng_state_all()):
            state[f"torch_cuda_{index}"] = cuda_state
    return state


def restore_rng_state(generator: torch.Generator, state: dict[str, torch.Tensor]) -> None:
    generator.set_state(state["order_generator"].clone())
    torch.set_rng_state(state["torch_cpu"].clone())
    if torch.cuda.is_available():
        cuda_keys = sorted((k for k in state if k.startswith("torch_cuda_")), key=lambda k: int(k[11:]))
        cuda_states = [state[k] for k in cuda_keys]
        if cuda_states:
            torch.cuda.set_rng_state_all(cuda_states)


def cpu_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").clone() for k, v in module.state_dict().items()}


def optimizer_state_to_cpu(state: Any) -> Any:
    if isinstance(state, torch.Tensor):
        return state.detach().to("cpu").clone()
    if isinstance(state, dict):
        return {k: optimizer_state_to_cpu(v) for k, v in state.items()}
    if isinstance(state, list):
        return [optimizer_state_to_cpu(v) for v in state]
    return state


@contextmanager
def running_statistics_for_single_examples(model: nn.Module, *batches: tuple[torch.Tensor, torch.Tensor] | None) -> Iterator[None]:
    """A batch of one example (one forgotten record, the usual deletion; a last partial batch of
    one in training) has no batch statistics, and a batch-norm layer in train mode refuses it. For such a step the layers that keep running
    statistics normalise with them and leave them unchanged (eval mode); the rest of the model
    trains as before."""
    single = any(batch is not None and len(batch[0]) == 1 for batch in batches)
    held = [m for m in model.modules() if single and m.training and getattr(m, "track_running_stats", False)]
    for module in held:
        module.eval()
    try:
        yield
    finally:
        for module in held:
            module.train()
