"""Transfer training that keeps deletable data out of the weights (Sepahvand et al., arXiv 2405.10425).

The company's records are split into *static* ones (never deleted: consented, contractual, public)
and *non-static* ones (their subjects may ask for erasure). The model is fine-tuned on the static
records plus, for each non-static record, its ``k`` nearest examples in an *auxiliary* pool (public
data, with the pool's own labels). The non-static records never enter training; they only choose
auxiliary examples (nearest on standardised features: the auxiliary pool's and the static
records' statistics, stored with the selection). A deletion of a non-static record therefore needs
no change to the weights once the auxiliary examples it chose are dropped from the selection: if
no other record still chooses them, the selection (the training set) changes and the model is
retrained on the new selection (an exact deletion); if every one of them is still chosen by a
remaining record, the training set is the same, nothing is retrained, and the model's hash stays
the same.

Pure pieces here (roles, selection, training set, the deletion's plan), one deterministic trainer
for the benchmark, and the registered recipe ``keep_out_transfer``: the plain recipe's training loop
on the static records and the selected auxiliary examples of a registered dataset, whose records'
roles its configuration names (``static_records``, ``auxiliary_records``: regular expressions on the
whole record key; every other record is non-static). The run carries its selection
(``TrainingRun.keep_out_selection``), stored beside the weights and recorded by the training job in
models_registry.KeepOutSelection; the exact deletion is workers.unlearning.exact.keep_out.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from safetensors.torch import save
from torch import nn

from workers.artifacts import ArtifactManifest, ArtifactRef, ArtifactStore
from workers.datasets.base import RecordDataset
from workers.training.base import RecipeConfig, TrainingRun, cpu_state_dict
from workers.training.membership import MembershipRow
from workers.training.plain import PlainRecipe
from workers.training.storage import base_manifest, membership_from_tensors, membership_to_tensors
from workers.unlearning.base import ConfigError, MethodConfig, ProgressCallback, no_progress


@dataclass
class KeepOutTransferConfig(MethodConfig):
    """``neighbours``: auxiliary examples each non-static record selects (``k``); the rest trains a
    linear-then-MLP head with full-batch Adam, deterministic for a given ``seed``."""

    neighbours: int = 1
    hidden: int = 64
    epochs: int = 200
    lr: float = 0.01

    def validate(self) -> None:
        super().validate()
        if self.neighbours < 1:
            raise ConfigError(f"KeepOutTransferConfig.neighbours must be >= 1, got {self.neighbours}")
        if self.hidden < 1:
            raise ConfigError(f"KeepOutTransferConfig.hidden must be >= 1, got {self.hidden}")


@dataclass(frozen=True, eq=False)  # equality compares the arrays (below)
class FeatureScaling:
    """Per-feature standardisation for the selection's distances: ``(x - mean) / scale``. Fitted
    on the auxiliary pool and the static records (:meth:`fit`), stored with the selection (the
    run's ``keep_out_scaling``), so that what the selection measured is on record beside it."""

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, features: np.ndarray) -> FeatureScaling:
        """Mean and population standard deviation of each column of ``features`` ([n, d], n >= 1),
        in float64; a constant column (standard deviation 0 or not finite) gets scale 1, so it adds
        nothing to any distance instead of dividing by zero."""
        values = np.asarray(features, dtype=np.float64)
        if values.ndim != 2 or len(values) == 0:
            raise ValueError(f"features to fit a scaling on must be [n >= 1, d], got {values.shape}")
        if not np.isfinite(values).all():
            raise ValueError("features to fit a scaling on must be finite")
        mean, std = values.mean(axis=0), values.std(axis=0)
        return cls(mean=mean, scale=np.where(np.isfinite(std) & (std > 0), std, 1.0))

    def apply(self, features: np.ndarray) -> np.ndarray:
        """``features`` ([n, d] or [d]) standardised, float64. ``ValueError`` for another width."""
        values = np.asarray(features, dtype=np.float64)
        if values.shape[-1:] != self.mean.shape:
            raise ValueError(f"features of width {values.shape[-1:]} do not fit a scaling of width {self.mean.shape}")
        return (values - self.mean) / self.scale

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """As float64 tensors (bit for bit): ``scaling/mean``, ``scaling/scale``."""
        return {"scaling/mean": torch.from_numpy(np.ascontiguousarray(self.mean, dtype=np.float64)),
                "scaling/scale": torch.from_numpy(np.ascontiguousarray(self.scale, dtype=np.float64))}

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, torch.Tensor]) -> FeatureScaling | None:
        """The inverse of :meth:`to_tensors`; None where they are absent (a run stored before the
        selection was standardised)."""
        if "scaling/mean" not in tensors:
            return None
        return cls(mean=tensors["scaling/mean"].numpy().copy(), scale=tensors["scaling/scale"].numpy().copy())

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, FeatureScaling) and np.array_equal(self.mean, other.mean)
                and np.array_equal(self.scale, other.scale))


def select_auxiliary(non_static: Mapping[str, np.ndarray], pool_keys: Sequence[str], pool_features: np.ndarray,
                     *, neighbours: int, scaling: FeatureScaling) -> dict[str, tuple[str, ...]]:
    """For each non-static record (key -> feature vector), the keys of its ``neighbours`` nearest
    auxiliary examples: Euclidean distance after ``scaling`` (fitted on the pool and the static
    records, :meth:`FeatureScaling.fit`), so that no feature decides by its range alone; ties broken
    by pool order. Out: key -> selected pool keys."""
    pool = np.asarray(pool_features, dtype=np.float64)
    if pool.ndim != 2 or len(pool) != len(pool_keys):
        raise ValueError(f"pool_features {pool.shape} must be [{len(pool_keys)}, d]")
    if not 1 <= neighbours <= len(pool_keys):
        raise ValueError(f"neighbours must be between 1 and the pool's {len(pool_keys)} examples, got {neighbours}")
    pool = scaling.apply(pool)
    selection: dict[str, tuple[str, ...]] = {}
    squared_norms = (pool ** 2).sum(axis=1)
    for key in sorted(non_static):
        vector = np.asarray(non_static[key], dtype=np.float64)
        if vector.shape != pool.shape[1:]:
            raise ValueError(f"record {key!r} has {vector.shape} features, the pool {pool.shape[1:]}")
        distances = squared_norms - 2.0 * pool @ scaling.apply(vector)
        nearest = np.argsort(distances, kind="stable")[:neighbours]
        selection[key] = tuple(pool_keys[i] for i in nearest)
    return selection


def selected_auxiliary(selection: Mapping[str, Sequence[str]]) -> list[str]:
    """Every auxiliary example some non-static record selects, sorted: what training uses of the pool."""
    return sorted({aux for chosen in selection.values() for aux in chosen})


@dataclass(frozen=True)
class KeepOutDeletion:
    """What deleting non-static records does: the new selection, whether the training set changed
    (then the model is retrained on it), the auxiliary examples no record selects any more, and why."""

    selection: dict[str, tuple[str, ...]]
    retrain: bool
    dropped_auxiliary: tuple[str, ...]
    reason: str
    records_deleted: tuple[str, ...] = field(default=())


def keep_out_deletion(selection: Mapping[str, Sequence[str]], deleted: Sequence[str]) -> KeepOutDeletion:
    """Drop the deleted non-static records and the auxiliary examples they selected. ``ValueError``
    for a key that is not a non-static record of this selection (a static record cannot be deleted
    this way: it is in the weights, and needs the recipe's exact retrain)."""
    unknown = sorted(set(deleted) - set(selection))
    if unknown:
        raise ValueError(f"not non-static records of this model: {', '.join(unknown)}")
    kept = {key: tuple(chosen) for key, chosen in selection.items() if key not in set(deleted)}
    before, after = set(selected_auxiliary(selection)), set(selected_auxiliary(kept))
    dropped = tuple(sorted(before - after))
    if dropped:
        reason = (f"the deleted record(s) selected {len(dropped)} auxiliary example(s) no other record selects "
                  f"({', '.join(dropped)}): the selection changed, and the model was retrained on the new "
                  "selection without them (exact). The deleted records never entered training.")
    else:
        reason = ("every auxiliary example the deleted record(s) selected is still selected by another record: "
                  "the training set is unchanged, so the model is unchanged (same hash). The deleted records "
                  "never entered training, and their selections were dropped from the lineage.")
    return KeepOutDeletion(selection=kept, retrain=bool(dropped), dropped_auxiliary=dropped, reason=reason,
                           records_deleted=tuple(sorted(deleted)))


def training_keys(static_keys: Sequence[str], selection: Mapping[str, Sequence[str]]) -> list[str]:
    """The records training reads: the static ones and the selected auxiliary examples, never a
    non-static record (``ValueError`` if a non-static key is also listed as static or auxiliary)."""
    keys = sorted(set(static_keys) | set(selected_auxiliary(selection)))
    leaked = sorted(set(keys) & set(selection))
    if leaked:
        raise ValueError(f"non-static records may not enter training: {', '.join(leaked)}")
    return keys


def train_keep_out(features: Mapping[str, np.ndarray], labels: Mapping[str, int], keys: Sequence[str], *,
                   classes: int, config: KeepOutTransferConfig) -> nn.Module:
    """Train a one-hidden-layer classifier on ``keys`` (looked up in ``features`` / ``labels``: the
    static records' and the auxiliary pool's own labels), in key order, deterministic for the config."""
    ordered = sorted(keys)
    x = torch.tensor(np.stack([features[k] for k in ordered]), dtype=torch.float32)
    y = torch.tensor([int(labels[k]) for k in ordered])
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        model = nn.Sequential(nn.Linear(x.shape[1], config.hidden), nn.ReLU(), nn.Linear(config.hidden, classes))
        optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
        for _ in range(config.epochs):
            optimiser.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimiser.step()
    return model.eval()


def weights_sha256(model: nn.Module) -> str:
    """The sha256 of the model's weights as a safetensors blob (the artifact store's fingerprint)."""
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    return hashlib.sha256(save(state)).hexdigest()


@dataclass(frozen=True)
class KeepOutPlan:
    """What a deletion from a keep-out transfer model does (:func:`keep_out_plan`): the selection
    after it, the static records after it, whether the training set changed (then the model is
    retrained on the new one, else it is kept as it is), and why, in words for the report."""

    selection: dict[str, tuple[str, ...]]
    static: tuple[str, ...]
    retrain: bool
    non_static_deleted: tuple[str, ...]
    members_deleted: tuple[str, ...]
    not_members: tuple[str, ...]
    dropped_auxiliary: tuple[str, ...]
    reason: str


def keep_out_plan(selection: Mapping[str, Sequence[str]], members: Iterable[str],
                  deleted: Iterable[str]) -> KeepOutPlan:
    """Plan the deletion of ``deleted`` from a keep-out transfer model whose training set is
    ``members`` (the static records and the selected auxiliary examples) and whose non-static
    records selected ``selection``. A non-static record's selection rows are dropped; a deleted
    member (a static record or an auxiliary example) leaves the training set and every selection
    that named it (the others' selections are not redone: that would need examples the lineage
    does not show the model trained on). Keys in neither are ``not_members``. The model is
    retrained exactly when the training set changed."""
    members = set(members)
    deleted = set(deleted)
    non_static = deleted & set(selection)
    gone = deleted & members
    kept = {key: tuple(aux for aux in chosen if aux not in gone)
            for key, chosen in selection.items() if key not in non_static}
    static = members - set(selected_auxiliary(selection))
    after = set(training_keys(sorted(static - gone), kept))
    dropped = tuple(sorted(set(selected_auxiliary(selection)) - set(selected_auxiliary(kept)) - gone))
    retrain = after != members
    if gone:
        reason = (f"{len(gone)} deleted record(s) trained the model ({', '.join(sorted(gone))}): the training set "
                  "changed, and the model was retrained on the static records and the selected auxiliary examples "
                  "without them (exact); selections that named a deleted example keep their other examples.")
    elif dropped:
        reason = (f"the deleted record(s) selected {len(dropped)} auxiliary example(s) no other record selects "
                  f"({', '.join(dropped)}): the selection changed, and the model was retrained on the new "
                  "selection without them (exact). The deleted records never entered training.")
    else:
        reason = ("every auxiliary example the deleted record(s) selected is still selected by another record: "
                  "the training set is unchanged, so the model is unchanged (same weights, same hash). The deleted "
                  "records never entered training, and their selections were dropped from the lineage.")
    return KeepOutPlan(selection=kept, static=tuple(sorted(static - gone)), retrain=retrain,
                       non_static_deleted=tuple(sorted(non_static)), members_deleted=tuple(sorted(gone)),
                       not_members=tuple(sorted(deleted - non_static - gone)), dropped_auxiliary=dropped,
                       reason=reason)


def shadow_training_set(static: Iterable[str], selection: Mapping[str, Sequence[str]], half: Iterable[str]
                        ) -> tuple[list[str], dict[str, tuple[str, ...]]]:
    """What a shadow model of a keep-out transfer model trains on, as the recipe trains: of the
    recipe's inputs (the static records and the non-static records of ``selection``), those in
    ``half`` (the shadow procedure's half, drawn over both kinds); the static ones train, the
    non-static ones bring the auxiliary examples they selected (never themselves). Out: ``(static,
    selection)`` for :meth:`KeepOutTransferRecipe.train_selected`. The auxiliary examples are not
    halved on their own: an example is in every shadow whose half holds a record that selected it."""
    chosen = set(half)
    return (sorted(set(static) & chosen),
            {key: tuple(auxiliary) for key, auxiliary in sorted(selection.items()) if key in chosen})


def record_roles(keys: Iterable[str], *, static_records: str, auxiliary_records: str
                 ) -> tuple[list[str], list[str], list[str]]:
    """Split record keys into ``(static, auxiliary, non_static)``, each sorted: a key the
    ``static_records`` regular expression matches whole is static, one ``auxiliary_records``
    matches is in the auxiliary pool, any other is non-static. ``ValueError`` naming a key both match."""
    static_pattern, auxiliary_pattern = re.compile(static_records), re.compile(auxiliary_records)
    static, auxiliary, non_static = [], [], []
    for key in sorted(keys):
        is_static, is_auxiliary = bool(static_pattern.fullmatch(key)), bool(auxiliary_pattern.fullmatch(key))
        if is_static and is_auxiliary:
            raise ValueError(f"record {key!r} matches both static_records ({static_records!r}) and "
                             f"auxiliary_records ({auxiliary_records!r}): a record has one role")
        (static if is_static else auxiliary if is_auxiliary else non_static).append(key)
    return static, auxiliary, non_static


def record_features(dataset: RecordDataset, keys: Iterable[str]) -> dict[str, np.ndarray]:
    """Each readable record's input as a flat float vector (what the selection measures distances
    on), by key; a record whose content can no longer be read is left out."""
    wanted = set(keys)
    features = {}
    for index, key in enumerate(dataset.record_keys):
        if key in wanted:
            item = dataset[index]
            if item is not None:
                features[key] = item[1].detach().reshape(-1).double().cpu().numpy()
    return features


@dataclass
class KeepOutTransferRecipeConfig(RecipeConfig):
    """The plain recipe's configuration plus the records' roles and ``neighbours`` (k).
    ``static_records`` and ``auxiliary_records`` are regular expressions matched against whole
    record keys (``"public-.*"``); every other record of the dataset is non-static: it selects its
    ``neighbours`` nearest auxiliary examples (Euclidean, on its input standardised with the pool's and
    the static records' statistics) and never enters training."""

    static_records: str = ""
    auxiliary_records: str = ""
    neighbours: int = 1

    def validate(self) -> None:
        super().validate()
        name = type(self).__name__
        for field_name in ("static_records", "auxiliary_records"):
            pattern = getattr(self, field_name)
            if not isinstance(pattern, str) or not pattern:
                raise ConfigError(f"{name}.{field_name} must be a regular expression matching whole record keys "
                                  "(e.g. 'public-.*')")
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigError(f"{name}.{field_name} is not a regular expression: {exc}") from None
        if isinstance(self.neighbours, bool) or not isinstance(self.neighbours, int) or self.neighbours < 1:
            raise ConfigError(f"{name}.neighbours must be an integer >= 1, got {self.neighbours!r}")


class KeepOutTransferRecipe(PlainRecipe, name="keep_out_transfer"):
    """Transfer training that keeps the non-static records out of the weights: the plain recipe's
    loop on the static records and the auxiliary examples the non-static records select. The
    membership holds only what trained (never a non-static record); the run's
    ``keep_out_selection`` says what each non-static record selected."""

    config_class = KeepOutTransferRecipeConfig

    def train(self, dataset: RecordDataset, *, device: str | torch.device = "cpu",
              progress: ProgressCallback = no_progress) -> TrainingRun:
        config = self.config
        static, pool, non_static = record_roles(dataset.record_keys, static_records=config.static_records,
                                                auxiliary_records=config.auxiliary_records)
        features = record_features(dataset, static + pool + non_static)
        pool_keys = [key for key in pool if key in features]
        if len(pool_keys) < config.neighbours:
            raise ValueError(f"the dataset has {len(pool_keys)} readable auxiliary example(s) (auxiliary_records "
                             f"{config.auxiliary_records!r}); each non-static record selects {config.neighbours}")
        # Distances on standardised features, the statistics from the records training may read (the
        # pool and the static records, never the non-static ones), stored with the selection.
        scaling = FeatureScaling.fit(np.stack([features[k] for k in pool_keys + static if k in features]))
        readable = {key: features[key] for key in non_static if key in features}
        selection = select_auxiliary(readable, pool_keys, np.stack([features[k] for k in pool_keys]),
                                     neighbours=config.neighbours, scaling=scaling) if readable else {}
        return self.train_selected(dataset, static=static, selection=selection, scaling=scaling, device=device,
                                   progress=progress)

    def train_selected(self, dataset: RecordDataset, *, static: Sequence[str], selection: Mapping[str, Sequence[str]],
                       scaling: FeatureScaling | None = None, device: str | torch.device = "cpu",
                       progress: ProgressCallback = no_progress) -> TrainingRun:
        """Train on ``static`` and the auxiliary examples of ``selection`` (records of ``dataset``),
        in key order: the same keys give the same weights. What an exact deletion retrains with;
        ``scaling`` (what the selection's distances were measured on) is carried with the selection."""
        keys = training_keys(static, selection)
        run = super().train(dataset.subset(keys), device=device, progress=progress)
        run.keep_out_selection = {key: tuple(chosen) for key, chosen in sorted(selection.items())}
        run.keep_out_scaling = scaling
        run.metrics.update({"static_records": len(static), "non_static_records": len(selection),
                            "auxiliary_selected": len(keys) - len(static)})
        return run

    def train_shadow(self, dataset: RecordDataset, members: Sequence[str], *,
                     half: Callable[[Sequence[str]], list[str]], lineage: Mapping[str, Any],
                     device: str | torch.device = "cpu", progress: ProgressCallback = no_progress) -> TrainingRun:
        """A shadow model halves the recipe's inputs, not its members: the static records among
        ``members`` and the non-static records of ``lineage["keep_out_selection"]`` (the newest
        version's, so a non-static record deleted since selects nothing), each selection cut to
        examples still held; the half's non-static records bring what they selected
        (:func:`shadow_training_set`)."""
        config = self.config
        static, _, _ = record_roles(members, static_records=config.static_records,
                                    auxiliary_records=config.auxiliary_records)
        held = set(members)
        selection = {key: tuple(aux for aux in chosen if aux in held)
                     for key, chosen in (lineage.get("keep_out_selection") or {}).items()}
        shadow_static, shadow_selection = shadow_training_set(static, selection,
                                                              half(sorted(set(static) | set(selection))))
        return self.train_selected(dataset, static=shadow_static, selection=shadow_selection, device=device,
                                   progress=progress)

    def retrain_without(self, run: TrainingRun, forget_keys: Iterable[str], dataset: RecordDataset, *,
                        device: str | torch.device = "cpu", progress: ProgressCallback = no_progress) -> TrainingRun:
        """``run`` retrained without ``forget_keys``, whether or not its training set changed: on the
        static records and the selection :func:`keep_out_plan` leaves (records of ``dataset``)."""
        if run.keep_out_selection is None:
            raise ValueError("a keep-out transfer run is retrained from its selection; this run has none")
        plan = keep_out_plan(run.keep_out_selection, [row.record_key for row in run.membership], forget_keys)
        return self.train_selected(dataset, static=plan.static, selection=plan.selection,
                                   scaling=run.keep_out_scaling, device=device, progress=progress)

    def save(self, store: ArtifactStore, run: TrainingRun, *, parent: str | None = None,
             extra: dict[str, Any] | None = None) -> ArtifactRef:
        if run.keep_out_selection is None:
            raise ValueError("a keep-out transfer run is stored with its selection (the auxiliary examples each "
                             "non-static record selected); this run has none")
        manifest = base_manifest("model", run, parent=parent, extra={"metrics": run.metrics, **(extra or {})})
        return store.put(manifest, {"weights": cpu_state_dict(run.model),
                                    "membership": membership_to_tensors(run.membership),
                                    "keep_out_selection": selection_to_tensors(run.keep_out_selection,
                                                                               run.keep_out_scaling)})

    @classmethod
    def load(cls, store: ArtifactStore, manifest: ArtifactManifest) -> TrainingRun:
        run = super().load(store, manifest)
        tensors = store.load_blob(manifest.files["keep_out_selection"]["sha256"])
        run.keep_out_selection = selection_from_tensors(tensors)
        run.keep_out_scaling = FeatureScaling.from_tensors(tensors)
        return run

    @classmethod
    def comparable_state(cls, run: TrainingRun) -> dict[str, torch.Tensor]:
        """The model's state and the selection's feature scaling (a replay carries it over bit for bit)."""
        state = super().comparable_state(run)
        if run.keep_out_scaling is not None:
            state.update(run.keep_out_scaling.to_tensors())
        return state


def selection_to_tensors(selection: Mapping[str, Sequence[str]],
                         scaling: FeatureScaling | None = None) -> dict[str, torch.Tensor]:
    """A selection as tensors (safetensors): two key columns in the membership blob's encoding,
    the non-static record and its selected example, with the example's rank as ``position``; and,
    where given, the feature scaling its distances were measured on (``scaling/...``)."""
    records, examples = [], []
    for key in sorted(selection):
        for rank, aux in enumerate(selection[key]):
            records.append(MembershipRow(key, position=rank))
            examples.append(MembershipRow(aux, position=rank))
    return {**{f"record/{k}": v for k, v in membership_to_tensors(records).items()},
            **{f"auxiliary/{k}": v for k, v in membership_to_tensors(examples).items()},
            **(scaling.to_tensors() if scaling is not None else {})}


def selection_from_tensors(tensors: Mapping[str, torch.Tensor]) -> dict[str, tuple[str, ...]]:
    """The inverse of :func:`selection_to_tensors`."""
    records = membership_from_tensors({k[len("record/"):]: v for k, v in tensors.items() if k.startswith("record/")})
    examples = membership_from_tensors({k[len("auxiliary/"):]: v for k, v in tensors.items()
                                        if k.startswith("auxiliary/")})
    selection: dict[str, list[str]] = {}
    for record, example in sorted(zip(records, examples, strict=True), key=lambda p: (p[0].record_key, p[0].position)):
        selection.setdefault(record.record_key, []).append(example.record_key)
    return {key: tuple(chosen) for key, chosen in selection.items()}
