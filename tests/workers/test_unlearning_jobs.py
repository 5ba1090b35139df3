"""Deletions on a real Celery worker process: a SISA model unlearns a subject's records through
the API, the new version excludes them, every older copy is purged and nothing on disk still
holds them; a worker killed mid-job finishes the job exactly once after a restart."""

import time
from pathlib import Path

import pytest
from django.conf import settings

from deletion.models import DeletionRequest, ModelOutcome
from models_registry import selectors
from models_registry.models import DataRecord, ModelVersion, StoredArtifact, TrainingMembership
from tests import factories
from tests.flows import run_job
from tests.worker_process import WorkerProcess, wait_for
from workers.jobs import job_create, jobs_sweep_stale
from workers.models import Job
from workers.reference_data import reference_dataset_register
from workers.services import model_train

pytestmark = [pytest.mark.worker]

MLP = {"name": "mlp", "config": {"in_features": 30, "num_classes": 2, "hidden": [16]}}
EVIDENCE = {"method": "email-link", "verified_at": "2026-11-20T10:00:00Z", "verifier": "support"}


def _train(model, dataset, config, timeout=300):
    job = model_train(model=model, dataset=dataset, recipe_config=config)
    wait_for(lambda: Job.objects.get(pk=job.pk).status in ("succeeded", "failed"), timeout=timeout,
             message="training")
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    return job.result_version


def _files_containing(needle: bytes, *roots: Path) -> list[str]:
    hits = []
    for root in roots:
        for path in Path(root).rglob("*"):
            if path.is_file() and needle in path.read_bytes():
                hits.append(str(path))
    return hits


def test_sisa_deletion_through_the_api_on_a_worker(celery_worker_process, api_client_for):
    from audits.models import Report
    from audits.reports import report_verify
    from workers.services import shadow_models_train

    dataset = reference_dataset_register(name="breast_cancer")
    model = factories.registered_model(name="bc-sisa", recipe="sisa")
    version = _train(model, dataset, {"architecture": MLP, "shards": 3, "slices": 2, "epochs": 2, "seed": 3})
    shadows = shadow_models_train(version=version, count=4)
    wait_for(lambda: Job.objects.get(pk=shadows.pk).status in ("succeeded", "failed"), timeout=300,
             message="shadow models")
    record = DataRecord.objects.filter(dataset=dataset, split="train").order_by("id")[5]
    subject_records = list(DataRecord.objects.filter(subject=record.subject))
    ids = [r.id for r in subject_records]
    keys = [r.external_key.encode() for r in subject_records]
    assert _files_containing(keys[0], settings.ARTIFACT_ROOT, settings.DATASET_ROOT)  # held before

    dpo = api_client_for("dpo")
    serving = api_client_for("ml_engineer")
    from workers.datasets.reference import reference_records

    email = next(r["subject"]["email"] for r in reference_records(dataset.storage_location)
                 if r["record_key"] == record.external_key)
    created = dpo.post("/api/v1/deletion-requests/", {"identifiers": {"email": email}, "jurisdiction": "GDPR",
                                                      "legal_ground": "art17_1_b", "channel": "test"}, format="json")
    request_id = created.json()["id"]
    scoped = dpo.post(f"/api/v1/deletion-requests/{request_id}/verify/", EVIDENCE, format="json").json()
    assert [(p["method"], p["guarantee_class"]) for p in scoped["plan"]] == [("sisa", "exact")]
    dpo.post(f"/api/v1/deletion-requests/{request_id}/approve/", {}, format="json")

    def outcome_ready():
        outcome = ModelOutcome.objects.filter(request__public_id=request_id).first()
        return outcome is not None and outcome.status not in ("planned", "executing", "auditing")

    wait_for(outcome_ready, timeout=400, message="unlearning and audit")
    outcome = ModelOutcome.objects.get(request__public_id=request_id)
    assert outcome.audit["shadow_models"] >= 2 and outcome.verdict in ("PASS", "INCONCLUSIVE")
    expected_end = "COMPLETED"
    if outcome.verdict == "INCONCLUSIVE":  # the per-record sanity check flagged a record: the DPO decides
        assert outcome.status == "awaiting_decision" and not outcome.audit["purged"]
        for name in ("alice", "bob"):
            api_client_for("dpo", user=name).post(
                f"/api/v1/deletion-requests/{request_id}/accept-risk/",
                {"model_version_id": version.id, "reason": "exact SISA retrain; sanity check flagged"}, format="json")
        outcome.refresh_from_db()
        expected_end = "CLOSED_RISK_ACCEPTED"
    assert outcome.status == "awaiting_deployment", (outcome.status, celery_worker_process.log_text()[-3000:])
    new = outcome.new_version
    assert new.parent_id == version.id and new.guarantee_class == "exact"
    confirm = serving.post(f"/api/v1/deletion-requests/{request_id}/confirm-deployment/",
                           {"new_version_id": new.id}, format="json")
    assert confirm.status_code == 200, confirm.content
    wait_for(lambda: DeletionRequest.objects.get(public_id=request_id).status in (expected_end, "FAILED"),
             timeout=300, message="the report")
    request = DeletionRequest.objects.get(public_id=request_id)
    assert request.status == expected_end, request.failure
    version.refresh_from_db()
    assert version.status == "purged"
    # The new version provably excludes the records; nothing present still holds them.
    assert set(new.excluded_records.values_list("record_id", flat=True)) == set(ids)
    assert selectors.versions_trained_on(record_ids=ids) == []
    assert selectors.artifacts_holding(record_ids=ids) == []
    purged = outcome.audit["purged"]
    assert purged and all(len(p["sha256"]) == 64 for p in purged)
    assert not StoredArtifact.objects.filter(sha256__in=[p["sha256"] for p in purged], status="present").exists()
    # Records erased and suppressed; the files on disk and the worker's log no longer hold them.
    assert set(DataRecord.objects.filter(id__in=ids).values_list("status", flat=True)) == {"erased"}
    for key in keys:
        assert _files_containing(key, settings.ARTIFACT_ROOT, settings.DATASET_ROOT) == []
        assert key.decode() not in celery_worker_process.log_text()
    # The signed report verifies and is reachable from the API.
    report = Report.objects.get(request=request)
    assert report_verify(report.pdf_path) == []
    assert dpo.get(f"/api/v1/reports/{report.id}/pdf/").status_code == 200
    # Rolling back to the purged version is refused.
    from foundation.errors import Conflict
    from workers.purge import model_version_rollback

    with pytest.raises(Conflict):
        model_version_rollback(version=version)
    # The surviving records are still members of the run (the membership table keeps history).
    assert TrainingMembership.objects.filter(run=version.training_run).count() > len(ids)


def test_killed_worker_finishes_the_job_exactly_once(transactional_db, tmp_path, settings):
    settings.JOB_STALE_AFTER_SECONDS = 3
    # The worker boots (seconds of imports) while the source version trains here: the job under test
    # is the unlearning job below, which the worker runs and is killed in.
    worker = WorkerProcess(tmp_path / "w1.log").launch()
    try:
        dataset = reference_dataset_register(name="breast_cancer")
        model = factories.registered_model(name="bc-plain-kill")
        # Long enough that the first progress write (after HEARTBEAT_SECONDS = 5 s) comes mid-job on
        # a quiet machine too: with 60 epochs the retrain finished in ~5 s, before the kill. (The
        # retrain repeats the source's recipe config, so the source trains 200 epochs too.)
        source = run_job(model_train(model=model, dataset=dataset, enqueue=False,
                                     recipe_config={"architecture": MLP, "epochs": 200, "seed": 1})).result_version
        worker.wait_ready()
        record = DataRecord.objects.filter(dataset=dataset, split="train").first()
        job = job_create(kind="unlearn", registered_model=model, source_version=source, method="retrain",
                         guarantee_class="exact", forget_record_ids=[record.id])
        wait_for(lambda: Job.objects.get(pk=job.pk).progress_percent > 5, timeout=120, message="the job to run")
        worker.kill()  # SIGKILL mid-job
        killed_at = time.monotonic()
        assert Job.objects.get(pk=job.pk).status == "running"
    finally:
        worker.stop()
    # The second worker boots while the dead worker's heartbeat goes stale; the sweep runs no sooner
    # than JOB_STALE_AFTER_SECONDS + 1 after the kill, as a sweeper would see it.
    second = WorkerProcess(tmp_path / "w2.log").launch()
    try:
        time.sleep(max(0.0, killed_at + settings.JOB_STALE_AFTER_SECONDS + 1 - time.monotonic()))
        second.wait_ready()
        assert jobs_sweep_stale() == [job.pk]
        wait_for(lambda: Job.objects.get(pk=job.pk).status in ("succeeded", "failed"), timeout=300,
                 message="the re-run")
    finally:
        second.stop()
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    assert job.attempts == 2
    assert ModelVersion.objects.filter(parent=source).count() == 1  # exactly one new version
    assert ModelVersion.objects.filter(model=model).count() == 2
