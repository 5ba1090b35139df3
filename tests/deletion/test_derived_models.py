"""Derived models are unlearned (issue 22, finding 2): a student distilled from a model through the
training API records its lineage; a request that reaches the parent plans the child's
re-distillation from the parent's new version, with the parent's class as its cap; the child's job
waits until the parent's result is audited, then runs from it, and its own audit says what its
evidence rests on. A child whose parent is held cannot be re-derived: the DPO decides."""

from __future__ import annotations

import pytest

from deletion import decisions
from deletion.models import ModelOutcome
from foundation.errors import Conflict
from models_registry import selectors
from models_registry.models import DataRecord, ModelLineageEdge
from tests import factories
from tests.flows import approved_request, run_job
from workers.jobs import job_execute
from workers.models import Job
from workers.reference_data import reference_dataset_register
from workers.services import model_train

pytestmark = pytest.mark.django_db

MLP = {"name": "mlp", "config": {"in_features": 30, "num_classes": 2, "hidden": [8]}}
PLAIN = {"architecture": MLP, "epochs": 2, "seed": 1}
DISTILL = {"epochs": 2, "seed": 2, "temperature": 3.0}


@pytest.fixture
def family(api_client_for, one_torch_thread):
    """A plain parent on the breast-cancer records and a student distilled from it through the
    training API on the same records (its transfer set)."""
    dataset = reference_dataset_register(name="breast_cancer")
    parent_model = factories.registered_model(name="bc-teacher", architecture=MLP)
    parent = run_job(model_train(model=parent_model, dataset=dataset, enqueue=False,
                                 recipe_config=PLAIN)).result_version
    factories.registered_model(name="bc-student", recipe="distill", architecture=MLP)
    engineer = api_client_for("ml_engineer")
    response = engineer.post("/api/v1/training-jobs/", {"model": "bc-student", "dataset": dataset.id,
                                                        "recipe_config": DISTILL, "parent_version": parent.id},
                             format="json")
    assert response.status_code == 202, response.content
    child = run_job(Job.objects.get(pk=response.json()["id"])).result_version
    return dataset, parent, child



def test_a_distilled_child_is_unlearned_after_its_parent_and_audited(family):
    dataset, parent, child = family
    edge = ModelLineageEdge.objects.get(child=child)
    assert (edge.parent_id, edge.kind) == (parent.id, "distilled_from")
    assert child.training_run.memberships.count() == DataRecord.objects.filter(dataset=dataset, split="train").count()
    record = DataRecord.objects.filter(dataset=dataset, split="train").order_by("id")[7]

    request = approved_request([record])
    plan = {step["model"]: step for step in request.plan}
    assert (plan["bc-teacher"]["method"], plan["bc-teacher"]["guarantee_class"]) == ("retrain", "exact")
    step = plan["bc-student"]
    assert (step["method"], step["guarantee_class"]) == ("redistill", "exact")
    assert step["derived_from"] == {"version_id": parent.id, "model": "bc-teacher", "version": 1,
                                    "kind": "distilled_from", "guarantee_class": "exact"}
    parent_outcome = ModelOutcome.objects.get(request=request, model_version=parent)
    child_outcome = ModelOutcome.objects.get(request=request, model_version=child)

    # The child's job waits while its parent is being unlearned and audited.
    assert job_execute(job_id=child_outcome.job_id) == "deferred"
    assert Job.objects.get(pk=child_outcome.job_id).progress_stage.startswith(
        "waiting: its parent bc-teacher v1 is being unlearned")
    run_job(parent_outcome.job)
    assert job_execute(job_id=child_outcome.job_id) == "deferred"  # the parent's result is being audited
    parent_outcome.refresh_from_db()
    run_job(parent_outcome.audit_job)
    parent_outcome.refresh_from_db()
    assert parent_outcome.status == "awaiting_deployment", parent_outcome.audit["verdict"]

    run_job(Job.objects.get(pk=child_outcome.job_id))
    child_outcome.refresh_from_db()
    new_child, new_parent = child_outcome.new_version, parent_outcome.new_version
    assert new_child.parent_id == child.id and new_child.guarantee_class == "exact"
    assert ModelLineageEdge.objects.filter(parent=new_parent, child=new_child, kind="distilled_from").exists()
    details = child_outcome.job.result["unlearning"]["details"]
    assert details["parent"]["version_id"] == new_parent.id and details["class_cap"] == "exact"
    assert details["records_held_through_parent"] == 1 and details["records_held_directly"] == 1
    assert details["records_retained"] == child.training_run.memberships.count() - 1

    run_job(child_outcome.audit_job)
    child_outcome.refresh_from_db()
    assert child_outcome.audit["shadow_models"] == 0 and child_outcome.audit["derived"]["records"] == 1
    assert child_outcome.verdict == "PASS", child_outcome.audit["verdict"]
    assert child_outcome.status == "awaiting_deployment"
    child.refresh_from_db()
    assert child.status == "purged"
    assert selectors.versions_trained_on(record_ids=[record.id]) == []

    from deletion.report_data import report_data

    entry = next(e for e in report_data(request=request)["model_versions"] if e["model"] == "bc-student")
    note = next(n for n in entry["verdict"]["notes"] if n.startswith("Derived model"))
    assert "distilled from bc-teacher v1" in note and "version 2 (exact)" in note and "Class cap: exact" in note
    # The DPO's page lists the child with its parent and the cap, in the plan and in the outcomes.
    page = _dpo_page(request)
    assert f'id="dp-derived-{child.id}"' in page and "Derived model: distilled from bc-teacher v1" in page
    assert f'id="dp-outcome-derived-{child.id}"' in page and "Class cap: exact" in page


def _dpo_page(request) -> str:
    import io

    from django.contrib.auth.models import Group, User
    from django.core.management import call_command
    from django.test import Client

    call_command("setup_roles", stdout=io.StringIO())
    alice = User.objects.create_user("alice", "alice@example.org", "unused", is_staff=True)
    alice.groups.add(Group.objects.get(name="dpo"))
    client = Client()
    client.force_login(alice)
    response = client.get(f"/admin/deletion/deletionrequest/{request.pk}/change/")
    assert response.status_code == 200
    return response.content.decode()


def test_a_child_of_an_approximately_unlearned_parent_is_planned_approximate_at_most(family):
    dataset, parent, child = family
    parent.model.unlearning_policy = {"approximate_method": "finetune"}
    parent.model.save(update_fields=["unlearning_policy"])
    record = DataRecord.objects.filter(dataset=dataset, split="train").order_by("id")[3]
    request = approved_request([record])
    plan = {step["model"]: step for step in request.plan}
    assert plan["bc-teacher"]["guarantee_class"] == "approximate"
    assert (plan["bc-student"]["method"], plan["bc-student"]["guarantee_class"]) == ("redistill", "approximate")
    assert "a derived model has no shadow models" in plan["bc-student"]["audit_cannot_confirm"]


def test_a_child_whose_parent_is_held_cannot_be_rederived_and_goes_to_the_dpo(family):
    dataset, parent, child = family
    record = DataRecord.objects.filter(dataset=dataset, split="train").order_by("id")[5]
    request = approved_request([record], holds={parent.id: "litigation hold on the teacher model"})
    outcome = ModelOutcome.objects.get(request=request, model_version=child)
    assert job_execute(job_id=outcome.job_id) == "failed"
    outcome.refresh_from_db()
    assert outcome.status == "audit_failed" and outcome.verdict == "FAIL"
    assert "still holds 1 of the records" in outcome.audit["verdict"]["reasons"][0]
    with pytest.raises(Conflict) as refused:
        decisions.outcome_escalate(request=request, actor="tests", model_version_id=child.id)
    assert refused.value.code == "escalation_impossible"


def test_a_deriving_recipe_needs_a_held_parent_of_another_model(family, api_client_for):
    dataset, parent, child = family
    engineer = api_client_for("ml_engineer")
    cases = [({"model": "bc-student", "dataset": dataset.id, "recipe_config": DISTILL}, "derives a model from"),
             ({"model": "bc-teacher", "dataset": dataset.id, "recipe_config": PLAIN, "parent_version": child.id},
              "derives no model"),
             ({"model": "bc-student", "dataset": dataset.id, "recipe_config": DISTILL, "parent_version": child.id},
              "itself"),
             ({"model": "bc-student", "dataset": dataset.id, "recipe_config": DISTILL, "parent_version": 10**9},
              "no model version")]
    for body, words in cases:
        response = engineer.post("/api/v1/training-jobs/", body, format="json")
        assert response.status_code == 400, response.content
        assert words in response.json()["error"]["message"]
    from foundation.errors import ValidationFailed
    from workers.services import shadow_models_train

    with pytest.raises(ValidationFailed, match="cannot be the audit's reference"):
        shadow_models_train(version=child, count=2, enqueue=False)


def test_a_request_while_an_earlier_result_is_audited_unlearns_the_chain_once(family):
    """A request that arrives while an earlier one's new version is being audited finds the person's record
    in the old version and the new one: both are on one unlearning chain, so one step (on the version nearest
    the chain's head) covers both, and says so. Before, each got a job; both started from the newest version
    and the second found "the forget set is empty": the request FAILED. The derived child waits for the
    step that covers its parent."""
    from deletion.report_data import chain_note_of

    dataset, parent, child = family
    first, second = DataRecord.objects.filter(dataset=dataset, split="train").order_by("id")[2:4]
    earlier = approved_request([first])
    earlier_outcome = ModelOutcome.objects.get(request=earlier, model_version=parent)
    run_job(earlier_outcome.job)
    earlier_outcome.refresh_from_db()
    made = earlier_outcome.new_version  # being audited: the old version still holds every record
    assert made.parent_id == parent.id and parent.status != "purged"

    later = approved_request([second])
    teacher = [step for step in later.plan if step["model"] == "bc-teacher"]
    assert [step["model_version_id"] for step in teacher] == [made.id]
    assert teacher[0]["covers_versions"]["versions"] == [
        {"model_version_id": parent.id, "version": 1, "status": parent.status, "records": 1}]
    student = next(step for step in later.plan if step["model"] == "bc-student")
    assert student["derived_from"]["version_id"] == parent.id  # its lineage edge's parent, capped by the covering step
    assert student["derived_from"]["guarantee_class"] == teacher[0]["guarantee_class"]
    assert list(ModelOutcome.objects.filter(request=later).values_list("model_version_id", flat=True).order_by(
        "model_version_id")) == sorted([made.id, child.id])

    later_teacher = ModelOutcome.objects.get(request=later, model_version=made)
    later_child = ModelOutcome.objects.get(request=later, model_version=child)
    assert job_execute(job_id=later_teacher.job_id) == "deferred"  # the earlier result is being audited
    run_job(earlier_outcome.audit_job)
    earlier_child = run_job(ModelOutcome.objects.get(request=earlier, model_version=child).job)  # from v2
    run_job(ModelOutcome.objects.get(job=earlier_child).audit_job)
    run_job(Job.objects.get(pk=later_teacher.job_id))
    later_teacher.refresh_from_db()
    assert later_teacher.new_version.parent_id == made.id
    assert later_teacher.new_version.excluded_records.filter(record__in=[first, second]).count() == 2
    # The child's job waits for the covering step's audit (its parent v1 has no outcome of its own).
    assert job_execute(job_id=later_child.job_id) == "deferred"
    assert "its parent bc-teacher v2 is being unlearned" in Job.objects.get(pk=later_child.job_id).progress_stage
    assert "also covers v1" in chain_note_of(later_teacher)
    assert f'id="dp-covers-{made.id}"' in _dpo_page(later)  # the DPO's page shows it with the plan
