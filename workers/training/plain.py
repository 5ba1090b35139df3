"""The plain recipe: one model, all records, shard 0 slice 0."""

from __future__ import annotations

from typing import Any

import torch

from workers.artifacts import ArtifactManifest, ArtifactRef, ArtifactStore
from workers.datasets.base import RecordDataset
from workers.training.architectures import build_model
from workers.training.base import (
    RecipeConfig,
    Timer,
    TrainingRecipe,
    TrainingRun,
    cpu_state_dict,
    make_optimizer,
    sorted_by_key,
    train_stage,
)
from workers.training.device import derive_seed, deterministic
from workers.training.membership import MembershipSink
from workers.training.storage import base_manifest, membership_from_tensors, membership_to_tensors
from workers.unlearning.base import ProgressCallback, no_progress
from workers.unlearning.concept_erasure import apply_eraser_tensors, eraser_tensors


class MissingLineage(ValueError):
    """A stored version lacks what every job after training needs (its membership)."""


class SingleModelStorage:
    """save/load for recipes whose run is one model: weights and membership as two blobs."""

    name: str

    def save(self, store: ArtifactStore, run: TrainingRun, *, parent: str | None = None,
             extra: dict[str, Any] | None = None) -> ArtifactRef:
        manifest = base_manifest("model", run, parent=parent, extra={"metrics": run.metrics, **(extra or {})})
        blobs = {"weights": cpu_state_dict(run.model), "membership": membership_to_tensors(run.membership)}
        erasers = eraser_tensors(run.model)
        if erasers:  # a concept erasure's (LEACE): the served model applies them, outside its weights
            blobs["concept_erasers"] = erasers
        return store.put(manifest, blobs)

    @classmethod
    def load(cls, store: ArtifactStore, manifest: ArtifactManifest) -> TrainingRun:
        if "membership" not in manifest.files:
            raise MissingLineage(
                "this version was uploaded before uploads carried their lineage: its artifact holds the weights "
                "only, not the membership of the training run (which records it trained on), so it cannot be "
                "unlearned, shadowed or audited. Upload the same weights again (POST /api/v1/models/<name>/"
                "versions/?training_run=<id>): the new version carries the run's membership and its recipe")
        model = build_model(manifest.architecture or {})
        model.load_state_dict(store.load_blob(manifest.files["weights"]["sha256"]))
        if "concept_erasers" in manifest.files:
            apply_eraser_tensors(model, store.load_blob(manifest.files["concept_erasers"]["sha256"]))
        membership = membership_from_tensors(store.load_blob(manifest.files["membership"]["sha256"]))
        return TrainingRun(cls.name, manifest.recipe["config"], model, membership,
                           manifest.extra.get("metrics", {}))


class PlainRecipe(SingleModelStorage, TrainingRecipe, name="plain"):
    config_class = RecipeConfig
    # What one batch minimises; the regression recipe (workers.training.regression) names its own.
    loss_fn: Any = staticmethod(torch.nn.functional.cross_entropy)

    def train(self, dataset: RecordDataset, *, device: str | torch.device = "cpu",
              progress: ProgressCallback = no_progress) -> TrainingRun:
        config = self.config
        device = torch.device(device)
        timer = Timer()
        sink = MembershipSink()
        with deterministic(derive_seed(config.seed, "init", 0)):
            model = build_model(config.architecture).to(device)
            optimizer = make_optimizer(model.parameters(), config)
            generator = torch.Generator().manual_seed(derive_seed(config.seed, "order", 0))
            stats = train_stage(
                model, optimizer, sorted_by_key(dataset),
                epochs=config.epochs, batch_size=config.batch_size, generator=generator,
                sink=sink, shard=0, slice=0, device=device,
                on_epoch=lambda e: progress("train", (e + 1) / config.epochs), loss_fn=self.loss_fn,
            )
        model.eval()
        return TrainingRun(
            recipe=self.name,
            config=config.to_dict(),
            model=model,
            membership=sink.rows(),
            metrics={"wall_seconds": timer.seconds, "steps": stats.steps,
                     "records_yielded": len(sink.keys()), "records_given": len(dataset),
                     "device": str(device)},
        )
