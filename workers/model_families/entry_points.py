"""PyTorch modules from the company's own installed package.

The operator installs the company's package; it declares its model factories as Python entry
points in the group :data:`ENTRY_POINT_GROUP`::

    [project.entry-points."deletion_platform.models"]
    churn-net = "acme_models.churn:build_churn_net"

A model is registered with the architecture ``{"name": "entry_point", "config": {"entry_point":
"churn-net", "config": {...}}}``. ``build_model`` of that spec (workers.training.architectures)
calls the factory with the inner ``config`` as keyword arguments, so every recipe (plain, SISA),
unlearning method, shadow model and audit uses the module the factory returns.

What runs where:

- A name a client sends is only looked up among the installed entry points of the group, in the
  packages' metadata; nothing is imported from a client's string. An unknown name is refused with
  the installed ones listed.
- The web process reads that metadata only (at registration and at upload, with the upload's
  safetensors structure): it never imports the company's package and never builds the module.
- Building the module and checking that the weights fit it runs in a worker job
  (workers.upload_checks), which stores and registers the version only when they fit, and records
  the module's names on the version (its metrics' ``module_names``: the first 2,000 and their
  count), from which a concept request's ``layer`` is checked at intake.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from workers.concept_layers import RECORDED_MODULE_NAMES, recorded_module_names
from workers.model_families.base import CheckedUpload, ModelFamily, UploadRefused

if TYPE_CHECKING:  # the web process loads the families without torch
    from importlib.metadata import EntryPoint

    from torch import nn

ENTRY_POINT_GROUP = "deletion_platform.models"
ARCHITECTURE = "entry_point"
MAX_NAME_LENGTH = 200


def installed_model_entry_points() -> dict[str, list[EntryPoint]]:
    """The group's installed entry points by name (read from the packages' metadata; nothing is
    imported). A name two distributions declare has two entries."""
    from importlib.metadata import entry_points

    installed: dict[str, list[EntryPoint]] = {}
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        installed.setdefault(entry_point.name, []).append(entry_point)
    return installed


def entry_point_problem(name: Any) -> str | None:
    """Why ``name`` does not name exactly one installed entry point of the group, or None."""
    if not isinstance(name, str) or not name or len(name) > MAX_NAME_LENGTH:
        return f"entry_point must be the name of an installed entry point (a string of 1 to {MAX_NAME_LENGTH} characters)"
    installed = installed_model_entry_points()
    found = installed.get(name, [])
    if not found:
        listed = ", ".join(sorted(installed)) or "none"
        return (f"entry point {name!r} is not installed in the group {ENTRY_POINT_GROUP!r}; installed: {listed}. "
                "The operator installs the package that declares it (README: PyTorch modules from your own package)")
    if len(found) > 1:
        owners = ", ".join(sorted(_distribution(e) for e in found))
        return f"entry point {name!r} of the group {ENTRY_POINT_GROUP!r} is declared by more than one package ({owners})"
    return None


def architecture_spec_problem(architecture: Mapping[str, Any]) -> str | None:
    """Why an ``entry_point`` architecture spec is malformed or names no installed entry point."""
    config = architecture.get("config")
    if set(architecture) - {"name", "config"} or not isinstance(config, Mapping):
        return ('an entry_point architecture is {"name": "entry_point", "config": {"entry_point": <installed name>, '
                '"config": {<keyword arguments of its factory>}}}')
    unknown = sorted(set(config) - {"entry_point", "config"})
    if unknown:
        return f"unknown field(s) {', '.join(map(repr, unknown))} in the entry_point architecture's config"
    kwargs = config.get("config", {})
    if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) and k.isidentifier() for k in kwargs):
        return "the entry_point architecture's config.config must be an object of keyword arguments for the factory"
    return entry_point_problem(config.get("entry_point"))


def model_entry_point(name: str) -> EntryPoint:
    """The one installed entry point ``name`` of the group; ValueError naming the problem."""
    problem = entry_point_problem(name)
    if problem:
        raise ValueError(problem)
    return installed_model_entry_points()[name][0]


def entry_point_provenance(name: str) -> dict[str, str]:
    """Which factory of which installed package builds the module (recorded with an upload)."""
    entry_point = model_entry_point(name)
    dist = entry_point.dist
    return {"group": ENTRY_POINT_GROUP, "entry_point": name, "factory": entry_point.value,
            "distribution": dist.metadata["Name"] if dist else "", "version": dist.version if dist else ""}


def build_entry_point_module(name: str, config: Mapping[str, Any]) -> nn.Module:
    """Build the module of the installed entry point ``name`` with ``config`` as its factory's
    keyword arguments. Worker side only: this imports the company's package. Raises ConfigError
    (a ValueError) when the entry point is not installed, its factory refuses the arguments, or
    it returns something other than a torch module."""
    from torch import nn

    from workers.unlearning.base import ConfigError

    try:
        entry_point = model_entry_point(name)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    factory = entry_point.load()
    if not callable(factory):
        raise ConfigError(f"entry point {name!r} ({entry_point.value}) is not callable")
    try:
        module = factory(**dict(config))
    except TypeError as exc:
        raise ConfigError(f"entry point {name!r} ({entry_point.value}) refused its config: {exc}") from None
    if not isinstance(module, nn.Module):
        raise ConfigError(f"entry point {name!r} ({entry_point.value}) returned a {type(module).__name__}, "
                          "not a torch.nn.Module")
    return module


def _distribution(entry_point: EntryPoint) -> str:
    dist = entry_point.dist
    return f"{dist.metadata['Name']} {dist.version}" if dist else entry_point.value


class EntryPointModules(ModelFamily, name="entry_point"):
    """A module the company's own installed package builds; the upload is one safetensors file
    whose tensors must fit that module exactly. Checked in a worker (see the module docstring)."""

    architectures = (ARCHITECTURE,)
    checked_in_worker = True

    def architecture_problem(self, architecture: Mapping[str, Any], task: str | None) -> str | None:
        return architecture_spec_problem(architecture)

    def precheck_upload(self, data: bytes, *, architecture: Mapping[str, Any]) -> None:
        problem = architecture_spec_problem(architecture)
        if problem:  # uninstalled since the model was registered
            raise UploadRefused(problem, code="unknown_entry_point")
        from workers.artifacts import UnsafeArtifactError, check_safetensors_bytes

        try:
            check_safetensors_bytes(data, source="uploaded checkpoint")
        except UnsafeArtifactError as exc:
            raise UploadRefused(str(exc), code="unsafe_checkpoint") from None

    def check_upload(self, data: bytes, *, architecture: Mapping[str, Any], task: str,
                     run_config: Mapping[str, Any]) -> CheckedUpload:
        from workers.model_families.builtin import recipe_config_from_run, safetensors_fitting
        from workers.training.architectures import build_model
        from workers.training.base import RecipeConfig

        self.precheck_upload(data, architecture=architecture)  # this worker's installed packages
        name = architecture["config"]["entry_point"]
        try:
            module = build_model(architecture)
        except Exception as exc:  # the company's code: whatever it raises is a reason to refuse
            raise UploadRefused(f"building the module of entry point {name!r} failed: {type(exc).__name__}: {exc}",
                                code="entry_point_build_failed") from None
        expected = {key: tuple(t.shape) for key, t in module.state_dict().items()}
        tensors = safetensors_fitting(data, expected, what=f"the module entry point {name!r} builds")
        try:
            module.load_state_dict(tensors, strict=True)
        except RuntimeError as exc:
            raise UploadRefused(f"the weights do not load into the module entry point {name!r} builds: {exc}",
                                code="architecture_mismatch") from None
        try:
            recipe_config = recipe_config_from_run(run_config, architecture, RecipeConfig)
        except ValueError as exc:
            raise UploadRefused(f"the training run's configuration does not fit the plain recipe: {exc}",
                                code="invalid_run_config") from None
        # Its module names, for the web side, which cannot build it, to check a concept request's layer.
        modules = recorded_module_names(n for n, _ in module.named_modules() if n)
        return CheckedUpload(blobs={"weights": tensors}, recipe="plain", recipe_config=recipe_config,
                             architecture=dict(architecture),
                             extra={"entry_point": entry_point_provenance(name), RECORDED_MODULE_NAMES: modules})
