"""Shadow models never keep an erased person's records (a walkthrough on the real stack found two that
did): the shadows a purge queues to replace the ones it destroyed leave out every record a version of
the model not purged excludes (the unlearning chain from the root breaks at each purged version, so its
head alone missed a request's records until the request ended), and the request's data erasure
destroys any shadow model that still holds its records and queues their replacement. Run for real in
this process on breast cancer records."""

from __future__ import annotations

import pytest

from models_registry.models import ArtifactKind, DataRecord, ModelVersion, StoredArtifact
from models_registry.selectors import artifacts_holding
from tests import factories
from tests.workers.test_queued_requests import SISA, _approved_request, _run, _unlearn_audit_confirm
from workers.jobs import job_create
from workers.models import Job
from workers.purge import request_data_erase
from workers.reference_data import reference_dataset_register
from workers.runners.storage import artifact_store
from workers.services import model_train

pytestmark = pytest.mark.django_db


def _shadows_holding(records: list[DataRecord]) -> list[str]:
    return [a.label for a in artifacts_holding(record_ids=[r.id for r in records])
            if a.kind == ArtifactKind.SHADOW_MODEL]


def _trained_with_shadows(name: str) -> tuple[ModelVersion, list[DataRecord]]:
    dataset = reference_dataset_register(name="breast_cancer")
    model = factories.registered_model(name=name, recipe="sisa")
    v1 = _run(model_train(model=model, dataset=dataset, recipe_config=SISA, enqueue=False)).result_version
    _run(job_create(kind="shadow", registered_model=model, source_version=v1, method="sisa", config={"count": 2},
                    enqueue=False))
    return v1, list(DataRecord.objects.filter(dataset=dataset, split="train").order_by("id")[:2])


def test_the_shadows_a_purge_queues_leave_out_the_records_of_every_version_not_purged():
    v1, (first_record, second_record) = _trained_with_shadows("bc-shadow-chain")
    assert len(_shadows_holding([first_record])) == 1  # one of the complementary pair holds each record

    first = _unlearn_audit_confirm(_approved_request(first_record))
    _run(Job.objects.get(pk=first.audit["shadow_replenish_job"]))
    second = _unlearn_audit_confirm(_approved_request(second_record))  # builds on the first's result
    statuses = dict(ModelVersion.objects.filter(model=v1.model).values_list("id", "status"))
    assert statuses[first.new_version_id] == "purged" and statuses[second.new_version_id] == "serving"
    # Neither request has ended: both records are still active, and the chain from v1 is broken.
    assert DataRecord.objects.filter(pk__in=[first_record.pk, second_record.pk], status="active").count() == 2
    replenish = _run(Job.objects.get(pk=second.audit["shadow_replenish_job"]))
    assert len(replenish.result["shadows_trained"]) == 1  # the one of the pair that held the second record
    assert _shadows_holding([first_record, second_record]) == []


def test_erasing_a_requests_data_destroys_the_shadows_that_still_hold_it():
    v1, (record, _) = _trained_with_shadows("bc-shadow-erase")
    [holding] = [a for a in artifacts_holding(record_ids=[record.id]) if a.kind == ArtifactKind.SHADOW_MODEL]
    assert artifact_store().exists(holding.sha256)

    erased = request_data_erase(record_ids=[record.id], subjects=[], reason="test")
    assert [(s["sha256"], s["label"]) for s in erased["shadow_models"]] == [(holding.sha256, holding.label)]
    assert erased["shadow_roots"] == [v1.id]  # whose shadow set the workflow replenishes
    assert _shadows_holding([record]) == [] and not artifact_store().exists(holding.sha256)
    assert StoredArtifact.objects.get(pk=holding.id).status == "purged"
    assert StoredArtifact.objects.filter(kind=ArtifactKind.SHADOW_MODEL, status="present").count() == 1


def test_a_version_retrained_without_exclusions_still_keeps_its_records_out_of_new_shadows():
    """The company's pipeline retrains into a run of its own that lacks the records (no exclusions are
    recorded): its succeeded job's forget set keeps them out of the shadows replenished meanwhile."""
    from models_registry.services import model_version_create
    from workers.runners.shadow import shadow_keys

    ds = factories.dataset()
    factories.import_records(ds, [{"record_key": key, "content": key} for key in ("a", "b", "c")])
    model = factories.registered_model(recipe="plain")
    _, v1 = factories.trained_version(model, ds, [("a", 0, 0), ("b", 0, 0), ("c", 0, 0)])
    assert shadow_keys(v1) == ["a", "b", "c"]
    retrained = model_version_create(model=model, artifact_sha256="7" * 64, training_run=None, parent=v1)
    erased = DataRecord.objects.get(dataset=ds, external_key="b")
    job = job_create(kind="unlearn", registered_model=model, source_version=v1, method="external_retrain",
                     forget_record_ids=[erased.id], enqueue=False)
    assert shadow_keys(v1) == ["a", "b", "c"]  # not yet: the job has not made its version
    Job.objects.filter(pk=job.pk).update(status="succeeded", result_version=retrained)
    assert shadow_keys(v1) == ["a", "c"]
    ModelVersion.objects.filter(pk=retrained.pk).update(status="purged")  # a destroyed result counts no more
    assert shadow_keys(v1) == ["a", "b", "c"]
