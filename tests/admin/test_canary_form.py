"""The admin's "Train a model" form plants canaries as the API does (workers.canaries), and shows the
service's refusal when it cannot."""

from __future__ import annotations

import pytest

from models_registry.services import registered_model_create
from tests import factories
from workers.models import Job

MLP = {"name": "mlp", "config": {"in_features": 30, "num_classes": 2, "hidden": [8]}}


@pytest.mark.django_db
def test_the_train_form_plants_canaries_or_says_why_it_cannot(client_for):
    from workers.reference_data import reference_dataset_register

    dataset = reference_dataset_register(name="breast_cancer")
    registered_model_create(name="churn", task="classification", training_recipe="plain", architecture=MLP)
    charlie = client_for("charlie")
    form = {"model": "churn", "recipe": "", "recipe_config": '{"epochs": 1}', "split": "train"}
    # A dataset with no held-out split to draw them from: refused on the form, nothing queued.
    no_test_split = factories.dataset("customers")
    factories.import_records(no_test_split, [{"record_key": f"r{i}", "content": f"c{i}"} for i in range(3)])
    page = charlie.post("/admin/workers/job/train/", {**form, "dataset": no_test_split.pk, "canaries": "3"})
    assert page.status_code == 200 and "held-out split" in page.text and not Job.objects.exists()
    response = charlie.post("/admin/workers/job/train/", {**form, "dataset": dataset.pk, "canaries": "3"})
    assert response.status_code == 302
    assert Job.objects.get(kind="train").config["canaries"] == 3
