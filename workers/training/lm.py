"""The ``lora_causal_lm`` recipe: a causal language model fine-tuned on a text dataset's records.

The base model is chosen by ``base_model``, a name in :data:`workers.training.lm_bases.LM_BASES`:
``smollm2`` (the pretrained SmolLM2-135M-Instruct, from :func:`workers.language_models.load_smollm2`),
``tiny_gpt2`` (a randomly initialised two-layer GPT-2 with a byte tokenizer, built in memory: tests
need no download) or ``transformers_config`` (any causal LM the installed transformers builds from a
config, with a stored tokenizer: an uploaded model's recipe). It is trained through a LoRA adapter
that is merged at the end, so the run's model is a plain transformers model whose weights go to the
store as safetensors; the LM methods (gradient ascent, GradDiff, NPO, the verifier guard) work on
any such model.

Membership is written from what reached the model: every batch records its keys when its
optimiser step runs (``max_records`` picks a seeded sample first; records never drawn are not
members). Data order comes from a seeded generator, the adapter's initialisation from the seed,
dropout is off: the same config and records give the same weights on CPU.

Stored layout (one artifact, kind ``causal_lm``; roles of ``files``):

* ``weights``: the model's state dict, minus tensors tied to another (the output head shares the
  input embeddings; storing it twice would add ~110 MB for SmolLM2). ``config.tied_weights``
  names them and loading re-ties them.
* ``tokenizer``: the tokenizer's files (``tokenizer.json``, ``tokenizer_config.json``, ...), each
  as one uint8 tensor named after the file. A tokenizer loaded from the store is stored again with
  the same bytes (not re-saved by transformers), so every version of a model shares one blob. Kept as a blob rather than as a path to the SmolLM2
  cache: the artifact then loads offline on any worker, and a cache rebuilt by a newer converter
  cannot silently change how a stored model reads its input; content addressing stores it once
  for every version of the model.
* ``membership``: the run's membership (see :mod:`workers.training.storage`).
* ``config.hf_config``: the transformers config, so the model is rebuilt without the base.
* ``projections`` (only after MRP): the orthonormal bases projected out of decoder layers' hidden
  states, one tensor per layer (:mod:`workers.unlearning.lm.projections`). The weights alone are
  NOT the served model then: loading applies the projections, and a version unlearned again from it
  (by any LM method) stores them again, so every earlier request still holds.

A version made by the verifier guard is an artifact of kind ``guarded_causal_lm``: the same
``weights`` and ``tokenizer`` blobs as its parent (the parameters are unchanged by design), its
own membership, and a ``guard`` blob (see :mod:`workers.unlearning.guard.storage`). ``load_run``
returns it with ``run.guard`` set; it must be served as
``run.guard.guarded_model(run.model, run.tokenizer, key)`` with the key from the keystore
(``run.guard.key_ref``), never as the bare model.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workers.artifacts import (
    ArtifactError,
    ArtifactManifest,
    ArtifactRef,
    ArtifactStore,
    code_version,
)
from workers.datasets.base import RecordDataset, RecordSubset
from workers.training.base import RecipeConfig, Timer, TrainingRecipe, TrainingRun
from workers.training.device import derive_seed, deterministic
from workers.training.membership import MembershipSink
from workers.training.storage import base_manifest, membership_from_tensors, membership_to_tensors
from workers.unlearning.base import ConfigError, ProgressCallback, no_progress
from workers.unlearning.lm.projections import apply_projection_tensors, projection_tensors

LM_ARCHITECTURE = "causal_lm"
ARTIFACT_KIND = "causal_lm"
GUARDED_ARTIFACT_KIND = "guarded_causal_lm"
# Set on a tokenizer loaded from the store: its files as stored (saved again unchanged).
_STORED_FILES = "platform_stored_files"


def _lm_architecture() -> dict[str, Any]:
    return {"name": LM_ARCHITECTURE, "config": {}}


@dataclass
class LoRACausalLMConfig(RecipeConfig):
    """LoRA fine-tuning of a causal LM. ``base_model``: a registered base (see
    :mod:`workers.training.lm_bases`); ``base_config``: that base's options (``tiny_gpt2``: ``seed``,
    ``n_layer``, ``n_embd``, ``n_head``, ``n_positions``; ``transformers_config``: ``hf_config``,
    ``tokenizer_sha256``, ``seed``; none for ``smollm2``).
    ``max_records`` > 0 trains on a sample of that many records drawn with ``records_seed`` (0:
    all of them); ``seed`` drives everything else, so two models can share their records and
    differ in their weights.
    The optimiser is AdamW on the adapter's parameters (``optimizer`` must stay ``adam``)."""

    architecture: dict[str, Any] = field(default_factory=_lm_architecture)
    base_model: str = "tiny_gpt2"
    base_config: dict[str, Any] = field(default_factory=dict)
    epochs: int = 3
    batch_size: int = 8
    lr: float = 1e-3
    lora_r: int = 16
    lora_alpha: float = 32.0
    target_modules: list[str] | None = None
    max_length: int = 128
    max_records: int = 0
    records_seed: int = 0
    max_grad_norm: float = 1.0

    def validate(self) -> None:
        super().validate()
        owner = type(self).__name__
        if self.architecture.get("name") != LM_ARCHITECTURE:
            raise ConfigError(f"{owner}.architecture.name must be {LM_ARCHITECTURE!r}")
        from workers.training.lm_bases import LM_BASES, lm_base

        try:
            base = lm_base(self.base_model)
        except ValueError:
            raise ConfigError(f"{owner}.base_model must be one of {', '.join(LM_BASES)}") from None
        if not isinstance(self.base_config, dict):
            raise ConfigError(f"{owner}.base_config must be an object")
        base.validate(self.base_config, owner=owner)
        if self.optimizer != "adam":
            raise ConfigError(f"{owner}.optimizer must be 'adam' (AdamW on the LoRA adapter)")
        if self.lora_r < 1 or self.lora_alpha <= 0:
            raise ConfigError(f"{owner}: need lora_r >= 1 and lora_alpha > 0")
        if self.max_length < 2:
            raise ConfigError(f"{owner}.max_length must be >= 2, got {self.max_length}")
        if self.max_records < 0 or self.max_grad_norm < 0:
            raise ConfigError(f"{owner}: max_records and max_grad_norm must be >= 0")
        if self.target_modules is not None and (
            not isinstance(self.target_modules, list) or not self.target_modules
            or not all(isinstance(name, str) and name for name in self.target_modules)
        ):
            raise ConfigError(f"{owner}.target_modules must be null or a non-empty list of names")


def record_texts(dataset: RecordDataset) -> list[tuple[str, str]]:
    """``(record_key, text)`` of every record of a text dataset (or a subset of one), in order.

    Raises ``ValueError`` for a dataset that holds no texts (a tabular or image set).
    """
    indices = list(range(len(dataset)))
    base: Any = dataset
    while isinstance(base, RecordSubset):
        indices = [base.indices[i] for i in indices]
        base = base.parent
    texts = getattr(base, "texts", None)
    if texts is None:
        raise ValueError(f"{type(base).__name__} holds no texts: a language model needs a text dataset")
    keys = base.record_keys
    return [(keys[i], texts[i]) for i in indices]


def base_model_and_tokenizer(config: LoRACausalLMConfig) -> tuple[Any, Any]:
    """The untrained starting point of a run: the base model (eval mode) and its tokenizer.

    It never saw the dataset's records, which is also why the audit may use it for comparison.
    """
    from workers.training.lm_bases import lm_base

    return lm_base(config.base_model).build(config.base_config)


class LoRACausalLMRecipe(TrainingRecipe, name="lora_causal_lm"):
    config_class = LoRACausalLMConfig

    def train(self, dataset: RecordDataset, *, device: str | torch.device = "cpu",
              progress: ProgressCallback = no_progress) -> TrainingRun:
        from workers.unlearning.lm.data import lm_batches
        from workers.unlearning.lm.lora import attach_lora, merge_lora, optimise_lora
        from workers.unlearning.lm.losses import mean_token_nll, to_device

        config: LoRACausalLMConfig = self.config
        device = torch.device(device)
        timer = Timer()
        records = self._records(dataset)
        if not records:
            raise ValueError("no records to train on")
        model, tokenizer = base_model_and_tokenizer(config)
        order = torch.Generator().manual_seed(derive_seed(config.seed, "order", 0))
        schedule = []
        for _ in range(config.epochs):
            shuffled = [records[i] for i in torch.randperm(len(records), generator=order).tolist()]
            schedule += lm_batches(tokenizer, shuffled, max_length=config.max_length,
                                   batch_size=config.batch_size)
        sink = MembershipSink()
        work = model.to(device)
        requires_grad = {n: p.requires_grad for n, p in work.named_parameters()}

        def step_loss(step: int) -> torch.Tensor:
            batch = schedule[step]
            # The batch reaches the model now: that is what makes its records members.
            sink.record(batch["record_keys"], shard=0, slice=0)
            return mean_token_nll(peft_model, to_device(batch, str(device)))

        with deterministic(derive_seed(config.seed, "init", 0)):
            peft_model = attach_lora(work, r=config.lora_r, alpha=config.lora_alpha,
                                     target_modules=config.target_modules,
                                     seed=derive_seed(config.seed, "lora", 0))
            losses = optimise_lora(peft_model, step_loss, steps=len(schedule), lr=config.lr,
                                   max_grad_norm=config.max_grad_norm, progress=progress, stage="train")
        trained = merge_lora(peft_model, requires_grad).to("cpu").eval()
        per_epoch = len(schedule) // config.epochs
        return TrainingRun(
            recipe=self.name, config=config.to_dict(), model=trained, membership=sink.rows(),
            tokenizer=tokenizer,
            metrics={"wall_seconds": timer.seconds, "steps": len(losses), "base_model": config.base_model,
                     "records_yielded": len(sink.keys()), "records_given": len(dataset),
                     "train_loss_first_epoch": float(np.mean(losses[:per_epoch])),
                     "train_loss_last_epoch": float(np.mean(losses[-per_epoch:])),
                     "device": str(device)},
        )

    def _records(self, dataset: RecordDataset) -> list[tuple[str, str]]:
        """The records to train on, by key; a sample of ``max_records`` of them if set."""
        records = sorted(record_texts(dataset))
        limit = self.config.max_records
        if limit and len(records) > limit:
            rng = np.random.default_rng(derive_seed(self.config.records_seed, "records") % 2**32)
            chosen = sorted(rng.choice(len(records), size=limit, replace=False).tolist())
            records = [records[i] for i in chosen]
        return records

    def save(self, store: ArtifactStore, run: TrainingRun, *, parent: str | None = None,
             extra: dict[str, Any] | None = None) -> ArtifactRef:
        weights, tied = untied_state_dict(run.model)
        manifest = base_manifest(ARTIFACT_KIND, run, parent=parent,
                                 extra={"metrics": run.metrics, **(extra or {})})
        manifest.config = {"hf_config": run.model.config.to_dict(), "tied_weights": tied}
        blobs = {"weights": weights, "tokenizer": tokenizer_tensors(run.tokenizer),
                 "membership": membership_to_tensors(run.membership)}
        projections = projection_tensors(run.model)
        if projections:  # MRP's: the served model applies them (model_from_manifest)
            blobs["projections"] = projections
        return store.put(manifest, blobs)

    @classmethod
    def load(cls, store: ArtifactStore, manifest: ArtifactManifest) -> TrainingRun:
        if manifest.kind not in (ARTIFACT_KIND, GUARDED_ARTIFACT_KIND):
            raise ArtifactError(f"a {manifest.kind!r} artifact is not a {cls.name} run")
        model = model_from_manifest(store, manifest)
        tokenizer = tokenizer_from_tensors(store.load_blob(manifest.files["tokenizer"]["sha256"]))
        membership = membership_from_tensors(store.load_blob(manifest.files["membership"]["sha256"]))
        guard = None
        if manifest.kind == GUARDED_ARTIFACT_KIND:
            from workers.unlearning.guard.storage import StoredGuard

            guard = StoredGuard.from_artifact(manifest.extra["guard"],
                                              store.load_blob(manifest.files["guard"]["sha256"]))
        return TrainingRun(cls.name, manifest.recipe["config"], model, membership,
                           manifest.extra.get("metrics", {}), tokenizer=tokenizer, guard=guard)


def save_guarded_run(store: ArtifactStore, *, parent_id: str, membership: Sequence[Any], guard: Any,
                     extra: dict[str, Any] | None = None) -> ArtifactRef:
    """Store a guarded version of the LM artifact ``parent_id``: the parent's weights and
    tokenizer blobs (referenced, not copied: the parameters are unchanged), ``membership`` and the
    guard (a :class:`~workers.unlearning.guard.storage.StoredGuard`). Returns its reference."""
    parent = store.manifest(parent_id)
    if parent.kind not in (ARTIFACT_KIND, GUARDED_ARTIFACT_KIND):
        raise ArtifactError(f"only a language model can be guarded, not a {parent.kind!r} artifact")
    guard_meta, guard_tensors = guard.to_artifact()
    manifest = ArtifactManifest(
        kind=GUARDED_ARTIFACT_KIND, architecture=parent.architecture, config=parent.config,
        recipe=parent.recipe, parent=parent_id, code_version=code_version(),
        extra={"metrics": parent.extra.get("metrics", {}), "guard": guard_meta, **(extra or {})},
        files={role: dict(parent.files[role]) for role in ("weights", "tokenizer", "projections")
               if role in parent.files},
    )
    return store.put(manifest, {"membership": membership_to_tensors(list(membership)), "guard": guard_tensors})


# ---------------------------------------------------------------- weights and tokenizer as tensors


def untied_state_dict(model: Any) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The state dict without tensors that share storage with an earlier one; and their names."""
    kept: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, tuple[int, ...]]] = set()
    tied: list[str] = []
    for name, tensor in model.state_dict().items():
        identity = (tensor.data_ptr(), tuple(tensor.shape))
        if identity in seen:
            tied.append(name)
            continue
        seen.add(identity)
        kept[name] = tensor.detach().to("cpu")
    return kept, tied


def model_from_manifest(store: ArtifactStore, manifest: ArtifactManifest) -> Any:
    """Rebuild the stored causal LM (eval mode, float32) from its config and weights; nothing
    unpickled, no remote code."""
    from workers.training.transformers_models import transformers_model_from_state

    state = store.load_blob(manifest.files["weights"]["sha256"])
    try:
        model = transformers_model_from_state(manifest.config["hf_config"], "causal_lm", state,
                                              manifest.config.get("tied_weights", []))
        if "projections" in manifest.files:
            apply_projection_tensors(model, store.load_blob(manifest.files["projections"]["sha256"]))
    except ValueError as exc:
        raise ArtifactError(str(exc)) from None
    return model


def tokenizer_tensors(tokenizer: Any) -> dict[str, torch.Tensor]:
    """The tokenizer's files as uint8 tensors named after the files: as they were stored, for a
    tokenizer loaded by :func:`tokenizer_from_tensors`; otherwise as transformers saves them."""
    if tokenizer is None:
        raise ValueError("a language model run needs its tokenizer")
    stored = getattr(tokenizer, _STORED_FILES, None)
    if stored is not None:
        return {name: tensor.clone() for name, tensor in stored.items()}
    with tempfile.TemporaryDirectory() as folder:
        tokenizer.save_pretrained(folder)
        return {path.name: _bytes_tensor(path.read_bytes())
                for path in sorted(Path(folder).iterdir()) if path.is_file()}


def _bytes_tensor(data: bytes) -> torch.Tensor:
    if not data:
        return torch.zeros(0, dtype=torch.uint8)
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).clone()


def tokenizer_from_tensors(tensors: dict[str, torch.Tensor]) -> Any:
    """Load a tokenizer stored by :func:`tokenizer_tensors` (offline, from a temporary folder)."""
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as folder:
        for name, tensor in tensors.items():
            if Path(name).name != name or name.startswith("."):
                raise ArtifactError(f"tokenizer file name {name!r} is not a plain file name")
            (Path(folder) / name).write_bytes(tensor.numpy().tobytes())
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    setattr(tokenizer, _STORED_FILES, {name: tensor.clone() for name, tensor in tensors.items()})
    return tokenizer
