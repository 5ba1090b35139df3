"""The pretrained SmolLM2-135M-Instruct (see :func:`workers.language_models.load_smollm2`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from workers.training.lm_bases import LMBase


class SmolLM2(LMBase, name="smollm2"):
    def build(self, options: Mapping[str, Any]) -> tuple[Any, Any]:
        from workers.language_models import load_smollm2

        return load_smollm2()
