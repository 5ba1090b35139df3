"""The torch-free recipe catalogue the web side checks training requests against: it declares the
registered recipes, what it says of them is true of their code, and its refusals name the recipe,
the model's family and the recipes that would fit."""

from __future__ import annotations

import pytest

from foundation.errors import ValidationFailed
from workers.training_catalogue import (
    NO_ARCHITECTURE,
    RECIPE_SPECS,
    TORCH_MODULES,
    training_recipe_config,
)

MLP = {"name": "mlp", "config": {"in_features": 6, "num_classes": 2, "hidden": [8], "input_norm": "none"}}
MLP_BATCHNORM = {"name": "mlp", "config": {"in_features": 6, "num_classes": 2, "input_norm": "batchnorm"}}
SMALL_CNN = {"name": "small_cnn", "config": {}}
SKLEARN = {"name": "sklearn", "config": {"in_features": 6, "num_classes": 2}}
TRANSFORMERS = {"name": "transformers", "config": {}}
BUILT_BERT = {"name": "transformers", "config": {"hf_config": {"model_type": "bert", "vocab_size": 300,
                                                               "num_labels": 2}, "max_length": 64}}
C, LM = "classification", "language_modeling"

# recipe, task, registered architecture, recipe_config -> None (fits) or (field, words the refusal holds)
CASES = [
    ("plain", C, MLP, {"epochs": 1}, None),
    ("plain", C, {}, {"architecture": MLP}, None),
    ("dp", C, MLP, {}, None),
    ("sklearn_sisa", C, SKLEARN, {"estimator": "e30="}, None),
    ("hf_sequence_classifier", C, TRANSFORMERS, {}, None),
    ("hf_sequence_classifier", C, {}, {}, None),
    *[(recipe, C, BUILT_BERT, {}, None) for recipe in ("plain", "sisa", "s3t", "dp")],
    ("hf_sequence_classifier", C, BUILT_BERT, {}, ("recipe", ["family huggingface_built",
                                                              "fit it: dp, keep_out_transfer, plain, s3t, sisa"])),
    ("sisa", LM, {}, {}, ("recipe", ["next tokens", "fit it: lora_causal_lm"])),
    ("lora_causal_lm", LM, {}, {"base_model": "tiny_gpt2"}, None),
    ("lora_causal_lm", LM, TRANSFORMERS, {"base_model": "transformers_config"}, None),
    ("nope", C, MLP, {}, ("recipe", ["unknown training recipe 'nope'", "plain", "sklearn_sisa"])),
    ("plain", C, MLP, [1], ("recipe_config", ["must be an object"])),
    ("s3t", C, SKLEARN, {}, ("recipe", ["s3t recipe", "scikit-learn estimator (family sklearn)",
                                        "builtin or entry_point", "fit it: sklearn, sklearn_sisa"])),
    ("sisa", C, TRANSFORMERS, {}, ("recipe", ["sisa recipe", "family huggingface", '"hf_config"',
                                              "fit it: hf_sequence_classifier"])),
    ("sklearn", C, MLP, {}, ("recipe", ["sklearn recipe", "family builtin",
                                        "fit it: dp, keep_out_transfer, plain, s3t, sisa"])),
    ("s3t", C, MLP_BATCHNORM, {}, ("recipe", ["s3t recipe needs a module without BatchNorm",
                                              "fit it: keep_out_transfer, plain, sisa"])),
    ("dp", C, {}, {"architecture": MLP_BATCHNORM}, ("recipe", ["dp recipe needs a module without BatchNorm"])),
    ("lora_causal_lm", C, TRANSFORMERS, {}, ("recipe", ["trains language_modeling models", "registered for "
                                                         "classification", "fit it: hf_sequence_classifier"])),
    ("hf_sequence_classifier", LM, {}, {}, ("recipe", ["trains classification models", "fit it: lora_causal_lm"])),
    ("plain", C, {}, {}, ("recipe", ["plain recipe", "registered without an architecture",
                                     "fit it: hf_sequence_classifier"])),
    ("plain", C, MLP, {"architecture": SMALL_CNN}, ("recipe_config.architecture", ["differs", "leave it out"])),
    ("plain", C, {}, {"architecture": {"name": "resnet"}},
     ("recipe_config.architecture", ["no model family takes architecture 'resnet'"])),
    ("plain", C, {}, {"architecture": "mlp"}, ("recipe_config.architecture", ['{"name": ..., "config": {...}}'])),
    ("plain", C, {"name": "entry_point", "config": {"entry_point": "no-such-net", "config": {}}}, {},
     ("model", ["entry point 'no-such-net' is not installed"])),
]


@pytest.mark.parametrize(("recipe", "task", "architecture", "recipe_config", "refused"), CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_which_recipe_trains_which_model(recipe, task, architecture, recipe_config, refused):
    if refused is None:
        config = training_recipe_config(recipe=recipe, task=task, architecture=architecture,
                                        recipe_config=recipe_config)
        if architecture and RECIPE_SPECS.get(recipe).model_architecture:
            assert config["architecture"] == architecture  # the registered one is filled in
        return
    field, words = refused
    with pytest.raises(ValidationFailed) as caught:
        training_recipe_config(recipe=recipe, task=task, architecture=architecture, recipe_config=recipe_config)
    assert caught.value.field == field
    for text in words:
        assert text in caught.value.message


def test_the_catalogue_declares_every_registered_recipe_and_only_those():
    from workers.training import RECIPES

    assert RECIPE_SPECS.names() == RECIPES.names()


def test_the_torch_recipes_build_what_the_builtin_and_entry_point_families_register():
    """plain, sisa, s3t, dp and keep_out_transfer build their module with build_model: the architectures it builds are
    exactly those of the two PyTorch families and the transformers classifiers the platform builds
    from an hf_config (a scikit-learn spec is not one)."""
    from workers.model_families import FAMILIES, load_families
    from workers.training.architectures import ARCHITECTURES
    from workers.training_catalogue import BUILT_TRANSFORMERS

    load_families()
    torch_architectures = {a for family in TORCH_MODULES if family != BUILT_TRANSFORMERS
                           for a in FAMILIES.get(family).architectures}
    assert set(ARCHITECTURES.names()) == torch_architectures | {"transformers"}
    declared_torch = {name for name in RECIPE_SPECS if set(RECIPE_SPECS.get(name).families) == set(TORCH_MODULES)}
    assert declared_torch == {"plain", "sisa", "s3t", "dp", "keep_out_transfer"}


@pytest.mark.parametrize("name", sorted(RECIPE_SPECS))
def test_what_a_recipe_does_without_an_architecture_is_what_it_declares(name):
    """A recipe that declares models without an architecture builds one of its families' by default
    (lora_causal_lm fixes its own); the others refuse a configuration without one."""
    from workers.model_families import family_of
    from workers.training import RECIPES
    from workers.unlearning.base import ConfigError

    spec, config_class = RECIPE_SPECS.get(name), RECIPES.get(name).config_class
    if NO_ARCHITECTURE not in spec.families:
        with pytest.raises(ConfigError, match="architecture"):
            config_class.from_dict({})
    elif spec.model_architecture:
        assert family_of(config_class().architecture).name in spec.families
    else:
        assert config_class().architecture == {"name": "causal_lm", "config": {}}


@pytest.mark.parametrize("spec", [MLP, MLP_BATCHNORM, SMALL_CNN, {"name": "text_bag", "config": {}}])
def test_batchnorm_is_known_without_building_exactly_where_building_shows_it(spec):
    from workers.training.architectures import build_model, has_running_stats
    from workers.training_catalogue import running_statistics_known

    assert running_statistics_known(spec) == has_running_stats(build_model(spec))


@pytest.mark.parametrize("name", ["plain", "sisa", "s3t", "dp"])
def test_the_recipes_declared_without_batchnorm_are_those_that_refuse_it(name):
    from tests.workers.training.data import blobs
    from workers.training import RECIPES
    from workers.unlearning.base import ConfigError

    recipe = RECIPES.get(name)({"architecture": MLP_BATCHNORM, "epochs": 1, "batch_size": 8})
    if RECIPE_SPECS.get(name).no_running_statistics:
        with pytest.raises(ConfigError, match="BatchNorm"):
            recipe.train(blobs(16))
    else:
        assert len(recipe.train(blobs(16)).membership) == 16
