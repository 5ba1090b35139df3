"""Hugging Face transformers models built from a config, never from remote code: what the
``transformers_config`` LM base, the ``hf_sequence_classifier`` recipe, the ``transformers``
architecture (a classifier the platform builds for plain, sisa, s3t and dp) and the Hugging Face
model family share.

A model is rebuilt from its ``config.json`` (a JSON object, ``hf_config``) with the ``Auto*``
class of its head (:data:`HEADS`) and ``from_config`` (float32, random weights: the stored ones are
loaded over them), so only architectures the installed transformers knows can be built, and a
config that names code of its own (``auto_map``, ``trust_remote_code``) is refused before anything
is built. Torch and transformers are imported inside the functions: the web process validates
recipe configs with :func:`check_transformers_options`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from workers.model_families.huggingface import remote_code_keys
from workers.unlearning.base import ConfigError

# The head of a model -> the transformers Auto class that builds it from a config.
HEADS = {"causal_lm": "AutoModelForCausalLM", "sequence_classification": "AutoModelForSequenceClassification"}
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def check_transformers_options(options: Mapping[str, Any], *, owner: str) -> None:
    """``options["hf_config"]`` is a config object naming its ``model_type`` and no code of its
    own; ``options["tokenizer_sha256"]`` names a stored blob. Raises ConfigError naming the field."""
    hf_config = options.get("hf_config")
    if not isinstance(hf_config, Mapping) or not isinstance(hf_config.get("model_type"), str):
        raise ConfigError(f"{owner}.hf_config must be a transformers config (an object with its model_type)")
    remote = remote_code_keys(hf_config)
    if remote:
        raise ConfigError(f"{owner}.hf_config asks for code of its own ({', '.join(remote)}); "
                          "only architectures the installed transformers knows are built")
    if not isinstance(options.get("tokenizer_sha256"), str) or not _SHA256.match(options["tokenizer_sha256"]):
        raise ConfigError(f"{owner}.tokenizer_sha256 must be the sha256 of the stored tokenizer blob")


def transformers_config(hf_config: Mapping[str, Any]) -> Any:
    """The ``PretrainedConfig`` of a ``config.json`` object. ValueError for an unknown
    ``model_type`` or a config that asks for code of its own."""
    from transformers import AutoConfig

    remote = remote_code_keys(hf_config)
    if remote:
        raise ValueError(f"the config asks for code of its own ({', '.join(remote)})")
    values = dict(hf_config)
    model_type = values.pop("model_type", None)
    return AutoConfig.for_model(model_type, **values)


def build_transformers_model(hf_config: Mapping[str, Any], head: str, *, seed: int | None = None,
                             meta: bool = False) -> Any:
    """A freshly initialised float32 model of ``head`` (a key of :data:`HEADS`) for ``hf_config``.
    ``seed``: its random initialisation (the global RNG is left as it was); ``meta``: built on the
    meta device, shapes without storage (checking an upload allocates nothing). ValueError when
    transformers has no such model for the config's ``model_type``."""
    import torch
    import transformers

    auto_class = getattr(transformers, HEADS[head])
    config = transformers_config(hf_config)
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        if meta:
            with torch.device("meta"):
                return auto_class.from_config(config, dtype=torch.float32, trust_remote_code=False)
        return auto_class.from_config(config, dtype=torch.float32, trust_remote_code=False)


def model_positions(config: Any) -> int | None:
    """How many tokens a model's config lets it read at once (``max_position_embeddings``, GPT-2's
    ``n_positions``), or None when it names no limit (rotary models without one)."""
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def linear_leaf_names(model: Any) -> set[str]:
    """The last path components of the model's Linear and transformers Conv1D layers: what a LoRA
    ``target_modules`` entry may name."""
    from torch import nn
    from transformers.pytorch_utils import Conv1D

    return {path.rsplit(".", 1)[-1] for path, module in model.named_modules()
            if path and isinstance(module, (nn.Linear, Conv1D))}


def tied_weights(model: Any) -> dict[str, str]:
    """``{tied name: the name it is tied to}`` (an output head tied to the input embeddings):
    ``save_pretrained`` writes the tensor under the second name only, and ``tie_weights`` makes the
    first one that tensor again. From the model's own declaration where transformers gives one,
    else from parameters that are the same object."""
    declared = getattr(model, "all_tied_weights_keys", None)
    if isinstance(declared, Mapping):
        return {str(target): str(source) for target, source in declared.items()}
    first: dict[int, str] = {}
    tied: dict[str, str] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        if id(parameter) in first:
            tied[name] = first[id(parameter)]
        else:
            first[id(parameter)] = name
    return tied


def transformers_model_from_state(hf_config: Mapping[str, Any], head: str, state: Mapping[str, Any],
                                  tied: Any = ()) -> Any:
    """Rebuild a stored model (eval mode): ``from_config``, then the stored weights; ``tied``: the
    names stored once under another name. Raises ValueError when the weights do not fit."""
    model = build_transformers_model(hf_config, head)
    missing, unexpected = model.load_state_dict(dict(state), strict=False)
    untied = sorted(set(missing) - set(tied))
    if unexpected or untied:
        raise ValueError(f"stored weights do not fit the stored config: missing {untied[:3]}, "
                         f"unexpected {sorted(unexpected)[:3]}")
    model.tie_weights()
    return model.eval()


def stored_tokenizer(sha256: str) -> Any:
    """The tokenizer whose files are the stored blob ``sha256`` (see workers.training.lm)."""
    from workers.training.lm import tokenizer_from_tensors
    from workers.training.storage import recipe_store

    return tokenizer_from_tensors(recipe_store().load_blob(sha256))
