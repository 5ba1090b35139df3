"""What a concept request needs of a model, said without torch (workers.concept_layers): the layer
that holds its representations, why a model has none the platform can erase, and the split of the
labelled records between the eraser and the probes."""

from __future__ import annotations

import pytest

from workers.concept_layers import (
    ERASER_STORING_RECIPES,
    MAX_RECORDED_MODULE_NAMES,
    MIN_RECORDS_PER_VALUE,
    RECORDED_MODULE_NAMES,
    concept_erasure_refusal,
    default_representation_layer,
    fitting_split,
    labels_problem,
    layer_problem,
    module_names,
    recorded_module_names,
)

MLP = {"name": "mlp", "config": {"in_features": 8, "num_classes": 3, "hidden": [16, 12]}}


def test_the_split_is_disjoint_complete_near_its_share_and_depends_on_each_key_alone():
    keys = [f"r{i}" for i in range(3000)]
    fit, probe = fitting_split(keys, seed=4)
    assert not set(fit) & set(probe) and sorted(fit + probe) == sorted(keys)
    assert abs(len(fit) / len(keys) - 2 / 3) < 0.03
    some = keys[::7]
    fit_some, probe_some = fitting_split(reversed(some), seed=4)
    assert fit_some == sorted(set(fit) & set(some)) and probe_some == sorted(set(probe) & set(some))
    assert fitting_split(keys, seed=5)[0] != fit  # the seed matters
    with pytest.raises(ValueError, match="fit_share"):
        fitting_split(keys, seed=0, fit_share=1.0)


def test_labels_need_two_values_each_on_enough_records_in_both_shares():
    assert "single value" in labels_problem({f"r{i}": 1 for i in range(100)}, seed=0)
    assert "no value" in labels_problem({}, seed=0)
    scarce = {**{f"r{i}": 0 for i in range(100)}, **{f"s{i}": 1 for i in range(MIN_RECORDS_PER_VALUE - 1)}}
    assert f"1 ({MIN_RECORDS_PER_VALUE - 1})" in labels_problem(scarce, seed=0)
    assert labels_problem({f"r{i}": i % 3 for i in range(90)}, seed=0) is None


def test_the_representation_layer_of_the_platforms_architectures():
    assert default_representation_layer(MLP) == "act1"
    assert default_representation_layer({"name": "mlp", "config": {"in_features": 8, "num_classes": 3}}) == "act1"
    assert default_representation_layer({"name": "mlp", "config": {"hidden": []}}) is None
    assert default_representation_layer({"name": "small_cnn", "config": {}}) == "act2"
    assert default_representation_layer({"name": "text_bag", "config": {}}) == "act0"
    assert default_representation_layer({"name": "entry_point", "config": {"entry_point": "x"}}) is None


def test_the_default_layers_give_batch_by_features_outputs_the_eraser_takes():
    import torch

    from workers.training.architectures import build_model
    from workers.unlearning.concept_erasure import layer_outputs

    for architecture, inputs in ((MLP, torch.randn(5, 8)),
                                 ({"name": "small_cnn", "config": {"num_classes": 3}}, torch.randn(5, 1, 28, 28)),
                                 ({"name": "text_bag", "config": {}}, torch.randint(1, 257, (5, 9)))):
        layer = default_representation_layer(architecture)
        features, _ = layer_outputs(build_model(architecture), layer, [(list("abcde"), inputs, torch.arange(5))])
        assert features.ndim == 2 and features.shape[0] == 5, (architecture["name"], layer)


@pytest.mark.parametrize("architecture", [
    MLP,
    {"name": "mlp", "config": {"in_features": 8, "num_classes": 3}},
    {"name": "mlp", "config": {"in_features": 8, "num_classes": 3, "hidden": [4], "input_norm": "none"}},
    {"name": "mlp", "config": {"in_features": 8, "num_classes": 3, "hidden": [4, 4, 4], "input_norm": "batchnorm"}},
    {"name": "mlp", "config": {"in_features": 8, "num_classes": 1, "hidden": [4], "output_scale": 50.0}},
    {"name": "mlp", "config": {"in_features": 8, "num_classes": 1, "output_shift": 2.0}},
    {"name": "mlp", "config": {"in_features": 8, "num_classes": 3, "hidden": []}},
    {"name": "small_cnn", "config": {"num_classes": 3}},
    {"name": "text_bag", "config": {}},
], ids=lambda a: f"{a['name']}-{sorted(a['config'].items())}")
def test_the_module_names_said_without_torch_are_those_the_built_model_has(architecture):
    from workers.training.architectures import build_model

    assert module_names(architecture) == tuple(name for name, _ in build_model(architecture).named_modules() if name)


def test_a_layer_the_model_lacks_is_named_with_the_layers_it_has():
    assert layer_problem(MLP, "act1") is None and layer_problem(MLP, "") is None
    assert layer_problem(MLP, "fc7") == ("the model has no layer 'fc7'; its layers: flatten, norm, fc0, act0, fc1, "
                                         "act1, head")
    assert "no layer 'encoder'" in layer_problem({"name": "text_bag", "config": {}}, "encoder")
    for unknown in ({"name": "entry_point", "config": {"entry_point": "acme.net"}},
                    {"name": "transformers", "config": {"hf_config": {"model_type": "bert"}}}, None):
        assert module_names(unknown) is None and layer_problem(unknown, "anything.at.all") is None


COMPANY_NET = {"name": "entry_point",
               "config": {"entry_point": "company-tabular", "config": {"in_features": 30, "num_classes": 2, "hidden": 16}}}


def test_the_entry_point_upload_check_records_the_names_of_the_module_it_built():
    from safetensors.torch import save

    from workers.model_families.entry_points import EntryPointModules
    from workers.training.architectures import build_model

    built = build_model(COMPANY_NET)
    weights = save({k: v.contiguous() for k, v in built.state_dict().items()})
    checked = EntryPointModules().check_upload(weights, architecture=COMPANY_NET, task="classification",
                                               run_config={"epochs": 1, "lr": 0.01, "seed": 5})
    names = ["input_norm", "hidden", "hidden.0", "hidden.1", "hidden.2", "classifier"]
    assert [n for n, _ in built.named_modules() if n] == names  # the company's module, as the factory builds it
    assert checked.extra[RECORDED_MODULE_NAMES] == {"names": names, "count": 6}


def test_the_recorded_names_are_the_first_two_thousand_with_how_many_there_are():
    assert recorded_module_names([]) == {"names": [], "count": 0}
    many = recorded_module_names(f"blocks.{i}" for i in range(MAX_RECORDED_MODULE_NAMES + 500))
    assert many["count"] == MAX_RECORDED_MODULE_NAMES + 500 and len(many["names"]) == MAX_RECORDED_MODULE_NAMES
    assert many["names"][0] == "blocks.0" and many["names"][-1] == f"blocks.{MAX_RECORDED_MODULE_NAMES - 1}"
    company = {"name": "entry_point", "config": {"entry_point": "acme.net"}}
    # Capped: a name past the first 2,000 may exist, so nothing is refused (the worker checks it).
    assert layer_problem(company, f"blocks.{MAX_RECORDED_MODULE_NAMES + 10}", many) is None
    assert layer_problem(company, "no.such.module", many) is None


def test_a_company_model_is_checked_against_its_recorded_names_and_a_large_one_names_the_nearest():
    from workers.training.transformers_models import build_transformers_model

    company = {"name": "entry_point", "config": {"entry_point": "acme.net"}}
    small = recorded_module_names(["input_norm", "hidden", "hidden.0", "hidden.1", "hidden.2", "classifier"])
    assert layer_problem(company, "hidden.1", small) is None and layer_problem(company, "", small) is None
    assert layer_problem(company, "hiden.1", small) == ("the model has no layer 'hiden.1'; its layers: input_norm, "
                                                        "hidden, hidden.0, hidden.1, hidden.2, classifier")
    assert layer_problem(company, "anything", None) is None  # nothing recorded (an older upload): as before
    # A transformers model (built on the meta device, as the upload check builds one): only the nearest names.
    bert = build_transformers_model({"model_type": "bert", "vocab_size": 300, "hidden_size": 16,
                                     "num_hidden_layers": 4, "num_attention_heads": 2, "intermediate_size": 32,
                                     "max_position_embeddings": 64, "num_labels": 2},
                                    "sequence_classification", meta=True)
    recorded = recorded_module_names(n for n, _ in bert.named_modules() if n)
    assert recorded["count"] > 60 and layer_problem(company, "bert.encoder.layer.3.output", recorded) is None
    typo = layer_problem(company, "bert.encoder.layer.1.outptu", recorded)
    assert typo.startswith(f"the model has no layer 'bert.encoder.layer.1.outptu'; the nearest of its "
                           f"{recorded['count']} modules: bert.encoder.layer.1.output")
    past_the_end = layer_problem(company, "bert.encoder.layer.7", recorded)
    listed = past_the_end.split(" modules: ")[1].split(", ")
    assert {f"bert.encoder.layer.{i}" for i in range(4)} <= set(listed) and len(listed) <= 10
    assert all(name in recorded["names"] for name in listed)
    nowhere = layer_problem(company, "zzz", recorded)
    assert nowhere.endswith("modules: bert, dropout, classifier")  # no name alike: the top-level modules


def test_models_without_erasable_representations_are_refused_in_words():
    def refusal(**kw):
        return concept_erasure_refusal(**{"task": "classification", "recipe": "plain", "architecture": MLP,
                                          "family": "builtin", **kw})

    assert refusal() is None
    assert "language model" in refusal(task="language_modeling", recipe="lora_causal_lm", architecture=None)
    assert "scikit-learn" in refusal(family="sklearn", recipe="sklearn")
    assert "sisa recipe" in refusal(recipe="sisa")
    assert "without hidden layers" in refusal(architecture={"name": "mlp", "config": {"hidden": []}})
    company = {"name": "entry_point", "config": {"entry_point": "acme.net"}}
    assert "name it in the request" in refusal(architecture=company, family="entry_point")
    assert refusal(architecture=company, family="entry_point", layer="encoder.act") is None


def test_the_recipes_said_to_keep_an_eraser_are_those_whose_storage_saves_it():
    from workers.runners.training import load_recipes
    from workers.training.plain import SingleModelStorage

    recipes = load_recipes()
    storing = sorted(name for name in recipes if issubclass(recipes.get(name), SingleModelStorage))
    assert storing == sorted(ERASER_STORING_RECIPES)
