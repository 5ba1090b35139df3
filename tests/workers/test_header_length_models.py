"""A model whose stored weights begin like a pickle (its safetensors header is 640 bytes: 80 02 ...)
was refused by every load after training. It now trains, unlearns and is audited through jobs."""

from __future__ import annotations

import pytest

from deletion import decisions, intake
from deletion.models import ModelOutcome
from models_registry.models import DataRecord
from tests import factories
from workers.jobs import job_execute
from workers.models import Job
from workers.reference_data import reference_dataset_register
from workers.services import model_train, shadow_models_train

pytestmark = pytest.mark.django_db

# breast cancer's 30 features, hidden [32], batch-norm input: a 640-byte header, as in the report.
MLP_BATCHNORM = {"name": "mlp", "config": {"in_features": 30, "num_classes": 2, "hidden": [32],
                                           "input_norm": "batchnorm"}}
EVIDENCE = {"method": "email-link", "verified_at": "2026-11-20T10:00:00Z", "verifier": "support"}


def _run(job: Job) -> Job:
    assert job_execute(job_id=job.id) == "succeeded", Job.objects.get(pk=job.id).error
    job.refresh_from_db()
    return job


def test_a_model_whose_header_reads_as_a_pickle_trains_unlearns_and_is_audited():
    from workers.runners.storage import artifact_store

    dataset = reference_dataset_register(name="breast_cancer")
    model = factories.registered_model(name="bc-batchnorm", recipe="plain",
                                       unlearning_policy={"approximate_method": "finetune"})
    v1 = _run(model_train(model=model, dataset=dataset, enqueue=False,
                          recipe_config={"architecture": MLP_BATCHNORM, "epochs": 5, "seed": 0})).result_version
    store = artifact_store()
    weights = store.blob_path(store.manifest(v1.artifact_sha256).files["weights"]["sha256"]).read_bytes()
    assert weights[:2] == b"\x80\x02"  # the case the old first-bytes check refused
    _run(shadow_models_train(version=v1, count=4, enqueue=False))

    record = DataRecord.objects.filter(dataset=dataset, split="train").order_by("id").first()
    request, _ = intake.deletion_request_create(client=None, body={
        "identifiers": {}, "record_keys": [{"dataset": f"{dataset.name}@{dataset.version}",
                                            "record_key": record.external_key}],
        "jurisdiction": "GDPR", "legal_ground": "art17_1_b", "channel": "test"})
    request = decisions.deletion_request_verify(request=request, actor="tests", evidence=EVIDENCE)
    request = decisions.deletion_request_approve(request=request, actor="tests")
    outcome = ModelOutcome.objects.get(request=request)
    assert (outcome.method, outcome.guarantee_class) == ("finetune", "approximate")

    unlearned = _run(outcome.job)
    assert unlearned.result_version.parent_id == v1.id
    outcome.refresh_from_db()
    audit = _run(outcome.audit_job)
    outcome.refresh_from_db()
    # Evidence from 4 shadow models on one record: an approximate method cannot be confirmed.
    assert audit.result and outcome.audit["shadow_models"] == 4
    assert outcome.verdict == "INCONCLUSIVE", (outcome.verdict, outcome.audit.get("reasons"))
    assert outcome.status == "awaiting_decision"  # INCONCLUSIVE waits for the DPO


def test_recheck_lists_what_the_old_check_hit_and_retries_the_jobs_outside_requests(django_capture_on_commit_callbacks):
    from io import StringIO

    from django.core.management import call_command

    from workers.file_formats import PICKLE_SENTENCE
    from workers.models import JobStatus
    from workers.runners.storage import artifact_store

    dataset = reference_dataset_register(name="breast_cancer")
    model = factories.registered_model(name="bc-batchnorm-recheck", recipe="plain")
    v1 = _run(model_train(model=model, dataset=dataset, enqueue=False,
                          recipe_config={"architecture": MLP_BATCHNORM, "epochs": 1, "seed": 0})).result_version
    weights_sha = artifact_store().manifest(v1.artifact_sha256).files["weights"]["sha256"]
    # What a release before the fix left: the shadow job failed on the model's own weights.
    shadows = shadow_models_train(version=v1, count=2, enqueue=False)
    Job.objects.filter(pk=shadows.pk).update(status=JobStatus.FAILED,
                                             error=f"UnsafeArtifactError: blob {weights_sha}: {PICKLE_SENTENCE}")

    out = StringIO()
    call_command("artifacts_format_recheck", stdout=out)
    listing = out.getvalue()
    assert f"blob {weights_sha}" in listing and v1.artifact_sha256 in listing
    assert f"job {shadows.id} shadow" in listing and "retryable with --retry" in listing
    assert Job.objects.get(pk=shadows.pk).status == JobStatus.FAILED  # listing changes nothing

    with django_capture_on_commit_callbacks(execute=False) as enqueued:
        call_command("artifacts_format_recheck", "--retry", stdout=StringIO())
    assert len(enqueued) == 1
    retried = Job.objects.get(pk=shadows.pk)
    assert (retried.status, retried.error) == (JobStatus.PENDING, "")
    assert _run(retried).status == JobStatus.SUCCEEDED  # it runs now
