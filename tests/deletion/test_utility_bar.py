"""The utility bar: a model's policy declares how much utility an unlearned version may lose
(``unlearning_policy.min_utility_ratio``), the plan states it before anything runs, the audit job
carries it into the utility check, and whoever deploys a version that erased the records but fell
below the bar sees so in the deployment list, its webhook and on the DPO's page. Utility never
decides erasure: the verdict only warns."""

import pytest

from audits.checks.utility import utility
from deletion import workflow
from deletion.models import ModelOutcome
from tests.deletion.test_requests import EVIDENCE, _create
from workers.models import Job

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("ratio", [0, -0.1, 1.2, "0.9", True])
def test_the_bar_is_a_share_of_the_originals_utility(ratio):
    from foundation.errors import ValidationFailed
    from models_registry.services import unlearning_policy_validate

    with pytest.raises(ValidationFailed) as refused:
        unlearning_policy_validate(policy={"min_utility_ratio": ratio})
    assert refused.value.field == "unlearning_policy.min_utility_ratio"
    assert unlearning_policy_validate(policy={"min_utility_ratio": 1}) == {"min_utility_ratio": 1}


def test_the_check_holds_the_bar_it_is_given():
    figures = {"retain": 0.93, "test": 0.9, "original_retain": 0.97, "original_test": 0.92}
    assert utility(**figures).verdict.value == "PASS"  # ratios 0.959 and 0.978 against the default 0.95
    strict = utility(**figures, min_ratio=0.97)
    assert strict.verdict.value == "FAIL" and strict.min_ratio == 0.97 and "PASS if both ratios >= 0.97" in strict.rule
    with pytest.raises(ValueError, match="min_ratio must be in"):
        utility(**figures, min_ratio=1.5)


def _audited_below_the_bar(dpo, trained) -> tuple[str, object]:
    """A request whose new version's audit PASSed with its utility check FAILed (ratios of a real
    check against the declared bar). Returns (request id, new version)."""
    from models_registry.services import model_version_create

    request_id = _create(dpo).json()["id"]
    dpo.post(f"/api/v1/deletion-requests/{request_id}/verify/", EVIDENCE, format="json")
    dpo.post(f"/api/v1/deletion-requests/{request_id}/approve/", {}, format="json")
    new = model_version_create(model=trained["model"], artifact_sha256="8" * 64, training_run=None,
                               parent=trained["version"])
    job = Job.objects.get(kind="unlearn")
    Job.objects.filter(pk=job.pk).update(status="succeeded", result_version=new)
    workflow.on_job_finished(job_id=job.pk)
    outcome = ModelOutcome.objects.get(job=job)
    bar = outcome.audit_job.config["utility"]["min_ratio"]
    check = utility(retain=0.80, test=0.78, original_retain=0.99, original_test=0.95, min_ratio=bar).to_dict()
    warning = f"utility FAIL: {check['reason']}"
    Job.objects.filter(pk=outcome.audit_job_id).update(status="succeeded", result={"verdict": "PASS", "audit": {
        "checks": [check], "verdict": {"verdict": "PASS", "warnings": [warning]}}})
    workflow.on_job_finished(job_id=outcome.audit_job_id)
    return request_id, new


def test_the_policys_bar_is_declared_carried_and_shown_to_the_serving_side(api_client_for, trained):
    from deletion.models import WebhookDelivery

    trained["model"].unlearning_policy = {"min_utility_ratio": 0.9}
    trained["model"].save(update_fields=["unlearning_policy"])
    serving, dpo = api_client_for("ml_engineer"), api_client_for("dpo")
    assert serving.post("/api/v1/webhooks/", {"url": "https://serving.example.org/hook"},
                        format="json").status_code == 201
    request_id, new = _audited_below_the_bar(dpo, trained)

    [step] = dpo.get(f"/api/v1/deletion-requests/{request_id}/").json()["plan"]
    bar = step["utility_bar"]
    assert (bar["min_ratio"], bar["declared_by"], bar["metric"]) == (0.9, f"the policy of model {trained['model'].name}",
                                                                     "accuracy")
    assert "at least 90% of the original's" in bar["statement"]
    outcome = ModelOutcome.objects.get()
    assert outcome.audit_job.config["utility"] == {"min_ratio": 0.9, "declared_by": bar["declared_by"]}

    # Erasure passed, so the version goes to the serving side, with what it costs in utility.
    [pending] = serving.get("/api/v1/deployments/pending/").json()
    assert pending["new_version_id"] == new.id and pending["verdict"] == "PASS"
    assert pending["serving_versions"] == [trained["version"].version]  # what the new version replaces
    figures = pending["utility"]
    assert (figures["verdict"], figures["min_ratio"], figures["metric"]) == ("FAIL", 0.9, "accuracy")
    assert figures["retain_ratio"] == pytest.approx(0.80 / 0.99) and figures["test_ratio"] == pytest.approx(0.78 / 0.95)
    assert pending["warnings"] and pending["warnings"][0].startswith("utility FAIL")
    [hook] = WebhookDelivery.objects.filter(event__event="deployment.requested")
    assert hook.event["utility"]["verdict"] == "FAIL" and hook.event["utility"]["min_ratio"] == 0.9


def test_without_a_policy_the_platform_default_is_declared(api_client_for, trained):
    from audits.checks.evidence import DEFAULT_MIN_UTILITY_RATIO

    dpo = api_client_for("dpo")
    request_id = _create(dpo).json()["id"]
    [step] = dpo.post(f"/api/v1/deletion-requests/{request_id}/verify/", EVIDENCE, format="json").json()["plan"]
    assert (step["utility_bar"]["min_ratio"], step["utility_bar"]["declared_by"]) == (
        DEFAULT_MIN_UTILITY_RATIO, "the platform default")
