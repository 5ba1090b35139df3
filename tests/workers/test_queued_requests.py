"""Requests that queue on one model, run for real in this process: the second unlearns from the
first one's result, and afterwards no version whose weights were destroyed is still in scope, so
a third request on the model runs too (it failed on a missing artifact before)."""

from __future__ import annotations

import pytest

from deletion import decisions, intake
from deletion.models import DeletionRequest, ModelOutcome
from models_registry.models import DataRecord, ModelVersion
from tests import factories
from workers.jobs import job_execute
from workers.models import Job
from workers.reference_data import reference_dataset_register
from workers.services import model_train

pytestmark = pytest.mark.django_db

MLP = {"name": "mlp", "config": {"in_features": 30, "num_classes": 2, "hidden": [8]}}
SISA = {"architecture": MLP, "shards": 2, "slices": 2, "epochs": 1, "seed": 1}
EVIDENCE = {"method": "email-link", "verified_at": "2026-11-20T10:00:00Z", "verifier": "support"}


def _run(job: Job) -> Job:
    assert job_execute(job_id=job.id) == "succeeded", Job.objects.get(pk=job.id).error
    job.refresh_from_db()
    return job


def _approved_request(record: DataRecord) -> DeletionRequest:
    request, _ = intake.deletion_request_create(client=None, body={
        "identifiers": {}, "record_keys": [{"dataset": f"{record.dataset.name}@{record.dataset.version}",
                                            "record_key": record.external_key}],
        "jurisdiction": "GDPR", "legal_ground": "art17_1_b", "channel": "test"})
    request = decisions.deletion_request_verify(request=request, actor="tests", evidence=EVIDENCE)
    return decisions.deletion_request_approve(request=request, actor="tests")


def _unlearn_audit_confirm(request: DeletionRequest) -> ModelOutcome:
    outcome = ModelOutcome.objects.get(request=request)
    _run(outcome.job)
    outcome.refresh_from_db()
    _run(outcome.audit_job)
    outcome.refresh_from_db()
    if outcome.status == "awaiting_decision":  # not confirmed by the audit: two DPO users accept the risk
        for dpo in ("alice", "bob"):
            decisions.outcome_risk_accept(request=request, actor=dpo, model_version_id=outcome.model_version_id,
                                          reason="queued-requests test")
        outcome.refresh_from_db()
    assert outcome.status == "awaiting_deployment", (outcome.status, outcome.verdict)
    decisions.deployment_confirm(request=request, actor="tests", new_version_id=outcome.new_version_id, manual=True)
    return outcome


def test_after_two_queued_requests_a_third_on_the_same_model_still_runs():
    dataset = reference_dataset_register(name="breast_cancer")
    model = factories.registered_model(name="bc-queue", recipe="sisa")
    v1 = _run(model_train(model=model, dataset=dataset, recipe_config=SISA, enqueue=False)).result_version
    records = list(DataRecord.objects.filter(dataset=dataset, split="train").order_by("id")[:3])
    first, second = _approved_request(records[0]), _approved_request(records[1])  # both scoped on v1

    v2 = _unlearn_audit_confirm(first).new_version
    v3 = _unlearn_audit_confirm(second).new_version
    assert (v2.parent_id, v3.parent_id) == (v1.id, v2.id)  # the second built on the first's result
    statuses = dict(ModelVersion.objects.filter(model=model).values_list("id", "status"))
    assert statuses == {v1.id: "purged", v2.id: "purged", v3.id: "serving"}

    third = _approved_request(records[2])
    [step] = third.plan
    assert step["model_version_id"] == v3.id  # only the version that still exists is in scope
    outcome = ModelOutcome.objects.get(request=third)
    assert _run(outcome.job).result_version.parent_id == v3.id


def test_a_file_two_identical_models_share_goes_only_with_the_last_copy():
    from models_registry.models import StoredArtifact
    from workers.purge import lineage_copies_purge
    from workers.runners.storage import artifact_store
    from workers.training.storage import load_run

    dataset = reference_dataset_register(name="breast_cancer")
    a, b = (factories.registered_model(name=name, recipe="sisa") for name in ("bc-twin-a", "bc-twin-b"))
    va, vb = (_run(model_train(model=m, dataset=dataset, recipe_config=SISA, enqueue=False)).result_version
              for m in (a, b))
    checkpoints = {m: {r.sha256 for r in StoredArtifact.objects.filter(training_run__model=m, kind="checkpoint")}
                   for m in (a, b)}
    # Same recipe, seed and records: the same checkpoint files, and each model has its own rows for them.
    assert checkpoints[a] and checkpoints[a] == checkpoints[b]
    store = artifact_store()
    record = DataRecord.objects.filter(dataset=dataset, split="train").order_by("id").first()

    purged_a, _ = lineage_copies_purge(store=store, source=va, record_ids=[record.id])
    shared = [p for p in purged_a if p["sha256"] in checkpoints[b]]
    assert shared and all(p["files"] == [] and p["still_held_by"] for p in shared)  # not claimed destroyed
    assert all(store.exists(p["sha256"]) for p in shared)
    load_run(store, vb.artifact_sha256)  # the other model still loads

    purged_b, _ = lineage_copies_purge(store=store, source=vb, record_ids=[record.id])
    assert {p["sha256"] for p in purged_b} >= {p["sha256"] for p in shared}
    assert not any(p.get("still_held_by") for p in purged_b)
    assert not any(store.exists(p["sha256"]) for p in shared)  # gone with the last copy


def test_older_data_folders_get_their_missing_rows_once():
    from io import StringIO

    from django.core.management import call_command

    from models_registry.models import StoredArtifact

    dataset = reference_dataset_register(name="breast_cancer")
    a, b = (factories.registered_model(name=name, recipe="sisa") for name in ("bc-old-a", "bc-old-b"))
    for m in (a, b):
        _run(model_train(model=m, dataset=dataset, recipe_config=SISA, enqueue=False))
    # As a folder written before per-model rows looks: the second model has no rows for shared files.
    StoredArtifact.objects.filter(training_run__model=b, kind="checkpoint").delete()
    out = StringIO()
    call_command("artifacts_register_copies", stdout=out)
    restored = StoredArtifact.objects.filter(training_run__model=b, kind="checkpoint")
    assert {r.sha256 for r in restored} == {r.sha256 for r in StoredArtifact.objects.filter(
        training_run__model=a, kind="checkpoint")}
    assert f"{restored.count()} rows added" in out.getvalue()
    again = StringIO()
    call_command("artifacts_register_copies", stdout=again)
    assert "0 rows added" in again.getvalue()


def test_a_version_missing_a_file_is_listed_not_patched():
    from io import StringIO

    from django.core.management import call_command
    from django.core.management.base import CommandError

    from models_registry.models import StoredArtifact
    from workers.runners.storage import artifact_store

    dataset = reference_dataset_register(name="breast_cancer")
    model = factories.registered_model(name="bc-damaged", recipe="sisa")
    version = _run(model_train(model=model, dataset=dataset, recipe_config=SISA, enqueue=False)).result_version
    checkpoint = StoredArtifact.objects.filter(training_run__model=model, kind="checkpoint").first()
    artifact_store().purge(checkpoint.sha256, include_parts=False)  # as the old purge did to a shared file
    StoredArtifact.objects.filter(training_run__model=model, kind="checkpoint").delete()
    err = StringIO()
    with pytest.raises(CommandError, match="1 version"):
        call_command("artifacts_register_copies", stdout=StringIO(), stderr=err)
    assert f"DAMAGED: {version} (id {version.id}, serving): no artifact {checkpoint.sha256}" in err.getvalue()
    assert not StoredArtifact.objects.filter(training_run__model=model, kind="checkpoint").exists()
