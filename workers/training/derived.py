"""Recipes that derive a model from another version: ``distill`` (a student trained on a transfer
set to match its parent's softened outputs) and ``finetune`` (the parent's weights trained further
on the child's dataset).

The child may hold whatever its parent held (its weights were computed from the parent's), so the
training job records a lineage edge (distilled_from, fine_tuned_from) when it registers the
version, and a deletion that reaches the parent re-derives the child from the parent's unlearned
version (workers.unlearning.exact.rederive). The parent's model is given to the recipe by whoever
runs it (``parent=``): the training job and the re-derivation load it from the version the
configuration names (``config.parent``); a recipe run without it refuses to train.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from workers.datasets.base import RecordDataset
from workers.training.architectures import build_model
from workers.training.base import (
    RecipeConfig,
    Timer,
    TrainingRecipe,
    TrainingRun,
    make_optimizer,
    running_statistics_for_single_examples,
    sorted_by_key,
    train_stage,
)
from workers.training.device import derive_seed, deterministic
from workers.training.membership import MembershipSink, RecordingLoader, collate_records
from workers.training.plain import SingleModelStorage
from workers.unlearning.base import ConfigError, ProgressCallback, no_progress


@dataclass
class DerivedConfig(RecipeConfig):
    """``parent``: the version the child is derived from, ``{"version_id": ..., "artifact_sha256": ...}``
    (filled in by workers.services.model_train; a re-derivation replaces it with the parent's
    unlearned version)."""

    parent: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        super().validate()
        if not isinstance(self.parent, dict):
            raise ConfigError(f"{type(self).__name__}.parent must be {{'version_id': ..., 'artifact_sha256': ...}}")


@dataclass
class DistillConfig(DerivedConfig):
    """``temperature`` softens both models' outputs (Hinton et al., 2015); ``hard_label_weight``
    mixes in the transfer records' own labels (0: the teacher's outputs only)."""

    temperature: float = 2.0
    hard_label_weight: float = 0.0

    def validate(self) -> None:
        super().validate()
        if not self.temperature > 0:
            raise ConfigError("DistillConfig.temperature must be > 0")
        if not 0.0 <= self.hard_label_weight <= 1.0:
            raise ConfigError("DistillConfig.hard_label_weight must be in [0, 1]")


class DerivedRecipe(SingleModelStorage, TrainingRecipe):
    """A recipe whose run starts from a parent model (given as ``parent``, an ``nn.Module``)."""

    config_class = DerivedConfig

    def __init__(self, config: RecipeConfig | dict[str, Any] | None = None, *, parent: nn.Module | None = None) -> None:
        super().__init__(config)
        self.parent = parent

    def _parent(self) -> nn.Module:
        if self.parent is None:
            raise ValueError(f"the {self.name} recipe derives a model from its parent version's model, which was not "
                             "given (the training job loads it from the version its configuration names)")
        return self.parent


class DistillRecipe(DerivedRecipe, name="distill"):
    """A fresh student (the configured architecture) trained on the transfer set (the dataset it is
    given, in key order, batches drawn from the seed) to match the teacher's outputs at
    ``temperature``: loss ``T² · KL(teacher_T ‖ student_T)`` (plus ``hard_label_weight`` of the
    cross-entropy on the records' labels). Membership: the transfer records the loader yielded."""

    config_class = DistillConfig

    def train(self, dataset: RecordDataset, *, device: str | torch.device = "cpu",
              progress: ProgressCallback = no_progress) -> TrainingRun:
        config = self.config
        device = torch.device(device)
        teacher = self._parent().to(device).eval()
        timer, sink = Timer(), MembershipSink()
        steps, loss_sum, examples = 0, 0.0, 0
        temperature, weight = config.temperature, config.hard_label_weight
        with deterministic(derive_seed(config.seed, "init", 0)):
            student = build_model(config.architecture).to(device)
            optimizer = make_optimizer(student.parameters(), config)
            generator = torch.Generator().manual_seed(derive_seed(config.seed, "order", 0))
            data = sorted_by_key(dataset)
            student.train()
            for epoch in range(config.epochs):
                if len(data) == 0:
                    break
                order = torch.randperm(len(data), generator=generator).tolist()
                loader = DataLoader(data, batch_size=config.batch_size, sampler=order, collate_fn=collate_records)
                for keys, inputs, targets in RecordingLoader(loader, sink, shard=0, slice=0):
                    if not keys:
                        continue
                    inputs, targets = inputs.to(device), targets.to(device)
                    with torch.no_grad():
                        soft = F.softmax(teacher(inputs).float() / temperature, dim=-1)
                    optimizer.zero_grad(set_to_none=True)
                    with running_statistics_for_single_examples(student, (inputs, targets)):
                        logits = student(inputs)
                    loss = F.kl_div(F.log_softmax(logits / temperature, dim=-1), soft,
                                    reduction="batchmean") * temperature ** 2
                    if weight:
                        loss = (1 - weight) * loss + weight * F.cross_entropy(logits, targets)
                    loss.backward()
                    optimizer.step()
                    steps, examples = steps + 1, examples + len(keys)
                    loss_sum += float(loss.detach()) * len(keys)
                progress("distil", (epoch + 1) / config.epochs)
        student.eval()
        teacher.to("cpu")
        return TrainingRun(self.name, config.to_dict(), student, sink.rows(), {
            "wall_seconds": timer.seconds, "steps": steps, "records_yielded": len(sink.keys()),
            "records_given": len(dataset), "device": str(device),
            "distillation_loss": round(loss_sum / examples, 6) if examples else None})


class FinetuneRecipe(DerivedRecipe, name="finetune"):
    """The parent's weights (the child's architecture must be the parent's) trained further on the
    child's dataset, as the plain recipe trains. Membership: the child's records the loader yielded
    (the parent's records are held through the lineage edge, not listed)."""

    def train(self, dataset: RecordDataset, *, device: str | torch.device = "cpu",
              progress: ProgressCallback = no_progress) -> TrainingRun:
        config = self.config
        device = torch.device(device)
        timer, sink = Timer(), MembershipSink()
        with deterministic(derive_seed(config.seed, "init", 0)):
            model = build_model(config.architecture)
            try:
                model.load_state_dict(self._parent().state_dict())
            except RuntimeError as exc:
                raise ValueError(f"the finetune recipe starts from its parent's weights, which do not fit the "
                                 f"configured architecture: {exc}") from exc
            model = model.to(device)
            optimizer = make_optimizer(model.parameters(), config)
            generator = torch.Generator().manual_seed(derive_seed(config.seed, "order", 0))
            stats = train_stage(model, optimizer, sorted_by_key(dataset), epochs=config.epochs,
                                batch_size=config.batch_size, generator=generator, sink=sink, shard=0, slice=0,
                                device=device, on_epoch=lambda e: progress("fine-tune", (e + 1) / config.epochs))
        model.eval()
        return TrainingRun(self.name, config.to_dict(), model, sink.rows(), {
            "wall_seconds": timer.seconds, "steps": stats.steps, "records_yielded": len(sink.keys()),
            "records_given": len(dataset), "device": str(device)})
