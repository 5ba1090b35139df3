"""A recipe that rebuilds its model from what training kept (SISA's shard checkpoints, S3T's base and
adapters) cannot hold weights an approximate method changed: saving the new version would silently
drop the change. The recipe declares it (RecipeSpec.rebuilds_model_from), the declaration is held
true of the recipe's code here, and an unlearning job refuses such a method with a clear error
instead of recording a version that still holds the records."""

from __future__ import annotations

import pytest
import torch

from tests import factories
from tests.flows import run_job
from workers.artifacts import ArtifactStore
from workers.datasets.memory import TensorRecordDataset
from workers.jobs import job_create, job_execute
from workers.models import Job, JobKind, JobStatus
from workers.reference_data import reference_dataset_register
from workers.services import model_train
from workers.training import RECIPES
from workers.training.storage import load_run, save_run
from workers.training_catalogue import (
    CLASSIFICATION,
    RECIPE_SPECS,
    TORCH_MODULES,
    changed_weights_refusal,
)

# Keep-out transfer: r0-r7 static, r16-r31 auxiliary, r8-r15 non-static (kept out, each selects its nearest).
KEEP_OUT = {"static_records": "r[0-7]", "auxiliary_records": "r(1[6-9]|2[0-9]|3[01])"}
MLP = {"name": "mlp", "config": {"in_features": 6, "num_classes": 2, "hidden": [8]}}
SLICED = {"shards": 2, "slices": 2}
# The torch recipes that train a classifier from data (derived ones need a parent version).
TORCH_RECIPES = [name for name in RECIPE_SPECS if set(RECIPE_SPECS.get(name).families) & set(TORCH_MODULES)
                 and RECIPE_SPECS.get(name).task == CLASSIFICATION and not RECIPE_SPECS.get(name).derives
                 and RECIPE_SPECS.get(name).model_architecture and name != "hf_sequence_classifier"]


@pytest.mark.parametrize("recipe", TORCH_RECIPES)
def test_the_declaration_says_whether_saved_weights_keep_a_change(recipe, tmp_path, one_torch_thread):
    torch.manual_seed(0)
    inputs = torch.randn(32, 6)
    records = TensorRecordDataset([f"r{i}" for i in range(32)], inputs, (inputs[:, 0] > 0).long())
    config = {"architecture": MLP, "epochs": 1, "batch_size": 8, **(SLICED if recipe in ("sisa", "s3t") else {}),
              **(KEEP_OUT if recipe == "keep_out_transfer" else {})}
    run = RECIPES.get(recipe)(config).train(records)
    with torch.no_grad():  # what an approximate method does: change the served model's weights
        for parameter in run.model.parameters():
            parameter.add_(1.0)
    changed = run.model(inputs).detach()
    store = ArtifactStore(tmp_path)
    reloaded = load_run(store, save_run(store, run).artifact_id).model(inputs).detach()
    kept = torch.allclose(changed, reloaded, atol=1e-5)
    declared = RECIPE_SPECS.get(recipe).rebuilds_model_from
    assert kept == (not declared), (recipe, declared)
    assert (changed_weights_refusal(method="finetune", recipe=recipe) is None) == kept


def test_the_refusal_names_the_method_the_recipe_and_the_way_out():
    refusal = changed_weights_refusal(method="dmm", recipe="sisa")
    assert "'dmm' changes the served model's weights" in refusal
    assert "shard checkpoints" in refusal and "would be lost" in refusal and "'sisa' or retrain" in refusal
    assert changed_weights_refusal(method="sisa", recipe="sisa") is None  # exact: rebuilt from the checkpoints
    assert changed_weights_refusal(method="finetune", recipe="plain") is None


@pytest.mark.django_db
def test_an_approximate_job_on_a_sisa_version_fails_clearly_and_records_no_version():
    dataset = reference_dataset_register(name="breast_cancer")
    model = factories.registered_model(name="bc-sisa-approximate", recipe="sisa")
    sisa = {"architecture": {"name": "mlp", "config": {"in_features": 30, "num_classes": 2, "hidden": [8],
                                                        "input_norm": "asinh"}},
            "epochs": 1, "shards": 2, "slices": 1, "seed": 0}
    version = run_job(model_train(model=model, dataset=dataset, enqueue=False, recipe_config=sisa)).result_version
    from models_registry.models import TrainingMembership

    record_id = TrainingMembership.objects.filter(run=version.training_run).order_by("record_id")[0].record_id
    job = job_create(kind=JobKind.UNLEARN, enqueue=False, registered_model=model, source_version=version,
                     method="finetune", guarantee_class="approximate", forget_record_ids=[record_id])
    assert job_execute(job_id=job.id) == JobStatus.FAILED
    job = Job.objects.get(pk=job.id)
    assert "'finetune' changes the served model's weights" in job.error and "would be lost" in job.error
    assert job.result_version_id is None
