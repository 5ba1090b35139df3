"""scikit-learn recipes: a run's model is a fitted estimator (a pipeline, preprocessing included),
or one per shard, stored with skops and loaded only through an allow-list of types.

* ``sklearn``: one estimator fitted on every record.
* ``sklearn_sisa``: S estimators; a record's shard is HMAC-SHA256(shard_key, record key)
  (:func:`workers.training.sisa.keyed_assignment` with one slice: an estimator has no checkpoints,
  so a deletion refits each affected shard on its kept records); predictions average the shards'
  ``predict_proba``.

Training fits a clone of the run's *template*: the estimator's parameters without any fitted
state (the skops file of ``sklearn.base.clone(estimator)``, base64 in the config, so that the
config alone reproduces the procedure: shadow models and retrains take nothing from the data the
fitted estimator saw). Records come ordered by key as float64 arrays (the adapters' tensors, each
input flattened); every ``random_state`` parameter the template leaves unset is set from the
config's seed, and fits run with one BLAS thread, so the same records give the same estimator bit
for bit.

The run's model is :class:`EstimatorClassifier`, an ``nn.Module`` whose forward returns log
``predict_proba``, so audits score it like any classifier. It has no parameters and no gradients,
which is why the approximate methods do not apply (the scikit-learn family says so).
"""

from __future__ import annotations

import base64
import io
import json
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from workers.artifacts import ArtifactManifest, ArtifactRef, ArtifactStore
from workers.datasets.base import RecordDataset
from workers.training.base import Timer, TrainingRecipe, TrainingRun, sorted_by_key
from workers.training.device import derive_seed
from workers.training.membership import (
    MembershipRow,
    MembershipSink,
    RecordingLoader,
    collate_records,
)
from workers.training.sisa import keyed_assignment
from workers.training.storage import base_manifest, membership_from_tensors, membership_to_tensors
from workers.unlearning.base import ConfigError, MethodConfig, ProgressCallback, no_progress

# ---------------------------------------------------------------- loading skops files safely

# Every type a stored estimator may name: its module's top package is one of these (scikit-learn,
# NumPy, SciPy), or it is one of the plain Python values below. On top of that, skops' own audit
# (get_untrusted_types) must find nothing beyond EXTRA_TRUSTED_TYPES.
ALLOWED_PACKAGES = ("sklearn", "numpy", "scipy")
ALLOWED_BUILTINS = frozenset(f"builtins.{name}" for name in (
    "dict", "list", "tuple", "set", "str", "int", "float", "bool", "NoneType", "bytes", "slice"))
# Types skops does not trust by default that are plain data holders: a dtype (PCA, SimpleImputer
# and others keep one) and MLPClassifier's optimizer state. Not the tree node storage of
# DecisionTree*/RandomForest*/GradientBoosting* (sklearn.tree._tree.Tree) or HistGradientBoosting's
# TreePredictor: scikit-learn indexes their node arrays without bounds checks, so a crafted file
# could read memory out of bounds (skops' UNTRUSTED_TYPE_REASONS).
EXTRA_TRUSTED_TYPES = frozenset({
    "numpy.dtype",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
})
MAX_SKOPS_MEMBERS = 10_000
MAX_SKOPS_UNPACKED_BYTES = 2 * 1024**3
PICKLE_OPCODES = (b"\x80", b"(", b"c", b"]", b"}")  # PROTO, MARK, GLOBAL, EMPTY_LIST, EMPTY_DICT


class SkopsRefused(ValueError):
    """A skops file that is not loaded: not a skops file, a pickle, or types outside the
    allow-list. ``code`` names the kind of problem for the API."""

    def __init__(self, message: str, *, code: str = "invalid_upload") -> None:
        super().__init__(message)
        self.code = code


def skops_types(data: bytes, *, source: str = "skops file") -> list[str]:
    """Every type (``module.Name``) the skops file names, read from its schema without loading
    anything; SkopsRefused when it is no skops file (a pickle, a truncated or unreadable archive,
    too many or too large members)."""
    if not data.startswith(b"PK\x03\x04"):
        if data[:1] in PICKLE_OPCODES:
            raise SkopsRefused(f"{source} is a pickle, not a skops file: a pickle runs code when it is loaded "
                               "and is never loaded here; save the estimator with skops.io.dump",
                               code="unsafe_checkpoint")
        raise SkopsRefused(f"{source} is not a skops file (a zip archive written by skops.io.dump)")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
            if len(members) > MAX_SKOPS_MEMBERS:
                raise SkopsRefused(f"{source} has {len(members)} members; at most {MAX_SKOPS_MEMBERS}")
            unpacked = sum(member.file_size for member in members)
            if unpacked > MAX_SKOPS_UNPACKED_BYTES:
                raise SkopsRefused(f"{source} unpacks to {unpacked} bytes; at most {MAX_SKOPS_UNPACKED_BYTES}")
            schema = json.loads(archive.read("schema.json"))
    except SkopsRefused:
        raise
    except (zipfile.BadZipFile, KeyError, ValueError, EOFError, OSError, NotImplementedError) as exc:
        raise SkopsRefused(f"{source} is not a readable skops file ({type(exc).__name__}: {exc})") from None
    names: set[str] = set()
    _collect_types(schema, names)
    return sorted(names)


def _collect_types(node: Any, names: set[str]) -> None:
    if isinstance(node, dict):
        if isinstance(node.get("__module__"), str) and isinstance(node.get("__class__"), str):
            names.add(f"{node['__module__']}.{node['__class__']}")
        for value in node.values():
            _collect_types(value, names)
    elif isinstance(node, list):
        for value in node:
            _collect_types(value, names)


def type_allowed(name: str) -> bool:
    """Whether the allow-list takes a type named ``module.Name``."""
    return name in ALLOWED_BUILTINS or name.split(".", 1)[0] in ALLOWED_PACKAGES


def load_skops(data: bytes, *, source: str = "skops file") -> Any:
    """The object a skops file holds, loaded only when every type it names is on the allow-list
    (:data:`ALLOWED_PACKAGES`, :data:`ALLOWED_BUILTINS`) and skops' own audit finds no type it
    distrusts beyond :data:`EXTRA_TRUSTED_TYPES`; skops is then told to trust exactly those.
    Never ``trusted=True``, never pickle. Raises SkopsRefused naming the refused types."""
    import skops.io

    outside = [name for name in skops_types(data, source=source) if not type_allowed(name)]
    try:
        untrusted = skops.io.get_untrusted_types(data=data)
    except Exception as exc:  # noqa: BLE001 (a hostile file may break skops' parser in any way)
        raise SkopsRefused(f"{source} is not a readable skops file ({type(exc).__name__}: {exc})") from None
    refused = sorted(set(outside) | (set(untrusted) - EXTRA_TRUSTED_TYPES))
    if refused:
        raise SkopsRefused(f"{source} names types outside the allow-list of scikit-learn, NumPy and SciPy types: "
                           f"{', '.join(refused)}; nothing was loaded", code="untrusted_types")
    try:
        return skops.io.loads(data, trusted=sorted(untrusted))
    except Exception as exc:  # noqa: BLE001 (only allow-listed types were constructed; the content is still hostile)
        raise SkopsRefused(f"{source} could not be loaded ({type(exc).__name__}: {exc})") from None


def dump_skops(obj: Any) -> bytes:
    import skops.io

    return skops.io.dumps(obj, compression=zipfile.ZIP_DEFLATED)


def skops_to_tensors(data: bytes) -> dict[str, torch.Tensor]:
    """A skops file as a safetensors-storable blob (its bytes as a uint8 tensor)."""
    return {"skops": torch.frombuffer(bytearray(data), dtype=torch.uint8).clone()}


def skops_from_tensors(tensors: dict[str, torch.Tensor]) -> bytes:
    return tensors["skops"].numpy().tobytes()


# ---------------------------------------------------------------- estimators


def template_of(estimator: Any) -> str:
    """The estimator's parameters without its fitted state (skops of its clone, base64)."""
    from sklearn.base import clone

    return base64.b64encode(dump_skops(clone(estimator))).decode("ascii")


def template_from(encoded: str) -> Any:
    try:
        data = base64.b64decode(encoded.encode("ascii"), validate=True)
    except ValueError as exc:
        raise ConfigError(f"the estimator template is not base64: {exc}") from None
    return load_skops(data, source="the estimator template")


def seeded_clone(template: Any, seed: int) -> Any:
    """An unfitted clone of ``template`` whose unset ``random_state`` parameters (None, or a
    generator instance whose state would depend on earlier calls) are set from ``seed``."""
    from sklearn.base import clone

    estimator = clone(template)
    unset = {name: seed % 2**32 for name, value in estimator.get_params(deep=True).items()
             if (name == "random_state" or name.endswith("__random_state"))
             and (value is None or isinstance(value, np.random.RandomState | np.random.Generator))}
    if unset:
        estimator.set_params(**unset)
    return estimator


def fit_deterministically(estimator: Any, inputs: np.ndarray, targets: np.ndarray) -> Any:
    """``estimator.fit`` with one BLAS/OpenMP thread: a reduction's order then does not depend on
    the machine's thread count, so a refit on the same records gives the same bits."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return estimator.fit(inputs, targets)


def features(inputs: torch.Tensor) -> np.ndarray:
    """An input batch as the estimator sees it: one float64 row per record."""
    return inputs.detach().to("cpu").reshape(len(inputs), -1).double().numpy()


def class_probabilities(estimator: Any, inputs: np.ndarray, num_classes: int) -> np.ndarray:
    """``predict_proba`` with one column per class 0..num_classes-1 (a class the estimator never
    saw gets probability 0)."""
    proba = np.asarray(estimator.predict_proba(inputs), dtype=np.float64)
    full = np.zeros((len(inputs), num_classes), dtype=np.float64)
    full[:, np.asarray(estimator.classes_, dtype=np.int64)] = proba
    return full


class EstimatorClassifier(nn.Module):
    """Fitted scikit-learn classifiers as a classifier module: ``forward`` takes the input tensor
    and returns the log of their averaged ``predict_proba`` (float32, on the input's device). No
    parameters, no gradients. ``estimators[s]`` is None for a shard that trained on no record (left
    out of the average)."""

    def __init__(self, estimators: Sequence[Any | None], num_classes: int) -> None:
        super().__init__()
        self.estimators = list(estimators)
        self.num_classes = num_classes

    def serving(self) -> list[Any]:
        serving = [e for e in self.estimators if e is not None]
        if not serving:
            raise RuntimeError("no estimator of this model holds any record")
        return serving

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = features(inputs)
        probs = np.mean([class_probabilities(e, x, self.num_classes) for e in self.serving()], axis=0)
        return torch.from_numpy(np.log(np.clip(probs, 1e-12, None))).float().to(inputs.device)

    def representation(self, inputs: torch.Tensor) -> torch.Tensor:
        """What each estimator's last step takes (a pipeline's preprocessed features, else the
        inputs), concatenated over the estimators: the model's own view of a record."""
        x = features(inputs)
        parts = [e[:-1].transform(x) if hasattr(e, "steps") and len(e.steps) > 1 else x for e in self.serving()]
        return torch.from_numpy(np.concatenate([np.asarray(p, dtype=np.float64) for p in parts], axis=1))


def fitted_state(obj: Any, prefix: str) -> dict[str, torch.Tensor]:
    """Every number a fitted estimator holds, by attribute path, as CPU tensors: its fitted
    attributes (names ending in ``_``: coef_, mean_, classes_...) and those of the estimators it
    holds (a pipeline's steps). What a bit-for-bit replay compares."""
    from sklearn.base import BaseEstimator

    state: dict[str, torch.Tensor] = {}
    if isinstance(obj, BaseEstimator):
        fitted = {k: v for k, v in vars(obj).items() if k.endswith("_") and not k.startswith("_")}
        nested = {k: v for k, v in obj.get_params(deep=False).items() if _holds_estimators(v)}
        for name, value in sorted({**nested, **fitted}.items()):
            state.update(fitted_state(value, f"{prefix}/{name}"))
    elif isinstance(obj, list | tuple):
        for index, value in enumerate(obj):
            state.update(fitted_state(value, f"{prefix}/{index}"))
    elif isinstance(obj, dict):
        for key, value in sorted(obj.items(), key=lambda kv: str(kv[0])):
            state.update(fitted_state(value, f"{prefix}/{key}"))
    elif isinstance(obj, np.ndarray) and obj.dtype.kind in "biuf":
        state[prefix] = torch.from_numpy(np.ascontiguousarray(obj).copy())
    elif isinstance(obj, np.ndarray | str | bytes):  # text (feature names, string classes), object arrays
        text = "\x1f".join(map(str, np.ravel(obj))) if isinstance(obj, np.ndarray) else str(obj)
        state[prefix] = torch.frombuffer(bytearray(text.encode("utf-8")) or bytearray(1), dtype=torch.uint8).clone()
    elif isinstance(obj, bool | int | float | np.number | np.bool_):
        state[prefix] = torch.tensor(np.asarray(obj).item(), dtype=torch.float64)
    return state


def _holds_estimators(value: Any) -> bool:
    from sklearn.base import BaseEstimator

    if isinstance(value, BaseEstimator):
        return True
    return isinstance(value, list | tuple) and any(
        isinstance(v, BaseEstimator) or (isinstance(v, tuple) and any(isinstance(x, BaseEstimator) for x in v))
        for v in value)


# ---------------------------------------------------------------- recipes


@dataclass
class SklearnConfig(MethodConfig):
    """``architecture``: ``{"name": "sklearn", "config": {"in_features": F, "num_classes": C}}``.
    ``estimator``: the template (see the module docstring). ``seed`` sets unset random_state."""

    architecture: dict[str, Any] = field(default_factory=dict)
    estimator: str = ""

    def validate(self) -> None:
        super().validate()
        name = type(self).__name__
        spec = self.architecture.get("config") if isinstance(self.architecture, dict) else None
        if not isinstance(spec, dict) or not isinstance(self.architecture.get("name"), str):
            raise ConfigError(f"{name}.architecture must be {{'name': 'sklearn', 'config': {{...}}}}")
        for key, low in (("in_features", 1), ("num_classes", 2)):
            value = spec.get(key)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"{name}.architecture.config.{key} must be an integer >= {low}")
        if not isinstance(self.estimator, str) or not self.estimator:
            raise ConfigError(f"{name}.estimator must hold the estimator's parameters (skops of an unfitted "
                              "clone, base64)")

    @property
    def num_classes(self) -> int:
        return int(self.architecture["config"]["num_classes"])


@dataclass
class SklearnSisaConfig(SklearnConfig):
    """Also ``shards`` and ``shard_key``, the HMAC key of the record -> shard assignment."""

    shards: int = 5
    shard_key: str = "sisa-shard-key-v1"

    def validate(self) -> None:
        super().validate()
        if self.shards < 1:
            raise ConfigError(f"{type(self).__name__}.shards must be >= 1")
        if not self.shard_key:
            raise ConfigError(f"{type(self).__name__}.shard_key must not be empty")


class SklearnRecipe(TrainingRecipe, name="sklearn"):
    """One estimator on every record (shard 0, slice 0)."""

    config_class = SklearnConfig  # type: ignore[assignment]

    def shards(self) -> int:
        return 1

    def template(self) -> Any:
        """The unfitted estimator every fit clones (loaded once per recipe object)."""
        if getattr(self, "_template", None) is None:
            self._template = template_from(self.config.estimator)
        return self._template

    def shard_of(self, record_key: str) -> int:
        return 0

    def partition(self, keys: Iterable[str]) -> dict[int, set[str]]:
        groups: dict[int, set[str]] = {}
        for key in keys:
            groups.setdefault(self.shard_of(key), set()).add(key)
        return groups

    def train(self, dataset: RecordDataset, *, device: str | torch.device = "cpu",
              progress: ProgressCallback = no_progress) -> TrainingRun:
        timer = Timer()
        sink = MembershipSink()
        groups = self.partition(dataset.record_keys)
        estimators = []
        for shard in range(self.shards()):
            estimators.append(self.fit_shard(dataset, groups.get(shard, set()), shard, sink))
            progress(f"fitting shard {shard}", (shard + 1) / self.shards())
        return TrainingRun(
            recipe=self.name, config=self.config.to_dict(),
            model=EstimatorClassifier(estimators, self.config.num_classes), membership=sink.rows(),
            metrics={"wall_seconds": timer.seconds, "steps": sum(e is not None for e in estimators),
                     "records_yielded": len(sink.keys()), "records_given": len(dataset),
                     "shard_sizes": [len(groups.get(s, ())) for s in range(self.shards())], "device": "cpu"},
        )

    def fit_shard(self, dataset: RecordDataset, keys: set[str], shard: int, sink: MembershipSink) -> Any | None:
        """A seeded clone of the template fitted on the records ``keys`` of ``dataset`` (ordered by
        key), each yielded record reported to ``sink`` at (shard, 0). None when no record is read."""
        loader = DataLoader(sorted_by_key(dataset, keys), batch_size=1024, collate_fn=collate_records)
        inputs, targets = [], []
        for batch_keys, batch_inputs, batch_targets in RecordingLoader(loader, sink, shard=shard, slice=0):
            if batch_keys:
                inputs.append(features(batch_inputs))
                targets.append(batch_targets.numpy())
        if not inputs:
            return None
        estimator = seeded_clone(self.template(), derive_seed(self.config.seed, "estimator", shard))
        try:
            return fit_deterministically(estimator, np.concatenate(inputs), np.concatenate(targets))
        except ValueError as exc:  # e.g. a shard whose records are all of one class
            raise ValueError(f"fitting {type(estimator).__name__} on shard {shard} failed: {exc}") from exc

    # -- storage: the estimator(s) as one skops blob beside the membership, as an upload stores them

    def save(self, store: ArtifactStore, run: TrainingRun, *, parent: str | None = None,
             extra: dict[str, Any] | None = None) -> ArtifactRef:
        model: EstimatorClassifier = run.model  # type: ignore[assignment]
        manifest = base_manifest("model", run, parent=parent, extra={"metrics": run.metrics, **(extra or {})})
        return store.put(manifest, {"estimator": skops_to_tensors(dump_skops(self.stored_object(model))),
                                    "membership": membership_to_tensors(run.membership)})

    @staticmethod
    def stored_object(model: EstimatorClassifier) -> Any:
        return model.estimators[0]

    @staticmethod
    def estimators_of(stored: Any) -> list[Any | None]:
        return [stored]

    @classmethod
    def load(cls, store: ArtifactStore, manifest: ArtifactManifest) -> TrainingRun:
        config = cls.config_class.from_dict(manifest.recipe["config"])
        data = skops_from_tensors(store.load_blob(manifest.files["estimator"]["sha256"]))
        estimators = cls.estimators_of(load_skops(data, source="the stored estimator"))
        membership = membership_from_tensors(store.load_blob(manifest.files["membership"]["sha256"]))
        return TrainingRun(cls.name, config.to_dict(), EstimatorClassifier(estimators, config.num_classes),
                           membership, manifest.extra.get("metrics", {}))

    @classmethod
    def comparable_state(cls, run: TrainingRun) -> dict[str, torch.Tensor]:
        """The fitted numbers of every estimator (coef_, intercept_, a scaler's mean_ and scale_...),
        by shard, and which shards serve."""
        model: EstimatorClassifier = run.model  # type: ignore[assignment]
        state: dict[str, torch.Tensor] = {}
        for shard, estimator in enumerate(model.estimators):
            state.update(fitted_state(estimator, f"shard{shard}"))
        state["serving_shards"] = torch.tensor([e is not None for e in model.estimators])
        return state


class SklearnSisaRecipe(SklearnRecipe, name="sklearn_sisa"):
    """S estimators, one per shard of the keyed hash; stored as one skops list (None: an empty
    shard)."""

    config_class = SklearnSisaConfig  # type: ignore[assignment]

    def shards(self) -> int:
        return self.config.shards

    def shard_of(self, record_key: str) -> int:
        return keyed_assignment(record_key, key=self.config.shard_key, shards=self.config.shards, slices=1)[0]

    @staticmethod
    def stored_object(model: EstimatorClassifier) -> Any:
        return list(model.estimators)

    @staticmethod
    def estimators_of(stored: Any) -> list[Any | None]:
        if not isinstance(stored, list):
            raise ValueError("a stored sklearn_sisa model is a list of estimators, one per shard")
        return stored


# ---------------------------------------------------------------- unlearning


@dataclass
class ShardRefit:
    run: TrainingRun
    forgotten: list[str]
    not_members: list[str]
    shards_refit: list[int]


def sklearn_sisa_refit(run: TrainingRun, forget_keys: Iterable[str], retain: RecordDataset, *,
                       progress: ProgressCallback = no_progress) -> ShardRefit:
    """Exact SISA unlearning of ``forget_keys`` from a ``sklearn_sisa`` run: each shard a forgotten
    record trained (by the run's membership) is refit from scratch on the records of ``retain``
    that the membership places in that shard; the other shards keep their estimators. The result
    equals the recipe trained on the kept records wherever the membership follows the keyed hash
    (the upload check holds uploads to it)."""
    if run.recipe != "sklearn_sisa" or not isinstance(run.model, EstimatorClassifier):
        raise ValueError(f"sklearn_sisa unlearning needs a run of the sklearn_sisa recipe, got {run.recipe!r}")
    recipe = SklearnSisaRecipe(run.config)
    forget = set(forget_keys)
    overlap = forget.intersection(retain.record_keys)
    if overlap:
        raise ValueError(f"{len(overlap)} forgotten record(s) are still in the retain set, e.g. {min(overlap)}")
    by_key = {row.record_key: row for row in run.membership}
    members = sorted(forget & by_key.keys())
    affected = sorted({by_key[key].shard for key in members})
    retained = set(retain.record_keys)
    kept_rows = [row for row in run.membership if row.shard not in affected and row.record_key not in forget]
    sink = MembershipSink()
    for row in sorted(kept_rows, key=lambda r: (r.shard, r.slice, r.position)):
        sink.record([row.record_key], shard=row.shard, slice=row.slice)
    estimators = list(run.model.estimators)
    for index, shard in enumerate(affected):
        keys = {row.record_key for row in run.membership if row.shard == shard and row.record_key in retained}
        estimators[shard] = recipe.fit_shard(retain, keys, shard, sink)
        progress(f"refitting shard {shard}", (index + 1) / len(affected))
    rows = sink.rows()
    new_run = TrainingRun(run.recipe, run.config, EstimatorClassifier(estimators, recipe.config.num_classes), rows,
                          {**run.metrics, "records_yielded": len(rows)})
    return ShardRefit(run=new_run, forgotten=members, not_members=sorted(forget - by_key.keys()), shards_refit=affected)


def membership_shards_problem(rows: Iterable[MembershipRow], *, shard_key: str, shards: int) -> str | None:
    """Why a membership does not follow the keyed hash of ``shard_key`` over ``shards`` shards
    with one slice (what a sklearn_sisa run's unlearning and retraining assume), or None."""
    wrong = [row for row in rows
             if row.slice != 0 or row.shard != keyed_assignment(row.record_key, key=shard_key, shards=shards,
                                                                slices=1)[0]]
    if not wrong:
        return None
    sample = ", ".join(f"{r.record_key} (shard {r.shard}, slice {r.slice})" for r in wrong[:3])
    return (f"{len(wrong)} membership row(s) are not where the keyed hash puts them (shard = HMAC-SHA256(shard_key, "
            f"record_key) as in workers.training.sisa.keyed_assignment with slices=1; slice 0), e.g. {sample}")
