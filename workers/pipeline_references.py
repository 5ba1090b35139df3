"""Reference (shadow) models that the company's own pipeline trained, uploaded with a version it
retrained outside the platform (deletion.external_retrain).

The audit's statistics calibrate against shadow models trained by the model's own procedure. For a
version the company's pipeline retrained, that procedure is the company's, which the platform cannot
run: the pipeline may upload reference models it trained the same way, each on part of the kept
records, with its membership. Each is checked by the model's family like any upload (nothing is
unpickled or executed), stored as a shadow model with its own training run and membership (so scoping
finds it and a later deletion purges it like any copy), and tied to the version it was uploaded with
(``config["pipeline_reference_of"]``), apart from the platform's own shadow models of the lineage.
"""

from __future__ import annotations

from django.db import transaction

from models_registry import services as registry
from models_registry.importing import training_membership_import
from models_registry.models import (
    ArtifactKind,
    ArtifactStatus,
    Dataset,
    ModelVersion,
    StoredArtifact,
    TrainingRun,
)
from workers.runners.storage import artifact_store

REFERENCE_OF = "pipeline_reference_of"


def pipeline_reference_store(*, version: ModelVersion, index: int, family, checked, dataset: Dataset,
                             rows: list[tuple[int, str, int, int, int]], code_version: str, seed: int,
                             size_bytes: int) -> TrainingRun:
    """Store reference model ``index`` of ``version``: ``checked`` (its family's
    :class:`~workers.model_families.CheckedUpload`) with its membership ``rows`` (line, record key,
    shard, slice, position) of ``dataset``, which must exclude the erased records (the import refuses
    erased and suppressed keys). Returns its training run."""
    from workers.artifacts import ArtifactManifest
    from workers.artifacts import code_version as platform_code_version
    from workers.training.membership import MembershipRow
    from workers.training.storage import membership_to_tensors

    membership = [MembershipRow(key, shard, slice_, position) for _, key, shard, slice_, position in rows]
    manifest = ArtifactManifest(kind=checked.kind, architecture=checked.architecture, config=checked.manifest_config,
                                code_version=platform_code_version(),
                                recipe={"name": checked.recipe, "config": checked.recipe_config},
                                extra={"uploaded": True, "family": family.name, REFERENCE_OF: version.artifact_sha256,
                                       "shadow_index": index, **checked.extra})
    ref = artifact_store().put(manifest, {**checked.blobs, "membership": membership_to_tensors(membership)})
    with transaction.atomic():
        run = registry.training_run_start(
            model=version.model, recipe=checked.recipe,
            config={**checked.recipe_config, REFERENCE_OF: version.id, "shadow_index": index},
            seed=seed, code_version=code_version, datasets=[dataset])
        training_membership_import(run=run, dataset=dataset, rows=rows)
        registry.training_run_finish(run=run)
        registry.stored_artifact_register(sha256=ref.artifact_id, kind=ArtifactKind.SHADOW_MODEL, training_run=run,
                                          size_bytes=size_bytes,
                                          label=f"reference model {index} of {version} from the company's pipeline")
    return run


def pipeline_reference_runs(*, version: ModelVersion) -> list[TrainingRun]:
    """The runs of the reference models the company's pipeline uploaded with ``version`` whose
    artifacts are still present, in upload order."""
    present = StoredArtifact.objects.filter(kind=ArtifactKind.SHADOW_MODEL, status=ArtifactStatus.PRESENT)
    return list(TrainingRun.objects.filter(model=version.model, **{f"config__{REFERENCE_OF}": version.id},
                                           artifacts__in=present).distinct().order_by("id"))
