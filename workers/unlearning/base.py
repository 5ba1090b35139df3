"""The one interface every unlearning method implements.

A method is a declaration in :mod:`workers.unlearning.catalogue` (its name, kind and guarantee
class: what the method can honestly promise) and a small class: a config dataclass (stored on the
job row, reproducible from it) and ``unlearn``. Approximate methods share one training loop in
:class:`workers.unlearning.loop.LossMethod` (or similar) so that a method is mostly its loss;
exact methods (retrain, sisa, s3t) implement ``unlearn`` directly.

Plain PyTorch: nothing here imports Django.

Data conventions
----------------
* ``forget`` and ``retain`` are iterables of batches (usually ``torch.utils.data.DataLoader``).
  For classifiers a batch is ``(record_keys: list[str], inputs: Tensor, targets: Tensor)``.
  For language models a batch is a dict with ``input_ids``, ``attention_mask``, ``labels`` and
  ``record_keys``.
* ``progress(stage, fraction)`` is called while a method runs; it may raise
  :class:`JobCancelled` to stop the method (the caller's way of cancelling a job).
"""

from __future__ import annotations

import dataclasses
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from foundation.registry import Registry
from workers.unlearning.catalogue import GUARANTEE_CLASSES, METHOD_SPECS

ProgressCallback = Callable[[str, float], None]


class JobCancelled(Exception):
    """Raised from a progress callback to stop a running method."""


class ConfigError(ValueError):
    """A method or recipe config is invalid; the message names the field."""


def no_progress(stage: str, fraction: float) -> None:
    """Default progress callback: does nothing."""


@dataclass
class MethodConfig:
    """Base for every method config. Subclasses add fields with defaults.

    ``seed`` is part of every config so that a stored config reproduces the same weights.
    """

    seed: int = 0

    @classmethod
    def of(cls, config: MethodConfig | dict[str, Any] | None, *, owner: str) -> MethodConfig:
        """The config ``owner`` (a method or recipe taking this config class) runs with: built from
        a dict (or the defaults for None), or checked when given as a config of this class."""
        if config is None or isinstance(config, dict):
            return cls.from_dict(config)
        if not isinstance(config, cls):
            raise ConfigError(f"{owner} takes a {cls.__name__}, got {type(config).__name__}")
        config.validate()
        return config

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> MethodConfig:
        """Build a config from a JSON-like dict; unknown fields and bad values raise ConfigError."""
        data = dict(data or {})
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(
                f"{cls.__name__}: unknown field(s) {', '.join(unknown)}; "
                f"allowed: {', '.join(sorted(known))}"
            )
        for name, value in data.items():
            expected = known[name].type
            data[name] = _coerce(cls.__name__, name, value, expected)
        config = cls(**data)
        config.validate()
        return config

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Check value ranges; subclasses extend (call super). Raises ConfigError."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{type(self).__name__}.{f.name} must be finite, got {value}")
            if f.name in _POSITIVE_FIELDS and isinstance(value, (int, float)) and value <= 0:
                raise ConfigError(f"{type(self).__name__}.{f.name} must be > 0, got {value}")
            if f.name in _NON_NEGATIVE_FIELDS and isinstance(value, (int, float)) and value < 0:
                raise ConfigError(f"{type(self).__name__}.{f.name} must be >= 0, got {value}")


# Field names whose meaning fixes their sign, checked for every config that uses them.
_POSITIVE_FIELDS = {"lr", "learning_rate", "epochs", "steps", "batch_size", "max_steps"}
_NON_NEGATIVE_FIELDS = {"weight_decay", "momentum", "alpha", "beta", "gamma", "temperature"}


def _coerce(owner: str, name: str, value: Any, expected: Any) -> Any:
    """Accept JSON's int for a float field; refuse anything else that does not match."""
    expected_name = expected if isinstance(expected, str) else getattr(expected, "__name__", "")
    if expected_name == "float" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    checks = {"float": float, "int": int, "str": str, "bool": bool}
    py_type = checks.get(expected_name)
    if py_type is None:
        return value
    if isinstance(value, bool) and py_type is not bool:
        raise ConfigError(f"{owner}.{name} must be {expected_name}, got a boolean")
    if not isinstance(value, py_type):
        raise ConfigError(f"{owner}.{name} must be {expected_name}, got {type(value).__name__}")
    return value


@dataclass
class UnlearningResult:
    """What a method did, in terms a report can print."""

    method: str
    guarantee_class: str
    config: dict[str, Any]
    wall_seconds: float
    device: str
    steps: int = 0
    # Method-specific facts: records forgotten, shards retrained, adapters deactivated, ...
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.guarantee_class not in GUARANTEE_CLASSES:
            raise ValueError(f"unknown guarantee class {self.guarantee_class!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class UnlearningMethod(ABC):
    """Base class of every method. A subclass registers itself by naming, in the class statement,
    the method it implements (``class Finetune(LossMethod, name="finetune")``), which takes its
    ``name`` and ``guarantee_class`` from that method's declaration in
    :mod:`workers.unlearning.catalogue`; it sets ``config_class`` and implements ``unlearn``."""

    name: ClassVar[str]
    guarantee_class: ClassVar[str]
    config_class: ClassVar[type[MethodConfig]] = MethodConfig

    def __init_subclass__(cls, *, name: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if name is not None:  # a method; a shared base (LossMethod, LMUnlearningMethod) names none
            _method_class_register(cls, name)

    def __init__(self, config: MethodConfig | dict[str, Any] | None = None) -> None:
        self.config = self.config_class.of(config, owner=self.name)

    @abstractmethod
    def unlearn(self, model: Any, forget: Iterable[Any], retain: Iterable[Any], *, device: str = "cpu",
                progress: ProgressCallback = no_progress, **context: Any) -> tuple[Any, UnlearningResult]:
        """Return the unlearned model (a new object or the input changed in place) and a result.

        ``context`` carries what some methods need beyond the three data arguments (for example
        a validation loader, or a recipe's checkpoints for exact methods); a method names the
        keys it reads in its docstring and raises ``ValueError`` when one is missing.
        """

    def _result(self, started: float, device: str, steps: int = 0, **details: Any) -> UnlearningResult:
        """Helper for subclasses: build the result with wall time measured from ``started``."""
        return UnlearningResult(
            method=self.name,
            guarantee_class=self.guarantee_class,
            config=self.config.to_dict(),
            wall_seconds=time.perf_counter() - started,
            device=device,
            steps=steps,
            details=details,
        )


# The classes of the declared methods, by name; a class registers itself (UnlearningMethod).
METHODS: Registry[type[UnlearningMethod]] = Registry("unlearning method")


def _method_class_register(cls: type[UnlearningMethod], name: str) -> None:
    """Register ``cls`` as the class of the method the catalogue declares as ``name``; the class
    takes its ``name`` and ``guarantee_class`` from that declaration. Raises ``ValueError`` for a
    name the catalogue does not declare, a name registered twice, or a class outside the declared
    module (the loader, which imports the declared modules, would never find it)."""
    spec = METHOD_SPECS.get(name)
    if cls.__module__ != spec.module:
        raise ValueError(f"unlearning method {name!r} is declared in {spec.module}, not in {cls.__module__}")
    cls.name = spec.name
    cls.guarantee_class = spec.guarantee_class
    METHODS.register(name)(cls)
