"""The platform's own architectures (``mlp``, ``small_cnn``, ``text_bag``) trained elsewhere: the
upload is one safetensors file whose tensors must fit the registered architecture exactly."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from workers.model_families.base import CheckedUpload, ModelFamily, UploadRefused


def recipe_config_from_run(run_config: Mapping[str, Any], architecture: Mapping[str, Any],
                           config_class) -> dict[str, Any]:
    """The family's recipe configuration: what ``config_class`` knows of the imported run's
    recorded configuration, with the registered architecture (shadow models and an exact
    retrain then use the same training procedure)."""
    import dataclasses

    known = {f.name for f in dataclasses.fields(config_class)}
    config = {k: v for k, v in dict(run_config or {}).items() if k in known}
    config["architecture"] = dict(architecture)
    config_class.from_dict(config)  # refuses bad values now, not in the first job
    return config


def safetensors_fitting(data: bytes, expected: Mapping[str, tuple[int, ...]], *, what: str):
    """The tensors of a safetensors upload whose names and shapes are exactly ``expected``."""
    from workers.artifacts import (
        UnsafeArtifactError,
        check_safetensors_bytes,
        safetensors_from_bytes,
    )

    try:
        table = check_safetensors_bytes(data, source="uploaded checkpoint")
    except UnsafeArtifactError as exc:
        raise UploadRefused(str(exc), code="unsafe_checkpoint") from None
    got = {name: info.shape for name, info in table.items()}
    if dict(expected) != got:
        missing = sorted(set(expected) - set(got))[:3]
        unexpected = sorted(set(got) - set(expected))[:3]
        wrong = sorted(n for n in set(expected) & set(got) if tuple(expected[n]) != tuple(got[n]))[:3]
        raise UploadRefused(f"the weights do not fit {what}: missing {missing}, unexpected {unexpected}, "
                            f"wrong shape {wrong}", code="architecture_mismatch")
    return safetensors_from_bytes(data, source="uploaded checkpoint")


class Builtin(ModelFamily, name="builtin"):
    architectures = ("mlp", "small_cnn", "text_bag")

    def check_upload(self, data: bytes, *, architecture: Mapping[str, Any], task: str,
                     run_config: Mapping[str, Any]) -> CheckedUpload:
        from workers.training.architectures import build_model
        from workers.training.base import RecipeConfig

        expected = {name: tuple(t.shape) for name, t in build_model(architecture).state_dict().items()}
        tensors = safetensors_fitting(data, expected, what=f"architecture {architecture.get('name')!r}")
        return CheckedUpload(blobs={"weights": tensors}, recipe="plain",
                             recipe_config=recipe_config_from_run(run_config, architecture, RecipeConfig),
                             architecture=dict(architecture))
