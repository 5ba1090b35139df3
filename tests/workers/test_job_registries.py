"""The job engine's extension points: every job kind has exactly one runner, registered by the app
that owns it from its AppConfig.ready(); the engine calls the apps above it only through hooks."""

from __future__ import annotations

import pytest

from foundation.registry import Hooks
from workers import jobs
from workers.models import JobKind

# kind -> the module of the app that owns its runner (the engine names none of them).
OWNERS = {
    JobKind.TRAIN: "workers.runners.training",
    JobKind.UNLEARN: "workers.runners.unlearning",
    JobKind.SHADOW: "workers.runners.shadow",
    JobKind.AUDIT: "audits.runner",
    JobKind.REPORT: "deletion.workflow",
    JobKind.UPLOAD_CHECK: "workers.runners.upload_check",
}


@pytest.mark.parametrize("kind", list(JobKind))
def test_every_job_kind_has_one_runner_from_its_owning_app(kind):
    runner = jobs.JOB_RUNNERS.get(kind)
    assert runner.__module__ == OWNERS[kind]


def test_a_second_runner_for_a_kind_or_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        jobs.job_runner_register(JobKind.AUDIT, lambda job, progress: {})
    with pytest.raises(ValueError, match="unknown job kind 'sweep'"):
        jobs.job_runner_register("sweep", lambda job, progress: {})


def test_the_request_workflow_plugs_into_the_engine_through_its_hooks():
    from deletion.external_retrain import external_retrain_wait_reason
    from deletion.workflow import (
        unsettled_parent_reason,
        unsettled_source_reason,
        versions_open_requests_use,
    )

    assert len(jobs.JOB_FINISHED) == 1
    assert list(jobs.JOB_GATES) == [unsettled_source_reason, unsettled_parent_reason, external_retrain_wait_reason]
    assert list(jobs.VERSIONS_HELD) == [versions_open_requests_use]


def test_hooks_refuse_the_same_callable_twice():
    hooks: Hooks = Hooks("test hook")
    hooks.add(print)
    with pytest.raises(ValueError, match="already added"):
        hooks.add(print)


@pytest.mark.django_db
def test_a_finished_job_calls_every_job_finished_hook(monkeypatch):
    heard = []
    monkeypatch.setattr(jobs, "JOB_FINISHED", Hooks("job-finished hook"))
    jobs.JOB_FINISHED.add(heard.append)
    monkeypatch.setattr(jobs, "JOB_RUNNERS", type(jobs.JOB_RUNNERS)("job runner"))
    jobs.JOB_RUNNERS.register(JobKind.SHADOW)(lambda job, progress: {"ran": job.id})
    job = jobs.job_create(kind=JobKind.SHADOW, enqueue=False)
    assert jobs.job_execute(job_id=job.id) == "succeeded"
    assert heard == [job.id]
