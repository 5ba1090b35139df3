"""dp_bounded as a plan option (issue 22, finding 1). A model trained with DP-SGD (Opacus) shows, in
the plan, the person's group-privacy bound for their k records: from Opacus' accountant with the
group accounted as one unit where it can, else the generic (k epsilon, k e^((k-1) epsilon) delta),
the smaller, held against the policy's limits and marked vacuous beyond them, with what the run
recorded of its pipeline. The DPO may choose it instead of the planned method: no unlearning and no
new version; an audit job recomputes the bound from the version's recorded accountant figures, and
the outcome always waits for the written risk acceptance of two DPO users; the request then ends
CLOSED_RISK_ACCEPTED, and the report says that nothing was deleted from the weights."""

from __future__ import annotations

import io
import math

import pytest

from deletion import decisions, intake
from deletion.models import DeletionRequest, ModelOutcome, RequestStatus
from deletion.report_data import report_data
from models_registry.models import DataRecord, TrainingMembership
from tests import factories
from tests.deletion.test_end_states import _pdf_text
from tests.deletion.test_requests import _run_report_job
from tests.flows import EVIDENCE
from tests.flows import run_job as _run
from workers.models import Job
from workers.reference_data import reference_dataset_register
from workers.services import model_train

pytestmark = pytest.mark.django_db

MLP = {"name": "mlp", "config": {"in_features": 30, "num_classes": 2, "hidden": [8], "input_norm": "asinh"}}
# One epoch of batches of 32 at noise multiplier 1.2 and delta 1e-6: about epsilon 2 per record.
DP = {"architecture": MLP, "epochs": 1, "batch_size": 32, "lr": 0.5, "noise_multiplier": 1.2, "delta": 1e-6,
      "accountant": "prv", "seed": 0}
# Limits under which a pair of records is covered by the accountant's group bound (epsilon about 15
# at delta 1e-6) and not by the generic one (its delta, 2 e^epsilon 1e-6, is above 1e-5).
LOOSE = {"dp_max_epsilon": 20.0, "dp_max_delta": 1e-5}


@pytest.fixture
def dp_model():
    dataset = reference_dataset_register(name="breast_cancer")
    model = factories.registered_model(name="bc-dp", recipe="dp")
    model.unlearning_policy = LOOSE
    model.save()
    version = _run(model_train(model=model, dataset=dataset, enqueue=False, recipe_config=DP)).result_version
    members = list(TrainingMembership.objects.filter(run=version.training_run).order_by("record_id")
                   .values_list("record_id", flat=True)[:3])
    return dataset, model, version, members


def _scoped(dataset, record_ids: list[int]) -> DeletionRequest:
    records = DataRecord.objects.filter(id__in=record_ids).order_by("id")
    request, _ = intake.deletion_request_create(client=None, body={
        "identifiers": {}, "record_keys": [{"dataset": f"{dataset.name}@{dataset.version}", "record_key": r.external_key}
                                           for r in records],
        "jurisdiction": "GDPR", "legal_ground": "art17_1_b", "channel": "test"})
    return decisions.deletion_request_verify(request=request, actor="tests", evidence=EVIDENCE)


def _opacus_epsilon(accountant: str, noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    from opacus.accountants import create_accountant

    counted = create_accountant(accountant)
    counted.history = [(noise_multiplier, sample_rate, steps)]
    return counted.get_epsilon(delta=delta)


def test_the_plan_shows_the_bound_the_dpo_chooses_it_and_only_a_written_risk_acceptance_closes_it(
        dp_model, api_client_for, client, tmp_path):
    dataset, model, version, members = dp_model
    metrics = version.metrics
    assert metrics["dp_pipeline"]["conditions"]["dp_sgd"]["holds"] is True  # the run recorded it on the version
    request = _scoped(dataset, members[:2])
    [step] = request.plan
    assert step["method"] == "retrain"  # planned as before; dp_bounded is offered, never imposed
    bound = step["dp_bound"]
    q, sigma, steps, delta = metrics["sample_rate"], metrics["noise_multiplier"], metrics["steps"], metrics["delta"]
    assert (bound["k"], delta) == (2, 1e-6)
    # Held to Opacus' own accountant: one record is the run's PRV epsilon; the pair, accounted as one
    # unit (sampled with 1 - (1 - q)^2, noise multiplier sigma / 2, the same steps), is RDP's.
    assert bound["per_record"]["epsilon"] == pytest.approx(_opacus_epsilon("prv", sigma, q, steps, delta), rel=1e-9)
    expected = _opacus_epsilon("rdp", sigma / 2, 1 - (1 - q) ** 2, steps, delta)
    assert bound["accountant"] == {"epsilon": pytest.approx(expected, rel=1e-9), "delta": delta}
    generic_epsilon = 2 * metrics["epsilon"]
    assert bound["generic"] == {"epsilon": pytest.approx(generic_epsilon),
                                "delta": pytest.approx(2 * math.exp(metrics["epsilon"]) * delta)}
    # The generic delta is above the policy's 1e-5, the accountant's bound within both limits: it is the one.
    assert bound["computed_by"] == "accountant (rdp)" and bound["epsilon"] == pytest.approx(expected)
    assert (bound["within_limits"], bound["vacuous"], bound["max_epsilon"], bound["max_delta"]) == (True, False, 20.0, 1e-5)
    assert bound["whole_pipeline_private"] is None  # nobody declared how the features were made
    assert "deletes nothing from the weights" in bound["summary"]
    assert [a["method"] for a in step["alternatives"]] == ["dp_bounded"]

    # The admin shows the bound, k, the limits and the conditions, and offers the method.
    from django.contrib.auth.models import Group, User
    from django.core.management import call_command
    from django.urls import reverse

    call_command("setup_roles", stdout=io.StringIO())
    alice = User.objects.create_user("alice", "alice@example.org", is_staff=True)
    alice.groups.add(Group.objects.get(name="dpo"))
    client.force_login(alice)
    html = client.get(reverse("admin:deletion_deletionrequest_change", args=[request.pk])).content.decode()
    assert f'id="dp-dp-bound-{version.id}"' in html and "(k = 2)" in html and "limits epsilon &lt;= 20" in html
    assert "not_pretrained_on_records: private (recipe)" in html and '<option value="dp_bounded">' in html

    dpo = api_client_for("dpo", user="alice")
    approved = dpo.post(f"/api/v1/deletion-requests/{request.public_id}/approve/",
                        {"methods": [{"model_version_id": version.id, "method": "dp_bounded"}]}, format="json")
    assert approved.status_code == 200, approved.json()
    outcome = ModelOutcome.objects.get(request=request)
    assert (outcome.method, outcome.guarantee_class, outcome.job) == ("dp_bounded", "dp_bounded", None)
    assert not Job.objects.filter(kind="unlearn").exists()  # nothing is unlearned
    assert outcome.audit_job.guarantee_class == "dp_bounded"
    assert DeletionRequest.objects.get(pk=request.pk).status == "AUDITING"

    _run(outcome.audit_job)
    outcome.refresh_from_db()
    # A bound within the limits is a PASS of the bound, never of erasure: the DPO decides.
    assert (outcome.verdict, outcome.status, outcome.new_version) == ("PASS", "awaiting_decision", None)
    [check] = outcome.audit["checks"]
    assert check["check"] == "dp_group_privacy" and check["bound"]["epsilon"] == pytest.approx(expected)
    assert not Job.objects.filter(kind="report").exists()
    assert api_client_for("ml_engineer").get("/api/v1/deployments/pending/").json() == []

    url = f"/api/v1/deletion-requests/{request.public_id}/accept-risk/"
    body = {"model_version_id": version.id, "reason": "DP-SGD bound accepted; a retrain is disproportionate"}
    assert dpo.post(url, body, format="json").status_code == 200
    assert api_client_for("dpo", user="bob").post(url, body, format="json").status_code == 200
    outcome.refresh_from_db()
    assert outcome.status == "confirmed" and outcome.new_version is None
    _run_report_job(str(request.public_id))
    request = DeletionRequest.objects.get(pk=request.pk)
    assert request.status == RequestStatus.CLOSED_RISK_ACCEPTED  # never COMPLETED

    data = report_data(request=request)
    [entry] = data["model_versions"]
    reported = entry["dp_bound"]
    assert (reported["k"], reported["computed_by"], reported["within_limits"], reported["vacuous"]) == (
        2, "accountant (rdp)", True, False)
    assert reported["epsilon"] == pytest.approx(expected) and reported["delta"] == delta
    assert {c["condition"]: c["holds"] for c in reported["conditions"]}["no_preprocessing_fitted_outside_dp"] is None
    assert reported["statement"].startswith("Nothing was deleted from this model's weights")
    assert "a risk decision of the DPO, not erasure" in reported["statement"]
    text = _pdf_text(data, tmp_path)
    assert "The differential-privacy bound (nothing was deleted from the weights)" in text
    assert "Nothing was deleted from this model's weights" in text and "accountant (rdp)" in text
    assert "Whether the whole training pipeline was private is not known" in text
    assert "epsilon <= 20, delta <= 1e-05" in text


def test_a_vacuous_bound_is_marked_so_and_still_waits_for_the_dpo(dp_model):
    dataset, model, version, members = dp_model
    model.unlearning_policy = {}  # the platform's limits: epsilon 10, delta 1e-5
    model.save()
    request = _scoped(dataset, members[:2])
    [step] = request.plan
    bound = step["dp_bound"]
    # Neither bound meets both limits (the accountant's epsilon is above 10, the generic delta above 1e-5).
    assert bound["accountant"]["epsilon"] > 10 and bound["generic"]["delta"] > 1e-5
    assert (bound["vacuous"], bound["within_limits"], bound["max_epsilon"]) == (True, False, 10.0)
    assert "VACUOUS" in bound["summary"] and "VACUOUS" in step["alternatives"][0]["why"]
    request = decisions.deletion_request_approve(request=request, actor="tests", methods={version.id: "dp_bounded"})
    outcome = ModelOutcome.objects.get(request=request)
    _run(outcome.audit_job)
    outcome.refresh_from_db()
    # FAIL (the bound is beyond the limits), and still the DPO's decision: escalate, withdraw or accept.
    assert (outcome.verdict, outcome.status) == ("FAIL", "awaiting_decision")
    escalated = decisions.outcome_escalate(request=request, actor="tests", model_version_id=version.id)
    outcome.refresh_from_db()
    assert escalated.status == "EXECUTING" and (outcome.method, outcome.job.method) == ("retrain", "retrain")


def test_a_model_trained_without_dp_offers_no_bound(dp_model):
    dataset, model, version, members = dp_model
    plain = factories.registered_model(name="bc-plain", recipe="plain")
    _run(model_train(model=plain, dataset=dataset, enqueue=False,
                     recipe_config={"architecture": MLP, "epochs": 1, "batch_size": 64}))
    request = _scoped(dataset, members[:1])
    steps = {step["model"]: step for step in request.plan}
    assert steps["bc-plain"]["dp_bound"] is None and steps["bc-plain"]["alternatives"] == []
    assert steps["bc-dp"]["dp_bound"]["k"] == 1
    # k = 1: the accountant's bound is the run's own epsilon.
    assert steps["bc-dp"]["dp_bound"]["accountant"]["epsilon"] == pytest.approx(version.metrics["epsilon"], rel=1e-9)
