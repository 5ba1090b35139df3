"""A regression model is named a regressor end to end (issue 24): in the plan's JSON (and the API's),
on the DPO's page and in the report, while its audit still builds classifier evidence (scored on its
squared error, audits.runner), so what the plan counts on (the checks that can confirm erasure, the
equivalence test it declares) is what the audit will run. A classifier beside it stays a classifier."""

from __future__ import annotations

import io

import pytest

from audits.checks.evidence import evidence_kind_of
from audits.checks.registry import audit_cannot_confirm
from audits.report_schema import validate_report
from deletion import decisions, intake
from deletion.planning import equivalence_test_plan
from deletion.report_data import report_data
from models_registry import services
from tests import factories
from tests.audits.report_factory import build_report
from tests.flows import EVIDENCE
from workers.data_sources import dataset_split
from workers.datasets.reference import DIABETES_MLP
from workers.reference_data import reference_dataset_register

pytestmark = pytest.mark.django_db


def test_the_evidence_kind_of_each_model_kind() -> None:
    assert [evidence_kind_of(k) for k in ("classifier", "regressor", "language_model")] == [
        "classifier", "classifier", "language_model"]
    with pytest.raises(ValueError, match="unknown model kind 'ranker'; known: classifier, regressor"):
        evidence_kind_of("ranker")


def _trained(model, dataset):
    keys = dataset_split(dataset, "train").record_keys
    return factories.trained_version(model, dataset, [(key, 0, 0) for key in keys])[1], keys


def test_a_regression_model_is_a_regressor_in_the_plan_the_admin_and_the_report(api_client_for, client) -> None:
    diabetes, cancer = reference_dataset_register(name="diabetes"), reference_dataset_register(name="breast_cancer")
    regressor = services.registered_model_create(
        name="diabetes-kind", task="regression", training_recipe="plain_regression", architecture=DIABETES_MLP,
        unlearning_policy={"approximate_method": "blindspot"})
    classifier = factories.registered_model(name="bc-kind", unlearning_policy={"approximate_method": "finetune"})
    regression_version, regression_keys = _trained(regressor, diabetes)
    classifier_version, classifier_keys = _trained(classifier, cancer)
    request, _ = intake.deletion_request_create(client=None, body={
        "identifiers": {}, "jurisdiction": "GDPR", "legal_ground": "art17_1_b", "channel": "test",
        "record_keys": [{"dataset": f"{diabetes.name}@{diabetes.version}", "record_key": regression_keys[0]},
                        {"dataset": f"{cancer.name}@{cancer.version}", "record_key": classifier_keys[0]}]})
    request = decisions.deletion_request_verify(request=request, actor="tests", evidence=EVIDENCE)

    steps = {step["model_version_id"]: step for step in request.plan}
    step = steps[regression_version.id]
    assert (step["model_kind"], step["method"]) == ("regressor", "blindspot")
    assert steps[classifier_version.id]["model_kind"] == "classifier"
    # What the plan counts on is read off the audit's evidence kind (a classifier's), not off "regressor",
    # for which no check is registered: the equivalence test is declared, as the audit will run it.
    assert step["equivalence_test"] is not None
    assert step["equivalence_test"] == equivalence_test_plan(version=regression_version, model_kind="classifier",
                                                             records=1)
    assert step["audit_cannot_confirm"] == audit_cannot_confirm(guarantee_class="approximate", model_kind="classifier",
                                                                records=1)
    dpo = api_client_for("dpo", name="alice")
    shown = dpo.get(f"/api/v1/deletion-requests/{request.public_id}/").json()["plan"]
    assert {s["model_version_id"]: s["model_kind"] for s in shown} == {
        regression_version.id: "regressor", classifier_version.id: "classifier"}

    from django.contrib.auth.models import Group, User
    from django.core.management import call_command
    from django.urls import reverse

    call_command("setup_roles", stdout=io.StringIO())
    bob = User.objects.create_user("bob", "bob@example.org", is_staff=True)
    bob.groups.add(Group.objects.get(name="dpo"))
    client.force_login(bob)
    html = client.get(reverse("admin:deletion_deletionrequest_change", args=[request.pk])).content.decode()
    assert (f'id="dp-model-kind-{regression_version.id}">regression model (one real number per record, '
            "MSE-trained)</div>") in html
    assert f'id="dp-model-kind-{classifier_version.id}">classifier (one class per record)</div>' in html

    # The report names the kind, and its score histogram says what a regressor's audit scored.
    request = decisions.deletion_request_approve(request=request, actor="tests")
    histograms = {"edges": [0.0, 1.0, 2.0], "counts": {"forget": [1, 0], "retain": [3, 4], "test": [2, 2]}}
    request.outcomes.update(audit={"histograms": histograms})
    entries = {e["model"]: e for e in report_data(request=request)["model_versions"]}
    entry = entries["diabetes-kind"]
    assert entry["model_kind"]["kind"] == "regressor" and entry["model_kind"]["words"].startswith("regression model")
    assert "squared error" in entry["score_histograms"]["score"]
    assert "true label" not in entry["score_histograms"]["score"]
    assert entries["bc-kind"]["model_kind"]["kind"] == "classifier"
    assert "true label" in entries["bc-kind"]["score_histograms"]["score"]
    # The schema takes the entry's kind, and only a known one.
    report = build_report()
    report["model_versions"][0]["model_kind"] = entry["model_kind"]
    validate_report(report)
    report["model_versions"][0]["model_kind"] = {"kind": "ranker", "words": "a ranker"}
    with pytest.raises(ValueError, match="model_kind"):
        validate_report(report)
