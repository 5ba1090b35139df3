"""Two deletion requests on one model: unlearning jobs run one after another, each on the result of
the one before, and never on a result that is being audited or failed its audit (it may yet be
destroyed by an escalation, and a version built on it would carry what it failed to forget)."""

import uuid

import pytest
from django.utils import timezone

from deletion.models import DeletionRequest, ModelOutcome, OutcomeStatus
from models_registry import services
from tests import factories
from workers import jobs
from workers.models import Job
from workers.runners.unlearning import current_source, lineage_blocker

pytestmark = pytest.mark.django_db


@pytest.fixture
def lineage():
    ds = factories.dataset()
    factories.import_records(ds, [{"record_key": f"r{i}", "content": f"c{i}"} for i in range(6)])
    model = factories.registered_model(recipe="sisa")
    _, v0 = factories.trained_version(model, ds, [(f"r{i}", i % 2, 0) for i in range(6)])
    return model, v0


def _request() -> DeletionRequest:
    now = timezone.now()
    return DeletionRequest.objects.create(public_id=uuid.uuid4(), jurisdiction="GDPR", legal_ground="art17_1_b",
                                          channel="test", received_at=now, due_at=now, body_fingerprint="x")


def _unlearn_job(model, source, **fields) -> Job:
    return jobs.job_create(kind="unlearn", enqueue=False, registered_model=model, source_version=source,
                           method="sisa", guarantee_class="exact", forget_record_ids=[1], **fields)


def _result_of(job: Job, model, source):
    """What a finished unlearning job leaves: a child version of ``source`` and the job's result."""
    version = services.model_version_create(model=model, artifact_sha256="1" * 64, training_run=source.training_run,
                                            parent=source, status="retained", guarantee_class="exact")
    Job.objects.filter(pk=job.pk).update(status="succeeded", result_version=version)
    return version


def test_a_later_job_waits_for_an_earlier_one_on_the_same_model(lineage):
    model, v0 = lineage
    first, second = _unlearn_job(model, v0), _unlearn_job(model, v0)
    assert lineage_blocker(first) == ""
    assert lineage_blocker(second) == f"unlearning job {first.id} on the same model runs first"
    other_model = factories.registered_model()
    assert lineage_blocker(_unlearn_job(other_model, v0)) == ""  # other models are not held up


@pytest.mark.parametrize("status, waits", [
    (OutcomeStatus.AUDITING, "is being audited"),
    (OutcomeStatus.AUDIT_FAILED, "failed its audit"),
    (OutcomeStatus.AWAITING_DEPLOYMENT, ""),
    (OutcomeStatus.CONFIRMED, ""),
])
def test_a_job_builds_on_the_previous_result_only_once_its_audit_has_not_failed(lineage, status, waits):
    model, v0 = lineage
    first = _unlearn_job(model, v0)
    v1 = _result_of(first, model, v0)
    ModelOutcome.objects.create(request=_request(), model_version=v0, method="sisa", guarantee_class="exact",
                                job=first, new_version=v1, status=status)
    second = _unlearn_job(model, v0)
    assert current_source(v0) == v1
    blocker = lineage_blocker(second)
    assert (waits in blocker) if waits else blocker == ""


def test_after_an_escalation_destroys_the_failed_result_the_next_job_builds_on_the_original(lineage):
    from workers.purge import version_purge

    model, v0 = lineage
    first = _unlearn_job(model, v0)
    v1 = _result_of(first, model, v0)
    outcome = ModelOutcome.objects.create(request=_request(), model_version=v0, method="sisa",
                                          guarantee_class="exact", job=first, new_version=v1,
                                          status=OutcomeStatus.AUDIT_FAILED)
    second = _unlearn_job(model, v0)
    assert "failed its audit" in lineage_blocker(second)
    version_purge(version=v1)  # what outcome_escalate does to the failed version
    outcome.status = OutcomeStatus.EXECUTING
    outcome.save()
    assert current_source(v0) == v0
    assert lineage_blocker(second) == ""


def test_a_deferred_job_goes_back_to_pending_and_is_sent_again(lineage, monkeypatch):
    model, v0 = lineage
    first, second = _unlearn_job(model, v0), _unlearn_job(model, v0)
    sent = []
    monkeypatch.setattr(jobs, "job_enqueue", lambda *, job_id, countdown=0: sent.append((job_id, countdown)))
    assert jobs.job_execute(job_id=second.id) == "deferred"
    second.refresh_from_db()
    assert second.status == "pending" and second.claimed_at is None and second.result_version is None
    assert second.progress_stage == f"waiting: unlearning job {first.id} on the same model runs first"
    assert sent == [(second.id, 10.0)]
    assert not ModelOutcome.objects.exists()  # nothing of the request workflow ran
