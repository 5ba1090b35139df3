"""Where a ``lora_causal_lm`` run starts: its base model and tokenizer, named by the recipe's
``base_model`` and configured by its ``base_config``.

One module per base, registered by naming it in the class statement
(``class TinyGPT2(LMBase, name="tiny_gpt2")``): ``smollm2`` (the pretrained SmolLM2-135M-Instruct),
``tiny_gpt2`` (a random two-layer GPT-2 with a byte tokenizer, for tests) and
``transformers_config`` (any causal LM the installed transformers builds from a config, randomly
initialised, with a stored tokenizer: the recipe of a causal LM uploaded through the Hugging Face
model family). A base never saw the dataset's records, which is also why the audit may compare
against it. Modules import torch and transformers only inside their functions: a config is
validated in the web process too (at upload).
"""

from __future__ import annotations

import importlib
import pkgutil
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

from foundation.registry import Registry
from workers.unlearning.base import ConfigError


class LMBase(ABC):
    """One kind of starting point. ``options``: the keys ``base_config`` may hold."""

    name: ClassVar[str]
    options: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, *, name: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if name is not None:
            cls.name = name
            LM_BASES.register(name)(cls)

    def validate(self, options: Mapping[str, Any], *, owner: str) -> None:
        """Raise ConfigError naming what in ``options`` this base does not take."""
        unknown = sorted(set(options) - self.options)
        if unknown:
            raise ConfigError(f"{owner}.base_config: unknown option(s) {', '.join(unknown)} for "
                              f"{self.name}; allowed: {', '.join(sorted(self.options)) or 'none'}")

    @abstractmethod
    def build(self, options: Mapping[str, Any]) -> tuple[Any, Any]:
        """The untrained starting point: ``(model in eval mode, tokenizer)``."""


LM_BASES: Registry[type[LMBase]] = Registry("language-model base")


def lm_base(name: str) -> LMBase:
    """The base registered as ``name`` (its module imported); ValueError naming the known ones."""
    import workers.training.lm_bases as package

    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")
    return LM_BASES.get(name)()
