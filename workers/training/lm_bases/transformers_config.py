"""Any causal LM the installed transformers builds from a config (``hf_config``, the
``config.json`` of an uploaded model), randomly initialised from ``seed``, with the tokenizer
stored in the artifact store (``tokenizer_sha256``: the blob of the uploaded tokenizer files,
which every version and shadow model of that model stores byte for byte again, so it stays as long
as one of them does). This is the training procedure the Hugging Face family records for an
uploaded causal LM: shadow models and an exact retrain start here. Nothing is fetched from a hub
and no remote code runs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from workers.training.lm_bases import LMBase
from workers.training.transformers_models import check_transformers_options


class TransformersConfig(LMBase, name="transformers_config"):
    options = frozenset({"hf_config", "tokenizer_sha256", "seed"})

    def validate(self, options: Mapping[str, Any], *, owner: str) -> None:
        super().validate(options, owner=owner)
        check_transformers_options(options, owner=f"{owner}.base_config")

    def build(self, options: Mapping[str, Any]) -> tuple[Any, Any]:
        from workers.training.transformers_models import build_transformers_model, stored_tokenizer

        tokenizer = stored_tokenizer(options["tokenizer_sha256"])
        model = build_transformers_model(options["hf_config"], "causal_lm", seed=int(options.get("seed", 0)))
        return model.eval(), tokenizer
