"""The torch-free method catalogue the web side checks policies against agrees with the registry,
and a policy naming a missing method, or one for the other kind of model, is refused when saved."""

from __future__ import annotations

import pytest

from foundation.errors import ValidationFailed
from models_registry.services import registered_model_create
from workers.unlearning.catalogue import (
    APPROXIMATE_METHODS,
    CLASSIFICATION,
    EXACT_METHODS,
    LANGUAGE_MODELING,
)


def test_the_catalogue_is_the_registry():
    from workers.runners.unlearning import _is_lm_method
    from workers.unlearning.methods import load_all_methods
    from workers.unlearning.registry import METHODS

    assert set(load_all_methods()) == set(APPROXIMATE_METHODS) | set(EXACT_METHODS)
    from workers.unlearning.loop import ApproximateMethod

    for name, task in APPROXIMATE_METHODS.items():
        method = METHODS.get(name)()
        assert isinstance(method, ApproximateMethod) == (task == CLASSIFICATION), name
        assert method.guarantee_class != "exact", name
        for_language_models = name == "verifier_guard" or _is_lm_method(method)
        assert for_language_models == (task == LANGUAGE_MODELING), name
    for name in EXACT_METHODS:
        assert METHODS.get(name)().guarantee_class == "exact", name


@pytest.mark.django_db
@pytest.mark.parametrize(("task", "method", "message"), [
    ("classification", "finetuen", "unknown unlearning method 'finetuen'; known: finetune, influence"),
    ("classification", "npo", "'npo' unlearns language modeling models, not classification; for this model: finetune"),
    ("language_modeling", "scrub", "'scrub' unlearns classification models, not language modeling; for this model: "
                                   "grad_diff, gradient_ascent, npo, verifier_guard"),
    ("classification", "retrain", "'retrain' is an exact method"),
])
def test_a_policy_with_a_method_that_cannot_run_is_refused_when_saved(task, method, message):
    with pytest.raises(ValidationFailed) as refused:
        registered_model_create(name="m", task=task, training_recipe="plain",
                                unlearning_policy={"approximate_method": method})
    assert refused.value.field == "unlearning_policy.approximate_method"
    assert message in refused.value.message


@pytest.mark.django_db
def test_a_fitting_method_is_kept():
    model = registered_model_create(name="lm", task="language_modeling", training_recipe="lora_causal_lm",
                                    unlearning_policy={"approximate_method": "npo"})
    assert model.unlearning_policy == {"approximate_method": "npo"}
