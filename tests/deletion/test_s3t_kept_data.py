"""S3T deletions say, in the plan, how much of the kept data the served model would still learn from
(worked out before anything runs from the stored version's manifest and the registry's membership),
and offer retraining the switched-off adapters (s3t_retrain) when that falls below the floor the
model's ML engineer set. Through the real jobs: the plan's figure is the one the job then reports,
the retrain variant's result never saw a forgotten record and learns from every kept one, and the
report shows the figure for both."""

from __future__ import annotations

import io
import json
import math

import pytest

from deletion import decisions, intake
from deletion.models import DeletionRequest, ModelOutcome
from deletion.report_data import report_data
from foundation.errors import ValidationFailed
from foundation.ledger.models import LedgerEvent
from models_registry.models import DataRecord, TrainingMembership
from models_registry.services import registered_model_create
from tests import factories
from workers.jobs import job_execute
from workers.models import Job
from workers.reference_data import reference_dataset_register
from workers.services import model_train

pytestmark = pytest.mark.django_db

MLP = {"name": "mlp", "config": {"in_features": 30, "num_classes": 2, "hidden": [16], "input_norm": "asinh"}}
# One ordering, four slices: a record of slice 1 switches off three of its shard's four adapters.
S3T = {"architecture": MLP, "epochs": 2, "shards": 2, "slices": 4, "orderings": 1, "lora_rank": 2, "seed": 0}
EVIDENCE = {"method": "email-link", "verified_at": "2026-11-20T10:00:00Z", "verifier": "support"}
KEPT = "Kept records the served model learned from"


def _run(job: Job) -> Job:
    assert job_execute(job_id=job.id) == "succeeded", Job.objects.get(pk=job.id).error
    job.refresh_from_db()
    return job


@pytest.fixture
def s3t_model():
    dataset = reference_dataset_register(name="breast_cancer")
    model = factories.registered_model(name="bc-s3t", recipe="s3t")
    version = _run(model_train(model=model, dataset=dataset, enqueue=False, recipe_config=S3T)).result_version
    placements = dict(((shard, slice_), record_id) for record_id, shard, slice_ in TrainingMembership.objects.filter(
        run=version.training_run).order_by("-record_id").values_list("record_id", "shard", "slice"))
    return dataset, model, version, placements


def _scoped(dataset, record_ids: list[int]) -> DeletionRequest:
    records = DataRecord.objects.filter(id__in=record_ids).order_by("id")
    request, _ = intake.deletion_request_create(client=None, body={
        "identifiers": {}, "record_keys": [{"dataset": f"{dataset.name}@{dataset.version}", "record_key": r.external_key}
                                           for r in records],
        "jurisdiction": "GDPR", "legal_ground": "art17_1_b", "channel": "test"})
    return decisions.deletion_request_verify(request=request, actor="tests", evidence=EVIDENCE)


def _served_by_rule(version, forgotten: set[int], served: set[tuple[int, int]]) -> int:
    """Kept records of the run (less ``forgotten``) in the (shard, slice) places ``served``, counted
    apart from the code under test."""
    return sum(1 for record_id, shard, slice_ in TrainingMembership.objects.filter(run=version.training_run)
               .values_list("record_id", "shard", "slice") if record_id not in forgotten and (shard, slice_) in served)


def _execute_and_audit(outcome: ModelOutcome) -> ModelOutcome:
    _run(outcome.job)
    outcome.refresh_from_db()
    _run(outcome.audit_job)
    outcome.refresh_from_db()
    return outcome


def test_the_plan_says_how_much_kept_data_the_served_model_would_learn_from_and_the_job_agrees(s3t_model):
    dataset, model, version, placements = s3t_model
    total = TrainingMembership.objects.filter(run=version.training_run).count()
    first = placements[(0, 1)]
    request = _scoped(dataset, [first])
    [step] = request.plan
    assert step["method"] == "s3t" and step["alternatives"] == []  # no floor set: nothing offered
    kept = step["kept_data"]
    # Shard 0 keeps only its adapter of slice 0; shard 1 serves all four.
    expected = _served_by_rule(version, {first}, {(0, 0), (1, 0), (1, 1), (1, 2), (1, 3)})
    assert (kept["kept_records"], kept["kept_records_served"]) == (total - 1, expected)
    assert kept["fraction"] == round(expected / (total - 1), 4) and kept["adapters_deactivated"] == 3
    assert kept["summary"].startswith(f"After this deletion the served model would still have learned from "
                                      f"{expected:,} of the {total - 1:,} kept records")
    assert kept["floor"] is None and kept["below_floor"] is False
    outcome = _execute_and_audit(ModelOutcome.objects.get(request=decisions.deletion_request_approve(
        request=request, actor="tests")))
    details = outcome.job.result["unlearning"]["details"]
    assert (details["kept_records"], details["kept_records_served"]) == (total - 1, expected)
    [entry] = report_data(request=DeletionRequest.objects.get(pk=request.pk))["model_versions"]
    row = next(m for m in entry["metrics"] if m["name"] == KEPT)
    assert (row["before"], row["after"]) == (total - 1, expected)

    # A second deletion builds on the first one's result, and its figure is still counted against
    # all the kept data (the registry's membership), not the records the first result still lists.
    second = placements[(1, 2)]
    request = _scoped(dataset, [second])
    [step] = request.plan
    assert step["kept_data"]["source_version"] == outcome.new_version.version
    expected = _served_by_rule(version, {first, second}, {(0, 0), (1, 0), (1, 1)})
    assert (step["kept_data"]["kept_records"], step["kept_data"]["kept_records_served"]) == (total - 2, expected)
    outcome = ModelOutcome.objects.get(request=decisions.deletion_request_approve(request=request, actor="tests"))
    details = _run(outcome.job).result["unlearning"]["details"]
    assert (details["kept_records"], details["kept_records_served"]) == (total - 2, expected)


def test_below_the_floor_the_plan_offers_retraining_the_adapters_and_the_dpo_can_choose_it(s3t_model, api_client_for):
    dataset, model, version, placements = s3t_model
    model.s3t_kept_data_floor = 0.9
    model.save()
    total = TrainingMembership.objects.filter(run=version.training_run).count()
    forgotten = placements[(0, 1)]
    request = _scoped(dataset, [forgotten])
    [step] = request.plan
    assert step["method"] == "s3t" and step["kept_data"]["below_floor"] is True
    assert "below the floor of 90% the model's ML engineer set" in step["kept_data"]["summary"]
    [offer] = step["alternatives"]
    assert (offer["method"], offer["guarantee_class"], offer["adapters_to_retrain"]) == ("s3t_retrain", "exact", 3)
    assert offer["kept_records_served"] == total - 1
    # Shown in the API; only what the plan offers may be chosen.
    dpo = api_client_for("dpo")
    shown = dpo.get(f"/api/v1/deletion-requests/{request.public_id}/").json()
    assert shown["plan"][0]["alternatives"][0]["method"] == "s3t_retrain"
    refused = dpo.post(f"/api/v1/deletion-requests/{request.public_id}/approve/",
                       {"methods": [{"model_version_id": version.id, "method": "finetune"}]}, format="json")
    assert refused.status_code == 400 and "methods" in refused.json()["error"]["fields"], refused.json()
    assert "does not offer 'finetune'" in refused.json()["error"]["message"]
    approved = dpo.post(f"/api/v1/deletion-requests/{request.public_id}/approve/",
                        {"methods": [{"model_version_id": version.id, "method": "s3t_retrain"}]}, format="json")
    assert approved.status_code == 200, approved.json()
    outcome = ModelOutcome.objects.get(request=request)
    assert (outcome.method, outcome.guarantee_class, outcome.job.method) == ("s3t_retrain", "exact", "s3t_retrain")
    [chosen] = [e for e in map(json.loads, LedgerEvent.objects.values_list("payload", flat=True))
                if e["type"] == "outcome.method_chosen"]
    assert (chosen["data"]["planned"], chosen["data"]["chosen"]) == ("s3t", "s3t_retrain")

    outcome = _execute_and_audit(outcome)
    details = outcome.job.result["unlearning"]["details"]
    assert details["adapters_deactivated"] == details["adapters_retrained"] == ["s0o0p1", "s0o0p2", "s0o0p3"]
    assert (details["kept_records"], details["kept_records_served"]) == (total - 1, total - 1)
    # The new version never saw the record: its stored membership lacks it and holds every kept one.
    from workers.runners.storage import artifact_store
    from workers.training import load_run

    new_run = load_run(artifact_store(), outcome.new_version.artifact_sha256)
    keys = {row.record_key for row in new_run.membership}
    assert DataRecord.objects.get(pk=forgotten).external_key not in keys and len(keys) == total - 1
    assert new_run.model.active == {0: (0, 4), 1: (0, 4)}
    # The audit replays it: S3T trained from scratch on the registry's kept records, bit for bit.
    replay = outcome.audit["replay"]
    assert replay["ran"] and replay["comparison"]["identical"], replay
    [entry] = report_data(request=DeletionRequest.objects.get(pk=request.pk))["model_versions"]
    assert entry["method"] == "s3t_retrain"
    # The report says the DPO chose it, and what the plan proposed (validated by the report's schema).
    choice = entry["method_choice"]
    assert (choice["planned"], choice["chosen"], choice["chosen_by"]) == ("s3t", "s3t_retrain", chosen["actor"])
    assert "The plan proposed s3t" in choice["statement"]
    from audits.report_schema import validate_report

    validate_report({**report_data(request=DeletionRequest.objects.get(pk=request.pk)),
                     "ledger_head": {"seq": 1, "hash": "0" * 64},
                     "signer": {"name": "tests", "organisation": "tests", "certificate_sha256": "0" * 64}})
    assert "The served model again learned from every kept record" in entry["guarantee"]["promises"]
    row = next(m for m in entry["metrics"] if m["name"] == KEPT)
    assert (row["before"], row["after"]) == (total - 1, total - 1)
    assert "the switched-off adapters were retrained" in row["description"]


def test_above_the_floor_nothing_is_offered_and_an_alternative_not_offered_is_refused(s3t_model):
    dataset, model, version, placements = s3t_model
    model.s3t_kept_data_floor = 0.1
    model.save()
    request = _scoped(dataset, [placements[(1, 3)]])  # the last slice: one adapter off
    [step] = request.plan
    assert step["kept_data"]["below_floor"] is False and step["alternatives"] == []
    with pytest.raises(ValidationFailed, match="does not offer 's3t_retrain'") as refused:
        decisions.deletion_request_approve(request=request, actor="tests", methods={version.id: "s3t_retrain"})
    assert refused.value.field == "methods"


@pytest.mark.parametrize(("floor", "message"), [
    (1.5, "s3t_kept_data_floor must be a share of the kept records from 0 to 1"),
    (-0.1, "s3t_kept_data_floor must be a share of the kept records from 0 to 1"),
    (math.nan, "s3t_kept_data_floor must be a share of the kept records from 0 to 1"),
    ("0.5", "s3t_kept_data_floor must be a number from 0 to 1"),
    (True, "s3t_kept_data_floor must be a number from 0 to 1"),
])
def test_a_bad_floor_is_refused_naming_the_field(floor, message):
    with pytest.raises(ValidationFailed, match=message) as refused:
        registered_model_create(name="m", task="classification", training_recipe="s3t", s3t_kept_data_floor=floor)
    assert refused.value.field == "s3t_kept_data_floor"


def test_a_floor_is_only_for_s3t_models_and_the_admin_form_checks_it_too():
    from models_registry.admin import RegisteredModelForm

    with pytest.raises(ValidationFailed, match="applies to models trained with the s3t recipe") as refused:
        registered_model_create(name="m", task="classification", training_recipe="sisa", s3t_kept_data_floor=0.5)
    assert refused.value.field == "s3t_kept_data_floor"
    model = registered_model_create(name="s", task="classification", training_recipe="s3t", s3t_kept_data_floor=0)
    assert model.s3t_kept_data_floor == 0.0
    fields = {"name": "s", "task": "classification", "training_recipe": "s3t", "architecture": "{}",
              "unlearning_policy": "{}"}
    form = RegisteredModelForm({**fields, "s3t_kept_data_floor": "1.2"}, instance=model)
    assert not form.is_valid()
    assert "from 0 to 1" in form.errors["s3t_kept_data_floor"][0]
    form = RegisteredModelForm({**fields, "s3t_kept_data_floor": "0.75"}, instance=model)
    assert form.is_valid(), form.errors


def test_the_admin_shows_the_figure_and_lets_the_dpo_approve_the_offered_method(s3t_model, client):
    from django.contrib.auth.models import Group, User
    from django.core.management import call_command
    from django.urls import reverse

    call_command("setup_roles", stdout=io.StringIO())
    alice = User.objects.create_user("alice", "alice@example.org", is_staff=True)
    alice.groups.add(Group.objects.get(name="dpo"))
    client.force_login(alice)
    dataset, model, version, placements = s3t_model
    model.s3t_kept_data_floor = 0.9
    model.save()
    request = _scoped(dataset, [placements[(0, 1)]])
    html = client.get(reverse("admin:deletion_deletionrequest_change", args=[request.pk])).content.decode()
    assert request.plan[0]["kept_data"]["summary"].split(";")[0] in html.replace("&#x27;", "'")
    assert f'name="method_{version.id}"' in html and '<option value="s3t_retrain">' in html
    act = reverse("admin:deletion_deletionrequest_act", args=[request.pk, "approve"])
    client.post(act, {f"method_{version.id}": "finetune"}, follow=True)  # not offered: the form refuses it
    assert DeletionRequest.objects.get(pk=request.pk).status == "SCOPED"
    client.post(act, {f"method_{version.id}": "s3t_retrain"}, follow=True)
    outcome = ModelOutcome.objects.get(request=request)
    assert (outcome.method, outcome.job.method) == ("s3t_retrain", "s3t_retrain")
