"""Worker-side services the web side may call (they only write rows and enqueue)."""

from __future__ import annotations

from typing import Any

from foundation.errors import Conflict, ValidationFailed
from models_registry import services as registry
from models_registry.models import Dataset, ModelVersion, RegisteredModel, VersionStatus
from workers.concept_layers import RECORDED_MODULE_NAMES
from workers.jobs import job_cancel, job_create
from workers.models import Job, JobKind
from workers.runners.storage import artifact_store

# Who may start (and cancel) each kind of job from the API and the admin: training is the ML
# engineers'; shadow models are the reference the audits need, which auditors may ask for too.
JOB_STARTERS = {JobKind.TRAIN: ("ml_engineer",), JobKind.SHADOW: ("ml_engineer", "auditor")}
# Who may cancel a deletion request's unlearning job: the DPO, whose decision the request then waits for.
REQUEST_JOB_CANCELLERS = ("dpo",)
# LiRA (Carlini et al., 2022) used up to 256 shadow models; more would only cost GPU time.
SHADOW_COUNT_MAX = 256


def model_train(*, model: RegisteredModel, dataset: Dataset, recipe_config: dict[str, Any],
                split: str = "train", recipe: str | None = None, enqueue: bool = True,
                parent_version: ModelVersion | None = None, canaries: int = 0) -> Job:
    """Queue a training job for ``model`` on ``dataset`` with ``recipe`` (default: the model's
    registered recipe), which must train models of the model's task and family
    (workers.training_catalogue) and be the model's registered recipe: the planner picks a
    version's unlearning method from that (an exact method for a sharded recipe). ValidationFailed
    naming the field. The recipe configuration's architecture is the model's registered one,
    filled in when left out; the recipe checks the rest of its configuration in the worker.

    A recipe that derives a model (distill, finetune) takes ``parent_version``, the version it is
    derived from (another model's, still held); its configuration's ``parent`` names it, and the
    version the job registers gets the lineage edge (distilled_from, fine_tuned_from).

    ``canaries``: how many canaries to plant (workers.canaries): mislabelled synthetic records drawn
    from the dataset's held-out split with the run's seed, recorded as canaries, which the audits
    score to show they detect memorisation in this model; 0 plants none."""
    from workers.training_catalogue import RECIPE_SPECS, training_recipe_config

    recipe = recipe or model.training_recipe
    config = training_recipe_config(recipe=recipe, task=model.task, architecture=model.architecture,
                                    recipe_config=recipe_config)
    if recipe != model.training_recipe:
        raise ValidationFailed(f"model {model.name!r} is registered with the {model.training_recipe} recipe, from "
                               "which its deletions are planned; it is trained with that recipe only (register "
                               f"another model to train with {recipe})", field="recipe", code="recipe_not_registered")
    job_config: dict[str, Any] = {"dataset_id": dataset.id, "recipe": recipe, "recipe_config": config, "split": split}
    if canaries:
        from workers.canaries import canary_request_check

        canary_request_check(count=canaries, recipe=recipe, task=model.task, dataset=dataset)
        job_config["canaries"] = canaries
    derives = RECIPE_SPECS.get(recipe).derives
    if derives or parent_version is not None:
        derived_parent_check(model=model, recipe=recipe, derives=derives, parent=parent_version)
        config["parent"] = {"version_id": parent_version.id, "artifact_sha256": parent_version.artifact_sha256}
        job_config["parent_version_id"] = parent_version.id
    return job_create(kind=JobKind.TRAIN, registered_model=model, method=recipe, enqueue=enqueue, config=job_config)


def derived_parent_check(*, model: RegisteredModel, recipe: str, derives: str, parent: ModelVersion | None) -> None:
    """Refuse (ValidationFailed, field ``parent_version``) a parent version that ``recipe`` cannot
    derive ``model`` from: none for a deriving recipe, one for a recipe that derives nothing, a
    version of the same model, one no longer held (purged, withdrawn), or, for finetune, one whose
    model has another architecture."""
    if not derives:
        raise ValidationFailed(f"the {recipe} recipe derives no model from another: leave parent_version out",
                               field="parent_version")
    if parent is None:
        raise ValidationFailed(f"the {recipe} recipe derives a model from a parent version: name it "
                               "(parent_version, the version's id)", field="parent_version")
    if parent.model_id == model.id:
        raise ValidationFailed(f"{parent} is a version of {model.name!r} itself: a derived model is registered as a "
                               "model of its own", field="parent_version")
    if parent.status not in (VersionStatus.SERVING, VersionStatus.RETAINED) or not parent.artifact_sha256:
        raise ValidationFailed(f"{parent} is {parent.status}: a model is derived only from a version still held",
                               field="parent_version")
    if parent.model.task != model.task:
        raise ValidationFailed(f"{parent} is a {parent.model.task} model; {model.name!r} is {model.task}",
                               field="parent_version")
    if recipe == "finetune" and parent.model.architecture != model.architecture:
        raise ValidationFailed(f"the finetune recipe starts from its parent's weights: {parent}'s architecture "
                               f"{parent.model.architecture!r} is not {model.name!r}'s {model.architecture!r}",
                               field="parent_version")


def shadow_models_train(*, version: ModelVersion, count: int = 32, enqueue: bool = True) -> Job:
    """Queue the training of ``count`` shadow models of ``version`` (at least 2; an approximate
    verdict needs every record OUT in 16, which 32 give: they are trained in complementary pairs),
    each on a seeded half of its run's records with its recipe (workers.runners.shadow). The
    audits look them up at the trained version at the top of the lineage, so they are made for
    that one: a version unlearned from it, or one without a training run, is refused."""
    from models_registry.selectors import lineage_root

    if isinstance(count, bool) or not isinstance(count, int) or not 2 <= count <= SHADOW_COUNT_MAX:
        raise ValidationFailed(f"count must be an integer from 2 to {SHADOW_COUNT_MAX} "
                               "(an approximate verdict needs 32: every record OUT in 16)", field="count")
    if version.parent_id is not None:
        root = lineage_root(version)
        raise ValidationFailed(f"{version} was unlearned from {root}: shadow models are made for the trained "
                               f"version at the top of its lineage; ask for version {root.version}", field="version")
    if version.training_run_id is None:
        raise ValidationFailed(f"{version} has no training run: shadow models train on halves of a run's records",
                               field="version")
    if version.upstream_edges.exists():
        # A shadow of a derived model would be derived from the same parent, which held the parent's
        # records: no reference that never saw them. The audit says so (audits.runner).
        raise ValidationFailed(f"{version} is derived from another version ({version.upstream_edges.first().kind}): "
                               "its shadow models would learn from the same parent, which held the records a "
                               "deletion forgets, so they cannot be the audit's reference", field="version",
                               code="derived_version")
    return job_create(kind=JobKind.SHADOW, registered_model=version.model, source_version=version,
                      method=version.model.training_recipe, config={"count": count}, enqueue=enqueue)


def started_job_cancel(*, job: Job) -> Job:
    """Cancel a job (workers.jobs.job_cancel: a pending one at once, a running one at its next
    progress report, before it records anything): a training or shadow-model job, or a deletion
    request's unlearning job (its outcome goes back to the DPO, who escalates, withdraws the model or
    accepts the risk). Conflict for a request's audit or report job, other kinds, and a job that has
    ended."""
    if job.deletion_request_id is not None and job.kind != JobKind.UNLEARN:
        raise Conflict(f"job {job.id} is the {job.kind} job of deletion request {job.deletion_request.public_id}: "
                       "only its unlearning jobs can be cancelled (a DPO decides what happens next)",
                       code="job_in_request")
    if job.deletion_request_id is None and job.kind not in JOB_STARTERS:
        raise Conflict(f"job {job.id} is a {job.kind} job; only training, shadow-model and a request's "
                       "unlearning jobs are cancelled here", code="job_not_cancellable")
    return job_cancel(job=job)


MAX_CHECKPOINT_BYTES = 2 * 1024**3


def model_version_upload(*, model: RegisteredModel, training_run, data: bytes) -> ModelVersion | Job:
    """Register a model trained elsewhere as a new version of ``model`` whose lineage is the
    (already imported) membership of ``training_run``. The model's family (see
    :mod:`workers.model_families`, chosen by its registered architecture) checks the upload without
    executing anything in it; anything it refuses (a pickle, a truncated file, a lying header,
    weights that do not fit) is refused with the reason and nothing is stored. The version is
    stored like one the platform trained: its weights, the family's recipe with the run's recorded
    configuration, and the run's membership (from the registry), so that unlearning, shadow models
    and audits load it as they load any version.

    Returns the version, or, for a family whose check builds code the web process must not import
    (``checked_in_worker``: a company's own package), the queued check job that registers the
    version when the weights fit (workers.upload_checks); what the web side can check without
    building is refused here already.
    """
    from models_registry.membership_uploads import membership_complete_check
    from workers.model_families import family_of

    if training_run.model_id != model.id:
        raise ValidationFailed("the training run belongs to another model", field="training_run")
    membership_complete_check(run=training_run)  # at once, before a worker's check is queued
    if len(data) > MAX_CHECKPOINT_BYTES:
        raise ValidationFailed(f"checkpoint larger than {MAX_CHECKPOINT_BYTES} bytes", field="body")
    if not model.architecture:
        raise ValidationFailed("the model has no registered architecture to check the weights against",
                               field="architecture")
    try:
        family = family_of(model.architecture)
    except ValueError as exc:
        raise ValidationFailed(str(exc), field="architecture") from None
    if family.checked_in_worker:
        from workers.upload_checks import upload_check_queue

        return upload_check_queue(model=model, training_run=training_run, family=family, data=data)
    checked = family_upload_check(family=family, model=model, data=data, run_config=training_run.config or {})
    return uploaded_version_store(model=model, training_run=training_run, family=family, checked=checked,
                                  size_bytes=len(data))


def family_upload_check(*, family, model: RegisteredModel, data: bytes, run_config: dict):
    """``data`` checked by ``family`` (one checked in the web process) against ``model``'s registered
    architecture, without executing anything it holds; returns the
    :class:`~workers.model_families.CheckedUpload`. ValidationFailed naming the problem (``body``,
    with the family's code) or the run configuration the family's recipe refuses (``training_run``)."""
    from workers.model_families.base import UploadRefused

    try:
        return family.check_upload(data, architecture=model.architecture, task=model.task, run_config=run_config)
    except UploadRefused as exc:
        raise ValidationFailed(str(exc), field="body", code=exc.code) from None
    except ValueError as exc:  # a recipe config the family's recipe refuses
        raise ValidationFailed(f"the training run's configuration does not fit the {family.name} family: {exc}",
                               field="training_run") from None


def uploaded_version_store(*, model: RegisteredModel, training_run, family, checked, size_bytes: int,
                           parent: ModelVersion | None = None, guarantee_class: str = "") -> ModelVersion:
    """Store an upload its ``family`` has checked (a :class:`~workers.model_families.CheckedUpload`)
    with the run's membership from the registry, and register the version and its weights row.
    ValidationFailed when the run has no imported membership (nothing is stored then). ``parent``
    and ``guarantee_class``: a version the company's pipeline retrained without a deletion's records
    (the affected version it replaces, ``exact_attested``)."""
    from django.db import transaction

    from models_registry.membership_uploads import membership_complete_check
    from workers.artifacts import ArtifactManifest, code_version
    from workers.model_families.base import UploadRefused
    from workers.training.storage import membership_to_tensors

    uploads = membership_complete_check(run=training_run)
    membership = training_run_membership(training_run)
    if not membership:
        raise training_run_without_membership(training_run)
    try:
        family.check_membership(checked, membership)
    except UploadRefused as exc:
        raise ValidationFailed(str(exc), field="training_run", code=exc.code) from None
    store = artifact_store()
    manifest = ArtifactManifest(kind=checked.kind, architecture=checked.architecture, config=checked.manifest_config,
                                code_version=code_version(),
                                recipe={"name": checked.recipe, "config": checked.recipe_config},
                                extra={"uploaded": True, "family": family.name, **checked.extra})
    ref = store.put(manifest, {**checked.blobs, "membership": membership_to_tensors(membership)})
    with transaction.atomic():
        if membership_complete_check(run=training_run, lock=True) != uploads:
            raise ValidationFailed(f"an upload of training run {training_run.id}'s membership began while the "
                                   "version was stored; upload the weights again once it is complete",
                                   field="training_run", code="membership_incomplete")
        # Shadow models and retrains read the procedure from here (the run row keeps what the company recorded),
        # and a concept request's layer is checked against the module names the check built, where it recorded
        # them (workers.concept_layers.recorded_module_names).
        names = checked.extra.get(RECORDED_MODULE_NAMES)
        modules = {RECORDED_MODULE_NAMES: names} if names else {}
        version = registry.model_version_create(
            model=model, artifact_sha256=ref.artifact_id, training_run=training_run, status=VersionStatus.RETAINED,
            parent=parent, guarantee_class=guarantee_class,  # an external retrain (deletion.external_retrain)
            metrics={"uploaded_recipe": {"name": checked.recipe, "config": checked.recipe_config,
                                         "family": family.name}, **modules})
        registry.stored_artifact_register(sha256=ref.artifact_id, kind="weights", model_version=version,
                                          training_run=training_run, size_bytes=size_bytes,
                                          label=f"uploaded weights of {version}", origin_version=version)
    return version


def training_run_without_membership(training_run) -> ValidationFailed:
    """The error for an upload whose training run has no imported membership yet."""
    return ValidationFailed(f"training run {training_run.id} has no imported membership: import which records "
                            "it trained on first (POST /api/v1/training-runs/<id>/membership/)", field="training_run")


def training_run_membership(training_run) -> list:
    """The run's membership as the registry holds it (record key, shard, slice, position). Conflict
    while an upload of it is open: a half-uploaded membership is never taken as the run's."""
    from models_registry.membership_uploads import membership_complete_check
    from models_registry.selectors import run_membership
    from workers.training.membership import MembershipRow

    membership_complete_check(run=training_run)
    return [MembershipRow(*row) for row in run_membership(run_id=training_run.id)]
