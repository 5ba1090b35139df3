"""Training on a real Celery worker process: a real model on a reference dataset, lineage written
from what the loader yielded."""

import pytest

from models_registry import selectors
from models_registry.models import DataRecord, StoredArtifact, TrainingMembership
from tests import factories
from tests.worker_process import wait_for
from workers.models import Job
from workers.reference_data import reference_dataset_register
from workers.services import model_train

pytestmark = [pytest.mark.worker]

MLP = {"name": "mlp", "config": {"in_features": 30, "num_classes": 2, "hidden": [16]}}


def test_training_job_on_worker_records_lineage(celery_worker_process):
    dataset = reference_dataset_register(name="breast_cancer")
    model = factories.registered_model(name="bc-plain")
    job = model_train(model=model, dataset=dataset, recipe_config={"architecture": MLP, "epochs": 3, "seed": 1})
    wait_for(lambda: Job.objects.get(pk=job.pk).status in ("succeeded", "failed"), timeout=240,
             message="the training job")
    job.refresh_from_db()
    assert job.status == "succeeded", job.error + celery_worker_process.log_text()[-3000:]
    version = job.result_version
    assert version.status == "serving" and len(version.artifact_sha256) == 64
    train_keys = set(DataRecord.objects.filter(dataset=dataset, split="train").values_list("external_key", flat=True))
    members = set(TrainingMembership.objects.filter(run=version.training_run).values_list("record__external_key", flat=True))
    assert members == train_keys  # every training record, and no test record
    assert StoredArtifact.objects.filter(model_version=version, kind="weights").exists()
    assert job.progress_percent == 100.0 and job.wall_seconds > 0 and job.device == "cpu"
    # Measured on the held-out split: the stored model, evaluated here, gives the same figure.
    from workers.datasets.reference import load_reference_split
    from workers.runners.storage import artifact_store
    from workers.training.evaluate import accuracy
    from workers.training.storage import load_run

    stored = load_run(artifact_store(), version.artifact_sha256)
    test = load_reference_split(dataset.storage_location, "test")
    assert version.metrics["test_accuracy"] == pytest.approx(accuracy(stored.model, test), abs=1e-4)
    # The subject of one training record now has this version in scope.
    record = DataRecord.objects.filter(dataset=dataset, split="train").first()
    scope = selectors.subject_scope(subject=record.subject)
    assert [v.version_id for v in scope.versions] == [version.id]
