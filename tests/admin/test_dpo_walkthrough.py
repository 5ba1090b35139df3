"""What a DPO walking the product met (issue: the admin and a pef_coupling concept request on the real
stack): an ended request offered a Withdraw button that could only be refused; the method choice's
options carried a paragraph each and widened the request page to thousands of pixels; a concept request's
page said nothing of its attribute or of what its method holds against (and called a coupling eraser's
guarantee "linear read-outs"); the serving side was not told that a coupling version needs each input's
attribute; and a concept report whose model lost half its accuracy said on its first page that every
version "passed their checks"."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from deletion import decisions
from deletion.concept_requests import concept_request_create
from deletion.models import DeletionRequest, ModelOutcome
from models_registry.services import model_version_create
from tests import factories
from tests.admin.conftest import finish_job, make_request
from tests.deletion.test_concept_requests import _concept_body, labelled  # noqa: F401 (a fixture)

pytestmark = pytest.mark.django_db


def page(client, request: DeletionRequest) -> str:
    return client.get(reverse("admin:deletion_deletionrequest_change", args=[request.pk])).content.decode()


def test_an_ended_request_offers_no_withdraw_or_confirm_button(client_for, trained):
    request = make_request()
    request = decisions.deletion_request_approve(request=request, actor="tests")
    finish_job(request.outcomes.get(), trained)
    alice = client_for("alice")
    html = page(alice, request)  # open: the DPO may still withdraw or confirm
    assert "Withdraw from serving" in html and "Confirm deployment (manual)" in html
    # A FAILED request keeps an outcome that passed (awaiting deployment: the next request builds on it).
    DeletionRequest.objects.filter(pk=request.pk).update(status="FAILED")
    html = page(alice, request)
    # The services answer request_ended to a withdrawal or a confirmation now: the page offers neither.
    assert "Withdraw from serving" not in html and "Confirm deployment (manual)" not in html
    assert "This request has ended: it takes no more decisions." in html


def test_the_method_choice_offers_short_options(client_for, trained):
    model = factories.registered_model("churn-plain", recipe="plain", unlearning_policy={"approximate_method": "finetune"})
    factories.trained_version(model, trained["ds"], [(f"r{i}", 0, 0) for i in range(9)])
    request = make_request()
    step = next(s for s in request.plan if s["model"] == "churn-plain")
    assert step["alternatives"], "the plain model's approximate step offers other methods"
    select = re.search(rf'<select name="method_{step["model_version_id"]}".*?</select>', page(client_for("alice"), request),
                       re.S).group(0)
    options = re.findall(r"<option[^>]*>(.*?)</option>", select, re.S)
    assert len(options) == 1 + len(step["alternatives"])
    # One line each (method and class; the plan's table says why each is offered), not a paragraph.
    assert max(len(option) for option in options) < 100, max(options, key=len)
    assert "neggrad_plus (approximate)" in " ".join(options)


def test_a_concept_request_page_names_the_attribute_and_what_its_method_holds_against(client_for, cast, labelled):  # noqa: F811
    _, parity = labelled
    request, _ = concept_request_create(client=None, body=_concept_body(parity, [{"model": "digits-mlp"}],
                                                                        method="pef_coupling"))
    [step] = request.plan
    # The plan's "not a person's erasure" line names the method's probes, not LEACE's linear read-outs.
    assert "linear read-outs" not in step["audit_cannot_confirm"]
    assert "linear and non-linear probes" in step["audit_cannot_confirm"]
    html = page(client_for("alice"), request)
    assert "none: a concept request names no person" in html and "no subject found" not in html
    assert "digit parity (digits@1, 60 labelled records); method" in html
    assert "The guarantee holds against linear and non-linear probes" in html
    assert "needs the attribute of every input at inference" in html
    assert "No records of this subject were found" not in html


def test_the_serving_side_is_told_that_a_coupling_version_needs_the_attribute(api_client_for, labelled):  # noqa: F811
    _, parity = labelled
    request, _ = concept_request_create(client=None, body=_concept_body(parity, [{"model": "digits-mlp"}],
                                                                        method="pef_coupling"))
    request = decisions.deletion_request_approve(request=request, actor="tests")
    outcome = request.outcomes.get()
    new = model_version_create(model=outcome.model_version.model, artifact_sha256="9" * 64, training_run=None,
                               parent=outcome.model_version)
    ModelOutcome.objects.filter(pk=outcome.pk).update(status="awaiting_deployment", new_version=new, verdict="PASS")
    serving = api_client_for("ml_engineer")
    [pending] = serving.get("/api/v1/deployments/pending/").json()
    assert any("serving needs the attribute 'digit parity' of every input at inference" in w
               for w in pending["warnings"]), pending["warnings"]
    # The serving side's webhook says it too (its deployment.requested carries the same warnings).
    from deletion.models import WebhookDelivery
    from deletion.workflow import announce

    made = serving.post("/api/v1/webhooks/", {"url": "https://serving.example.org/hook"}, format="json")
    assert made.status_code == 201, made.json()
    announce(ModelOutcome.objects.select_related("request").get(pk=outcome.pk))
    [hook] = WebhookDelivery.objects.filter(event__event="deployment.requested")
    assert hook.event["warnings"] == pending["warnings"]


def test_the_first_page_warns_when_a_passed_version_fell_below_its_utility_bar(tmp_path):
    from tests.audits.conftest import rendered_text
    from tests.audits.report_factory import build_report

    report = build_report()
    entry = report["model_versions"][0]
    entry["metrics"].append({"name": "utility", "description": "accuracy ratio", "before": None, "after": 0.47,
                             "reference": 0.95, "result": "FAIL"})
    first = rendered_text(report, tmp_path / "report.pdf").split("How the request ended")[0]
    assert f"Utility below the declared bar for: {entry['model']}, version {entry['version']}" in first


def test_a_concept_outcome_shows_its_probes_and_task_and_offers_no_escalation(client_for, cast, labelled):  # noqa: F811
    """A concept request's row showed no figure (its audit has probe AUCs, not accuracies on erased
    records) and offered "Escalate: exact retrain", which the service refuses for a concept erasure."""
    from deletion.admin import audit_summary

    _, parity = labelled
    request, _ = concept_request_create(client=None, body=_concept_body(parity, [{"model": "digits-mlp"}]))
    request = decisions.deletion_request_approve(request=request, actor="tests")
    outcome = request.outcomes.get()
    audit = {"concept": {"linear_auc": 0.531, "original_linear_auc": 0.973, "nonlinear_auc": 0.993,
                         "original_nonlinear_auc": 0.998},
             "task_utility": {"retain": {"original": 0.998, "erased": 0.467, "metric": "accuracy"},
                              "test": {"original": 0.95, "erased": 0.45, "metric": "accuracy"}},
             "checks": [{"check": "concept_probe", "verdict": "FAIL"}],
             "verdict": {"verdict": "FAIL", "rule": "both probes at chance"}}
    assert audit_summary(audit)["metrics"] == [
        ("linear probe's AUC for the attribute (0.5: chance)", 0.973, 0.531),
        ("MLP probe's AUC for the attribute (0.5: chance)", 0.998, 0.993),
        ("the model's own task, accuracy on labelled records it trained on", 0.998, 0.467),
        ("the model's own task, accuracy on held-out records", 0.95, 0.45)]
    ModelOutcome.objects.filter(pk=outcome.pk).update(status="audit_failed", verdict="FAIL", audit=audit)
    html = page(client_for("alice"), request)
    assert "linear probe&#x27;s AUC for the attribute" in html and "0.973 → 0.531" in html
    assert "Escalate: exact retrain" not in html and "Accept the residual risk" in html
