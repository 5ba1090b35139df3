"""A randomly initialised GPT-2 with a byte tokenizer, built in memory (tests need no download);
``base_config`` takes the keyword arguments of :func:`workers.language_models.tiny_gpt2`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from workers.training.lm_bases import LMBase


class TinyGPT2(LMBase, name="tiny_gpt2"):
    options = frozenset({"seed", "n_layer", "n_embd", "n_head", "n_positions"})

    def build(self, options: Mapping[str, Any]) -> tuple[Any, Any]:
        from workers.language_models import byte_tokenizer, tiny_gpt2

        tokenizer = byte_tokenizer()
        return tiny_gpt2(len(tokenizer), **options), tokenizer
