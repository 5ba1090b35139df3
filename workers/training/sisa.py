"""SISA: S shards x R slices, a checkpoint after each slice, aggregation by averaging probabilities.

A record's shard and slice come from HMAC-SHA256(shard_key, record_key), never from its position,
so removing one record moves no other. Each shard's model is trained in R stages; stage k trains
on the shard's slices 0..k (ordered by record key) for ``slice_epochs[k]`` epochs and ends with a
checkpoint holding the weights, the optimizer state and the random state (data-order generator
and torch's global RNG). Nothing is fitted across shards: each shard model sees only its data.

Unlearning (:func:`sisa_retrain`) retrains each affected shard from the checkpoint before the
first slice in which a forgotten record reached it, on the retained records only; the stages it
reruns consume the random state restored from the checkpoint, so the result equals training the
same recipe from scratch without the forgotten records.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from workers.artifacts import (
    ArtifactManifest,
    ArtifactRef,
    ArtifactStore,
    code_version,
    flatten_state,
    unflatten_state,
)
from workers.datasets.base import RecordDataset
from workers.training.architectures import build_model
from workers.training.base import (
    RecipeConfig,
    Timer,
    TrainingRecipe,
    TrainingRun,
    cpu_state_dict,
    make_optimizer,
    optimizer_state_to_cpu,
    restore_rng_state,
    rng_state_tensors,
    sorted_by_key,
    train_stage,
)
from workers.training.device import derive_seed, deterministic
from workers.training.membership import MembershipRow, MembershipSink
from workers.training.storage import base_manifest, membership_from_tensors, membership_to_tensors
from workers.unlearning.base import ConfigError, ProgressCallback, no_progress

_PART_NAME = re.compile(r"shard(\d+)/slice(\d+)")


@dataclass
class SlicedConfig(RecipeConfig):
    """What SISA and S3T share: records split into ``shards`` x ``slices`` by a keyed hash.
    ``slice_epochs``: epochs of each stage (one per slice); empty means ``epochs`` for every stage.
    Fewer epochs on later stages make deletions cheaper (a deletion reruns the stages from its
    slice on). ``shard_key``: the HMAC key of the record -> (shard, slice) assignment."""

    shards: int = 5
    slices: int = 4
    shard_key: str = "sisa-shard-key-v1"
    slice_epochs: list[int] = field(default_factory=list)

    def validate(self) -> None:
        super().validate()
        name = type(self).__name__
        if self.shards < 1 or self.slices < 1:
            raise ConfigError(f"{name}.shards and .slices must be >= 1")
        if not self.shard_key:
            raise ConfigError(f"{name}.shard_key must not be empty")
        if self.slice_epochs and (
            len(self.slice_epochs) != self.slices
            or not all(isinstance(e, int) and not isinstance(e, bool) and e >= 0 for e in self.slice_epochs)
        ):
            raise ConfigError(f"{name}.slice_epochs must be {self.slices} integers >= 0")

    def stage_epochs(self) -> list[int]:
        return list(self.slice_epochs) if self.slice_epochs else [self.epochs] * self.slices


@dataclass
class SisaConfig(SlicedConfig):
    """SISA's shards, slices and stage epochs (see SlicedConfig)."""


def keyed_assignment(record_key: str, *, key: str, shards: int, slices: int) -> tuple[int, int]:
    """(shard, slice) of a record from HMAC-SHA256(key, record_key); independent of every
    other record, so removing one record moves no other."""
    digest = hmac.new(key.encode("utf-8"), record_key.encode("utf-8"), hashlib.sha256).digest()
    shard = int.from_bytes(digest[:8], "big") % shards
    slice_ = int.from_bytes(digest[8:16], "big") % slices
    return shard, slice_


def partition(keys: Iterable[str], *, key: str, shards: int, slices: int) -> dict[tuple[int, int], set[str]]:
    """Group record keys by their (shard, slice)."""
    groups: dict[tuple[int, int], set[str]] = {}
    for record_key in keys:
        groups.setdefault(keyed_assignment(record_key, key=key, shards=shards, slices=slices), set()).add(record_key)
    return groups


@dataclass
class Checkpoint:
    """The state at the end of one stage of one shard."""

    weights: dict[str, torch.Tensor]
    optimizer: Any  # torch optimizer state_dict (tensors on CPU)
    rng: dict[str, torch.Tensor]


class SisaEnsemble(nn.Module):
    """S shard models; ``forward`` returns the log of their averaged class probabilities.

    ``checkpoints[(shard, slice)]`` is the state after that stage; the shard models hold the
    state after the last stage. Shards that trained on no record are left out of the average.
    """

    def __init__(self, config: SisaConfig, members: list[nn.Module],
                 checkpoints: dict[tuple[int, int], Checkpoint], shard_sizes: list[int]) -> None:
        super().__init__()
        self.config = config
        self.members = nn.ModuleList(members)
        self.checkpoints = checkpoints
        self.shard_sizes = list(shard_sizes)

    def serving_shards(self) -> list[int]:
        return [s for s, size in enumerate(self.shard_sizes) if size > 0]

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        shards = self.serving_shards()
        if not shards:
            raise RuntimeError("no shard of this SISA ensemble holds any record")
        probs = torch.stack([torch.softmax(self.members[s](inputs), dim=-1) for s in shards]).mean(0)
        return torch.log(probs.clamp_min(1e-12))


class SisaRecipe(TrainingRecipe, name="sisa"):
    config_class = SisaConfig

    def train(self, dataset: RecordDataset, *, device: str | torch.device = "cpu",
              progress: ProgressCallback = no_progress) -> TrainingRun:
        config: SisaConfig = self.config
        timer = Timer()
        sink = MembershipSink()
        groups = self.partition(dataset.record_keys)
        members, checkpoints, sizes, steps = [], {}, [], 0
        for shard in range(config.shards):
            model, shard_checkpoints, stats_steps = self.train_shard(
                dataset, groups, shard, start_slice=0, resume=None, sink=sink,
                device=torch.device(device), progress=progress,
            )
            members.append(model)
            checkpoints.update(shard_checkpoints)
            sizes.append(sum(len(groups.get((shard, k), ())) for k in range(config.slices)))
            steps += stats_steps
        ensemble = SisaEnsemble(config, members, checkpoints, sizes).eval()
        return TrainingRun(
            recipe=self.name, config=config.to_dict(), model=ensemble, membership=sink.rows(),
            metrics={"wall_seconds": timer.seconds, "steps": steps, "shard_sizes": sizes,
                     "records_yielded": len(sink.keys()), "records_given": len(dataset),
                     "device": str(device)},
        )

    def partition(self, keys: Iterable[str]) -> dict[tuple[int, int], set[str]]:
        c = self.config
        return partition(keys, key=c.shard_key, shards=c.shards, slices=c.slices)

    def train_shard(
        self,
        dataset: RecordDataset,
        groups: dict[tuple[int, int], set[str]],
        shard: int,
        *,
        start_slice: int,
        resume: Checkpoint | None,
        sink: MembershipSink,
        device: torch.device,
        progress: ProgressCallback,
    ) -> tuple[nn.Module, dict[tuple[int, int], Checkpoint], int]:
        """Train stages ``start_slice``..R-1 of one shard, from its initial state (when
        ``start_slice`` is 0) or from ``resume``, the checkpoint of stage ``start_slice - 1``.
        Returns the shard model, the checkpoints of the stages it ran and the number of steps."""
        config: SisaConfig = self.config
        if (start_slice == 0) != (resume is None):
            raise ValueError("resume must be given exactly when start_slice > 0")
        epochs = config.stage_epochs()
        checkpoints: dict[tuple[int, int], Checkpoint] = {}
        steps = 0
        with deterministic(derive_seed(config.seed, "init", shard)):
            model = build_model(config.architecture).to(device)
            optimizer = make_optimizer(model.parameters(), config)
            generator = torch.Generator().manual_seed(derive_seed(config.seed, "order", shard))
            if resume is not None:
                model.load_state_dict(resume.weights)
                # Optimizers adopt the given tensors and update them in place: hand over
                # copies, or the parent's checkpoint would change under it.
                optimizer.load_state_dict(optimizer_state_to_cpu(resume.optimizer))
                restore_rng_state(generator, resume.rng)
            total = config.slices - start_slice
            for stage in range(start_slice, config.slices):
                keys: set[str] = set()
                for k in range(stage + 1):
                    keys |= groups.get((shard, k), set())

                def report(epoch: int, stage: int = stage) -> None:
                    done = (stage - start_slice) + (epoch + 1) / max(epochs[stage], 1)
                    progress(f"shard {shard} slice {stage}", done / total)

                stats = train_stage(
                    model, optimizer, sorted_by_key(dataset, keys),
                    epochs=epochs[stage], batch_size=config.batch_size, generator=generator,
                    sink=sink, shard=shard, slice=stage, device=device, on_epoch=report,
                )
                steps += stats.steps
                checkpoints[(shard, stage)] = Checkpoint(
                    weights=cpu_state_dict(model),
                    optimizer=optimizer_state_to_cpu(optimizer.state_dict()),
                    rng=rng_state_tensors(generator),
                )
        model.eval()
        return model, checkpoints, steps

    # -- storage

    def save(self, store: ArtifactStore, run: TrainingRun, *, parent: str | None = None,
             extra: dict[str, Any] | None = None) -> ArtifactRef:
        ensemble: SisaEnsemble = run.model  # type: ignore[assignment]
        parts = {}
        for (shard, stage), checkpoint in sorted(ensemble.checkpoints.items()):
            parts[f"shard{shard}/slice{stage}"] = store_checkpoint(store, run, shard, stage, checkpoint).artifact_id
        manifest = base_manifest(
            "sisa_ensemble", run, parent=parent, parts=parts,
            state={"shard_sizes": ensemble.shard_sizes},
            extra={"metrics": run.metrics, **(extra or {})},
        )
        return store.put(manifest, {"membership": membership_to_tensors(run.membership)})

    @classmethod
    def load(cls, store: ArtifactStore, manifest: ArtifactManifest) -> TrainingRun:
        config = SisaConfig.from_dict(manifest.recipe["config"])
        checkpoints: dict[tuple[int, int], Checkpoint] = {}
        for name, artifact_id in manifest.parts.items():
            match = _PART_NAME.fullmatch(name)
            if match is None:
                raise ValueError(f"unexpected part {name!r} in a sisa manifest")
            checkpoints[(int(match[1]), int(match[2]))] = load_checkpoint(store, artifact_id)
        members = []
        for shard in range(config.shards):
            model = build_model(config.architecture)
            model.load_state_dict(checkpoints[(shard, config.slices - 1)].weights)
            members.append(model.eval())
        ensemble = SisaEnsemble(config, members, checkpoints, manifest.state["shard_sizes"])
        membership = membership_from_tensors(store.load_blob(manifest.files["membership"]["sha256"]))
        return TrainingRun(cls.name, config.to_dict(), ensemble, membership,
                           manifest.extra.get("metrics", {}))


    @classmethod
    def comparable_state(cls, run: TrainingRun) -> dict[str, torch.Tensor]:
        """The shard models, and every checkpoint's weights, optimizer state and random state (a
        later deletion resumes from them), with the shard sizes."""
        ensemble: SisaEnsemble = run.model  # type: ignore[assignment]
        state = super().comparable_state(run)
        for (shard, stage), checkpoint in sorted(ensemble.checkpoints.items()):
            optimizer_tensors, _ = flatten_state(checkpoint.optimizer)
            for role, tensors in (("weights", checkpoint.weights), ("optimizer", optimizer_tensors),
                                  ("rng", checkpoint.rng)):
                state.update({f"shard{shard}/slice{stage}/{role}/{k}": v.detach().cpu() for k, v in tensors.items()})
        state["shard_sizes"] = torch.tensor(ensemble.shard_sizes, dtype=torch.int64)
        return state


def store_checkpoint(store: ArtifactStore, run: TrainingRun, shard: int, stage: int,
                     checkpoint: Checkpoint) -> ArtifactRef:
    """One checkpoint as its own artifact, so that an unlearned version shares the unaffected
    ones with its parent and a purge removes exactly the affected ones."""
    optimizer_tensors, optimizer_skeleton = flatten_state(checkpoint.optimizer)
    manifest = ArtifactManifest(
        kind="checkpoint",
        architecture=run.config.get("architecture"),
        recipe={"name": run.recipe, "config": run.config},
        code_version=code_version(),
        config={"shard": shard, "slice": stage},
        state={"optimizer": optimizer_skeleton, "rng_roles": sorted(checkpoint.rng)},
    )
    return store.put(manifest, {"weights": checkpoint.weights, "optimizer": optimizer_tensors,
                                "rng": checkpoint.rng})


def load_checkpoint(store: ArtifactStore, artifact_id: str) -> Checkpoint:
    manifest = store.manifest(artifact_id)
    optimizer_tensors = store.load(artifact_id, "optimizer")
    return Checkpoint(
        weights=store.load(artifact_id, "weights"),
        optimizer=unflatten_state(optimizer_tensors, manifest.state["optimizer"]),
        rng=store.load(artifact_id, "rng"),
    )


# ---------------------------------------------------------------- unlearning


@dataclass
class SisaRetrainReport:
    run: TrainingRun
    forgotten: list[str]
    not_members: list[str]
    retrained: dict[int, int]  # shard -> first slice rerun
    slices_retrained: int
    superseded_checkpoints: list[tuple[int, int]]
    steps: int


def sisa_retrain(
    run: TrainingRun,
    forget_keys: Iterable[str],
    retain: RecordDataset,
    *,
    device: str | torch.device = "cpu",
    progress: ProgressCallback = no_progress,
) -> SisaRetrainReport:
    """Exact SISA unlearning of ``forget_keys`` from ``run``.

    Uses the run's membership (what the loaders yielded) to find, per shard, the first slice a
    forgotten record reached; reruns that shard from the checkpoint before it on the records of
    ``retain`` (the original training set without the forgotten records) assigned to it. Many
    deletions in one shard cost one retrain. Unaffected shards and their checkpoints are kept as
    they are. Returns the new run (membership without the forgotten records) and what was done.
    """
    if run.recipe != "sisa" or not isinstance(run.model, SisaEnsemble):
        raise ValueError(f"sisa unlearning needs a run of the sisa recipe, got {run.recipe!r}")
    recipe = SisaRecipe(run.config)
    config: SisaConfig = recipe.config
    ensemble: SisaEnsemble = run.model
    forget = set(forget_keys)
    overlap = forget.intersection(retain.record_keys)
    if overlap:
        raise ValueError(f"{len(overlap)} forgotten record(s) are still in the retain set, e.g. {min(overlap)}")
    by_key = {row.record_key: row for row in run.membership}
    members = sorted(forget & by_key.keys())
    not_members = sorted(forget - by_key.keys())
    first_affected: dict[int, int] = {}
    for key in members:
        row = by_key[key]
        first_affected[row.shard] = min(first_affected.get(row.shard, config.slices), row.slice)

    groups = recipe.partition(retain.record_keys)
    new_members = list(ensemble.members)
    checkpoints = dict(ensemble.checkpoints)
    sizes = list(ensemble.shard_sizes)
    # Rows of shards and slices that are not rerun stay; the sink starts from them so that a
    # record first yielded in a kept slice keeps that slice and position.
    kept_rows = [
        row for row in run.membership
        if row.record_key not in forget and row.slice < first_affected.get(row.shard, config.slices)
    ]
    sink = MembershipSink()
    for row in sorted(kept_rows, key=lambda r: (r.shard, r.slice, r.position)):
        sink.record([row.record_key], shard=row.shard, slice=row.slice)
    superseded: list[tuple[int, int]] = []
    steps = 0
    for index, (shard, start) in enumerate(sorted(first_affected.items())):
        resume = ensemble.checkpoints[(shard, start - 1)] if start > 0 else None

        def shard_progress(stage: str, fraction: float, index: int = index) -> None:
            progress(stage, (index + fraction) / len(first_affected))

        model, shard_checkpoints, shard_steps = recipe.train_shard(
            retain, groups, shard, start_slice=start, resume=resume, sink=sink,
            device=torch.device(device), progress=shard_progress,
        )
        new_members[shard] = model
        superseded.extend((shard, k) for k in range(start, config.slices))
        checkpoints.update(shard_checkpoints)
        sizes[shard] = sum(len(groups.get((shard, k), ())) for k in range(config.slices))
        steps += shard_steps
    new_ensemble = SisaEnsemble(config, new_members, checkpoints, sizes).eval()
    membership = sink.rows()
    new_run = TrainingRun(
        recipe=run.recipe, config=run.config, model=new_ensemble, membership=membership,
        metrics={**run.metrics, "shard_sizes": sizes, "records_yielded": len(membership)},
    )
    return SisaRetrainReport(
        run=new_run, forgotten=members, not_members=not_members, retrained=first_affected,
        slices_retrained=len(superseded), superseded_checkpoints=superseded, steps=steps,
    )


def membership_of(rows: Iterable[MembershipRow]) -> dict[str, MembershipRow]:
    return {row.record_key: row for row in rows}
