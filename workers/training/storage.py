"""Putting training runs into the artifact store and getting them back.

A run's membership travels with its artifacts as a safetensors blob (record keys as UTF-8 bytes
plus offsets, and the shard/slice/position columns), so that a stored SISA or S3T version can be
unlearned from the store alone; the database keeps its own copy for scoping.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from workers.artifact_manifests import STORE_OPENERS, store_root
from workers.artifacts import ArtifactManifest, ArtifactRef, ArtifactStore, code_version
from workers.training.base import RECIPES, TrainingRecipe, TrainingRun
from workers.training.membership import MembershipRow


def recipe_store() -> ArtifactStore:
    """The worker's artifact store, which a recipe reads what its config names by sha256 from (an
    uploaded model's tokenizer). It comes through workers.artifact_manifests.STORE_OPENERS (either
    backend), else STORE_ROOTS: this package imports no Django (the method library retrains through it)."""
    for open_store in STORE_OPENERS:
        return open_store()
    return ArtifactStore(store_root())


def save_run(
    store: ArtifactStore,
    run: TrainingRun,
    *,
    parent: str | None = None,
    extra: dict[str, Any] | None = None,
) -> ArtifactRef:
    """Store a run (any recipe); return the top-level artifact's reference.

    ``parent`` is the artifact id of the version this one replaces (after unlearning).
    """
    recipe = recipe_for(run)
    return recipe.save(store, run, parent=parent, extra=extra)


def load_run(store: ArtifactStore, artifact_id: str) -> TrainingRun:
    """Rebuild a stored run: its model (weights loaded, eval mode) and its membership."""
    manifest = store.manifest(artifact_id)
    if not manifest.recipe or "name" not in manifest.recipe:
        raise ValueError(f"artifact {artifact_id} ({manifest.kind}) was not made by a training recipe")
    run = RECIPES.get(manifest.recipe["name"]).load(store, manifest)
    run.model.eval()
    return run


def recipe_for(run: TrainingRun) -> TrainingRecipe:
    return RECIPES.get(run.recipe)(run.config)


def base_manifest(kind: str, run: TrainingRun, **fields: Any) -> ArtifactManifest:
    return ArtifactManifest(
        kind=kind,
        architecture=run.config.get("architecture"),
        config={},
        recipe={"name": run.recipe, "config": run.config},
        code_version=code_version(),
        **fields,
    )


def membership_to_tensors(rows: Sequence[MembershipRow]) -> dict[str, torch.Tensor]:
    encoded = [row.record_key.encode("utf-8") for row in rows]
    lengths = torch.tensor([len(e) for e in encoded], dtype=torch.int64)
    offsets = torch.zeros(len(encoded) + 1, dtype=torch.int64)
    if encoded:
        offsets[1:] = torch.cumsum(lengths, 0)
    return {
        "key_bytes": torch.frombuffer(bytearray(b"".join(encoded)) or bytearray(1), dtype=torch.uint8)[
            : int(offsets[-1])
        ].clone(),
        "key_offsets": offsets,
        "shard": torch.tensor([r.shard for r in rows], dtype=torch.int64),
        "slice": torch.tensor([r.slice for r in rows], dtype=torch.int64),
        "position": torch.tensor([r.position for r in rows], dtype=torch.int64),
    }


def membership_from_tensors(tensors: dict[str, torch.Tensor]) -> list[MembershipRow]:
    data = tensors["key_bytes"].numpy().tobytes()
    offsets = tensors["key_offsets"].tolist()
    shards, slices, positions = (tensors[k].tolist() for k in ("shard", "slice", "position"))
    return [
        MembershipRow(data[offsets[i] : offsets[i + 1]].decode("utf-8"), shards[i], slices[i], positions[i])
        for i in range(len(shards))
    ]
