"""The plan and the DPO's method choice know where each unlearning method applies and what it costs
(issue 24): every step shows its method's applicability and cost as the catalogue declares them; a
step whose policy allows approximate methods offers the others that apply to the model, each with
its applicability and cost; a method that forgets whole classes only is refused when the request is
planned, with the reason, for a forget set that is not one whole class (the policy's choice falls
back to a retrain, the DPO's is refused), and planned for one that is."""

from __future__ import annotations

import io

import pytest

from deletion import decisions, intake
from foundation.errors import ValidationFailed
from models_registry.models import DataRecord
from tests import factories
from tests.flows import EVIDENCE
from workers.forget_classes import whole_class_problem_of
from workers.unlearning.catalogue import CLASSIFICATION, METHOD_SPECS, approximate_methods_for

WHOLE_CLASS_ONLY = [name for name in approximate_methods_for(CLASSIFICATION) if METHOD_SPECS.get(name).whole_class_only]


def test_a_forget_set_is_a_whole_class_only_when_it_is_every_member_of_one_class():
    labels = {"a": 0, "b": 0, "c": 1, "d": 1, "x": 0}
    members = ["a", "b", "c", "d"]  # "x" is labelled but not a member: not counted in its class
    assert whole_class_problem_of(labels=labels, member_keys=members, forget_keys=["a", "b"]) is None
    assert whole_class_problem_of(labels=labels, member_keys=members, forget_keys=["a"]) == (
        "the 1 record(s) to forget are 1 of the 2 training records of class 0, not all of them")
    assert "belong to 2 classes (class 0: 1, class 1: 1), not one" in whole_class_problem_of(
        labels=labels, member_keys=members, forget_keys=["a", "c"])
    assert "none of the records" in whole_class_problem_of(labels=labels, member_keys=members, forget_keys=["x"])


@pytest.fixture
def breast_cancer_model(db):
    """A plain classifier (its version's membership: breast_cancer's training split) whose policy
    names the whole-class-only method, and the training records by label."""
    from workers.data_sources import dataset_split
    from workers.reference_data import reference_dataset_register

    assert WHOLE_CLASS_ONLY, "the catalogue declares no whole-class-only method"
    dataset = reference_dataset_register(name="breast_cancer")
    train = dataset_split(dataset, "train")
    model = factories.registered_model(name="bc-policy-whole-class",
                                       unlearning_policy={"approximate_method": WHOLE_CLASS_ONLY[0]})
    _, version = factories.trained_version(model, dataset, [(key, 0, 0) for key in train.record_keys])
    by_label: dict[int, list[str]] = {}
    for key, _, target in train:
        by_label.setdefault(int(target), []).append(key)
    return dataset, model, version, by_label


def _scoped(dataset, keys: list[str]):
    request, _ = intake.deletion_request_create(client=None, body={
        "identifiers": {}, "record_keys": [{"dataset": f"{dataset.name}@{dataset.version}", "record_key": key}
                                           for key in keys],
        "jurisdiction": "GDPR", "legal_ground": "art17_1_b", "channel": "test"})
    return decisions.deletion_request_verify(request=request, actor="tests", evidence=EVIDENCE)


def test_one_persons_records_refuse_the_whole_class_method_at_planning_and_offer_the_applicable_ones(
        breast_cancer_model, api_client_for, client):
    dataset, model, version, by_label = breast_cancer_model
    whole_class = WHOLE_CLASS_ONLY[0]
    request = _scoped(dataset, by_label[0][:1])
    [step] = request.plan
    # The policy's method is refused now, with the reason, and the plan falls back to a retrain.
    assert (step["method"], step["guarantee_class"]) == ("retrain", "exact")
    assert f"the model's policy names {whole_class!r}, refused here" in step["policy_method_refused"]
    assert (f"forgets whole classes only (every training record of one class), and the 1 record(s) to forget are "
            f"1 of the {len(by_label[0])} training records of class 0, not all of them") in step["policy_method_refused"]
    assert step["method_info"]["method"] == "retrain" and step["method_info"]["cost"] == "one more full training of the model"
    # Offered instead: the other classification methods, each with where it applies and what it costs.
    offered = {a["method"]: a for a in step["alternatives"]}
    assert set(offered) == set(approximate_methods_for(CLASSIFICATION)) - set(WHOLE_CLASS_ONLY)
    dmm = METHOD_SPECS.get("dmm")
    assert offered["dmm"]["applies_to"] == dmm.applies_to and offered["dmm"]["cost"] == dmm.cost
    assert offered["dmm"]["needs"] == ["shadow_references"] and offered["dmm"]["guarantee_class"] == "approximate"
    assert offered["finetune"]["applies_to"] == "every classification model"
    # A method that reads shadow models says up front what the model's shadow models allow (none here).
    assert "this model has 0 shadow model(s): dmm needs at least 2 complementary pairs" in offered["dmm"]["why"]
    assert offered["oracle_matching"]["audit_cannot_confirm"]
    # Every approximate method's audit needs shadow models for its per-record test: none here, so each
    # offered one says so too (twice the shadow policy's minimum would do for a method that reads none).
    assert offered["finetune"]["audit_cannot_confirm"] == (
        "this audit cannot confirm erasure here: its per-record test needs 16 shadow models without each forgotten "
        "record, and this model has no shadow models; expect INCONCLUSIVE and a decision by the DPO, unless the "
        "model is given at least 32 shadow models first")
    assert offered["finetune"]["why"].endswith(f" Note: {offered['finetune']['audit_cannot_confirm']}.")
    assert set(step["not_offered"]) == set(WHOLE_CLASS_ONLY)
    # No language-model or regression method is offered for a classifier.
    assert not {a for a in offered if METHOD_SPECS.get(a).task != CLASSIFICATION}

    # The plan API shows it; the DPO's choice of the refused method is refused with the reason.
    dpo = api_client_for("dpo", name="alice")
    shown = dpo.get(f"/api/v1/deletion-requests/{request.public_id}/").json()["plan"][0]
    assert shown["method_info"]["applies_to"] and shown["not_offered"][whole_class] == step["not_offered"][whole_class]
    refused = dpo.post(f"/api/v1/deletion-requests/{request.public_id}/approve/",
                       {"methods": [{"model_version_id": version.id, "method": whole_class}]}, format="json")
    assert refused.status_code == 400, refused.json()
    assert f"{whole_class!r} cannot unlearn this request's records" in refused.json()["error"]["message"]
    assert "not all of them" in refused.json()["error"]["message"]

    # The admin shows applicability and cost beside the method, and offers the applicable ones.
    from django.contrib.auth.models import Group, User
    from django.core.management import call_command
    from django.urls import reverse

    call_command("setup_roles", stdout=io.StringIO())
    bob = User.objects.create_user("bob", "bob@example.org", is_staff=True)
    bob.groups.add(Group.objects.get(name="dpo"))
    client.force_login(bob)
    html = client.get(reverse("admin:deletion_deletionrequest_change", args=[request.pk])).content.decode()
    assert f'id="dp-method-info-{version.id}"' in html and f'id="dp-policy-refused-{version.id}"' in html
    assert '<option value="dmm">' in html and f'<option value="{whole_class}">' not in html

    # An offered approximate method can be chosen: its job runs it, without the policy's config.
    with pytest.raises(ValidationFailed, match="does not offer 'npo'"):
        decisions.deletion_request_approve(request=request, actor="tests", methods={version.id: "npo"})
    request = decisions.deletion_request_approve(request=request, actor="tests", methods={version.id: "finetune"})
    outcome = request.outcomes.get()
    assert (outcome.method, outcome.guarantee_class) == ("finetune", "approximate")
    assert (outcome.job.method, outcome.job.config) == ("finetune", {})


def test_a_whole_class_is_planned_with_the_policys_whole_class_method(breast_cancer_model):
    dataset, model, version, by_label = breast_cancer_model
    request = _scoped(dataset, by_label[1])
    [step] = request.plan
    assert (step["method"], step["guarantee_class"]) == (WHOLE_CLASS_ONLY[0], "approximate")
    assert step["policy_method_refused"] is None and step["method_info"]["whole_class_only"] is True
    assert step["records"] == len(by_label[1]) == DataRecord.objects.filter(id__in=step["record_ids"]).count()


@pytest.mark.parametrize("shadows,expected,other", [
    (32, "reads the shadow models of 8 of this model's 16 shadow pairs and the audit judges with the other 8, which "
         "give 8 shadow model(s) without each record where an approximate PASS needs 16", None),
    (62, None, None),
    (3, "this model has 3 shadow model(s)", "this model's 3 shadow model(s) (complementary pairs, each record absent "
                                            "from one of each pair) give each record 1"),
    (8, "reads the shadow models of 2 of this model's 4 shadow pairs", "give each record 4; expect INCONCLUSIVE and a decision by the DPO, "
                                            "unless the model is given at least 32 shadow models first"),
    (30, "reads the shadow models of 7", "give each record 15"),
])
def test_a_method_that_reads_shadow_models_says_when_the_audit_keeps_too_few(breast_cancer_model, monkeypatch,
                                                                              shadows, expected, other):
    """Oracle matching and DMM read half the shadow pairs and the audit judges with the others: with the
    platform's default 32 shadow models that leaves 8 without each record where an approximate PASS needs
    16, so the plan says the audit cannot confirm erasure (62 are enough). Another approximate method
    leaves the audit every pair, one shadow without each record per pair: it needs 32 (``other``)."""
    import workers.runners.shadow
    from deletion.planning import shadow_evidence_shortfall

    _, _, version, _ = breast_cancer_model
    monkeypatch.setattr(workers.runners.shadow, "shadow_runs", lambda version: [object()] * shadows)
    for method in ("oracle_matching", "dmm"):
        said = shadow_evidence_shortfall(version=version, method=method)
        assert (said is None) if expected is None else (expected in said), said
    for method in ("finetune", "laf"):
        said = shadow_evidence_shortfall(version=version, method=method)
        assert (said is None) if other is None else (other in said), said
    # Exact methods rest on the lineage and the replay, not on shadow models: never a note.
    assert {shadow_evidence_shortfall(version=version, method=m) for m in ("retrain", "sisa", "s3t")} == {None}


def test_the_models_own_minimum_of_out_shadows_counts(breast_cancer_model, monkeypatch):
    """A policy that raises min_out_shadows (audits.runner.min_out_shadows) raises what the plan asks."""
    import workers.runners.shadow
    from deletion.planning import shadow_evidence_shortfall

    _, model, version, _ = breast_cancer_model
    monkeypatch.setattr(workers.runners.shadow, "shadow_runs", lambda version: [object()] * 32)
    assert shadow_evidence_shortfall(version=version, method="finetune") is None
    model.unlearning_policy = {**(model.unlearning_policy or {}), "min_out_shadows": 20}
    model.save(update_fields=["unlearning_policy"])
    said = shadow_evidence_shortfall(version=version, method="finetune")
    assert "needs 20 shadow models without each forgotten record" in said and "give each record 16" in said, said
    assert "at least 40 shadow models first" in said


def test_an_approximate_step_offers_the_exact_method_an_escalation_would_run(breast_cancer_model, api_client_for,
                                                                            client):
    """A step whose audit cannot confirm erasure ("expect INCONCLUSIVE") offers the exact retrain at
    approval: the DPO need not run the approximate method, wait for its audit and then escalate."""
    import json

    from django.core.management import call_command
    from django.urls import reverse

    from foundation.ledger.models import LedgerEvent

    dataset, model, version, by_label = breast_cancer_model
    model.unlearning_policy = {"approximate_method": "finetune"}
    model.save(update_fields=["unlearning_policy"])
    request = _scoped(dataset, by_label[0][:1])
    [step] = request.plan
    assert (step["method"], step["guarantee_class"]) == ("finetune", "approximate")
    assert "this audit cannot confirm erasure here" in step["audit_cannot_confirm"]  # and it says: choose an exact one
    offered = {a["method"]: a for a in step["alternatives"]}
    retrain = offered["retrain"]
    assert (retrain["guarantee_class"], retrain["audit_cannot_confirm"]) == ("exact", None)
    assert retrain["cost"] == "one more full training of the model" and retrain["why"].startswith("Exact instead")
    assert "external_retrain" not in offered  # the model declares no pipeline of its own

    call_command("setup_roles", stdout=io.StringIO())
    client.force_login(factories.staff_user("bob", role="dpo"))
    html = client.get(reverse("admin:deletion_deletionrequest_change", args=[request.pk])).content.decode()
    assert '<option value="retrain">retrain (exact)</option>' in html

    dpo = api_client_for("dpo", name="alice")
    approved = dpo.post(f"/api/v1/deletion-requests/{request.public_id}/approve/",
                        {"methods": [{"model_version_id": version.id, "method": "retrain"}]}, format="json")
    assert approved.status_code == 200, approved.json()
    outcome = request.outcomes.get()
    assert (outcome.method, outcome.guarantee_class, outcome.job.method) == ("retrain", "exact", "retrain")
    [chosen] = [e for e in map(json.loads, LedgerEvent.objects.values_list("payload", flat=True))
                if e["type"] == "outcome.method_chosen"]
    assert (chosen["data"]["planned"], chosen["data"]["chosen"]) == ("finetune", "retrain")


def test_a_model_with_its_own_pipeline_is_offered_that_pipeline_as_the_exact_method(breast_cancer_model,
                                                                                    api_client_for):
    """Where the policy declares an external retrain for escalations, the approximate step offers it (the
    escalation's method) instead of the platform's retrain; a section that cannot serve offers the retrain."""
    dataset, model, version, by_label = breast_cancer_model
    engineer = api_client_for("ml_engineer", name="company-pipeline")
    hook = engineer.post("/api/v1/webhooks/", {"url": "http://127.0.0.1:9/retrain"}, format="json").json()
    section = {"webhook": hook["id"], "attested_by": "ML platform team (J. Doe)", "use": "escalation"}
    model.unlearning_policy = {"approximate_method": "finetune", "external_retrain": section}
    model.save(update_fields=["unlearning_policy"])
    [step] = _scoped(dataset, by_label[0][:1]).plan
    offered = {a["method"]: a for a in step["alternatives"]}
    assert offered["external_retrain"]["guarantee_class"] == "exact_attested" and "retrain" not in offered
    assert "ML platform team (J. Doe) attests the retrain" in offered["external_retrain"]["why"]

    model.unlearning_policy = {"approximate_method": "finetune", "external_retrain": {**section, "webhook": 999999}}
    model.save(update_fields=["unlearning_policy"])
    [step] = _scoped(dataset, by_label[0][1:2]).plan
    assert {"retrain"} <= {a["method"] for a in step["alternatives"]} and not any(
        a["method"] == "external_retrain" for a in step["alternatives"])
