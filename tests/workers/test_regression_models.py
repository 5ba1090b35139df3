"""A regression model through every layer: scikit-learn's bundled diabetes set (nothing downloaded)
registered as a reference set with real-valued targets, an MLP trained by the plain_regression
recipe (MSE) with its lineage and held-out MAE/RMSE, shadow models, an erasure request planned with
Blindspot (the only approximate method for regression: no classifier method is offered), the
unlearning job, and an audit whose figures are MAE and RMSE, down to the report's wording. A
classifier method is refused for it at every door: the policy, the plan, the job."""

from __future__ import annotations

import pytest

from deletion.models import ModelOutcome
from foundation.errors import ValidationFailed
from models_registry import services
from models_registry.models import DataRecord, TrainingMembership
from tests.flows import approved_request, run_job
from workers.datasets.reference import DIABETES_MLP
from workers.jobs import job_create, job_execute
from workers.models import Job, JobKind
from workers.reference_data import reference_dataset_register
from workers.services import model_train, shadow_models_train
from workers.unlearning.catalogue import approximate_methods_for

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("one_torch_thread")]

RECIPE = {"epochs": 20, "batch_size": 64, "lr": 0.01, "seed": 0}



def _regression_model(name: str, **policy):
    return services.registered_model_create(name=name, task="regression", training_recipe="plain_regression",
                                            architecture=DIABETES_MLP, unlearning_policy=policy)


def test_a_regression_model_is_trained_unlearned_by_blindspot_and_audited_in_mae_and_rmse(settings):
    from deletion.report_data import report_data

    settings.AUDIT_ULIRA_SECONDS = 120
    dataset = reference_dataset_register(name="diabetes")
    assert dataset.records.filter(split="train").count() == 354 and dataset.records.filter(split="test").count() == 88
    model = _regression_model("diabetes-progression", approximate_method="blindspot")
    version = run_job(model_train(model=model, dataset=dataset, enqueue=False, recipe_config=RECIPE)).result_version
    # Lineage as for any model: one membership row per training record; held-out errors in the target's unit.
    assert TrainingMembership.objects.filter(run=version.training_run).count() == 354
    assert version.training_run.recipe == "plain_regression"
    assert 20 < version.metrics["test_mae"] < version.metrics["test_rmse"] < 120, version.metrics
    assert "test_accuracy" not in version.metrics
    run_job(shadow_models_train(version=version, count=4, enqueue=False))

    record = DataRecord.objects.filter(dataset=dataset, split="train").order_by("id")[3]
    request = approved_request([record])
    [step] = request.plan
    assert (step["method"], step["guarantee_class"]) == ("blindspot", "approximate")
    offered = {alternative["method"] for alternative in step["alternatives"]}
    assert not offered & set(approximate_methods_for("classification")), offered
    outcome = ModelOutcome.objects.get(request=request)
    run_job(outcome.job)
    outcome.refresh_from_db()
    unlearned = outcome.job.result["unlearning"]
    assert unlearned["method"] == "blindspot" and unlearned["details"]["forget_records"] == 1
    run_job(outcome.audit_job)
    outcome.refresh_from_db()
    audit = outcome.audit

    metrics = audit["metrics"]
    assert {"forget_mae", "forget_rmse", "retain_mae", "retain_rmse", "test_mae", "test_rmse"} <= set(metrics)
    assert not {"forget_accuracy", "retain_accuracy", "test_accuracy"} & set(metrics)
    assert metrics["test_rmse"]["original"] >= metrics["test_mae"]["original"] > 0
    checks = {c["check"]: c for c in audit["checks"]}
    assert checks["utility"]["metric"] == "rmse" and "root mean squared error ratio" in checks["utility"]["rule"]
    # LiRA ran on the squared-error signal; RMIA (probabilities) did not, and the audit says why.
    assert "membership_rmia" not in checks and "membership_lira" in checks
    assert "probabilities" in audit["regression"]["not_applicable"]["membership_rmia"]
    assert audit["forget_references"]["applies"] is False
    # U-LiRA ran Blindspot on the shadows that held the record (an approximate regressor's result too).
    assert audit["unlearning_lira"]["ran"] is True and audit["unlearning_lira"]["method"] == "blindspot", \
        audit["unlearning_lira"]
    assert "unlearning_lira" in checks

    [entry] = report_data(request=outcome.request)["model_versions"]
    names = [m["name"] for m in entry["metrics"]]
    assert "Mean absolute error on the erased records" in names
    assert "Root mean squared error on held-out records" in names
    assert not any(name.startswith("Accuracy") for name in names)


def test_a_classification_method_is_refused_for_a_regression_model():
    with pytest.raises(ValidationFailed) as refused:
        _regression_model("diabetes-finetune", approximate_method="finetune")
    assert "'finetune' unlearns classification models, not regression; for this model: blindspot" in \
        refused.value.message
    with pytest.raises(ValidationFailed) as refused:
        services.registered_model_create(name="bc", task="classification", training_recipe="plain",
                                         unlearning_policy={"approximate_method": "blindspot"})
    assert "'blindspot' unlearns regression models, not classification" in refused.value.message


def test_a_classifier_job_on_a_regression_version_fails_naming_the_methods_that_fit():
    dataset = reference_dataset_register(name="diabetes")
    model = _regression_model("diabetes-job")
    version = run_job(model_train(model=model, dataset=dataset, enqueue=False,
                                  recipe_config={**RECIPE, "epochs": 1})).result_version
    record = DataRecord.objects.filter(dataset=dataset, split="train").order_by("id").first()
    job = job_create(kind=JobKind.UNLEARN, registered_model=model, source_version=version, method="finetune",
                     guarantee_class="approximate", forget_record_ids=[record.id], enqueue=False)
    assert job_execute(job_id=job.id) == "failed"
    error = Job.objects.get(pk=job.id).error
    assert "'finetune' unlearns classification models" in error and "it takes blindspot or retrain" in error


def test_the_regression_recipe_refuses_class_labels_and_a_classifier_architecture():
    dataset = reference_dataset_register(name="breast_cancer")
    model = services.registered_model_create(
        name="bc-as-regression", task="regression", training_recipe="plain_regression",
        architecture={"name": "mlp", "config": {"in_features": 30, "num_classes": 2, "hidden": [8]}})
    job = model_train(model=model, dataset=dataset, enqueue=False, recipe_config={**RECIPE, "epochs": 1})
    assert job_execute(job_id=job.id) == "failed"
    assert "one output per input; this one gives 2" in Job.objects.get(pk=job.id).error
