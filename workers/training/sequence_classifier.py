"""The ``hf_sequence_classifier`` recipe: a Hugging Face sequence classifier (any architecture the
installed transformers builds with ``AutoModelForSequenceClassification`` from a config) trained
on a text dataset's labels, as the platform trains its own classifiers.

The platform's text datasets give byte-token ids (UTF-8 byte + 1, 0 = padding; see
:mod:`workers.datasets.text`), and every classifier path (training, shadow models, the classifier
unlearning methods, the audit's scoring) calls ``model(inputs) -> logits`` on them. The run's model
is therefore a :class:`TextSequenceClassifier`: the transformers model behind a forward that
decodes the byte ids back to text and applies the model's own tokenizer (the one uploaded with it).
Tokenising inside the model, rather than in the dataset, keeps one input path for everything that
touches the model, so training, unlearning and the audit's evidence see exactly the same tokens;
what a text dataset holds (at most its ``max_length`` bytes of each record) is what the model reads.

The model is randomly initialised from ``hf_config`` (the uploaded ``config.json``) with the
recipe's seed and trained with the shared loop (:func:`workers.training.base.train_stage`), which
writes the membership from what the loader yielded. The tokenizer's files are a stored blob
(``tokenizer_sha256``; read through :func:`workers.training.storage.recipe_store`).

A classifier the platform builds itself from the ``transformers`` architecture's ``hf_config`` is a
:class:`ByteTokenClassifier` instead: it reads the byte-token ids as its own token ids (a vocabulary
of at least 257, 0 = padding), needs no tokenizer, and the plain, sisa, s3t and dp recipes train and
store it like the platform's other modules.

Stored layout (one artifact, kind ``hf_sequence_classifier``): ``weights`` (the transformers model's
state dict under its own names, tied duplicates once; ``config.tied_weights`` names them),
``tokenizer`` (its files as uint8 tensors, byte for byte as uploaded), ``membership``, and
``config.hf_config``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from workers.artifacts import ArtifactError, ArtifactManifest, ArtifactRef, ArtifactStore
from workers.datasets.base import RecordDataset
from workers.model_families.huggingface import (
    BYTE_PAD_ID,
    built_classifier_max_length,
    built_classifier_problem,
    platform_built,
)
from workers.training.base import (
    RecipeConfig,
    Timer,
    TrainingRecipe,
    TrainingRun,
    make_optimizer,
    sorted_by_key,
    train_stage,
)
from workers.training.device import derive_seed, deterministic
from workers.training.lm import tokenizer_from_tensors, tokenizer_tensors, untied_state_dict
from workers.training.membership import MembershipSink
from workers.training.storage import base_manifest, membership_from_tensors, membership_to_tensors
from workers.training.transformers_models import (
    build_transformers_model,
    check_transformers_options,
)
from workers.unlearning.base import ConfigError, ProgressCallback, no_progress

ARTIFACT_KIND = "hf_sequence_classifier"
ARCHITECTURE = "transformers"
# The model inputs a tokenizer may produce that a classifier's forward takes when it names them.
_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def _architecture() -> dict[str, Any]:
    return {"name": ARCHITECTURE, "config": {}}


@dataclass
class SequenceClassifierConfig(RecipeConfig):
    """``hf_config``: the transformers config (``config.json``); ``tokenizer_sha256``: the stored
    blob of its tokenizer's files; ``max_length``: tokens per text (at most the model's positions).
    The optimiser and the loop are those of every recipe (:class:`RecipeConfig`)."""

    architecture: dict[str, Any] = field(default_factory=_architecture)
    hf_config: dict[str, Any] = field(default_factory=dict)
    tokenizer_sha256: str = ""
    max_length: int = 128
    epochs: int = 3
    batch_size: int = 16
    lr: float = 1e-3

    def validate(self) -> None:
        super().validate()
        owner = type(self).__name__
        if platform_built(self.architecture):
            raise ConfigError(f"{owner}.architecture names an hf_config: the platform builds that model and the "
                              "plain, sisa, s3t and dp recipes train it on byte tokens; this recipe builds from its "
                              "own hf_config and tokenizer_sha256 (leave the architecture's config empty)")
        check_transformers_options({"hf_config": self.hf_config, "tokenizer_sha256": self.tokenizer_sha256},
                                   owner=owner)
        if self.max_length < 2:
            raise ConfigError(f"{owner}.max_length must be >= 2, got {self.max_length}")


def byte_texts(ids: torch.Tensor) -> list[str]:
    """The texts behind a batch of byte-token ids (UTF-8 byte + 1, 0 = padding). A multi-byte
    character cut by the dataset's length limit becomes U+FFFD."""
    _check_byte_ids(ids)
    return [bytes(b - 1 for b in row if b > 0).decode("utf-8", errors="replace") for row in ids.tolist()]


def _check_byte_ids(ids: torch.Tensor) -> None:
    if ids.dtype.is_floating_point or ids.dim() != 2:
        raise TypeError(f"a text classifier reads byte-token ids [batch, length], got {ids.dtype} {tuple(ids.shape)}")


class TextSequenceClassifier(nn.Module):
    """A transformers sequence classifier (``.model``) that takes the platform's text inputs:
    ``forward(byte_ids [batch, length]) -> logits [batch, labels]`` (see the module docstring).
    ``tokenizer``: the model's own; ``max_length``: tokens per text."""

    def __init__(self, model: nn.Module, tokenizer: Any, *, max_length: int) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        if tokenizer.pad_token is None:  # a decoder's tokenizer (GPT-2's) often has none
            tokenizer.pad_token = tokenizer.eos_token
        if getattr(model.config, "pad_token_id", None) is None:
            # Decoder classifiers read the last token before the padding, which they find by this id.
            model.config.pad_token_id = tokenizer.pad_token_id
        accepted = inspect.signature(model.forward).parameters
        self.input_names = tuple(name for name in _MODEL_INPUTS if name in accepted)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        encoded = self.tokenizer(byte_texts(ids), padding=True, truncation=True, max_length=self.max_length,
                                 return_tensors="pt")
        inputs = {name: encoded[name].to(ids.device) for name in self.input_names if name in encoded}
        return self.model(**inputs).logits


class ByteTokenClassifier(nn.Module):
    """A transformers sequence classifier (``.model``) that reads the platform's byte tokens as its
    own token ids: ``forward(byte_ids [batch, length]) -> logits [batch, labels]``. Built by the
    ``transformers`` architecture (:func:`byte_token_classifier`), so that plain, sisa, s3t and dp
    train it as they train the platform's own modules; no tokenizer files are needed.

    Each text is cut to ``max_length`` tokens and the batch to its longest text (what a tokenizer's
    ``padding=True`` gives; padding is masked, so the cut changes no logit). Position ids are passed
    per text, counting from 0 (the default of BERT, GPT-2 and Llama; RoBERTa-style models, whose
    own count starts after their padding id, count from 0 here too): a model left to its own
    shares one row of position ids across the batch, for which Opacus computes the position
    embeddings' gradient of the whole batch rather than of each record."""

    def __init__(self, model: nn.Module, *, max_length: int) -> None:
        super().__init__()
        self.model = model
        self.max_length = max_length
        accepted = inspect.signature(model.forward).parameters
        self.takes_positions = "position_ids" in accepted

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        _check_byte_ids(ids)
        ids = ids[:, : self.max_length]
        filled = (ids != BYTE_PAD_ID).any(0).nonzero()
        ids = ids[:, : int(filled[-1]) + 1 if len(filled) else 1]
        inputs = {"input_ids": ids, "attention_mask": (ids != BYTE_PAD_ID).long()}
        if self.takes_positions:
            inputs["position_ids"] = torch.arange(ids.shape[1], device=ids.device).expand(len(ids), -1)
        return self.model(**inputs).logits


def byte_token_classifier(options: dict[str, Any]) -> ByteTokenClassifier:
    """A freshly initialised :class:`ByteTokenClassifier` (under the caller's RNG) from the
    ``transformers`` architecture's options (see
    :func:`workers.model_families.huggingface.built_classifier_problem`); ConfigError naming the
    problem, or when transformers cannot build a sequence classifier from the config."""
    problem = built_classifier_problem(options)
    if problem:
        raise ConfigError(problem)
    # Decoder classifiers find each text's last token by the padding id.
    hf_config = {**options["hf_config"], "pad_token_id": BYTE_PAD_ID}
    try:
        model = build_transformers_model(hf_config, "sequence_classification")
    except (ValueError, KeyError) as exc:  # an unknown model_type, a config transformers refuses
        raise ConfigError(f"transformers cannot build a sequence classifier from the architecture's hf_config "
                          f"(model_type {hf_config['model_type']!r}): {exc}") from None
    return ByteTokenClassifier(model, max_length=built_classifier_max_length(options))


def text_classifier(hf_config: dict[str, Any], tokenizer: Any, *, max_length: int, state: Any = None,
                    tied: Any = ()) -> TextSequenceClassifier:
    """A :class:`TextSequenceClassifier` for ``hf_config``: randomly initialised (under the
    caller's RNG), or with the stored ``state`` loaded (``tied``: names stored once)."""
    from workers.training.transformers_models import transformers_model_from_state

    if state is None:
        model = build_transformers_model(hf_config, "sequence_classification", seed=None)
    else:
        model = transformers_model_from_state(hf_config, "sequence_classification", state, tied)
    return TextSequenceClassifier(model, tokenizer, max_length=max_length)


class SequenceClassifierRecipe(TrainingRecipe, name="hf_sequence_classifier"):
    config_class = SequenceClassifierConfig

    def train(self, dataset: RecordDataset, *, device: str | torch.device = "cpu",
              progress: ProgressCallback = no_progress) -> TrainingRun:
        from workers.training.transformers_models import stored_tokenizer

        config: SequenceClassifierConfig = self.config
        device = torch.device(device)
        timer = Timer()
        sink = MembershipSink()
        tokenizer = stored_tokenizer(config.tokenizer_sha256)
        with deterministic(derive_seed(config.seed, "init", 0)):
            model = text_classifier(config.hf_config, tokenizer, max_length=config.max_length).to(device)
            optimizer = make_optimizer(model.parameters(), config)
            generator = torch.Generator().manual_seed(derive_seed(config.seed, "order", 0))
            stats = train_stage(
                model, optimizer, sorted_by_key(dataset),
                epochs=config.epochs, batch_size=config.batch_size, generator=generator,
                sink=sink, shard=0, slice=0, device=device,
                on_epoch=lambda e: progress("train", (e + 1) / config.epochs),
            )
        model.eval()
        return TrainingRun(
            recipe=self.name, config=config.to_dict(), model=model.cpu(), membership=sink.rows(),
            metrics={"wall_seconds": timer.seconds, "steps": stats.steps, "records_yielded": len(sink.keys()),
                     "records_given": len(dataset), "device": str(device),
                     "train_loss": stats.loss_sum / max(1, stats.examples)},
        )

    def save(self, store: ArtifactStore, run: TrainingRun, *, parent: str | None = None,
             extra: dict[str, Any] | None = None) -> ArtifactRef:
        classifier: TextSequenceClassifier = run.model
        weights, tied = untied_state_dict(classifier.model)
        manifest = base_manifest(ARTIFACT_KIND, run, parent=parent, extra={"metrics": run.metrics, **(extra or {})})
        manifest.config = {"hf_config": run.config["hf_config"], "tied_weights": tied}
        return store.put(manifest, {"weights": weights, "tokenizer": tokenizer_tensors(classifier.tokenizer),
                                    "membership": membership_to_tensors(run.membership)})

    @classmethod
    def load(cls, store: ArtifactStore, manifest: ArtifactManifest) -> TrainingRun:
        if manifest.kind != ARTIFACT_KIND:
            raise ArtifactError(f"a {manifest.kind!r} artifact is not a {cls.name} run")
        config = manifest.recipe["config"]
        tokenizer = tokenizer_from_tensors(store.load_blob(manifest.files["tokenizer"]["sha256"]))
        try:
            model = text_classifier(manifest.config["hf_config"], tokenizer, max_length=int(config["max_length"]),
                                    state=store.load_blob(manifest.files["weights"]["sha256"]),
                                    tied=manifest.config.get("tied_weights", []))
        except ValueError as exc:
            raise ArtifactError(str(exc)) from None
        membership = membership_from_tensors(store.load_blob(manifest.files["membership"]["sha256"]))
        return TrainingRun(cls.name, config, model.eval(), membership, manifest.extra.get("metrics", {}))
