"""The plan's cost estimate: the mean wall time of the model's past jobs of the method; a retrain
with none yet is one more training of the model, so it is estimated from the model's training jobs."""

import pytest

from deletion.planning import estimated_cost
from workers.models import Job, JobKind, JobStatus

pytestmark = pytest.mark.django_db


def _done(model, kind, method, seconds, status=JobStatus.SUCCEEDED):
    Job.objects.create(kind=kind, status=status, registered_model=model, method=method, wall_seconds=seconds)


def test_a_retrain_without_history_is_estimated_as_one_training(trained):
    model = trained["model"]
    assert estimated_cost(model_id=model.id, method="retrain") is None  # nothing ran yet
    _done(model, JobKind.TRAIN, "sisa", 12.0)
    _done(model, JobKind.TRAIN, "sisa", 99.0, status=JobStatus.FAILED)  # a failed run says nothing
    assert estimated_cost(model_id=model.id, method="retrain") == 12.0
    # An approximate method reads the weights it starts from: a training's time says nothing of it.
    assert estimated_cost(model_id=model.id, method="finetune") is None
    _done(model, JobKind.UNLEARN, "retrain", 30.0)
    assert estimated_cost(model_id=model.id, method="retrain") == 30.0  # its own history, once there is one
