"""Hugging Face transformers models: any causal LM or sequence classifier the installed
``transformers`` builds from a ``config.json``, uploaded as an archive of its model folder.

Registered with the architecture ``{"name": "transformers", "config": {}}`` (``config`` may pin
``model_type``); the model's task picks the head: ``language_modeling`` a causal LM
(``AutoModelForCausalLM``), ``classification`` a sequence classifier
(``AutoModelForSequenceClassification``). The upload is a zip or tar (gzip, bzip2, xz) of what
``save_pretrained`` writes: ``config.json``, ``model.safetensors`` (or shards with their
``model.safetensors.index.json``), the tokenizer's files, optionally ``generation_config.json``.

It is checked without executing anything it holds, and refused with a 400 naming the problem:

* the archive (:mod:`workers.model_families.archives`): links, devices, paths outside it, more than
  :data:`LIMITS` allows in members or bytes, declared or actually decompressed;
* its files: only the names a model folder holds; pickles (``*.bin``, ``*.pt``, ``*.pkl``...) and
  code (``*.py``, shared libraries, templates) are refused by name, and every file is parsed as what
  its name says (JSON strictly, safetensors by its header, text as UTF-8), so a pickle or zip under
  another name is refused too;
* the configs: a key asking for code of its own (``auto_map``, ``trust_remote_code``) anywhere in
  ``config.json``, ``tokenizer_config.json`` or ``generation_config.json``, a chat template (Jinja
  code), a ``model_type`` the installed transformers does not know;
* the weights: names, shapes and dtypes compared with the model ``from_config`` builds on the meta
  device (nothing allocated); the tokenizer must load offline (no remote code) and fit the vocabulary.

Stored like a version the platform trained (so unlearning, shadow models and audits load it as
any other): a causal LM as a ``causal_lm`` artifact of the ``lora_causal_lm`` recipe whose base is
``transformers_config`` (the LM methods and LoRA then work on it); a sequence classifier as an
``hf_sequence_classifier`` artifact of that recipe (classifier methods and the audit call it on the
dataset's inputs). The weights are the uploaded tensors, the config is kept in the manifest, the
tokenizer's files are one blob; the recipe's configuration is what the training run recorded that
the recipe knows, with the uploaded config and tokenizer (shadow models and a retrain build from it).

A sequence classifier the platform trains itself is registered with its config in the architecture:
``{"name": "transformers", "config": {"hf_config": {...}, "max_length": 128}}``. The platform builds
it (workers.training.architectures, ``transformers``), reading its text datasets' byte tokens as the
model's token ids (no tokenizer files), so the plain, sisa, s3t and dp recipes train it as they train
the platform's own modules, and SISA and S3T unlearn it exactly. No upload is taken for such a model.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from workers.model_families.archives import ArchiveLimits, archive_files
from workers.model_families.base import CheckedUpload, ModelFamily, UploadRefused

GiB = 1024**3
# Counted on the uncompressed archive (its compressed size is bounded by the upload's, 2 GiB).
LIMITS = ArchiveLimits(members=64, member_bytes=4 * GiB, total_bytes=4 * GiB)
TEXT_FILE_BYTES = 64 * 1024**2  # one JSON or vocabulary file

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
WEIGHTS_SHARD = re.compile(r"^model-\d{5}-of-\d{5}\.safetensors$")
JSON_FILES = frozenset({CONFIG_FILE, WEIGHTS_INDEX, "generation_config.json", "tokenizer.json",
                        "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json"})
TEXT_FILES = frozenset({"vocab.txt", "merges.txt"})
BINARY_TOKENIZER_FILES = frozenset({"tokenizer.model", "spiece.model", "sentencepiece.bpe.model"})
TOKENIZER_FILES = frozenset({"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                             "added_tokens.json", "vocab.json", "vocab.txt", "merges.txt"}) | BINARY_TOKENIZER_FILES
# Files whose keys are settings (not tokens): none may ask for code of its own.
SETTINGS_FILES = (CONFIG_FILE, "generation_config.json", "tokenizer_config.json")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".npy", ".npz", ".h5",
                   ".msgpack", ".onnx")
CODE_SUFFIXES = (".py", ".pyc", ".pyo", ".pyd", ".so", ".dll", ".dylib", ".sh", ".ipynb", ".js", ".jinja",
                 ".j2", ".exe")
FLOAT_DTYPES = frozenset({"F16", "BF16", "F32", "F64"})
DEFAULT_MAX_LENGTH = 128
# Keys through which a transformers config or tokenizer config asks for code of its own.
REMOTE_CODE_KEYS = frozenset({"auto_map", "trust_remote_code"})
# What a transformers architecture's config may hold: a pinned model_type (the upload brings its
# config.json), or the hf_config (and max_length) of a classifier the platform builds itself.
BUILT_OPTIONS = frozenset({"hf_config", "max_length", "model_type"})
# The platform's text datasets give byte tokens (workers.datasets.text: UTF-8 byte + 1, 0 = padding),
# restated here because the web process checks architectures without importing torch.
BYTE_TOKENS = 257
BYTE_PAD_ID = 0


def remote_code_keys(value: Any, path: str = "") -> list[str]:
    """Where in a JSON value a key asks for code of its own (``auto_map``, ``trust_remote_code``),
    as dotted paths; empty when none does."""
    found: list[str] = []
    if isinstance(value, Mapping):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if key in REMOTE_CODE_KEYS:
                found.append(where)
            found += remote_code_keys(item, where)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += remote_code_keys(item, f"{path}[{index}]")
    return found


def platform_built(architecture: Mapping[str, Any] | None) -> bool:
    """Whether the platform builds this transformers model from its architecture (its config names
    an ``hf_config``): the plain, sisa, s3t and dp recipes train it. Otherwise its config.json comes
    with its upload, or with the hf_sequence_classifier or lora_causal_lm recipe's configuration."""
    config = (architecture or {}).get("config")
    return isinstance(config, Mapping) and "hf_config" in config


def built_classifier_problem(options: Mapping[str, Any]) -> str | None:
    """Why a transformers architecture's config ``options`` cannot build a sequence classifier that
    reads the platform's byte tokens, or None. ``hf_config``: the transformers config (a
    ``config.json`` object) the model is built from; ``max_length``: tokens read per text (at most
    the model's positions); ``model_type``: a pin, equal to the config's. Light: nothing is built
    or imported (the web process checks a model's architecture with it; the worker again)."""
    unknown = sorted(set(options) - BUILT_OPTIONS)
    if unknown:
        return (f"a transformers architecture's config takes only model_type (its upload brings config.json), or "
                f"hf_config and max_length (the platform builds the model); not {', '.join(unknown)}")
    hf_config = options.get("hf_config")
    if hf_config is None:
        return ("this transformers architecture names no hf_config, so the platform cannot build the model: the plain, "
                "sisa, s3t and dp recipes build a transformers sequence classifier from the architecture's hf_config "
                "(a config.json object); a model whose config.json comes with its upload is trained with "
                "hf_sequence_classifier or lora_causal_lm")
    if not isinstance(hf_config, Mapping) or not isinstance(hf_config.get("model_type"), str):
        return "the transformers architecture's hf_config must be a transformers config (an object with its model_type)"
    remote = remote_code_keys(hf_config)
    if remote:
        return (f"the transformers architecture's hf_config asks for code of its own ({', '.join(remote)}); only "
                "architectures the installed transformers knows are built")
    pinned = options.get("model_type")
    if pinned is not None and pinned != hf_config["model_type"]:
        return f"the architecture pins model_type {pinned!r}; its hf_config is a {hf_config['model_type']!r}"
    vocabulary = hf_config.get("vocab_size")
    if vocabulary is not None and (not _is_int(vocabulary) or vocabulary < BYTE_TOKENS):
        return (f"hf_config.vocab_size is {vocabulary!r}: the model reads the platform's byte tokens (ids 0 to "
                f"{BYTE_TOKENS - 1}, 0 = padding), so its vocabulary needs at least {BYTE_TOKENS} entries")
    if hf_config.get("pad_token_id") not in (None, BYTE_PAD_ID):
        return (f"hf_config.pad_token_id is {hf_config['pad_token_id']!r}: the byte tokens pad with {BYTE_PAD_ID}; "
                f"leave it out or set it to {BYTE_PAD_ID}")
    max_length = options.get("max_length", DEFAULT_MAX_LENGTH)
    if not _is_int(max_length) or max_length < 2:
        return f"the transformers architecture's max_length must be an integer >= 2, got {max_length!r}"
    positions = _positions(hf_config)
    if positions is not None and "max_length" in options and max_length > positions:
        return f"max_length {max_length} is more than the model's {positions} positions"
    return None


def built_classifier_max_length(options: Mapping[str, Any]) -> int:
    """Tokens per text of a built classifier: its ``max_length``; by default 128, or the model's
    positions where it has fewer."""
    if "max_length" in options:
        return int(options["max_length"])
    positions = _positions(options.get("hf_config") or {})
    return min(DEFAULT_MAX_LENGTH, positions or DEFAULT_MAX_LENGTH)


def _positions(hf_config: Mapping[str, Any]) -> int | None:
    """The positions a config names (``max_position_embeddings``, GPT-2's ``n_positions``), if any."""
    return next((hf_config[k] for k in ("max_position_embeddings", "n_positions") if _is_int(hf_config.get(k))),
                None)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _causal_lm_fields(hf_config: Mapping[str, Any], tokenizer_sha256: str,
                      architecture: Mapping[str, Any]) -> dict[str, Any]:
    """lora_causal_lm from a randomly initialised model of the uploaded config (see
    workers.training.lm_bases.transformers_config)."""
    return {"base_model": "transformers_config",
            "base_config": {"hf_config": dict(hf_config), "tokenizer_sha256": tokenizer_sha256}}


def _sequence_classifier_fields(hf_config: Mapping[str, Any], tokenizer_sha256: str,
                                architecture: Mapping[str, Any]) -> dict[str, Any]:
    return {"architecture": dict(architecture), "hf_config": dict(hf_config), "tokenizer_sha256": tokenizer_sha256}


@dataclass(frozen=True)
class Head:
    """What a model of one task is built and stored as: its transformers head (a key of
    workers.training.transformers_models.HEADS), the recipe and artifact kind it is stored as,
    and what of that recipe's configuration the upload decides."""

    transformers_head: str
    what: str
    recipe: str
    kind: str
    upload_fields: Callable[[Mapping[str, Any], str, Mapping[str, Any]], dict[str, Any]]


HEADS = {
    "language_modeling": Head("causal_lm", "a causal language model (AutoModelForCausalLM)", "lora_causal_lm",
                              "causal_lm", _causal_lm_fields),
    "classification": Head("sequence_classification", "a sequence classifier (AutoModelForSequenceClassification)",
                           "hf_sequence_classifier", "hf_sequence_classifier", _sequence_classifier_fields),
}


# Why a transformers architecture with an hf_config is not registered for language modelling.
LANGUAGE_MODEL_BUILT = (
    "an architecture with an hf_config is a sequence classifier the platform builds (for classification, trained "
    "with plain, sisa, s3t or dp); a causal language model is registered with the architecture "
    "{\"name\": \"transformers\", \"config\": {}} and trained with lora_causal_lm (base_model transformers_config)")


class HuggingFace(ModelFamily, name="huggingface"):
    architectures = ("transformers",)
    upload_media_type = ("application/zip or application/x-tar (optionally gzip, bzip2 or xz): config.json, "
                         "model.safetensors or its shards with model.safetensors.index.json, the tokenizer's files")

    def architecture_problem(self, architecture: Mapping[str, Any], task: str | None) -> str | None:
        if task is not None and task not in HEADS:
            return f"a transformers model is registered for one of {', '.join(HEADS)}, not {task!r}"
        config = architecture.get("config") or {}
        if not isinstance(config, Mapping):
            return "a transformers architecture's config must be an object"
        if not platform_built(architecture):
            if set(config) - {"model_type"}:
                return ("a transformers architecture's config takes only model_type (its upload brings config.json), "
                        "or hf_config and max_length (the platform builds the model)")
            return None
        if task == "language_modeling":
            return LANGUAGE_MODEL_BUILT
        return built_classifier_problem(config)

    def check_upload(self, data: bytes, *, architecture: Mapping[str, Any], task: str,
                     run_config: Mapping[str, Any]) -> CheckedUpload:
        head = HEADS.get(task)
        if head is None:
            raise UploadRefused(f"a transformers model must be registered for {' or '.join(HEADS)}, not {task!r}",
                                code="architecture_mismatch")
        if platform_built(architecture):
            raise UploadRefused("this model's architecture names an hf_config: the platform builds and trains it "
                                "(plain, sisa, s3t, dp), so no upload is taken for it; register a model trained "
                                "elsewhere with the architecture {\"name\": \"transformers\", \"config\": {}} and "
                                "upload its save_pretrained folder", code="architecture_mismatch")
        files = archive_files(data, limits=LIMITS)
        _check_names(files)
        parsed = {name: _parsed(name, content) for name, content in files.items()}
        hf_config = parsed.get(CONFIG_FILE)
        if not isinstance(hf_config, dict):
            raise UploadRefused("the archive holds no config.json (a JSON object): save the model with "
                                "save_pretrained and archive its folder", code="missing_config")
        _check_settings(parsed)
        _check_model_type(hf_config, architecture)
        model = _model_on_meta(hf_config, head)
        weights, tied = _fitting_weights(files, parsed, model)
        tokenizer_blob, tokenizer = _checked_tokenizer(files, model.config)
        recipe_config = _recipe_config(head, run_config, architecture, hf_config=hf_config,
                                       tokenizer_blob=tokenizer_blob, model=model)
        extra = {"model_type": hf_config["model_type"], "transformers_head": head.transformers_head,
                 "archive_files": sorted(files), "tokenizer_tokens": len(tokenizer)}
        if isinstance(parsed.get("generation_config.json"), dict):
            extra["generation_config"] = parsed["generation_config.json"]
        return CheckedUpload(blobs={"weights": weights, "tokenizer": tokenizer_blob}, recipe=head.recipe,
                             recipe_config=recipe_config, architecture=recipe_config["architecture"], extra=extra,
                             kind=head.kind, manifest_config={"hf_config": hf_config, "tied_weights": tied})


# ---------------------------------------------------------------- the archive's files


def _check_names(files: Mapping[str, bytes]) -> None:
    for name in sorted(files):
        lower = name.lower()
        if lower.endswith(PICKLE_SUFFIXES):
            raise UploadRefused(f"archive member {name!r}: pickle-based weights are never loaded (they can run "
                                "code); save the model with safetensors (save_pretrained writes model.safetensors)",
                                code="unsafe_checkpoint")
        if lower.endswith(CODE_SUFFIXES):
            raise UploadRefused(f"archive member {name!r} is code; an upload holds no code (only architectures "
                                "the installed transformers knows are built, never remote code)", code="code_in_archive")
        if "/" in name:
            raise UploadRefused(f"archive member {name!r} is in a subfolder; archive one model folder whose files "
                                "sit at its top", code="unexpected_file")
        known = (name in JSON_FILES or name in TEXT_FILES or name in BINARY_TOKENIZER_FILES or name == WEIGHTS_FILE
                 or WEIGHTS_SHARD.match(name))
        if not known:
            raise UploadRefused(f"archive member {name!r} is not a file of a transformers model folder; allowed: "
                                f"{CONFIG_FILE}, {WEIGHTS_FILE} (or model-NNNNN-of-NNNNN.safetensors with "
                                f"{WEIGHTS_INDEX}), generation_config.json and the tokenizer's files "
                                f"({', '.join(sorted(TOKENIZER_FILES))})", code="unexpected_file")


def _resembles(content: bytes) -> str:
    from workers.file_formats import foreign_format

    sentence = foreign_format(content)
    return f" ({sentence})" if sentence else ""


def _parsed(name: str, content: bytes) -> Any:
    """A JSON file's value, a text file's text; None for weights and binary tokenizer files
    (parsed later by their own checks). Refuses what does not parse as its name says."""
    if name in JSON_FILES or name in TEXT_FILES:
        if len(content) > TEXT_FILE_BYTES:
            raise UploadRefused(f"archive member {name!r} is larger than {TEXT_FILE_BYTES:,} bytes",
                                code="archive_too_large")
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError:
            raise UploadRefused(f"archive member {name!r} is not UTF-8 text{_resembles(content)}",
                                code="unsafe_checkpoint") from None
        if name in TEXT_FILES:
            if "\x00" in text:
                raise UploadRefused(f"archive member {name!r} is not a text file", code="unsafe_checkpoint")
            return text
        return _strict_json(name, text, content)
    if name in BINARY_TOKENIZER_FILES and _resembles(content):
        raise UploadRefused(f"archive member {name!r} is not a tokenizer model{_resembles(content)}",
                            code="unsafe_checkpoint")
    return None


def _strict_json(name: str, text: str, content: bytes) -> Any:
    from foundation.strict_json import fields_once

    def refuse_constant(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    try:
        return json.loads(text, object_pairs_hook=fields_once, parse_constant=refuse_constant)
    except ValueError as exc:
        raise UploadRefused(f"archive member {name!r} is not valid JSON ({exc}){_resembles(content)}",
                            code="invalid_config") from None


def _check_settings(parsed: Mapping[str, Any]) -> None:
    for name in SETTINGS_FILES:
        value = parsed.get(name)
        if name in parsed and not isinstance(value, dict):
            raise UploadRefused(f"{name} must be a JSON object", code="invalid_config")
        remote = remote_code_keys(value or {})
        if remote:
            raise UploadRefused(f"{name} asks for code of its own ({', '.join(remote)}): remote code "
                                "(trust_remote_code / auto_map) is never run; only architectures the installed "
                                "transformers knows are taken", code="remote_code")
    if "chat_template" in (parsed.get("tokenizer_config.json") or {}):
        raise UploadRefused("tokenizer_config.json holds a chat template, which is code (Jinja) the platform does "
                            "not run; remove 'chat_template' before uploading", code="code_in_archive")


def _check_model_type(hf_config: Mapping[str, Any], architecture: Mapping[str, Any]) -> None:
    import transformers

    model_type = hf_config.get("model_type")
    if not isinstance(model_type, str) or model_type not in transformers.CONFIG_MAPPING:
        raise UploadRefused(f"config.json's model_type {model_type!r} is not an architecture the installed "
                            f"transformers {transformers.__version__} knows", code="unknown_architecture")
    pinned = (architecture.get("config") or {}).get("model_type")
    if pinned and pinned != model_type:
        raise UploadRefused(f"config.json's model_type is {model_type!r}; the model was registered for {pinned!r}",
                            code="architecture_mismatch")


def _model_on_meta(hf_config: Mapping[str, Any], head: Head) -> Any:
    from workers.training.transformers_models import build_transformers_model

    try:
        return build_transformers_model(hf_config, head.transformers_head, meta=True)
    except Exception as exc:  # whatever transformers raises for a config it cannot build
        raise UploadRefused(f"transformers cannot build {head.what} from this config.json "
                            f"(model_type {hf_config.get('model_type')!r}): {exc}", code="architecture_mismatch") from None


# ---------------------------------------------------------------- weights


def _weight_files(files: Mapping[str, bytes], parsed: Mapping[str, Any]) -> dict[str, bytes]:
    """The safetensors files (one, or the shards the index names), each named once."""
    shards = sorted(name for name in files if WEIGHTS_SHARD.match(name))
    if WEIGHTS_FILE in files:
        if shards or WEIGHTS_INDEX in files:
            raise UploadRefused(f"the archive holds {WEIGHTS_FILE} and sharded weights; keep one of them",
                                code="architecture_mismatch")
        return {WEIGHTS_FILE: files[WEIGHTS_FILE]}
    if WEIGHTS_INDEX not in files:
        raise UploadRefused(f"the archive holds no safetensors weights ({WEIGHTS_FILE}, or shards with "
                            f"{WEIGHTS_INDEX})", code="missing_weights")
    weight_map = (parsed[WEIGHTS_INDEX] or {}).get("weight_map") if isinstance(parsed[WEIGHTS_INDEX], dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise UploadRefused(f"{WEIGHTS_INDEX} has no weight_map (tensor name -> shard file)", code="invalid_config")
    named = set(weight_map.values())
    if named != set(shards):
        raise UploadRefused(f"{WEIGHTS_INDEX} names the shards {sorted(named)[:4]}, the archive holds "
                            f"{shards[:4]}", code="architecture_mismatch")
    return {name: files[name] for name in shards}


def _fitting_weights(files: Mapping[str, bytes], parsed: Mapping[str, Any], model: Any) -> tuple[dict, list[str]]:
    """The uploaded tensors when their names, shapes and dtypes are exactly the model's (a tied
    duplicate may be left out, as save_pretrained does); and the names left out that way."""
    from workers.artifacts import (
        UnsafeArtifactError,
        check_safetensors_bytes,
        safetensors_from_bytes,
    )
    from workers.training.transformers_models import tied_weights

    expected = {name: tensor for name, tensor in model.state_dict().items()}
    tied_to = tied_weights(model)
    tied = set(tied_to)
    index = parsed.get(WEIGHTS_INDEX) or {}
    tables, owner = {}, {}
    for file_name, content in _weight_files(files, parsed).items():
        try:
            table = check_safetensors_bytes(content, source=f"archive member {file_name!r}")
        except UnsafeArtifactError as exc:
            raise UploadRefused(str(exc), code="unsafe_checkpoint") from None
        for name, info in table.items():
            if name in tables:
                raise UploadRefused(f"tensor {name!r} is in {owner[name]!r} and in {file_name!r}",
                                    code="architecture_mismatch")
            if index and index["weight_map"].get(name) != file_name:
                raise UploadRefused(f"tensor {name!r} is in {file_name!r}, but {WEIGHTS_INDEX} puts it in "
                                    f"{index['weight_map'].get(name)!r}", code="architecture_mismatch")
            tables[name], owner[name] = info, file_name
    missing = sorted(set(expected) - set(tables) - tied)
    unexpected = sorted(set(tables) - set(expected))
    wrong_shape = sorted(n for n in set(expected) & set(tables) if tuple(expected[n].shape) != tables[n].shape)
    wrong_dtype = sorted(n for n in set(expected) & set(tables)
                         if (tables[n].dtype in FLOAT_DTYPES) != expected[n].is_floating_point())
    if missing or unexpected or wrong_shape or wrong_dtype:
        shapes = ", ".join(f"{n} {list(tables[n].shape)} where the config gives {list(expected[n].shape)}"
                           for n in wrong_shape[:3])
        raise UploadRefused(f"the weights do not fit config.json ({model.__class__.__name__}): "
                            f"missing {missing[:3]}{' ...' if len(missing) > 3 else ''}, "
                            f"unexpected {unexpected[:3]}{' ...' if len(unexpected) > 3 else ''}, "
                            f"wrong shape [{shapes}], wrong dtype {wrong_dtype[:3]}", code="architecture_mismatch")
    tensors: dict[str, Any] = {}
    for file_name in sorted(set(owner.values())):
        try:
            tensors.update(safetensors_from_bytes(files[file_name], source=f"archive member {file_name!r}"))
        except UnsafeArtifactError as exc:
            raise UploadRefused(str(exc), code="unsafe_checkpoint") from None
    # A tied duplicate given anyway must be the tensor it is tied to; it is stored once.
    for name in sorted(tied & set(tensors)):
        source = tied_to[name]
        if source in tensors and not tensors[name].equal(tensors[source]):
            raise UploadRefused(f"{name!r} is tied to {source!r} in this architecture but holds other values",
                                code="architecture_mismatch")
        del tensors[name]
    return tensors, sorted(tied)


# ---------------------------------------------------------------- tokenizer and recipe


def _checked_tokenizer(files: Mapping[str, bytes], config: Any) -> tuple[dict, Any]:
    """The tokenizer's files as tensors (what is stored) and the tokenizer they load as."""
    from workers.training.lm import tokenizer_from_tensors, tokenizer_tensors

    present = {name: files[name] for name in sorted(TOKENIZER_FILES & set(files))}
    if not present.keys() - {"special_tokens_map.json", "tokenizer_config.json"}:
        raise UploadRefused("the archive holds no tokenizer (tokenizer.json, or vocabulary files): the platform "
                            "reads the training texts with the model's own tokenizer; save it with the model "
                            "(tokenizer.save_pretrained)", code="missing_tokenizer")
    import torch

    tensors = {name: torch.frombuffer(bytearray(content), dtype=torch.uint8).clone() if content
               else torch.zeros(0, dtype=torch.uint8) for name, content in present.items()}
    try:
        tokenizer = tokenizer_from_tensors(tensors)
    except Exception as exc:  # whatever transformers raises for files it cannot read
        raise UploadRefused(f"transformers cannot load the tokenizer offline without remote code: "
                            f"{type(exc).__name__}: {exc}", code="invalid_tokenizer") from None
    vocabulary = getattr(config, "vocab_size", None)
    if isinstance(vocabulary, int) and len(tokenizer) > vocabulary:
        raise UploadRefused(f"the tokenizer has {len(tokenizer)} tokens; the model's vocabulary holds {vocabulary}",
                            code="invalid_tokenizer")
    return tokenizer_tensors(tokenizer), tokenizer


def _recipe_config(head: Head, run_config: Mapping[str, Any], architecture: Mapping[str, Any], *,
                   hf_config: Mapping[str, Any], tokenizer_blob: Mapping[str, Any], model: Any) -> dict:
    """The family's recipe with what the training run recorded that the recipe knows (the base,
    the uploaded config and tokenizer are the upload's, not the run's). ConfigError (a
    ValueError) for a recorded value the recipe refuses or the model cannot take (more tokens
    than its positions, LoRA targets it does not have)."""
    import dataclasses
    import hashlib

    from workers.artifacts import tensors_to_bytes
    from workers.training import RECIPES
    from workers.training.transformers_models import linear_leaf_names, model_positions

    positions = model_positions(model.config)

    config_class = RECIPES.get(head.recipe).config_class
    tokenizer_sha256 = hashlib.sha256(tensors_to_bytes(tokenizer_blob)).hexdigest()  # its blob's name in the store
    decided = head.upload_fields(hf_config, tokenizer_sha256, architecture)
    # The fields the upload decides are its own, whatever the run recorded under those names.
    known = {f.name for f in dataclasses.fields(config_class)} - set(decided) - {"architecture"}
    config = {k: v for k, v in dict(run_config or {}).items() if k in known}
    if "max_length" not in config:
        config["max_length"] = min(DEFAULT_MAX_LENGTH, positions or DEFAULT_MAX_LENGTH)
    elif positions and int(config["max_length"]) > positions:
        raise ValueError(f"max_length {config['max_length']} is more than the model's {positions} positions")
    targets = config.get("target_modules")
    if isinstance(targets, list) and set(targets) - linear_leaf_names(model):
        raise ValueError(f"target_modules {sorted(set(targets) - linear_leaf_names(model))} are not linear layers of "
                         f"this model; it has {', '.join(sorted(linear_leaf_names(model)))}")
    config.update(decided)
    return config_class.from_dict(config).to_dict()  # refuses bad values now, not in the first job
