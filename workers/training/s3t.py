"""S3T: sequence-aware sharded sliced training with one LoRA adapter per slice (peft).

Each shard starts from the same frozen base model (initialised from the seed; no data touches
it). For each slice ordering ``o`` of a shard, adapter ``p`` is trained on the shard's slices
``o[0..p]`` (cumulative) with adapters ``0..p-1`` of that ordering active and frozen and the base
frozen. The served model of a shard is the base plus a prefix of one ordering's adapters; the
ensemble averages the shards' class probabilities.

Deleting a record of slice ``j`` deactivates, in every ordering of its shard, the adapter at
``j``'s position and every later one (they were trained on data that held the record); what
remains was computed only from other slices, so no retraining is needed. With several orderings,
the shard serves the ordering whose clean prefix is longest. Orderings are rotations of
``0..R-1`` (the first is the identity), evenly spaced.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from workers.artifacts import ArtifactManifest, ArtifactRef, ArtifactStore, code_version
from workers.datasets.base import RecordDataset
from workers.training.architectures import build_model, has_running_stats, linear_layer_types
from workers.training.base import (
    Timer,
    TrainingRecipe,
    TrainingRun,
    cpu_state_dict,
    make_optimizer,
    sorted_by_key,
    train_stage,
)
from workers.training.device import derive_seed, deterministic
from workers.training.membership import MembershipRow, MembershipSink
from workers.training.sisa import SlicedConfig, partition
from workers.training.storage import base_manifest, membership_from_tensors, membership_to_tensors
from workers.unlearning.base import ConfigError, ProgressCallback, no_progress
from workers.unlearning.exact.s3t_plan import (
    ADAPTER_PART,
    AdapterId,
    S3TDeactivationPlan,
    s3t_deactivation_plan,
    slice_orderings,
)


@dataclass
class S3TConfig(SlicedConfig):
    """Shards, slices and stage epochs as in SISA (SlicedConfig).
    ``orderings``: slice orderings trained per shard (1 = the identity only).
    ``lora_targets``: "linear" (every linear layer, see lora_target_modules) or "linear_conv" (and every nn.Conv2d)."""

    shards: int = 1
    slices: int = 4
    orderings: int = 1
    shard_key: str = "s3t-shard-key-v1"
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_targets: str = "linear"

    def validate(self) -> None:
        super().validate()
        if not 1 <= self.orderings <= self.slices:
            raise ConfigError("S3TConfig.orderings must be between 1 and slices")
        if self.lora_rank < 1 or self.lora_alpha <= 0:
            raise ConfigError("S3TConfig.lora_rank must be >= 1 and lora_alpha > 0")
        if self.lora_targets not in ("linear", "linear_conv"):
            raise ConfigError("S3TConfig.lora_targets must be 'linear' or 'linear_conv'")

    def slice_orderings(self) -> list[list[int]]:
        return slice_orderings(self.slices, self.orderings)


def adapter_name(adapter: AdapterId) -> str:
    shard, ordering, position = adapter
    return f"s{shard}o{ordering}p{position}"


def lora_target_modules(model: nn.Module, targets: str) -> list[str]:
    """The layers an adapter targets: every linear layer (nn.Linear, and transformers' Conv1D in
    GPT-2-style models), with ``linear_conv`` every nn.Conv2d too."""
    kinds = linear_layer_types() + ((nn.Conv2d,) if targets == "linear_conv" else ())
    names = [name for name, module in model.named_modules() if isinstance(module, kinds)]
    if not names:
        raise ConfigError("the architecture has no layer a LoRA adapter can target")
    return names


class S3TEnsemble(nn.Module):
    """Frozen base + LoRA adapters per shard. ``active[shard] = (ordering, n)`` serves the first
    ``n`` adapters of that ordering (n = 0: the shard is out of the ensemble).

    ``adapters`` holds every stored adapter's weights (keys without the adapter name), including
    clean prefixes of orderings that are not served, which later deletions may fall back on.
    """

    def __init__(self, config: S3TConfig, base_state: dict[str, torch.Tensor],
                 adapters: dict[AdapterId, dict[str, torch.Tensor]],
                 active: dict[int, tuple[int, int]]) -> None:
        super().__init__()
        self.config = config
        self.base_state = base_state
        self.adapters = dict(adapters)
        self.active = dict(active)
        self.orderings = config.slice_orderings()
        shard_models = {}
        for shard in range(config.shards):
            names = [a for a in sorted(self.adapters) if a[0] == shard]
            if names:
                shard_models[str(shard)] = self._compose(shard, names)
        self.shard_models = nn.ModuleDict(shard_models)

    def _compose(self, shard: int, adapter_ids: list[AdapterId]) -> nn.Module:
        from peft import set_peft_model_state_dict

        peft_model = build_model(self.config.architecture)
        peft_model.load_state_dict(self.base_state)
        lora = _lora_config(self.config, peft_model)
        for adapter in adapter_ids:
            peft_model = _with_adapter(peft_model, adapter_name(adapter), lora)
        for adapter in adapter_ids:
            set_peft_model_state_dict(peft_model, self.adapters[adapter], adapter_name=adapter_name(adapter))
        for parameter in peft_model.parameters():
            parameter.requires_grad_(False)
        return peft_model

    def active_adapters(self, shard: int) -> list[AdapterId]:
        ordering, count = self.active.get(shard, (0, 0))
        return [(shard, ordering, p) for p in range(count)]

    def serving_shards(self) -> list[int]:
        return [s for s in range(self.config.shards) if self.active.get(s, (0, 0))[1] > 0]

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        shards = self.serving_shards()
        if not shards:
            raise RuntimeError("no shard of this S3T ensemble has an active adapter")
        probs = []
        for shard in shards:
            model = self.shard_models[str(shard)]
            model.base_model.set_adapter([adapter_name(a) for a in self.active_adapters(shard)],
                                         inference_mode=True)
            probs.append(torch.softmax(model(inputs), dim=-1))
        return torch.log(torch.stack(probs).mean(0).clamp_min(1e-12))


def _lora_config(config: S3TConfig, base: nn.Module) -> Any:
    from peft import LoraConfig

    return LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=0.0,
                      bias="none", init_lora_weights=True,
                      target_modules=lora_target_modules(base, config.lora_targets))


def _with_adapter(model: nn.Module, name: str, lora: Any) -> nn.Module:
    """``model`` with a new LoRA adapter ``name``: a PeftModel gains it, a plain module is wrapped
    with it. peft turns ``fan_in_fan_out`` on for each of GPT-2's Conv1D layers (their weight is
    stored transposed) and off again for nn.Linear, warning each time; that switch is what is wanted."""
    from peft import PeftModel, get_peft_model

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="fan_in_fan_out is set to")
        if isinstance(model, PeftModel):
            model.add_adapter(name, lora)
            return model
        return get_peft_model(model, lora, adapter_name=name)


def _adapter_weights(peft_model: nn.Module, name: str) -> dict[str, torch.Tensor]:
    from peft.utils import get_peft_model_state_dict

    state = get_peft_model_state_dict(peft_model, adapter_name=name)
    return {k: v.detach().to("cpu").clone() for k, v in state.items()}


def train_ordering(config: S3TConfig, base_state: dict[str, torch.Tensor], template: nn.Module,
                   dataset: RecordDataset, groups: Mapping[tuple[int, int], set[str]], *, shard: int,
                   ordering: int, sink: MembershipSink, device: torch.device,
                   start: int = 0, prefix: Mapping[AdapterId, dict[str, torch.Tensor]] | None = None,
                   on_adapter: Callable[[AdapterId], None] = lambda adapter: None,
                   ) -> tuple[dict[AdapterId, dict[str, torch.Tensor]], int]:
    """Train adapters ``start``..R-1 of one ordering of one shard, each on the shard's slices
    ``ordering[0..p]`` (``groups``: (shard, slice) -> record keys of ``dataset``) with the adapters
    before it active and frozen. From the base (``start`` 0) or on top of ``prefix``, the stored
    weights of adapters 0..start-1 (the last clean state). Each adapter is seeded by its own id, so
    the result equals the same adapters of a training from scratch on the same records.
    ``template``: an unwrapped model of the architecture (names the layers LoRA targets).
    Returns the new adapters' weights and the optimizer steps taken; ``on_adapter`` is called
    after each (progress; may raise JobCancelled)."""
    from peft import set_peft_model_state_dict

    slices = config.slice_orderings()[ordering]
    epochs = config.stage_epochs()
    prefix = prefix or {}
    peft_model = None
    for q in range(start):  # the clean prefix, as it was when adapter ``start`` was first trained
        name = adapter_name((shard, ordering, q))
        if peft_model is None:
            peft_model = build_model(config.architecture)
            peft_model.load_state_dict(base_state)
        peft_model = _with_adapter(peft_model, name, _lora_config(config, template))
        set_peft_model_state_dict(peft_model, prefix[(shard, ordering, q)], adapter_name=name)
    if peft_model is not None:
        peft_model.to(device)
    adapters: dict[AdapterId, dict[str, torch.Tensor]] = {}
    steps = 0
    for p in range(start, config.slices):
        adapter = (shard, ordering, p)
        name = adapter_name(adapter)
        with deterministic(derive_seed(config.seed, "adapter", shard, ordering, p)):
            if peft_model is None:
                peft_model = build_model(config.architecture)
                peft_model.load_state_dict(base_state)
            peft_model = _with_adapter(peft_model, name, _lora_config(config, template)).to(device)
            peft_model.base_model.set_adapter([adapter_name((shard, ordering, q)) for q in range(p + 1)])
            trainable = []
            for param_name, parameter in peft_model.named_parameters():
                mine = f".{name}." in param_name and "lora_" in param_name
                parameter.requires_grad_(mine)
                if mine:
                    trainable.append(parameter)
            optimizer = make_optimizer(trainable, config)
            generator = torch.Generator().manual_seed(derive_seed(config.seed, "order", shard, ordering, p))
            keys: set[str] = set()
            for k in slices[: p + 1]:
                keys |= groups.get((shard, k), set())
            stats = train_stage(
                peft_model, optimizer, sorted_by_key(dataset, keys),
                epochs=epochs[p], batch_size=config.batch_size, generator=generator,
                sink=sink, shard=shard, slice=p, device=device,
            )
        steps += stats.steps
        adapters[adapter] = _adapter_weights(peft_model, name)
        on_adapter(adapter)
    return adapters, steps


class S3TRecipe(TrainingRecipe, name="s3t"):
    config_class = S3TConfig

    def train(self, dataset: RecordDataset, *, device: str | torch.device = "cpu",
              progress: ProgressCallback = no_progress) -> TrainingRun:
        config: S3TConfig = self.config
        device = torch.device(device)
        timer = Timer()
        with deterministic(derive_seed(config.seed, "base")):
            base = build_model(config.architecture)
        if has_running_stats(base):
            raise ConfigError("s3t needs an architecture without running statistics (BatchNorm): "
                              "they would change the frozen base while adapters train")
        base_state = cpu_state_dict(base)
        groups = partition(dataset.record_keys, key=config.shard_key, shards=config.shards,
                           slices=config.slices)
        orderings = config.slice_orderings()
        sinks = [MembershipSink() for _ in orderings]
        adapters: dict[AdapterId, dict[str, torch.Tensor]] = {}
        done: list[AdapterId] = []
        steps = 0

        def trained(adapter: AdapterId) -> None:
            done.append(adapter)
            progress("shard {} ordering {} adapter {}".format(*adapter),
                     len(done) / (config.shards * len(orderings) * config.slices))

        for shard in range(config.shards):
            for o in range(len(orderings)):
                new, ordering_steps = train_ordering(config, base_state, base, dataset, groups, shard=shard,
                                                     ordering=o, sink=sinks[o], device=device, on_adapter=trained)
                adapters.update(new)
                steps += ordering_steps
        membership = _merge_membership(sinks, orderings)
        active = {shard: (0, config.slices) for shard in range(config.shards)}
        ensemble = S3TEnsemble(config, base_state, adapters, active).eval()
        return TrainingRun(
            recipe=self.name, config=config.to_dict(), model=ensemble, membership=membership,
            metrics={"wall_seconds": timer.seconds, "steps": steps, "adapters": len(adapters),
                     "records_yielded": len(membership), "records_given": len(dataset),
                     "device": str(device)},
        )

    # -- storage

    def save(self, store: ArtifactStore, run: TrainingRun, *, parent: str | None = None,
             extra: dict[str, Any] | None = None) -> ArtifactRef:
        ensemble: S3TEnsemble = run.model  # type: ignore[assignment]
        parts = {}
        for adapter, weights in sorted(ensemble.adapters.items()):
            shard, o, p = adapter
            manifest = ArtifactManifest(
                kind="lora_adapter", architecture=run.config.get("architecture"),
                recipe={"name": run.recipe, "config": run.config}, code_version=code_version(),
                config={"shard": shard, "ordering": o, "position": p,
                        "slices": ensemble.orderings[o][: p + 1]},
            )
            parts[f"shard{shard}/ordering{o}/adapter{p}"] = store.put(manifest, {"weights": weights}).artifact_id
        manifest = base_manifest(
            "s3t_ensemble", run, parent=parent, parts=parts,
            state={"active": {str(s): list(v) for s, v in sorted(ensemble.active.items())}},
            extra={"metrics": run.metrics, **(extra or {})},
        )
        return store.put(manifest, {"base": ensemble.base_state,
                                    "membership": membership_to_tensors(run.membership)})

    @classmethod
    def load(cls, store: ArtifactStore, manifest: ArtifactManifest) -> TrainingRun:
        config = S3TConfig.from_dict(manifest.recipe["config"])
        adapters = {}
        for name, artifact_id in manifest.parts.items():
            match = ADAPTER_PART.fullmatch(name)
            if match is None:
                raise ValueError(f"unexpected part {name!r} in an s3t manifest")
            adapters[(int(match[1]), int(match[2]), int(match[3]))] = store.load(artifact_id, "weights")
        active = {int(s): (int(v[0]), int(v[1])) for s, v in manifest.state["active"].items()}
        ensemble = S3TEnsemble(config, store.load_blob(manifest.files["base"]["sha256"]), adapters, active)
        membership = membership_from_tensors(store.load_blob(manifest.files["membership"]["sha256"]))
        return TrainingRun(cls.name, config.to_dict(), ensemble.eval(), membership,
                           manifest.extra.get("metrics", {}))


    @classmethod
    def comparable_state(cls, run: TrainingRun) -> dict[str, torch.Tensor]:
        """The frozen base, every stored adapter (served or a clean prefix a later deletion may
        fall back on) and which adapters each shard serves."""
        ensemble: S3TEnsemble = run.model  # type: ignore[assignment]
        state = {f"base/{k}": v.detach().cpu() for k, v in ensemble.base_state.items()}
        for adapter, weights in sorted(ensemble.adapters.items()):
            state.update({f"{adapter_name(adapter)}/{k}": v.detach().cpu() for k, v in weights.items()})
        state["active"] = torch.tensor([list(ensemble.active.get(s, (0, 0)))
                                        for s in range(ensemble.config.shards)], dtype=torch.int64)
        return state


def _merge_membership(sinks: list[MembershipSink], orderings: list[list[int]]) -> list[MembershipRow]:
    """One row per record: its shard, the slice id at which it first reached an adapter (stage
    labels of each ordering mapped back to slice ids) and its position from the first ordering
    that yielded it. Orderings must agree on a record's shard and slice."""
    merged: dict[str, MembershipRow] = {}
    for sink, ordering in zip(sinks, orderings, strict=True):
        for row in sink.rows():
            slice_id = ordering[row.slice]
            existing = merged.get(row.record_key)
            if existing is None:
                merged[row.record_key] = MembershipRow(row.record_key, row.shard, slice_id, row.position)
            elif (existing.shard, existing.slice) != (row.shard, slice_id):
                raise RuntimeError(f"record {row.record_key!r} reached different slices in two orderings")
    return sorted(merged.values(), key=lambda r: (r.shard, r.slice, r.position))


# ---------------------------------------------------------------- unlearning


@dataclass
class S3TDeactivation:
    run: TrainingRun
    forgotten: list[str]
    not_members: list[str]
    deactivated: list[AdapterId]
    serving: dict[int, tuple[int, int]]  # shard -> (ordering, active adapters)
    shards_out: list[int]
    # What the served model still learned from: of the kept records (the original membership
    # without the forgotten ones), those in slices an active adapter was trained on. A retrain on
    # the kept data would learn from all of them.
    kept_records: int = 0
    kept_records_served: int = 0


def _deactivation_plan(run: TrainingRun, forget: set[str]) -> tuple[S3TDeactivationPlan, list[str], list[str]]:
    """The S3T rule (workers.unlearning.exact.s3t_plan) on a stored run: the plan, the forgotten
    members and the keys that are not members."""
    if run.recipe != "s3t" or not isinstance(run.model, S3TEnsemble):
        raise ValueError(f"s3t unlearning needs a run of the s3t recipe, got {run.recipe!r}")
    ensemble: S3TEnsemble = run.model
    by_key = {row.record_key: row for row in run.membership}
    members = sorted(forget & by_key.keys())
    affected: dict[int, set[int]] = {}
    for key in members:
        affected.setdefault(by_key[key].shard, set()).add(by_key[key].slice)
    kept_by_slice = Counter((row.shard, row.slice) for row in run.membership if row.record_key not in forget)
    plan = s3t_deactivation_plan(orderings=ensemble.orderings, shards=ensemble.config.shards,
                                 adapters=ensemble.adapters, active=ensemble.active, affected=affected,
                                 kept_by_slice=kept_by_slice)
    return plan, members, sorted(forget - by_key.keys())


def s3t_deactivate(run: TrainingRun, forget_keys: Iterable[str]) -> S3TDeactivation:
    """Exact S3T unlearning: drop every adapter whose training data held a forgotten record.

    For each shard and ordering the adapters from the first affected slice's position on are
    deactivated and removed from the new model; each shard then serves the ordering with the
    longest clean prefix. The new membership holds the records of the slices some remaining
    adapter was trained on, minus the forgotten ones. Raises ValueError when no adapter is left
    in any shard (the model must be retrained).
    """
    forget = set(forget_keys)
    plan, members, not_members = _deactivation_plan(run, forget)
    ensemble: S3TEnsemble = run.model  # type: ignore[assignment]
    config, orderings = ensemble.config, ensemble.orderings
    if len(plan.shards_out) == config.shards:
        raise ValueError("no adapter is left in any shard after deactivation; retrain the model")
    adapters = {a: w for a, w in ensemble.adapters.items() if a in plan.remaining}
    covered = {(shard, orderings[o][p]) for shard, o, p in adapters}
    membership = [row for row in run.membership
                  if row.record_key not in forget and (row.shard, row.slice) in covered]
    new_ensemble = S3TEnsemble(config, ensemble.base_state, adapters, plan.serving).eval()
    new_run = TrainingRun(recipe=run.recipe, config=run.config, model=new_ensemble,
                          membership=membership,
                          metrics={**run.metrics, "adapters": len(adapters)})
    return S3TDeactivation(new_run, members, not_members, list(plan.deactivated), dict(plan.serving),
                           list(plan.shards_out), kept_records=plan.kept_records,
                           kept_records_served=plan.kept_records_served)


@dataclass
class S3TRetraining:
    run: TrainingRun
    forgotten: list[str]
    not_members: list[str]
    deactivated: list[AdapterId]  # switched off by this deletion (their data held the records)
    retrained: list[AdapterId]  # every adapter trained again: those and any an earlier deletion switched off
    steps: int
    kept_records: int  # the membership without the forgotten records: every one is learned from again


def s3t_retrain(run: TrainingRun, forget_keys: Iterable[str], retain: RecordDataset, *,
                device: str | torch.device = "cpu", progress: ProgressCallback = no_progress) -> S3TRetraining:
    """Exact S3T unlearning that keeps learning from all the kept data: the adapters whose training
    data held a forgotten record are switched off as :func:`s3t_deactivate` does, then every adapter
    the version lacks (switched off now or by an earlier deletion) is trained again, in order, on top
    of the last clean adapter of its ordering, on the kept records of its slices: the run's
    membership (its slice assignment) without the forgotten records, their data taken from
    ``retain``, which must hold every one of them. The recipe's seeds are used, so the adapters are
    those the recipe trained from scratch on the kept records gives. Every shard then serves all its
    adapters of the first ordering, as after training.

    Raises ValueError when ``retain`` lacks a kept record; RuntimeError if a forgotten record was
    ever yielded to training (a bug; nothing is returned then)."""
    forget = set(forget_keys)
    plan, members, not_members = _deactivation_plan(run, forget)
    ensemble: S3TEnsemble = run.model  # type: ignore[assignment]
    config = ensemble.config
    device = torch.device(device)
    kept = [row for row in run.membership if row.record_key not in forget]
    lacking = {row.record_key for row in kept} - set(retain.record_keys)
    if lacking:
        raise ValueError(f"the retain set lacks {len(lacking)} kept record(s) of the run, e.g. "
                         f"{sorted(lacking)[0]!r}; retraining needs every one of them")
    groups: dict[tuple[int, int], set[str]] = {}
    for row in kept:
        groups.setdefault((row.shard, row.slice), set()).add(row.record_key)
    # Per shard and ordering, the first adapter the version lacks: it and every later one train again.
    starts: dict[tuple[int, int], int] = {}
    for shard, o, p in plan.missing(shards=config.shards, orderings=len(ensemble.orderings), slices=config.slices):
        starts[(shard, o)] = min(p, starts.get((shard, o), p))
    total = sum(config.slices - start for start in starts.values())
    adapters = {a: w for a, w in ensemble.adapters.items() if a in plan.remaining}
    with deterministic(derive_seed(config.seed, "base")):
        template = build_model(config.architecture)
    sink = MembershipSink()
    retrained: list[AdapterId] = []
    steps = 0

    def trained(adapter: AdapterId) -> None:
        retrained.append(adapter)
        progress(f"retrain adapter {adapter_name(adapter)}", len(retrained) / total)

    for (shard, o), start in sorted(starts.items()):
        new, ordering_steps = train_ordering(config, ensemble.base_state, template, retain, groups, shard=shard,
                                             ordering=o, sink=sink, device=device, start=start, prefix=adapters,
                                             on_adapter=trained)
        adapters.update(new)
        steps += ordering_steps
    progress("retrain", 1.0)
    leaked = {row.record_key for row in sink.rows()} & forget
    if leaked:
        raise RuntimeError(f"{len(leaked)} forgotten record(s) reached retraining, e.g. {sorted(leaked)[0]!r}")
    active = {shard: (0, config.slices) for shard in range(config.shards)}
    new_ensemble = S3TEnsemble(config, ensemble.base_state, adapters, active).eval()
    new_run = TrainingRun(recipe=run.recipe, config=run.config, model=new_ensemble, membership=kept,
                          metrics={**run.metrics, "adapters": len(adapters)})
    return S3TRetraining(new_run, members, not_members, list(plan.deactivated), retrained, steps,
                         kept_records=len(kept))
