"""A person's request on a model that serves a concept eraser (issue 25 item 4): the eraser is derived from
the records it was fitted on, so scoping finds it through its lineage rows even for a record outside the
training set, the plan never keeps an eraser fitted on the erased records nor runs a class-conditional one
without its attribute (the exact path, which drops it, and the plan says so), and a second concept request
on a class-conditional eraser is refused at intake."""

from __future__ import annotations

import pytest

from deletion import decisions
from models_registry import services as registry
from models_registry.models import DataRecord, VersionStatus
from tests import factories
from tests.deletion.test_concept_requests import DIGITS_MLP, _concept_body, _refused
from tests.deletion.test_method_choice import _scoped
from workers.concept_layers import fitting_split
from workers.models import Job, JobKind, JobStatus

pytestmark = pytest.mark.django_db

MEMBERS = [f"d{i:04d}" for i in range(50)]
OUTSIDE = [f"d{i:04d}" for i in range(50, 60)]  # labelled, never trained on (a test split)
PARITY = {key: i % 2 for i, key in enumerate(MEMBERS + OUTSIDE)}


def _concept_version(method: str):
    """A plain MLP's trained version (policy: finetune) and the version a concept job made from it with
    ``method``, its eraser's fitting records recorded as the concept runner records them (registry rows only)."""
    ds = factories.dataset(name="digits")
    factories.import_records(ds, [{"record_key": key, "content": key} for key in PARITY])
    model = factories.registered_model(name="digits-mlp", architecture=DIGITS_MLP,
                                       unlearning_policy={"approximate_method": "finetune"})
    _, trained = factories.trained_version(model, ds, [(key, 0, 0) for key in MEMBERS])
    erased = registry.model_version_create(model=model, artifact_sha256="1" * 64, training_run=trained.training_run,
                                           parent=trained, status=VersionStatus.SERVING,
                                           guarantee_class="concept_erased")
    Job.objects.create(kind=JobKind.UNLEARN, status=JobStatus.SUCCEEDED, registered_model=model,
                       source_version=trained, result_version=erased, method=method, guarantee_class="concept_erased",
                       config={"layer": "act0", "seed": 0, "concept": {
                           "attribute": "digit parity", "dataset_id": ds.id, "labels": PARITY, "seed": 0,
                           "fit_share": 0.5}})
    fit, _ = fitting_split(PARITY, seed=0, fit_share=0.5)
    registry.concept_fit_records_record(version=erased, record_ids=DataRecord.objects.filter(
        dataset=ds, external_key__in=fit).values_list("id", flat=True))
    return ds, trained, erased, set(fit)


def _deployed_concept_version(api_client_for, *, method: str):
    """Over the API and through the worker: the digits MLP trained by an ML engineer, a concept request for
    digit parity with ``method`` approved, its job and audit run, and the new version deployed (the trained
    one retired: only the eraser's serves). Out: ``(rows, parity labels by record key, the erased version)``."""
    from models_registry.models import ModelVersion
    from tests.deletion.test_concept_requests import _digits_model_over_api
    from tests.flows import run_job

    engineer, dpo = api_client_for("ml_engineer"), api_client_for("dpo", name="alice")
    rows, _ = _digits_model_over_api(engineer)
    parity = {row["record_id"]: row["digit"] % 2 for row in rows}
    filed = dpo.post("/api/v1/concept-requests/", _concept_body(parity, [{"model": "digits-mlp"}], method=method),
                     format="json")
    assert filed.status_code == 201, filed.content
    concept_id = filed.json()["id"]
    assert dpo.post(f"/api/v1/deletion-requests/{concept_id}/approve/", {}, format="json").status_code == 200
    erased = ModelVersion.objects.get(pk=run_job(Job.objects.get(
        kind=JobKind.UNLEARN, deletion_request__public_id=concept_id)).result_version_id)
    run_job(Job.objects.get(kind=JobKind.AUDIT, deletion_request__public_id=concept_id))
    assert dpo.post(f"/api/v1/deletion-requests/{concept_id}/confirm-deployment/", {"new_version_id": erased.id},
                    format="json").status_code == 200
    return rows, parity, erased


def test_a_record_that_fitted_a_leace_eraser_finds_it_and_the_plan_does_not_keep_it():
    ds, trained, erased, fit = _concept_version("leace")
    # A record outside the training set that fitted the eraser: only the eraser holds its data.
    [outside] = sorted(fit & set(OUTSIDE))[:1]
    [step] = _scoped(ds, [outside]).plan
    assert (step["model_version_id"], step["records"]) == (erased.id, 1)
    # The weights never saw it: no retrain with nothing to forget, the eraser is taken off; the plan says so.
    assert (step["method"], step["guarantee_class"]) == ("eraser_drop", "exact")
    eraser = step["concept_eraser"]
    assert (eraser["made_by_version_id"], eraser["fitted_on_erased_records"], eraser["kept"]) == (erased.id, 1, False)
    assert "no longer erases 'digit parity'" in eraser["summary"] and "file a concept request" in eraser["summary"]

    # A training record that fitted it: the policy's finetune would keep the eraser, so the plan retrains.
    [fitted_member] = sorted(fit & set(MEMBERS))[:1]
    steps = {step["model_version_id"]: step for step in _scoped(ds, [fitted_member]).plan}
    assert set(steps) == {erased.id}  # one step, on the eraser's version, covers the trained one (its chain)
    assert [v["model_version_id"] for v in steps[erased.id]["covers_versions"]["versions"]] == [trained.id]
    for step in steps.values():
        assert (step["method"], step["guarantee_class"]) == ("retrain", "exact"), step
        assert "the leace eraser of 'digit parity'" in step["policy_method_refused"]
        assert "fitted on 1 of these records" in step["not_offered"]["scrub"]
        assert step["concept_eraser"]["fitted_on_erased_records"] == 1 and not step["concept_eraser"]["kept"]

    # A member the eraser was not fitted on: the policy's approximate method keeps the eraser, and says so.
    [member] = sorted(set(MEMBERS) - fit)[:1]
    steps = {step["model_version_id"]: step for step in _scoped(ds, [member]).plan}
    assert set(steps) == {erased.id}
    for step in steps.values():
        assert (step["method"], step["concept_eraser"]["kept"]) == ("finetune", True), step
        assert step["concept_eraser"]["fitted_on_erased_records"] == 0


def test_a_class_conditional_eraser_gets_no_approximate_method_and_no_second_concept_request(api_client_for):
    ds, trained, erased, fit = _concept_version("pef_coupling")
    [member] = sorted(set(MEMBERS) - fit)[:1]
    steps = {step["model_version_id"]: step for step in _scoped(ds, [member]).plan}
    assert set(steps) == {erased.id}
    for step in steps.values():
        # Not fitted on the record, yet no approximate job: it would run the model without the attribute.
        assert (step["method"], step["guarantee_class"], step["alternatives"]) == ("retrain", "exact", [])
        assert "needs each input's attribute at inference" in step["policy_method_refused"]
        assert all("pef_coupling eraser" in why for why in step["not_offered"].values()), step["not_offered"]
        assert step["concept_eraser"]["needs_attribute_at_inference"] and not step["concept_eraser"]["kept"]

    dpo = api_client_for("dpo")
    for version in (erased.version, trained.version):  # the trained version's concept job would start from it
        message = _refused(dpo, _concept_body(PARITY, [{"model": "digits-mlp", "version": version}]),
                           field="models[0]", code="class_conditional_eraser")
        assert "already serves the pef_coupling eraser of 'digit parity'" in message, message


@pytest.mark.usefixtures("one_torch_thread")
def test_a_persons_request_on_a_pef_coupling_version_retrains_without_the_eraser_end_to_end(api_client_for):
    """Through the worker: the concept job records the eraser's fitting records; a person's request for one
    of them plans a retrain (not the policy's approximate method, bound to fail without the attribute), whose
    new version excludes the record, serves without the eraser and passes its audit jobs' run."""
    import torch

    from deletion.report_data import concept_eraser_note
    from models_registry.models import ConceptFitRecord, Dataset, ModelVersion
    from tests.flows import run_job
    from workers.runners.storage import artifact_store
    from workers.training.storage import load_run
    from workers.unlearning.concept_erasure import erased_layers

    rows, parity, erased = _deployed_concept_version(api_client_for, method="pef_coupling")
    fit, _ = fitting_split(parity, seed=0)
    assert set(ConceptFitRecord.objects.filter(version=erased).values_list("record__external_key", flat=True)) == set(fit)

    erased.model.unlearning_policy = {"approximate_method": "finetune"}
    erased.model.save(update_fields=["unlearning_policy"])
    person = next(key for key in fit if not key.endswith(("0", "5")))  # a training record (every fifth is a test one)
    tested = next(key for key in fit if key.endswith(("0", "5")))  # a test record: only the eraser holds it
    digits = Dataset.objects.get(name="digits")
    request, only_eraser = _scoped(digits, [person]), _scoped(digits, [tested])
    [step] = request.plan
    assert step["model_version_id"] == erased.id and "needs each input's attribute" in step["policy_method_refused"]
    assert (step["method"], step["concept_eraser"]["fitted_on_erased_records"]) == ("retrain", 1)
    approved = decisions.deletion_request_approve(request=request, actor="alice")
    new = ModelVersion.objects.get(pk=run_job(Job.objects.get(kind=JobKind.UNLEARN, deletion_request=approved,
                                                              method="retrain")).result_version_id)
    assert new.excluded_records.filter(record__external_key=person).exists()
    assert not ConceptFitRecord.objects.filter(version=new).exists()  # retrained: no eraser, no lineage rows
    served = load_run(artifact_store(), new.artifact_sha256).model
    assert not erased_layers(served)
    inputs = torch.tensor([[row[f"p{j}"] for j in range(64)] for row in rows[:4]])
    assert served(inputs).shape == (4, 10)  # no attribute needed any more
    # The audit scores the original too: its class-conditional eraser is taken off for that, and it says so.
    audit = run_job(Job.objects.get(kind=JobKind.AUDIT, deletion_request=approved))
    assert audit.result["audit"]["original_erasers_detached"]["layers"] == ["act0"], audit.result["audit"].keys()
    [outcome] = approved.outcomes.all()
    assert "no longer erases 'digit parity'" in concept_eraser_note(outcome)  # the report's note

    # The test record's request, planned while the eraser served: eraser_drop. The retrain already took the
    # eraser off, so it keeps that model as it is (the weights never saw the record).
    [step] = only_eraser.plan
    assert (step["model_version_id"], step["method"], step["guarantee_class"]) == (erased.id, "eraser_drop", "exact")
    dropped = run_job(Job.objects.get(kind=JobKind.UNLEARN, deletion_request=decisions.deletion_request_approve(
        request=only_eraser, actor="alice")))
    assert dropped.result["unlearning"]["details"]["erasers_dropped"] == []
    last = ModelVersion.objects.get(pk=dropped.result_version_id)
    assert last.parent_id == new.id and last.excluded_records.filter(record__external_key=tested).exists()


@pytest.mark.usefixtures("one_torch_thread")
def test_an_approximate_method_that_keeps_a_leace_eraser_passes_its_lineage_on(api_client_for):
    """A LEACE eraser fitted on none of a person's records is kept by the policy's finetune: the new version
    still serves it, so it inherits the eraser's fitting records and a later request finds it through them."""
    from models_registry.models import ConceptFitRecord, Dataset, ModelVersion
    from tests.flows import run_job
    from workers.runners.storage import artifact_store
    from workers.training.storage import load_run
    from workers.unlearning.concept_erasure import erased_layers

    rows, parity, erased = _deployed_concept_version(api_client_for, method="leace")
    erased.model.unlearning_policy = {"approximate_method": "finetune"}
    erased.model.save(update_fields=["unlearning_policy"])
    fit, probe = fitting_split(parity, seed=0)
    person = next(key for key in probe if not key.endswith(("0", "5")))  # a training record the eraser never saw
    digits = Dataset.objects.get(name="digits")
    request = _scoped(digits, [person])
    [step] = request.plan
    assert (step["method"], step["concept_eraser"]["kept"]) == ("finetune", True)
    approved = decisions.deletion_request_approve(request=request, actor="alice")
    new = ModelVersion.objects.get(pk=run_job(Job.objects.get(kind=JobKind.UNLEARN, deletion_request=approved))
                                   .result_version_id)
    assert erased_layers(load_run(artifact_store(), new.artifact_sha256).model)  # the eraser is still served
    inherited = set(ConceptFitRecord.objects.filter(version=new).values_list("record__external_key", flat=True))
    assert inherited == set(fit)
    # So a test record that fitted it finds the new version (it was never trained on: only the eraser holds it).
    tested = next(key for key in fit if key.endswith(("0", "5")))
    assert new.id in {step["model_version_id"] for step in _scoped(digits, [tested]).plan}


@pytest.mark.usefixtures("one_torch_thread")
def test_the_audit_scores_a_persons_trained_records_on_the_weights_and_accounts_for_eraser_only_ones(api_client_for):
    """A person with a training record and a test-split record that fitted a LEACE eraser: the plan retrains.
    Its audit scores the training record on the weights, never uses the test record (held only by the eraser) as
    a held-out non-member, and says what became of it; before, it looked the test record up in the train split
    (KeyError) and the request FAILED. A request for another test record alone (eraser_drop) is audited too."""
    from deletion.models import RequestStatus
    from deletion.report_data import concept_eraser_note
    from models_registry.models import Dataset
    from tests.flows import run_job
    from workers.data_sources import dataset_split

    _, parity, erased = _deployed_concept_version(api_client_for, method="leace")
    fit, _ = fitting_split(parity, seed=0)
    trained = next(key for key in sorted(fit) if not key.endswith(("0", "5")))
    tested, alone = [key for key in sorted(fit) if key.endswith(("0", "5"))][:2]  # every fifth is a test record
    digits = Dataset.objects.get(name="digits")
    held_out = set(dataset_split(digits, "test").record_keys)
    assert {tested, alone} <= held_out and trained not in held_out
    request, only_eraser = _scoped(digits, [trained, tested]), _scoped(digits, [alone])
    [step] = request.plan
    assert (step["model_version_id"], step["records"], step["method"]) == (erased.id, 2, "retrain")
    approved = decisions.deletion_request_approve(request=request, actor="alice")
    run_job(Job.objects.get(kind=JobKind.UNLEARN, deletion_request=approved))
    audit_job = Job.objects.get(kind=JobKind.AUDIT, deletion_request=approved)
    assert sorted(audit_job.forget_record_ids) == sorted(
        DataRecord.objects.filter(dataset=digits, external_key__in=[trained, tested]).values_list("id", flat=True))
    audit = run_job(audit_job).result["audit"]
    assert (audit["records"], audit["verdict"]["verdict"]) == (1, "PASS")  # scored on the weights: the trained one
    # The held-out sample (the audit's non-members) is the test split less the person's test record.
    assert audit["metrics"]["test_sample"] == len(held_out) - 1
    section = audit["eraser_only_records"]
    assert (section["records"], section["scored_on_weights"], section["method"]) == (1, 1, "retrain")
    assert not section["new_version_eraser_fitted_on_them"] and section["new_version_eraser_layers"] == []
    assert audit["lineage"]["new_version_holds_none"]
    approved.refresh_from_db()
    assert approved.status != RequestStatus.FAILED
    [outcome] = approved.outcomes.all()
    note = concept_eraser_note(outcome)  # the report's note: the plan's words, then the audit's figures
    assert "no longer erases 'digit parity'" in note and "1 of the 2 erased records" in note, note
    assert "1 scored on the weights" in note, note

    # Every record of a request held only by the eraser (eraser_drop): nothing to score on the weights.
    [step] = only_eraser.plan
    assert (step["model_version_id"], step["method"]) == (erased.id, "eraser_drop")
    dropped = decisions.deletion_request_approve(request=only_eraser, actor="alice")
    run_job(Job.objects.get(kind=JobKind.UNLEARN, deletion_request=dropped))
    audit = run_job(Job.objects.get(kind=JobKind.AUDIT, deletion_request=dropped)).result["audit"]
    section = audit["eraser_only_records"]
    assert (audit["records"], section["records"], section["scored_on_weights"]) == (0, 1, 0)
    assert section["method"] == "eraser_drop" and not section["new_version_eraser_fitted_on_them"]
    assert audit["metrics"]["test_sample"] == len(held_out) - 1
    dropped.refresh_from_db()
    assert dropped.status != RequestStatus.FAILED


def test_an_erased_records_attribute_label_leaves_the_concept_request_and_its_jobs():
    # An attribute value (parity here; often a sensitive attribute) is data about the person: once the
    # record is erased, neither the concept request nor its job's config keeps it. Before, both did.
    import uuid

    from django.utils import timezone

    from deletion.models import DeletionRequest, RequestKind

    def filed(concept):
        return DeletionRequest.objects.create(public_id=uuid.uuid4(), kind=RequestKind.CONCEPT, jurisdiction="EU",
                                              received_at=timezone.now(), due_at=timezone.now(), concept=concept)

    ds, _, _, _ = _concept_version("leace")
    request = filed({"attribute": "digit parity", "dataset_id": ds.id, "labels": dict(PARITY), "seed": 0,
                     "fit_share": 0.5})
    other = factories.dataset(name="other")
    untouched = filed({"attribute": "x", "dataset_id": other.id, "labels": {MEMBERS[0]: 1}, "seed": 0, "fit_share": 0.5})
    gone = MEMBERS[:2]
    registry.records_erase(records=DataRecord.objects.filter(dataset=ds, external_key__in=gone), reason="test")
    request.refresh_from_db()
    job = Job.objects.get(config__concept__dataset_id=ds.id)
    for labels in (request.concept["labels"], job.config["concept"]["labels"]):
        assert set(labels) == set(PARITY) - set(gone) and all(labels[k] == PARITY[k] for k in labels)
    assert job.config["layer"] == "act0" and request.concept["attribute"] == "digit parity"
    untouched.refresh_from_db()
    assert untouched.concept["labels"] == {MEMBERS[0]: 1}  # the same key in another dataset is another record


def test_the_report_speaks_of_the_eraser_as_the_method_the_dpo_chose_leaves_it():
    """Each alternative the plan offers says what it would do with the eraser: on a DP-trained version whose
    LEACE eraser was fitted on the person's record, the planned retrain drops it, while ``dp_bounded`` (nothing
    changes) keeps it; the report's note follows the DPO's choice, not the planned method."""
    from deletion.report_data import concept_eraser_note

    ds, trained, erased, fit = _concept_version("leace")
    for version in (trained, erased):  # the accountant's figures of a DP-SGD run (workers.training.dp)
        version.metrics = {"accountant": "prv", "sample_rate": 0.05, "noise_multiplier": 1.2, "steps": 20,
                           "delta": 1e-6, "epsilon": 1.5}
        version.save(update_fields=["metrics"])
    [fitted_member] = sorted(fit & set(MEMBERS))[:1]
    request = _scoped(ds, [fitted_member])
    step = next(step for step in request.plan if step["model_version_id"] == erased.id)
    assert (step["method"], step["concept_eraser"]["kept"]) == ("retrain", False)
    from tests.deletion.test_derived_models import _dpo_page

    assert f'id="dp-concept-eraser-{erased.id}">Concept eraser: The leace eraser' in _dpo_page(request)
    [dp] = [alternative for alternative in step["alternatives"] if alternative["method"] == "dp_bounded"]
    assert dp["concept_eraser"]["kept"] and "stays in the version; it is still derived" in dp["concept_eraser"]["summary"]
    from foundation.errors import ValidationFailed

    with pytest.raises(ValidationFailed, match=f"the step of digits-mlp v2 \\(id {erased.id}\\) covers it"):
        decisions.deletion_request_approve(request=request, actor="alice", methods={trained.id: "dp_bounded"})
    approved = decisions.deletion_request_approve(request=request, actor="alice",
                                                  methods={erased.id: "dp_bounded"})
    outcome = approved.outcomes.get(model_version=erased)
    assert outcome.method == "dp_bounded"
    note = concept_eraser_note(outcome)
    assert "stays in the version" in note and "no longer erases" not in note, note


def test_a_concept_request_naming_two_versions_of_one_chain_is_refused(api_client_for):
    """Each concept job starts from its version's current source: naming a version and its unlearning result
    would erase the attribute twice from the newest one, the second eraser on top of the first."""
    _, trained, erased, _ = _concept_version("leace")
    message = _refused(api_client_for("dpo"), _concept_body(PARITY, [{"model": "digits-mlp", "version": trained.version},
                                                                     {"model": "digits-mlp", "version": erased.version}]),
                       field="models", code="same_chain")
    assert f"{trained} and {erased} are on one unlearning chain" in message and f"name only {erased}" in message


def test_an_eraser_the_chains_newest_version_already_lost_is_said_whichever_method_runs():
    """A retrain made the chain's newest version from the eraser's (not yet audited or deployed: an earlier
    request still open or failed): a later request's job starts from that version, which has no eraser, so the
    new version will not erase the attribute whatever the DPO chooses. The plan says so (it said nothing)."""
    ds, trained, erased, fit = _concept_version("leace")
    retrained = registry.model_version_create(model=erased.model, artifact_sha256="2" * 64,
                                              training_run=trained.training_run, parent=erased)
    Job.objects.create(kind=JobKind.UNLEARN, status=JobStatus.SUCCEEDED, registered_model=erased.model,
                       source_version=erased, result_version=retrained, method="retrain", guarantee_class="exact")
    [member] = sorted(set(MEMBERS) - fit)[:1]  # the eraser was not fitted on it
    [step] = _scoped(ds, [member]).plan
    assert step["model_version_id"] == retrained.id  # one step, on the chain's newest version
    lost = step["concept_eraser"]
    assert (lost["made_by_version_id"], lost["kept"], lost["fitted_on_erased_records"]) == (erased.id, False, 0)
    assert lost["lost_before"] == str(retrained)
    assert (f"{erased} serves the leace eraser of 'digit parity'" in lost["summary"]
            and f"starts from {retrained}" in lost["summary"] and "an earlier retrain computed without it" in
            lost["summary"] and "will not erase 'digit parity'" in lost["summary"])
    assert all(alternative["concept_eraser"] == lost for alternative in step["alternatives"])
    assert step["alternatives"], "the policy's finetune and the other approximate methods are offered"
