"""The company's MLflow model registry: its versions imported, unlearned versions registered back.

**Import** (:func:`mlflow_versions_import`, ``POST /api/v1/mlflow/imports/``). Every version of a
registered model on the tracking server (``settings.MLFLOW_TRACKING_URI``) is read with its run id
and aliases. A version whose weights are in a form a platform family checks becomes a platform
version through the ordinary upload (:func:`workers.services.model_version_upload`: the family's
checks, nothing executed), with the membership of the platform training run its MLflow run maps to
(named in the request's ``training_runs``, or by the run's tag :data:`TRAINING_RUN_TAG`, which the
client library sets when it records lineage inside the company's training loop). Which forms:

* the ``sklearn`` flavor saved with ``serialization_format="skops"`` (MLflow's default outside
  Databricks), or a skops file logged as an artifact, for the scikit-learn family;
* the ``transformers`` flavor (its ``model/`` folder and ``components/tokenizer/``), or a
  ``save_pretrained`` folder logged as artifacts, for the Hugging Face family;
* a safetensors state dict logged as an artifact, for the platform's own and entry-point modules.

Everything else is refused with the reason, its metadata and run id kept: the ``pytorch`` flavor
(``data/model.pth`` is ``torch.save``, a pickle; ``data/model.pt2`` a ``torch.export`` program) and
the ``sklearn`` flavor with pickle or cloudpickle (``model.pkl``) are never downloaded, let alone
loaded. The MLmodel's own ``skops_trusted_types`` are never used: the family's allow-list decides.

**Back** (:func:`mlflow_deployment_confirmed`, :func:`mlflow_model_withdrawn`, called by the
request workflow). When the serving side confirms an unlearned version of an imported model, a new
MLflow version is registered whose artifact is the platform's stored weights in the form they were
imported in (the MLmodel and environment files of the version it replaces, the weights file
replaced), tagged with the deletion request and the guarantee class, and the serving alias is moved
to it if it still names the version it replaces. A withdrawn model's serving alias is removed if it
names a version of that model's lineage. Each change is a :class:`~workers.models.MlflowSync` row,
written in the decision's transaction and attempted after it commits by a Celery task that retries
with backoff (``MAX_ATTEMPTS``) when MLflow cannot be reached: the platform's state never waits on
MLflow, and a failure is recorded on the row (``GET /api/v1/mlflow/syncs/``), never lost.

``mlflow`` (the ``mlflow-skinny`` client) is imported inside the functions that talk to the server;
without ``MLFLOW_TRACKING_URI`` the import answers that MLflow is not configured.
"""

from __future__ import annotations

import io
import json
import logging
import os
import tarfile
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from foundation.errors import Conflict, DomainError, NotFound, ValidationFailed
from foundation.ledger.services import ledger_append
from models_registry.models import (
    ModelVersion,
    RegisteredModel,
    TrainingMembership,
    TrainingRun,
    VersionStatus,
)
from workers.models import (
    Job,
    JobStatus,
    MlflowModelVersion,
    MlflowSync,
    MlflowSyncKind,
    MlflowSyncStatus,
    MlflowVersionStatus,
)

logger = logging.getLogger(__name__)

SYNC_TASK = "workers.mlflow_sync"  # workers/tasks.py, which imports this module: sent by name
MAX_ATTEMPTS = 8
# The MLflow run tag naming the platform training run that holds the run's membership.
TRAINING_RUN_TAG = "deletion_platform.training_run"
TAG = "deletion_platform."
# Small files of an MLflow model kept at import, written again (edited) with an unlearned version.
FLAVOR_FILES = ("MLmodel", "conda.yaml", "python_env.yaml", "requirements.txt")
FLAVOR_FILE_BYTES = 256 * 1024
MAX_ARTIFACT_FILES = 200
# The MLflow client's own retries stay short: the platform retries a sync with backoff itself.
CLIENT_ENVIRONMENT = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
                      "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
PICKLED_SUFFIXES = (".pkl", ".pickle", ".pth", ".pt", ".pt2", ".bin", ".joblib", ".ckpt", ".h5")
SAFETENSORS_ADVICE = ("log the module's state dict as a safetensors file instead "
                      "(safetensors.torch.save_file(model.state_dict(), 'model.safetensors'), then mlflow.log_artifact), "
                      "or a transformers model with the transformers flavor")


class MlflowUnavailable(DomainError):
    """The tracking server could not be reached or answered with a server error: worth trying again."""

    status_code = 503
    default_code = "mlflow_unavailable"


class MlflowRefused(DomainError):
    """The tracking server refused the call (a 4xx other than 429): trying again will not help."""

    status_code = 400
    default_code = "mlflow_refused"


class _NotTaken(Exception):
    """Why one MLflow version does not become a platform version (it is recorded with the reason)."""

    def __init__(self, code: str, reason: str, *, status: str = MlflowVersionStatus.REFUSED) -> None:
        super().__init__(reason)
        self.code, self.reason, self.status = code, reason, status


# ---------------------------------------------------------------- the client


def mlflow_tracking_uri() -> str:
    """The tracking server's URL; Conflict ``mlflow_not_configured`` when the setting is unset."""
    uri = settings.MLFLOW_TRACKING_URI
    if not uri:
        raise Conflict("MLflow is not configured: set MLFLOW_TRACKING_URI to the company's tracking server "
                       "(http(s)://...); without it the MLflow import and alias moves are off",
                       code="mlflow_not_configured")
    return uri


def mlflow_client():
    """An ``mlflow.MlflowClient`` for the configured tracking server (its model registry too)."""
    uri = mlflow_tracking_uri()
    for name, value in CLIENT_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _transient(exc: BaseException) -> bool:
    """Whether a failure talking to MLflow may pass: no connection, a timeout, a 5xx or 429.
    A 4xx is MLflow's answer and stays the same."""
    from mlflow.exceptions import MlflowException, RestException

    if isinstance(exc, RestException):
        status = exc.get_http_status_code()
        return status >= 500 or status == 429
    if isinstance(exc, MlflowException):  # the transport's failures come as INTERNAL_ERROR
        return exc.error_code in ("INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED")
    return isinstance(exc, OSError)  # requests' errors are OSErrors too


@contextmanager
def _talking_to_mlflow(what: str) -> Iterator[None]:
    """Translate the client's failures into the domain's: MlflowUnavailable (transient), NotFound
    (a 404) or MlflowRefused (another 4xx). Anything else is a bug and goes up as it is."""
    from mlflow.exceptions import MlflowException, RestException

    try:
        yield
    except DomainError:
        raise
    except Exception as exc:
        if _transient(exc):
            raise MlflowUnavailable(f"MLflow could not be reached while {what}: {_short(exc)}") from None
        if isinstance(exc, RestException) and exc.get_http_status_code() == 404:
            raise NotFound(f"MLflow answered while {what}: {_short(exc)}", code="mlflow_not_found") from None
        if isinstance(exc, MlflowException):
            raise MlflowRefused(f"MLflow refused while {what}: {_short(exc)}") from None
        raise


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:500] if str(exc) else type(exc).__name__


# ---------------------------------------------------------------- import


def mlflow_versions_import(*, model: RegisteredModel, registered_model: str, alias: str,
                           training_runs: Mapping[str, int] | None = None) -> dict[str, Any]:
    """Import every version of MLflow's ``registered_model`` into the platform's ``model`` (see the
    module's docstring). ``alias``: the alias the company serves the model from (it must exist);
    ``training_runs``: MLflow run id -> platform training run id, for runs without the
    :data:`TRAINING_RUN_TAG` tag. Returns the registered model, the alias and the version it
    names, and per version: ``status`` (imported, check_queued, refused, no_membership,
    registered_back), ``code`` and ``reason`` when not taken, the platform version made from it,
    the training run whose membership it got and how (``membership_from``), the form of its
    weights. Versions already imported are reported as they are. Raises ValidationFailed,
    NotFound (no such registered model), MlflowUnavailable, Conflict (MLflow not configured)."""
    from workers.model_families import family_of

    training_runs = dict(training_runs or {})
    if "'" in registered_model or "\\" in registered_model:
        raise ValidationFailed("a registered model's name with a quote or a backslash is not read",
                               field="registered_model")
    if not model.architecture:
        raise ValidationFailed(f"model {model.name!r} has no registered architecture, so no family can check "
                               "the weights", field="model")
    try:
        family = family_of(model.architecture)
    except ValueError as exc:
        raise ValidationFailed(str(exc), field="model") from None
    client = mlflow_client()
    with _talking_to_mlflow(f"reading registered model {registered_model!r}"):
        registered = client.get_registered_model(registered_model)
        versions = _model_versions(client, registered_model)
    serving = dict(registered.aliases or {})
    if alias not in serving:
        named = ", ".join(sorted(serving)) or "none"
        raise ValidationFailed(f"registered model {registered_model!r} has no alias {alias!r} (its aliases: {named}); "
                               "name the alias the company serves the model from", field="alias")
    unknown_runs = sorted(set(training_runs) - {v.run_id for v in versions if v.run_id})
    if unknown_runs:
        raise ValidationFailed(f"no version of {registered_model!r} was logged by MLflow run(s) "
                               f"{', '.join(unknown_runs)}", field="training_runs")
    aliases_of: dict[int, list[str]] = {}
    for name, number in serving.items():
        aliases_of.setdefault(int(number), []).append(name)
    results = [_version_import(client, model=model, family=family.name, mlflow_version=version, alias=alias,
                               aliases=sorted(aliases_of.get(int(version.version), [])), training_runs=training_runs)
               for version in sorted(versions, key=lambda v: int(v.version))]
    return {"registered_model": registered_model, "model": model.name, "alias": alias,
            "alias_version": int(serving[alias]), "versions": results}


def _model_versions(client, name: str) -> list:
    versions, token = [], None
    while True:
        page = client.search_model_versions(f"name='{name}'", max_results=200, page_token=token)
        versions += list(page)
        token = page.token
        if not token:
            return versions


def _version_import(client, *, model: RegisteredModel, family: str, mlflow_version, alias: str,
                    aliases: list[str], training_runs: Mapping[str, int]) -> dict[str, Any]:
    """Import one MLflow version (or report the one imported before); record what happened."""
    number = int(mlflow_version.version)
    link = MlflowModelVersion.objects.filter(registered_model=mlflow_version.name, version=number).first()
    if link is not None and link.model_id != model.id:
        return {**_described(link), "status": MlflowVersionStatus.REFUSED, "code": "imported_elsewhere",
                "reason": f"MLflow version {number} belongs to platform model {link.model.name!r}"}
    if link is not None and link.status in (MlflowVersionStatus.IMPORTED, MlflowVersionStatus.CHECK_QUEUED,
                                            MlflowVersionStatus.REGISTERED_BACK):
        return _described(_link_refreshed(link))
    fields: dict[str, Any] = {"model": model, "run_id": mlflow_version.run_id or "",
                              "source": str(mlflow_version.source or "")[:1000], "serving_alias": alias,
                              "aliases": aliases, "code": "", "reason": "", "model_version": None,
                              "upload_check": None, "layout": {}, "flavor_files": {}}
    membership: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="mlflow-import-") as folder:
        try:
            repository = _artifacts_of(client, mlflow_version)
            files = _artifact_files(repository)
            fields["flavor_files"] = _flavor_files(repository, files, Path(folder))
            fields["layout"] = weights_layout(files, fields["flavor_files"].get("MLmodel"), family)
            run, membership = _membership_run(client, model, mlflow_version, training_runs)
            body = _weights_body(repository, files, fields["layout"], Path(folder))
            outcome = _uploaded(model, run, body)
        except _NotTaken as exc:
            fields.update(status=exc.status, code=exc.code, reason=exc.reason)
        except (NotFound, MlflowRefused) as exc:  # MLflow's answer about this version (a deleted run...)
            fields.update(status=MlflowVersionStatus.REFUSED, code=exc.code, reason=exc.message)
        else:
            if isinstance(outcome, Job):
                fields.update(status=MlflowVersionStatus.CHECK_QUEUED, upload_check=outcome)
            else:
                fields.update(status=MlflowVersionStatus.IMPORTED, model_version=outcome)
                if alias in aliases:  # what the company serves from
                    ModelVersion.objects.filter(pk=outcome.pk).update(status=VersionStatus.SERVING)
    link, _ = MlflowModelVersion.objects.update_or_create(registered_model=mlflow_version.name, version=number,
                                                          defaults=fields)
    return {**_described(link), **membership}


def _uploaded(model: RegisteredModel, run: TrainingRun, body: bytes):
    """The ordinary upload (family checks, membership); its refusal becomes this version's reason."""
    from workers.services import model_version_upload

    try:
        with transaction.atomic():
            return model_version_upload(model=model, training_run=run, data=body)
    except ValidationFailed as exc:
        raise _NotTaken(exc.code, exc.message) from None


def _described(link: MlflowModelVersion) -> dict[str, Any]:
    version = link.model_version
    return {"mlflow_version": link.version, "run_id": link.run_id, "aliases": list(link.aliases),
            "status": link.status, "code": link.code, "reason": link.reason, "form": link.layout.get("form", ""),
            "platform_version": {"id": version.id, "version": version.version} if version else None,
            "upload_check": link.upload_check_id}


def _link_refreshed(link: MlflowModelVersion) -> MlflowModelVersion:
    """A link whose upload a worker checked, updated from the check's outcome."""
    job = link.upload_check
    if link.status != MlflowVersionStatus.CHECK_QUEUED or job is None:
        return link
    job.refresh_from_db()
    if job.status == JobStatus.SUCCEEDED and job.result_version_id:
        link.status, link.model_version = MlflowVersionStatus.IMPORTED, job.result_version
        if link.serving_alias in link.aliases:
            ModelVersion.objects.filter(pk=job.result_version_id).update(status=VersionStatus.SERVING)
    elif job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED):
        refused = (job.result or {}).get("refused") or {}
        link.status = MlflowVersionStatus.REFUSED
        link.code = refused.get("code", f"check_{job.status}")
        link.reason = refused.get("message") or job.error or f"the worker's check ended {job.status}"
    else:
        return link
    link.save()
    return link


def _artifacts_of(client, mlflow_version):
    """The artifact repository of the version's model files (through the tracking server)."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    uri = mlflow_tracking_uri()
    with _talking_to_mlflow(f"locating the artifacts of version {mlflow_version.version}"):
        location = client.get_model_version_download_uri(mlflow_version.name, mlflow_version.version)
        return get_artifact_repository(location, tracking_uri=uri, registry_uri=uri)


def _artifact_files(repository) -> dict[str, int | None]:
    """Every file of the version's artifacts: relative path -> size (None where not said)."""
    files: dict[str, int | None] = {}
    pending: list[str | None] = [None]
    with _talking_to_mlflow("listing a version's artifacts"):
        while pending:
            for entry in repository.list_artifacts(pending.pop()):
                if entry.is_dir:
                    pending.append(entry.path)
                else:
                    files[entry.path] = entry.file_size
                if len(files) > MAX_ARTIFACT_FILES:
                    raise _NotTaken("too_many_files", f"the version's artifacts hold more than {MAX_ARTIFACT_FILES} "
                                    "files; a model's are a few")
    return files


def _download(repository, path: str, folder: Path, *, limit: int) -> bytes:
    with _talking_to_mlflow(f"downloading {path}"):
        local = Path(repository.download_artifacts(path, dst_path=str(folder)))
    if local.stat().st_size > limit:
        raise _NotTaken("archive_too_large", f"{path} has {local.stat().st_size} bytes; at most {limit} are taken")
    return local.read_bytes()


def _flavor_files(repository, files: Mapping[str, int | None], folder: Path) -> dict[str, str]:
    """The MLmodel and environment files at the top of the version's artifacts, as text."""
    kept = {}
    for name in FLAVOR_FILES:
        if name in files:
            try:
                kept[name] = _download(repository, name, folder, limit=FLAVOR_FILE_BYTES).decode("utf-8")
            except UnicodeDecodeError:
                raise _NotTaken("invalid_upload", f"{name} is not UTF-8 text") from None
    return kept


def _mlmodel(text: str | None) -> dict[str, Any] | None:
    import yaml

    if text is None:
        return None
    try:
        parsed = yaml.safe_load(text)  # plain YAML values only: no object is constructed
    except yaml.YAMLError as exc:
        raise _NotTaken("invalid_upload", f"MLmodel is not readable YAML: {_short(exc)}") from None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("flavors"), dict):
        raise _NotTaken("invalid_upload", "MLmodel names no flavors")
    return parsed


# What each family takes, and what an MLflow flavor is.
FLAVOR_FAMILY = {"sklearn": "sklearn", "transformers": "huggingface"}
FAMILY_WORDS = {"sklearn": "a scikit-learn model", "huggingface": "a Hugging Face transformers model",
                "builtin": "a PyTorch module of the platform's own architectures",
                "entry_point": "a PyTorch module from the company's package"}


def weights_layout(files: Mapping[str, int | None], mlmodel_text: str | None, family: str) -> dict[str, Any]:
    """Where the weights of a version lie among its artifact ``files`` (paths), for a platform
    model of ``family``: ``{"form": ..., paths}``. Raises _NotTaken naming the flavor and what to
    log instead for a pickle, a form no family takes, or one that does not fit ``family``."""
    mlmodel = _mlmodel(mlmodel_text)
    if mlmodel is not None:
        return _flavor_layout(files, mlmodel["flavors"], family)
    return _plain_layout(files, family)


def _fits(flavor_family: str, family: str, what: str) -> None:
    if flavor_family != family:
        raise _NotTaken("architecture_mismatch", f"this version is {what}; the platform model is "
                        f"{FAMILY_WORDS.get(family, family)} (the {family} family)")


def _flavor_layout(files: Mapping[str, int | None], flavors: Mapping[str, Any], family: str) -> dict[str, Any]:
    if "sklearn" in flavors:
        conf = flavors["sklearn"] or {}
        stored = str(conf.get("pickled_model") or "model.pkl")
        serialization = conf.get("serialization_format", "pickle")
        if serialization != "skops":
            raise _NotTaken("unsafe_checkpoint", f"MLflow's sklearn flavor stored this version with {serialization} "
                            f"({stored}): a pickle, which the platform never loads. Log it with "
                            "mlflow.sklearn.log_model(..., serialization_format='skops') (MLflow's default outside "
                            "Databricks), or log a skops file (skops.io.dump) as an artifact")
        _fits("sklearn", family, "a scikit-learn model (the sklearn flavor)")
        if stored not in files:
            raise _NotTaken("missing_weights", f"MLmodel names {stored}, which the version's artifacts do not hold")
        return {"form": "sklearn_flavor", "path": stored}
    if "transformers" in flavors:
        conf = flavors["transformers"] or {}
        folder = conf.get("model_binary")
        if not folder:
            raise _NotTaken("missing_weights", "the transformers flavor was logged without its weights "
                            "(save_pretrained=False: a reference to the Hugging Face Hub, which the platform never "
                            "fetches); log the model with save_pretrained=True")
        _fits("huggingface", family, "a Hugging Face transformers model (the transformers flavor)")
        tokenizer = "components/tokenizer" if "tokenizer" in (conf.get("components") or []) else ""
        if not any(path.startswith(f"{folder}/") for path in files):
            raise _NotTaken("missing_weights", f"MLmodel names the folder {folder}/, which holds no files")
        return {"form": "transformers_flavor", "model_dir": str(folder), "tokenizer_dir": tokenizer}
    if "pytorch" in flavors:
        stored = sorted(p for p in files if p.endswith((".pth", ".pt2", ".pt")))
        what = ", ".join(stored) or "data/"
        kind = ("a torch.export program (pt2)" if any(p.endswith(".pt2") for p in stored)
                else "the whole module saved with torch.save (a pickle)")
        raise _NotTaken("unsafe_checkpoint", f"MLflow's pytorch flavor stored this version as {what}: {kind}, which "
                        f"the platform never loads as weights; {SAFETENSORS_ADVICE}")
    named = ", ".join(sorted(f for f in flavors if f != "python_function")) or "python_function only"
    raise _NotTaken("unsupported_flavor", f"this version's flavors ({named}) are not a form the platform checks: it "
                    "takes the sklearn flavor saved with skops, the transformers flavor, or a skops or safetensors "
                    "file logged as an artifact")


def _plain_layout(files: Mapping[str, int | None], family: str) -> dict[str, Any]:
    """A version whose artifacts are files logged with mlflow.log_artifact(s), without an MLmodel."""
    from workers.model_families.huggingface import CONFIG_FILE

    pickled = sorted(p for p in files if p.endswith(PICKLED_SUFFIXES))
    if family == "sklearn":
        found = sorted(p for p in files if p.endswith(".skops"))
        wanted = "a skops file (skops.io.dump)"
        layout = {"form": "skops_file", "path": found[0]} if len(found) == 1 else None
    elif family == "huggingface":
        folders = sorted(str(PurePosixPath(p).parent) for p in files if PurePosixPath(p).name == CONFIG_FILE)
        found = [f for f in folders if any(str(PurePosixPath(p).parent) == f and p.endswith(".safetensors")
                                           for p in files)]
        wanted = "a save_pretrained folder (config.json, model.safetensors, the tokenizer's files)"
        layout = {"form": "hf_folder", "model_dir": found[0], "tokenizer_dir": found[0]} if len(found) == 1 else None
    else:
        found = sorted(p for p in files if p.endswith(".safetensors"))
        wanted = "one safetensors file of the module's state dict"
        layout = {"form": "safetensors_file", "path": found[0]} if len(found) == 1 else None
    if layout is not None:
        if layout.get("model_dir") == ".":
            layout.update(model_dir="", tokenizer_dir="")
        return layout
    if len(found) > 1:
        raise _NotTaken("ambiguous_weights", f"the version's artifacts hold {len(found)} candidates "
                        f"({', '.join(found[:5])}); a version is one model: log {wanted}")
    if pickled:
        raise _NotTaken("unsafe_checkpoint", f"the version's artifacts hold {', '.join(pickled[:5])}: pickled weights, "
                        f"which the platform never loads; log {wanted}"
                        + ("" if family in ("sklearn", "huggingface") else f" ({SAFETENSORS_ADVICE})"))
    raise _NotTaken("missing_weights", f"the version's artifacts hold no MLmodel and no {wanted}")


def _weights_body(repository, files: Mapping[str, int | None], layout: Mapping[str, Any], folder: Path) -> bytes:
    """The upload body the family checks: the weights file, or an archive of a model folder."""
    from workers.services import MAX_CHECKPOINT_BYTES

    if "path" in layout:
        return _download(repository, layout["path"], folder, limit=MAX_CHECKPOINT_BYTES)
    members: dict[str, str] = {}  # name in the archive -> path among the artifacts
    for directory in (layout["model_dir"], layout.get("tokenizer_dir") or None):
        if directory is None:
            continue
        for path in files:
            parent = str(PurePosixPath(path).parent)
            if parent == (directory or "."):
                members.setdefault(PurePosixPath(path).name, path)
    declared = sum(files[p] or 0 for p in members.values())
    if declared > MAX_CHECKPOINT_BYTES:
        raise _NotTaken("archive_too_large", f"the model folder holds {declared} bytes; at most "
                        f"{MAX_CHECKPOINT_BYTES} are taken")
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        for name, path in sorted(members.items()):
            content = _download(repository, path, folder, limit=MAX_CHECKPOINT_BYTES)
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return archive.getvalue()


def _membership_run(client, model: RegisteredModel, mlflow_version,
                    training_runs: Mapping[str, int]) -> tuple[TrainingRun, dict[str, Any]]:
    """The platform training run whose membership the version gets: the one the request maps its
    MLflow run to, or the one the run's :data:`TRAINING_RUN_TAG` tag names. _NotTaken
    (``no_membership``) when neither names a run of ``model`` with imported membership."""
    run_id = mlflow_version.run_id or ""
    named, source = training_runs.get(run_id), "request"
    if named is None and run_id:
        with _talking_to_mlflow(f"reading MLflow run {run_id}"):
            tags = client.get_run(run_id).data.tags
        named, source = tags.get(TRAINING_RUN_TAG), "run_tag"
    advice = (f"name the platform training run that holds which records it trained on: in the request's "
              f"training_runs ({{\"{run_id or '<run id>'}\": <training run id>}}), or as the MLflow run's tag "
              f"{TRAINING_RUN_TAG} (the client library sets it when it records the run's membership)")
    if named is None:
        raise _NotTaken("no_membership", f"MLflow run {run_id or '(none)'} maps to no platform training run, and a "
                        f"version without membership cannot be unlearned: {advice}",
                        status=MlflowVersionStatus.NO_MEMBERSHIP)
    run = TrainingRun.objects.filter(pk=int(named), model=model).first() if str(named).isdigit() else None
    if run is None:
        raise _NotTaken("no_membership", f"{named!r} (from the {source.replace('_', ' ')}) is not a training run of "
                        f"model {model.name!r}: {advice}", status=MlflowVersionStatus.NO_MEMBERSHIP)
    if not TrainingMembership.objects.filter(run=run).exists():
        raise _NotTaken("no_membership", f"training run {run.id} has no imported membership yet: import which "
                        "records it trained on first (POST /api/v1/training-runs/<id>/membership/)",
                        status=MlflowVersionStatus.NO_MEMBERSHIP)
    return run, {"training_run": run.id, "membership_from": source}


# ---------------------------------------------------------------- back to MLflow (after a decision)


def mlflow_deployment_confirmed(*, version: ModelVersion, request: str, guarantee_class: str) -> MlflowSync | None:
    """The serving side confirmed ``version``, unlearned for the deletion request ``request``
    (public id): if its model came from MLflow, owe MLflow the new version and the alias move
    (a sync row, attempted after commit). None for a model that did not come from MLflow."""
    link = _nearest_link(version.parent) if version.parent_id else None
    if link is None:
        return None
    return _sync_create(kind=MlflowSyncKind.REGISTER, version=version, link=link, request=request,
                        guarantee_class=guarantee_class or version.guarantee_class)


def mlflow_model_withdrawn(*, version: ModelVersion, request: str) -> MlflowSync | None:
    """``version`` was withdrawn from serving for ``request``: if it came from MLflow, owe MLflow
    the removal of its serving alias. None for a model that did not come from MLflow."""
    link = _nearest_link(version)
    if link is None:
        return None
    return _sync_create(kind=MlflowSyncKind.REMOVE_ALIAS, version=version, link=link, request=request,
                        guarantee_class="")


def _sync_create(*, kind: str, version: ModelVersion, link: MlflowModelVersion, request: str,
                 guarantee_class: str) -> MlflowSync:
    sync = MlflowSync.objects.create(kind=kind, model_version=version, registered_model=link.registered_model,
                                     alias=link.serving_alias, deletion_request=request,
                                     guarantee_class=guarantee_class)
    transaction.on_commit(lambda: mlflow_sync_enqueue(sync_id=sync.id))
    return sync


def mlflow_sync_enqueue(*, sync_id: int) -> None:
    current_app.send_task(SYNC_TASK, args=[sync_id], queue="default")


def _link_of(version: ModelVersion) -> MlflowModelVersion | None:
    link = (MlflowModelVersion.objects.filter(Q(model_version=version) | Q(upload_check__result_version=version))
            .select_related("upload_check").first())
    return _link_refreshed(link) if link is not None else None


def _nearest_link(version: ModelVersion | None) -> MlflowModelVersion | None:
    """The MLflow version of ``version`` or of its nearest ancestor that has one."""
    while version is not None:
        link = _link_of(version)
        if link is not None and link.model_version_id is not None:
            return link
        version = version.parent
    return None


def mlflow_sync_run(*, sync_id: int) -> str:
    """Attempt one owed change (the Celery task's body). Returns the sync's status, or "skipped"
    when it is not pending (done, failed, or held by another worker). A transient failure is
    recorded on the row and raised again as MlflowUnavailable (the task retries it with backoff)
    until MAX_ATTEMPTS; any other failure ends the sync ``failed`` with the reason."""
    retry = ""
    with transaction.atomic():
        sync = (MlflowSync.objects.select_for_update(skip_locked=True, of=("self",))
                .filter(pk=sync_id, status=MlflowSyncStatus.PENDING).select_related("model_version__model").first())
        if sync is None:
            return "skipped"
        sync.attempts += 1
        perform: Callable[[MlflowSync], dict] = (_register_back if sync.kind == MlflowSyncKind.REGISTER
                                                 else _alias_remove)
        try:
            sync.result = perform(sync)
        except MlflowUnavailable as exc:
            final = sync.attempts >= MAX_ATTEMPTS
            sync.status, sync.last_error = (MlflowSyncStatus.FAILED if final else MlflowSyncStatus.PENDING), exc.message
            retry = "" if final else exc.message
        except DomainError as exc:  # MLflow refused, not configured, the weights cannot be written
            sync.status, sync.last_error = MlflowSyncStatus.FAILED, exc.message
        else:
            sync.status, sync.last_error = MlflowSyncStatus.DONE, ""
            ledger_append(event_type=f"mlflow.{sync.kind}", actor="platform", request=sync.deletion_request or None,
                          model_version=sync.model_version_id, registered_model=sync.registered_model,
                          alias=sync.alias, result=sync.result)
        if sync.status != MlflowSyncStatus.PENDING:
            sync.finished_at = timezone.now()
        sync.save()
    if retry:
        raise MlflowUnavailable(retry)
    return sync.status


def mlflow_sync_retry(*, sync: MlflowSync) -> MlflowSync:
    """Attempt a failed sync again (its attempts start over); Conflict for one that is not failed."""
    changed = MlflowSync.objects.filter(pk=sync.pk, status=MlflowSyncStatus.FAILED).update(
        status=MlflowSyncStatus.PENDING, attempts=0, finished_at=None)
    if not changed:
        raise Conflict(f"MLflow sync {sync.pk} is {sync.status}; only a failed one is tried again",
                       code="sync_not_failed")
    transaction.on_commit(lambda: mlflow_sync_enqueue(sync_id=sync.pk))
    sync.refresh_from_db()
    return sync


def _register_back(sync: MlflowSync) -> dict[str, Any]:
    """Register the confirmed version in MLflow (once: a retry finds it by its tag) and move the
    serving alias to it if the alias still names the version it replaces."""
    if sync.guarantee_class == "suppressed":
        return {"registered": False, "alias": {"name": sync.alias, "moved": False},
                "reason": "a suppressed version is its parent's weights behind the platform's inference-time guard, "
                          "which no MLflow flavor carries: served from MLflow it would answer unguarded, so it is "
                          "not registered there and the alias stays"}
    client = mlflow_client()
    version = sync.model_version
    replaced = _replaced_link(version)
    result = dict(sync.result or {})
    if "mlflow_version" not in result:
        with _talking_to_mlflow(f"looking for version {version} in {sync.registered_model!r}"):
            existing = client.search_model_versions(
                f"name='{sync.registered_model}' and tags.`{TAG}model_version` = '{version.id}'")
        created = existing[0] if existing else _version_create(client, sync, replaced)
        result.update(mlflow_version=int(created.version), run_id=created.run_id or "", replaces=replaced.version)
        sync.result = result  # kept even if the alias move below fails
    MlflowModelVersion.objects.update_or_create(
        registered_model=sync.registered_model, version=result["mlflow_version"],
        defaults={"model": version.model, "run_id": result["run_id"], "serving_alias": sync.alias, "aliases": [],
                  "status": MlflowVersionStatus.REGISTERED_BACK, "layout": replaced.layout,
                  "flavor_files": replaced.flavor_files, "model_version": version, "code": "", "reason": ""})
    result["alias"] = _alias_move(client, sync, replaced=replaced.version, new=result["mlflow_version"])
    return result


def _replaced_link(version: ModelVersion) -> MlflowModelVersion:
    """The MLflow version that ``version`` replaces: its nearest ancestor's. An ancestor whose own
    registration is still owed goes first (MlflowUnavailable: this sync is tried again later)."""
    ancestor = version.parent
    while ancestor is not None:
        link = _link_of(ancestor)
        if link is not None and link.model_version_id is not None:
            return link
        owed = (MlflowSync.objects.filter(model_version=ancestor, kind=MlflowSyncKind.REGISTER)
                .exclude(status=MlflowSyncStatus.DONE).first())
        if owed is not None:
            raise MlflowUnavailable(f"version {ancestor} is registered in MLflow first (sync {owed.id}, {owed.status})")
        ancestor = ancestor.parent
    raise MlflowRefused(f"no ancestor of {version} came from MLflow")


def _version_create(client, sync: MlflowSync, replaced: MlflowModelVersion):
    """A run holding the platform's stored weights in the form ``replaced`` was imported in, and a
    model version of it, tagged with the deletion request and the guarantee class."""
    version = sync.model_version
    tags = {f"{TAG}model": version.model.name, f"{TAG}model_version": str(version.id),
            f"{TAG}version": str(version.version), f"{TAG}deletion_request": sync.deletion_request,
            f"{TAG}guarantee_class": sync.guarantee_class, f"{TAG}replaces": str(replaced.version),
            f"{TAG}artifact_sha256": version.artifact_sha256}
    with _talking_to_mlflow(f"registering {version} in {sync.registered_model!r}"):
        experiment = _experiment_of(client, replaced.run_id)
        run = client.create_run(experiment, run_name=f"{version.model.name} v{version.version} (unlearned)",
                                tags={**tags, "mlflow.note.content": _description(sync, replaced)})
        with tempfile.TemporaryDirectory(prefix="mlflow-export-") as folder:
            version_folder_write(Path(folder) / "model", version=version, layout=replaced.layout,
                                 flavor_files=replaced.flavor_files, run_id=run.info.run_id)
            client.log_artifacts(run.info.run_id, str(Path(folder) / "model"), artifact_path="model")
        client.set_terminated(run.info.run_id)
        return client.create_model_version(sync.registered_model, source=f"{run.info.artifact_uri}/model",
                                           run_id=run.info.run_id, tags=tags,
                                           description=_description(sync, replaced))


def _description(sync: MlflowSync, replaced: MlflowModelVersion) -> str:
    version = sync.model_version
    return (f"Version {version.version} of {version.model.name} on the deletion platform: version {replaced.version} "
            f"with the records of deletion request {sync.deletion_request} unlearned ({sync.guarantee_class}).")


def _experiment_of(client, run_id: str) -> str:
    """The experiment of the run the replaced version came from, or the platform's own."""
    if run_id:
        try:
            return client.get_run(run_id).info.experiment_id
        except Exception as exc:
            if _transient(exc):
                raise
    experiment = client.get_experiment_by_name("deletion-platform")
    return experiment.experiment_id if experiment else client.create_experiment("deletion-platform")


def _alias_move(client, sync: MlflowSync, *, replaced: int, new: int) -> dict[str, Any]:
    with _talking_to_mlflow(f"moving alias {sync.alias!r} of {sync.registered_model!r}"):
        current = client.get_registered_model(sync.registered_model).aliases.get(sync.alias)
        if current is not None and int(current) == new:
            return {"name": sync.alias, "moved": True, "from": replaced, "to": new}
        if current is None or int(current) != replaced:
            return {"name": sync.alias, "moved": False, "names": int(current) if current else None,
                    "reason": f"the alias names {'version ' + str(current) if current else 'no version'}, not version "
                              f"{replaced} which this version replaces: it was moved in MLflow, and is left there"}
        client.set_registered_model_alias(sync.registered_model, sync.alias, str(new))
    return {"name": sync.alias, "moved": True, "from": replaced, "to": new}


def _alias_remove(sync: MlflowSync) -> dict[str, Any]:
    """Remove the serving alias if it names a version of the withdrawn model's lineage (tagged
    withdrawn first, so that a retry after the removal finds nothing left to do)."""
    client = mlflow_client()
    lineage = _lineage_mlflow_versions(sync.model_version, sync.registered_model)
    with _talking_to_mlflow(f"removing alias {sync.alias!r} of {sync.registered_model!r}"):
        current = client.get_registered_model(sync.registered_model).aliases.get(sync.alias)
        if current is None:
            return {"name": sync.alias, "removed": False, "reason": "no version has this alias (removed already)"}
        if int(current) not in lineage:
            return {"name": sync.alias, "removed": False, "names": int(current),
                    "reason": f"the alias names version {current}, which is not of the withdrawn model's lineage "
                              f"(versions {sorted(lineage)}): it is left there"}
        client.set_model_version_tag(sync.registered_model, str(current), f"{TAG}withdrawn", sync.deletion_request)
        client.delete_registered_model_alias(sync.registered_model, sync.alias)
    return {"name": sync.alias, "removed": True, "named": int(current)}


def _lineage_mlflow_versions(version: ModelVersion, registered_model: str) -> set[int]:
    """The MLflow versions of ``version``, its ancestors and the versions unlearned from it."""
    ids, frontier = set(), [version.id]
    ancestor = version.parent
    while ancestor is not None:
        ids.add(ancestor.id)
        ancestor = ancestor.parent
    while frontier:
        ids |= set(frontier)
        frontier = list(ModelVersion.objects.filter(parent_id__in=frontier).exclude(pk__in=ids)
                        .values_list("id", flat=True))
    links = MlflowModelVersion.objects.filter(Q(model_version_id__in=ids) | Q(upload_check__result_version_id__in=ids),
                                              registered_model=registered_model)
    return set(links.values_list("version", flat=True))


# ---------------------------------------------------------------- the stored weights, as MLflow files


def version_folder_write(folder: Path, *, version: ModelVersion, layout: Mapping[str, Any],
                         flavor_files: Mapping[str, str], run_id: str) -> None:
    """Write ``version``'s stored weights into ``folder`` in the form ``layout`` says (the one
    the MLflow version it replaces was imported in), with that version's MLmodel (naming the new
    run) and environment files. Runs in a worker: it reads the artifact store (torch)."""
    import hashlib

    from safetensors.torch import save as safetensors_save

    from workers.runners.storage import artifact_store

    store = artifact_store()
    manifest = store.manifest(version.artifact_sha256)
    form = layout.get("form")

    def blob(role: str) -> dict:
        if role not in manifest.files:
            raise MlflowRefused(f"{version}'s stored artifact has no {role!r} part to write as {form}")
        return store.load_blob(manifest.files[role]["sha256"])

    def write(relative: str, content: bytes) -> None:
        path = folder / PurePosixPath(relative)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)

    if form in ("sklearn_flavor", "skops_file"):
        from workers.training.sklearn_estimators import skops_from_tensors

        weights_path = layout["path"]
        write(weights_path, skops_from_tensors(blob("estimator")))
    elif form == "safetensors_file":
        weights_path = layout["path"]
        write(weights_path, safetensors_save(blob("weights"), metadata={"format": "pt"}))
    elif form in ("transformers_flavor", "hf_folder"):
        if "projections" in manifest.files:
            # MRP left the weights as they were: written alone, they would still hold the records.
            raise MlflowRefused(f"{version} forgets through projections of hidden states that a transformers "
                                "folder cannot carry; its weights alone still hold the erased records")
        model_dir = layout["model_dir"]
        weights_path = f"{model_dir}/model.safetensors" if model_dir else "model.safetensors"
        write(weights_path, safetensors_save(blob("weights"), metadata={"format": "pt"}))
        hf_config = manifest.config.get("hf_config")
        write(f"{model_dir}/config.json" if model_dir else "config.json",
              json.dumps(hf_config, indent=2, sort_keys=True).encode())
        tokenizer_dir = layout.get("tokenizer_dir") or ""
        for name, tensor in blob("tokenizer").items():
            write(f"{tokenizer_dir}/{name}" if tokenizer_dir else name, tensor.numpy().tobytes())
    else:
        raise MlflowRefused(f"the MLflow version {version} replaces has no known weights form ({form!r})")
    for name, text in flavor_files.items():
        if name == "MLmodel":
            size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
            text = _mlmodel_for(text, run_id=run_id, size=size)
        write(name, text.encode())
    logger.info("wrote %s for MLflow (%s, weights sha256 %s)", version, form,
                hashlib.sha256((folder / weights_path).read_bytes()).hexdigest())


def _mlmodel_for(text: str, *, run_id: str, size: int) -> str:
    """The replaced version's MLmodel, naming the new run: its flavors (how to load it) unchanged."""
    import yaml

    mlmodel = yaml.safe_load(text)
    mlmodel.update(run_id=run_id, model_uuid=uuid.uuid4().hex, artifact_path="model", model_size_bytes=size,
                   utc_time_created=timezone.now().strftime("%Y-%m-%d %H:%M:%S.%f"))
    mlmodel.pop("model_id", None)  # a logged model of MLflow 3's own; this one is a run's artifact
    return yaml.safe_dump(mlmodel, default_flow_style=False, sort_keys=True)
