"""The model-family registry and what an upload check returns (see the package's docstring)."""

from __future__ import annotations

import importlib
import pkgutil
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from foundation.registry import Registry

if TYPE_CHECKING:  # the web process loads the families without torch
    import torch


class UploadRefused(ValueError):
    """An upload a family will not store, with the reason in words the engineer can act on.
    ``code`` names the kind of problem for the API (``unsafe_checkpoint``, ``architecture_mismatch``...)."""

    def __init__(self, message: str, *, code: str = "invalid_upload") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class CheckedUpload:
    """An upload that passed its family's checks, ready to store: the blobs (name -> tensors), the
    recipe that loads and retrains it and that recipe's configuration (the family's training
    procedure with what the run recorded), and facts for the manifest's ``extra``. ``kind`` and
    ``manifest_config``: the manifest's kind and config, as the recipe's ``load`` reads them (a
    transformers model's config.json, for one)."""

    blobs: dict[str, dict[str, torch.Tensor]]  # noqa: F821 (a string under postponed annotations)
    recipe: str
    recipe_config: dict[str, Any]
    architecture: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)
    kind: str = "model"
    manifest_config: dict[str, Any] = field(default_factory=dict)


class ModelFamily(ABC):
    """One kind of model. ``architectures``: the architecture names (``spec["name"]``) of its models.
    ``upload_media_type``: what its upload body is (shown in the API's error and docs).
    ``checked_in_worker``: its :meth:`check_upload` builds code the web process must not import (a
    company's own package): the web side runs only :meth:`precheck_upload`, and a worker job runs
    the check and registers the version (workers.upload_checks)."""

    name: ClassVar[str]
    architectures: ClassVar[tuple[str, ...]] = ()
    upload_media_type: ClassVar[str] = "application/octet-stream"
    checked_in_worker: ClassVar[bool] = False
    # Why the approximate methods (fine-tuning, gradient-based edits) cannot unlearn this family's
    # models, or "" where they can: a policy naming one is refused, the planner never picks one.
    approximate_methods_refused: ClassVar[str] = ""

    def __init_subclass__(cls, *, name: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if name is not None:
            cls.name = name
            FAMILIES.register(name)(cls)

    @abstractmethod
    def check_upload(self, data: bytes, *, architecture: Mapping[str, Any], task: str,
                     run_config: Mapping[str, Any]) -> CheckedUpload:
        """Check ``data`` against the registered ``architecture`` without executing anything it
        holds; raise :class:`UploadRefused` naming the problem. ``run_config``: the configuration
        the imported training run recorded (the family's recipe takes what it knows of it)."""

    def check_membership(self, checked: CheckedUpload, membership: Sequence[Any]) -> None:
        """Check the training run's membership rows (record key, shard, slice, position) against
        what :meth:`check_upload` accepted, before anything is stored; raise :class:`UploadRefused`.
        By default any membership fits."""
        return None

    def architecture_problem(self, architecture: Mapping[str, Any], task: str | None) -> str | None:
        """Why a model with this architecture cannot be registered, or None. Runs in the web
        process: nothing is built or imported."""
        return None

    def precheck_upload(self, data: bytes, *, architecture: Mapping[str, Any]) -> None:
        """For a family ``checked_in_worker``: what the web process can check before it keeps the
        upload for the worker (nothing is built or imported); raise :class:`UploadRefused`."""
        return None


FAMILIES: Registry[type[ModelFamily]] = Registry("model family")


def load_families() -> None:
    """Import every module of this package (each registers its family)."""
    import workers.model_families as package

    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")


def architecture_problem(architecture: Mapping[str, Any] | None, task: str | None = None) -> str | None:
    """Why a model cannot be registered with ``architecture`` (no family takes it), or None. Light:
    nothing is built (the web process registers models)."""
    if not architecture:
        return None
    if not isinstance(architecture, Mapping) or not isinstance(architecture.get("name"), str):
        return "architecture must be {\"name\": ..., \"config\": {...}}"
    try:
        family = family_of(architecture)
    except ValueError as exc:
        return str(exc)
    return family.architecture_problem(architecture, task)


def approximate_method_refusal(method: str, architecture: Mapping[str, Any] | None) -> str | None:
    """Why the approximate ``method`` cannot unlearn models of ``architecture`` (its family refuses
    the approximate methods), or None. Exact methods, unknown methods and architectures no family
    takes are not judged here (the catalogue and the architecture check name those)."""
    from workers.unlearning.catalogue import METHOD_SPECS, TRAINING_RUN

    if not architecture or method not in METHOD_SPECS or METHOD_SPECS.get(method).kind == TRAINING_RUN:
        return None
    try:
        family = family_of(architecture)
    except ValueError:
        return None
    if not family.approximate_methods_refused:
        return None
    return f"{method!r} does not apply to a model of the {family.name} family: {family.approximate_methods_refused}"


def family_of(architecture: Mapping[str, Any] | None) -> ModelFamily:
    """The family whose models have this architecture; ValueError naming the known ones."""
    load_families()
    name = (architecture or {}).get("name")
    for family in FAMILIES:
        cls = FAMILIES.get(family)
        if name in cls.architectures:
            return cls()
    known = sorted(a for f in FAMILIES for a in FAMILIES.get(f).architectures)
    raise ValueError(f"no model family takes architecture {name!r}; known: {', '.join(known)}")
