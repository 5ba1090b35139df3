"""GPU workers: one Celery worker process per GPU, each pinned to its device, and language-model
audits routed to the GPU queue when LM_AUDIT_QUEUE says so (the CPU audit queue by default)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from deletion_platform.gpu_workers import parse_gpu_ids, worker_commands


def test_one_worker_per_gpu_each_sees_only_its_device():
    commands = worker_commands(["0", "1", "3"])
    assert [env["CUDA_VISIBLE_DEVICES"] for env, _ in commands] == ["0", "1", "3"]
    for (_env, argv), gpu in zip(commands, ["0", "1", "3"], strict=True):
        assert argv[argv.index("-Q") + 1] == "gpu" and argv[argv.index("-n") + 1] == f"gpu{gpu}@%h"
        assert argv[argv.index("--concurrency") + 1] == "1" and argv[argv.index("--prefetch-multiplier") + 1] == "1"


@pytest.mark.parametrize("text", ["0,0", "0,,1", ""])
def test_a_bad_gpu_list_is_refused_by_name(text):
    with pytest.raises(ValueError, match="bad GPU list"):
        parse_gpu_ids(text)


def test_the_launcher_prints_the_commands_it_would_start():
    out = subprocess.run([sys.executable, "-m", "deletion_platform.gpu_workers", "--gpus", "0,1", "--dry-run"],
                         capture_output=True, text=True, timeout=60, check=True).stdout.splitlines()
    assert len(out) == 2 and out[0].startswith("CUDA_VISIBLE_DEVICES=0 ") and out[1].startswith("CUDA_VISIBLE_DEVICES=1 ")
    refused = subprocess.run([sys.executable, "-m", "deletion_platform.gpu_workers", "--gpus", "1,1"],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "an id repeats" in refused.stderr


@pytest.mark.django_db
@pytest.mark.parametrize(("setting", "task", "queue"), [
    ("audit", "language_modeling", "audit"),  # the embedded default: the CPU audit queue
    ("gpu", "language_modeling", "gpu"),
    ("gpu", "classification", "audit"),  # classifier audits stay on the CPU workers
])
def test_language_model_audits_go_to_the_configured_queue(settings, setting, task, queue):
    from models_registry.models import RegisteredModel
    from workers.jobs import job_create
    from workers.models import JobKind

    settings.LM_AUDIT_QUEUE = setting
    model = RegisteredModel.objects.create(name=f"m-{task}", task=task, training_recipe="plain")
    assert job_create(kind=JobKind.AUDIT, registered_model=model, enqueue=False).queue == queue
    assert job_create(kind=JobKind.UNLEARN, registered_model=model, enqueue=False).queue == "gpu"
    assert job_create(kind=JobKind.REPORT, enqueue=False).queue == "audit"
