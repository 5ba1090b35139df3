"""The torch-free method catalogue the web side checks policies against agrees with the registry
of method classes, and a policy naming a missing method, or one for the other kind of model, is
refused when saved."""

from __future__ import annotations

import pytest

from foundation.errors import ValidationFailed
from models_registry.services import registered_model_create
from workers.unlearning.catalogue import (
    CLASSIFIER,
    GUARD,
    LANGUAGE_MODEL,
    METHOD_SPECS,
    REGRESSOR,
    TRAINING_RUN,
    MethodSpec,
    method_specs,
)


def test_the_catalogue_is_the_registry():
    from workers.unlearning.methods import load_all_methods

    assert load_all_methods() == METHOD_SPECS.names()
    recipes = [spec.recipe for spec in method_specs() if spec.recipe is not None]
    assert len(recipes) == len(set(recipes)), "two exact methods claim one recipe"


def _fits_its_kind(spec: MethodSpec, cls: type) -> bool:
    """A classifier, regressor or language-model method runs on its family's shared loop; a guard or an
    exact method (which takes a TrainingRun) on neither."""
    from workers.unlearning.lm.loop import LMUnlearningMethod
    from workers.unlearning.loop import ApproximateMethod

    loops = {CLASSIFIER: ApproximateMethod, REGRESSOR: ApproximateMethod, LANGUAGE_MODEL: LMUnlearningMethod}
    if spec.kind in loops:
        return issubclass(cls, loops[spec.kind])
    return not issubclass(cls, tuple(loops.values()))


@pytest.mark.parametrize("spec", method_specs(), ids=lambda spec: spec.name)
def test_each_declared_method_is_a_registered_class_that_fits_its_declaration(spec: MethodSpec):
    from workers.unlearning.base import METHODS
    from workers.unlearning.methods import load_all_methods

    load_all_methods()
    cls = METHODS.get(spec.name)
    assert cls.__module__ == spec.module
    assert (cls.name, cls.guarantee_class) == (spec.name, spec.guarantee_class)
    assert cls().guarantee_class == spec.guarantee_class
    assert _fits_its_kind(spec, cls)
    assert (spec.guarantee_class == "exact") == (spec.kind == TRAINING_RUN)
    assert (spec.guarantee_class == "suppressed") == (spec.kind == GUARD)


def test_a_method_class_needs_a_declaration_in_its_module():
    from workers.unlearning.base import UnlearningMethod

    with pytest.raises(ValueError, match="unknown unlearning method 'undeclared'"):
        type("Undeclared", (UnlearningMethod,), {}, name="undeclared")
    with pytest.raises(ValueError, match="declared in workers.unlearning.finetune, not in"):
        type("Finetune", (UnlearningMethod,), {}, name="finetune")


@pytest.mark.django_db
@pytest.mark.parametrize(("task", "method", "message"), [
    ("classification", "finetuen", "unknown unlearning method 'finetuen'; known: data_free_class, "),
    ("classification", "npo", "'npo' unlearns language modeling models, not classification; for this model: data_free_class, "),
    ("language_modeling", "scrub", "'scrub' unlearns classification models, not language modeling; for this model: "
                                   "fact_lookup, grad_diff, gradient_ascent, mrp, npo, verifier_guard"),
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


def test_a_method_declares_a_replay_exactly_when_one_is_registered():
    from workers.unlearning.exact.replay import REPLAYS

    declared = {spec.name for spec in method_specs() if spec.replay}
    assert declared == set(REPLAYS.names()), "declare replay= in the catalogue for each registered replay"
    assert all(METHOD_SPECS.get(name).replay_cost for name in declared)
    with pytest.raises(ValueError, match="replay must be one of"):
        MethodSpec("x", CLASSIFIER, "approximate", "m", replay="every audit")
