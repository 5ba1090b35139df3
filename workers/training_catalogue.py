"""Every training recipe the platform knows, declared once without importing it: which models it
trains (their task and model family), so that the web side refuses a training request that cannot
work before a GPU worker takes it, without importing torch (the recipe modules do).

A model's family is the one its registered architecture names (workers.model_families.family_of);
a model registered without one takes the architecture its recipe configuration gives, and where
there is none either, it is described by the recipe's configuration alone (the platform's own
language models: lora_causal_lm's tiny_gpt2 and smollm2 bases). The recipe checks the rest of its
configuration (its ``config_class``) in the worker, which imports it: a bad value fails the job
with the field named. tests/workers/test_training_catalogue.py holds the declarations and
workers.training.RECIPES equal, and each declared refusal true of the recipe's code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from foundation.errors import ValidationFailed
from foundation.registry import Registry
from workers.unlearning.catalogue import METHOD_SPECS, TRAINING_RUN, exact_method_for

CLASSIFICATION = "classification"
LANGUAGE_MODELING = "language_modeling"
REGRESSION = "regression"
# The family of a model registered without an architecture and given none by its recipe configuration.
NO_ARCHITECTURE = "none"
# A transformers classifier the platform builds itself from an hf_config, reading byte tokens
# (workers.model_families.huggingface.platform_built): the generic torch recipes train it.
BUILT_TRANSFORMERS = "huggingface_built"

# What a model of each family is, in the words a refusal uses (keys: workers.model_families.FAMILIES).
FAMILY_WORDS = {
    "builtin": "one of the platform's own PyTorch architectures (mlp, small_cnn, text_bag)",
    "entry_point": "a PyTorch module from the company's own package",
    "huggingface": "a Hugging Face transformers model whose config.json comes with its upload or its recipe "
                   "configuration (the platform does not build it from an hf_config)",
    BUILT_TRANSFORMERS: "a Hugging Face transformers sequence classifier the platform builds from its hf_config",
    "sklearn": "a scikit-learn estimator",
    NO_ARCHITECTURE: "a model registered without an architecture, and its recipe configuration gives none",
}


@dataclass(frozen=True)
class RecipeSpec:
    """What the platform knows of a recipe before importing it. ``families``: the model families
    whose models it trains (:data:`NO_ARCHITECTURE`: models its configuration alone describes);
    ``task``: the task of those models; ``trains``: what it trains, in words. ``model_architecture``:
    its configuration's ``architecture`` is the model's (the registered one is filled in); otherwise
    the recipe fixes its own. ``no_running_statistics``: it refuses modules with BatchNorm.
    ``derives``: the recipe derives a child from a parent version (a training request names it,
    ``parent_version``), and the run records this lineage edge kind (models_registry LineageKind).
    ``rebuilds_model_from``: what the recipe's storage rebuilds the served model from when it does
    not store the model's weights as they stand ("": it stores them); weights an approximate method
    changed would then be lost when the new version is saved, so such methods are refused
    (:func:`changed_weights_refusal`)."""

    name: str
    task: str
    families: tuple[str, ...]
    trains: str
    model_architecture: bool = True
    no_running_statistics: bool = False
    derives: str = ""
    rebuilds_model_from: str = ""


RECIPE_SPECS: Registry[RecipeSpec] = Registry("training recipe")

TORCH_MODULES = ("builtin", "entry_point", BUILT_TRANSFORMERS)
# One line per recipe (workers/training/<module>.py registers its class under the same name).
for _spec in (
    RecipeSpec("plain", CLASSIFICATION, TORCH_MODULES, "one PyTorch module built from the architecture"),
    RecipeSpec("plain_regression", REGRESSION, ("builtin", "entry_point"),
               "one PyTorch module built from the architecture, with one real-valued output per record, trained "
               "with mean squared error"),
    RecipeSpec("sisa", CLASSIFICATION, TORCH_MODULES,
               "a SISA ensemble (shards and slices) of PyTorch modules built from the architecture",
               rebuilds_model_from="the shard checkpoints training kept (each shard's last slice)"),
    RecipeSpec("s3t", CLASSIFICATION, TORCH_MODULES,
               "LoRA adapters, one per slice, over a frozen PyTorch module built from the architecture",
               no_running_statistics=True,
               rebuilds_model_from="the frozen base weights and the LoRA adapters training kept"),
    RecipeSpec("dp", CLASSIFICATION, TORCH_MODULES,
               "one PyTorch module trained with DP-SGD (Opacus), built from the architecture",
               no_running_statistics=True),
    RecipeSpec("lora_causal_lm", LANGUAGE_MODELING, ("huggingface", NO_ARCHITECTURE),
               "a transformers causal language model (its base_model) fine-tuned through LoRA",
               model_architecture=False),
    RecipeSpec("hf_sequence_classifier", CLASSIFICATION, ("huggingface", NO_ARCHITECTURE),
               "a transformers sequence classifier built from its hf_config"),
    RecipeSpec("sklearn", CLASSIFICATION, ("sklearn",), "one scikit-learn estimator fitted on every record"),
    RecipeSpec("sklearn_sisa", CLASSIFICATION, ("sklearn",), "a SISA ensemble of scikit-learn estimators, one per shard"),
    RecipeSpec("keep_out_transfer", CLASSIFICATION, TORCH_MODULES,
               "one PyTorch module built from the architecture, trained on the static records and the auxiliary "
               "examples the non-static records select (never on a non-static record)"),
    RecipeSpec("distill", CLASSIFICATION, ("builtin", "entry_point"),
               "a PyTorch module built from the architecture, trained on a transfer set to match its parent "
               "version's softened outputs", derives="distilled_from"),
    RecipeSpec("finetune", CLASSIFICATION, ("builtin", "entry_point"),
               "its parent version's PyTorch module (the same architecture) trained further on the dataset",
               derives="fine_tuned_from"),
):
    RECIPE_SPECS.register(_spec.name)(_spec)


def changed_weights_refusal(*, method: str, recipe: str) -> str | None:
    """Why unlearning method ``method`` cannot unlearn a model stored by training recipe ``recipe``
    (None: it can; an exact method rebuilds the model through the recipe): any other method changes
    the served model's weights, and a recipe that rebuilds its model from what training
    kept (``rebuilds_model_from``) would drop that change when the new version is saved, leaving
    the records in the served model while the version claims they were unlearned."""
    if recipe not in RECIPE_SPECS or method not in METHOD_SPECS:
        return None
    spec, method_spec = RECIPE_SPECS.get(recipe), METHOD_SPECS.get(method)
    if not spec.rebuilds_model_from or method_spec.kind == TRAINING_RUN:  # exact: rebuilt from the recipe
        return None
    exact = exact_method_for(recipe)
    instead = f"its exact method {exact.name!r} or retrain" if exact is not None else "retrain"
    return (f"{method!r} changes the served model's weights, but the {recipe} recipe stores only "
            f"{spec.rebuilds_model_from} and rebuilds the model from them: the change would be lost when the "
            f"new version is saved. Unlearn this model with {instead}")


def running_statistics_known(architecture: Mapping[str, Any]) -> bool:
    """Whether a built-in architecture spec is known to hold BatchNorm without building it: only the
    mlp's ``input_norm="batchnorm"`` does. A company module is known only once a worker builds it."""
    config = architecture.get("config") if isinstance(architecture.get("config"), Mapping) else {}
    return architecture.get("name") == "mlp" and config.get("input_norm") == "batchnorm"


def fitting_recipes(*, task: str, family: str, batchnorm: bool = False) -> list[str]:
    """The recipes that train a model of ``task`` and ``family`` (``batchnorm``: its module has BatchNorm)
    from its data alone (not those that derive it from a parent version)."""
    return [name for name in RECIPE_SPECS if (spec := RECIPE_SPECS.get(name)).task == task and not spec.derives
            and family in spec.families and not (batchnorm and spec.no_running_statistics)]


def recipe_fit_problem(spec: RecipeSpec, *, task: str, family: str, architecture: Mapping[str, Any]) -> str | None:
    """Why recipe ``spec`` cannot train a model of ``task`` and ``family`` with ``architecture``,
    naming the recipe, the family and the recipes that would fit; None when it can."""
    batchnorm = running_statistics_known(architecture)
    fitting = ", ".join(fitting_recipes(task=task, family=family, batchnorm=batchnorm)) or "none"
    if task != spec.task:
        why = ""
        if task == LANGUAGE_MODELING:  # the torch recipes and classifiers on a generator
            why = (" (one class label per record, and sisa and s3t serve the average of their shards' class "
                   "probabilities; a causal language model learns next tokens and is served by generating text "
                   "from one model with its tokenizer, which the platform's LM unlearning methods, verifier guard "
                   "and LM audit read: an exact deletion of one is a full retrain)")
        return (f"the {spec.name} recipe trains {spec.task} models{why}; this model is registered for {task}. "
                f"Recipes that fit it: {fitting}")
    if family not in spec.families:
        takes = " or ".join(f for f in spec.families if f != NO_ARCHITECTURE)
        this = FAMILY_WORDS[family] + ("" if family == NO_ARCHITECTURE else f" (family {family})")
        hint = ""
        if family == "huggingface" and BUILT_TRANSFORMERS in spec.families:
            hint = (' (register it with {"name": "transformers", "config": {"hf_config": {...}}} for the platform '
                    "to build it and train it with plain, sisa, s3t or dp)")
        return (f"the {spec.name} recipe trains {spec.trains}, for models of the {takes} family; this model is "
                f"{this}{hint}. Recipes that fit it: {fitting}")
    if spec.no_running_statistics and batchnorm:
        return (f"the {spec.name} recipe needs a module without BatchNorm (running statistics); this model's "
                f"mlp has input_norm 'batchnorm' (family {family}). Recipes that fit it: {fitting}")
    return None


def training_recipe_config(*, recipe: str, task: str, architecture: Mapping[str, Any] | None,
                           recipe_config: Any) -> dict[str, Any]:
    """The configuration a training run of ``recipe`` gets for a model of ``task`` registered with
    ``architecture``: ``recipe_config`` with the registered architecture filled in where the recipe
    takes the model's. ValidationFailed naming the field: an unknown recipe (``recipe``), one that
    does not train models of this task and family (``recipe``, code ``recipe_does_not_fit``), an
    architecture no family takes or that contradicts the registered one (``recipe_config.architecture``;
    ``model`` when the registered one no longer passes its family's check, an uninstalled entry point)."""
    from workers.model_families.base import architecture_problem, family_of
    from workers.model_families.huggingface import platform_built

    if not isinstance(recipe_config, dict):
        raise ValidationFailed("recipe_config must be an object", field="recipe_config")
    if recipe not in RECIPE_SPECS:
        raise ValidationFailed(f"unknown training recipe {recipe!r}; recipes: {', '.join(RECIPE_SPECS)}",
                               field="recipe", code="unknown_recipe")
    spec = RECIPE_SPECS.get(recipe)
    registered = dict(architecture or {})
    config = dict(recipe_config)
    described, field = registered, "model"
    if spec.model_architecture:
        given = config.get("architecture")
        if registered and given is not None and given != registered:
            raise ValidationFailed(f"recipe_config.architecture {given!r} differs from the model's registered "
                                   f"architecture {registered!r}; leave it out to train the registered one",
                                   field="recipe_config.architecture")
        if registered:
            config["architecture"] = registered
        elif given is not None:
            described, field = given, "recipe_config.architecture"
    if described:
        problem = architecture_problem(described, task)
        if problem:
            raise ValidationFailed(problem, field=field)
    family = family_of(described).name if described else NO_ARCHITECTURE
    if family == "huggingface" and platform_built(described):
        family = BUILT_TRANSFORMERS
    problem = recipe_fit_problem(spec, task=task, family=family, architecture=described)
    if problem:
        raise ValidationFailed(problem, field="recipe", code="recipe_does_not_fit")
    return config
