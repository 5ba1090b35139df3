"""Shadow models yield to deletions: a shadow job (a purge queues one to replace the shadow models it
destroyed) waits while an unlearning job on the same model is pending, so a second request's
deletion does not queue behind minutes of shadow training (seen in make demo)."""

import pytest

from tests import factories
from workers.jobs import job_create, job_execute
from workers.models import Job, JobStatus

pytestmark = pytest.mark.django_db


def test_a_shadow_job_waits_for_a_pending_unlearning_job_on_its_model():
    ds = factories.dataset()
    factories.import_records(ds, [{"record_key": "a", "content": "x"}])
    model = factories.registered_model(recipe="plain")
    _, version = factories.trained_version(model, ds, [("a", 0, 0)])
    other = factories.registered_model(recipe="plain")
    unlearn = job_create(kind="unlearn", registered_model=model, source_version=version, method="finetune",
                         enqueue=False)
    job_create(kind="unlearn", registered_model=other, method="finetune", enqueue=False)
    shadow = job_create(kind="shadow", registered_model=model, source_version=version, method="plain",
                        config={"count": 2}, enqueue=False)
    assert job_execute(job_id=shadow.id) == "deferred"
    shadow.refresh_from_db()
    assert shadow.status == JobStatus.PENDING
    assert f"unlearning job {unlearn.id} on the same model runs first" in shadow.progress_stage
    Job.objects.filter(pk=unlearn.pk).update(status=JobStatus.SUCCEEDED)
    # Nothing of its model waits any more: it runs (and fails here, on a version with no stored weights).
    assert job_execute(job_id=shadow.id) != "deferred"
