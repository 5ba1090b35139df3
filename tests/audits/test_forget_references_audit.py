"""The representation and relearning checks in a request's audit (audits/forget_references.py).

MNIST (the reference set), a small MLP. A "head-only unlearning" of class 3 (the last layer
re-initialised and trained on the other classes, the rest of the network as it was) changes every
output and none of the representation: the audit retrains references without the class and
fine-tunes derived controls, and the representation check FAILs it, and the verdict with it. The
same version audited for random records: the forget set is no class or sub-population, so both
checks are NOT_APPLICABLE, saying why, and no reference is trained.

The version is made here, the way an unlearning job stores one, since no platform method edits the
head only; without a job that made it, the controls use the fine-tune method's defaults (and say so).
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from models_registry.models import DataRecord
from models_registry.services import model_version_create
from tests import factories
from tests.audits.audit_jobs import check as _check
from tests.flows import run_job as _run
from workers.jobs import job_create
from workers.models import JobKind
from workers.reference_data import reference_dataset_register
from workers.services import model_train

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("one_torch_thread")]

FORGET = 3
SMALL_MLP = {
    "architecture": {"name": "mlp", "config": {"in_features": 784, "num_classes": 10, "hidden": [32],
                                               "input_norm": "none"}},
    "epochs": 1, "batch_size": 64, "lr": 3e-3, "seed": 0,
}
# Two references (the platform's default) and one derived control: each control here is a 5-epoch
# fine-tune (the fine-tune method's defaults), the costliest part of the test.
REFERENCES = {"references": 2, "controls": 1}



def _head_only_version(model, original, forget_keys: set[str]):
    """The original with its last layer re-initialised and trained on the other records (2 epochs)."""
    from torch.utils.data import DataLoader

    from workers.data_sources import dataset_split
    from workers.runners.storage import artifact_store
    from workers.training.base import TrainingRun
    from workers.training.membership import collate_records
    from workers.training.storage import load_run, save_run

    store = artifact_store()
    trained = load_run(store, original.artifact_sha256)
    net = trained.model
    torch.manual_seed(0)
    net.head.reset_parameters()
    kept = [row for row in trained.membership if row.record_key not in forget_keys]
    retain = dataset_split(original.training_run.datasets.get(), "train").subset([r.record_key for r in kept])
    optimizer = torch.optim.Adam(net.head.parameters(), lr=1e-2)
    for _ in range(2):
        for _keys, inputs, targets in DataLoader(retain, batch_size=64, shuffle=True, collate_fn=collate_records):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(net(inputs), targets).backward()
            optimizer.step()
    ref = save_run(store, TrainingRun(trained.recipe, trained.config, net.eval(), kept, trained.metrics),
                   parent=original.artifact_sha256)
    records = DataRecord.objects.filter(dataset=original.training_run.datasets.get(), external_key__in=forget_keys)
    return model_version_create(model=model, artifact_sha256=ref.artifact_id, training_run=original.training_run,
                                parent=original, guarantee_class="approximate",
                                excluded_record_ids=[r.id for r in records])


def _audit(model, original, version, record_ids) -> dict:
    return _run(job_create(kind=JobKind.AUDIT, registered_model=model, source_version=original,
                           forget_record_ids=record_ids, guarantee_class="approximate", enqueue=False,
                           config={"audited_version": version.id, "forget_references": REFERENCES})).result["audit"]


def test_a_head_only_edit_of_a_class_fails_by_its_representation_and_random_records_are_not_judged():
    from workers.datasets.reference import reference_records

    started = time.perf_counter()
    dataset = reference_dataset_register(name="mnist")
    labels = {r["record_key"]: r["label"] for r in reference_records(dataset.storage_location) if r["split"] == "train"}
    model = factories.registered_model(name="mnist-head-only", recipe="plain")
    original = _run(model_train(model=model, dataset=dataset, enqueue=False, recipe_config=SMALL_MLP)).result_version
    forget_keys = {k for k, y in labels.items() if y == FORGET}
    version = _head_only_version(model, original, forget_keys)
    class_ids = list(DataRecord.objects.filter(dataset=dataset, external_key__in=forget_keys).values_list("id", flat=True))

    audit = _audit(model, original, version, class_ids)
    section = audit["forget_references"]
    assert section["applies"] and section["population"]["kind"] == "class"
    assert section["population"]["label"] == FORGET and section["references"] == 2
    assert "fine-tune method's defaults (no unlearning job of the platform made this version)" in section["control_budget"]
    assert "none stored" in section["storage"]
    assert audit["metrics"]["forget_accuracy"]["unlearned"] < 0.2  # the outputs did forget the class
    representation = _check(audit, "representation_retention")
    assert representation["verdict"] == "FAIL", representation["reason"]
    # The edit left the features exactly as they were; retrains and fine-tunes moved them.
    assert representation["unlearned_change"] < 1e-6
    assert min(representation["reference_changes"] + representation["control_changes"]) > 1e-3
    relearning = _check(audit, "relearning")
    assert relearning["verdict"] in ("PASS", "FAIL") and set(relearning["unlearned"]) == {
        "10 steps at lr 0.001", "30 steps at lr 0.001", "10 steps at lr 0.01"}
    assert len(section["relearning"]["before"]["references"]) == 2
    assert audit["verdict"]["verdict"] == "FAIL"
    assert any(r.startswith("representation_retention FAIL") for r in audit["verdict"]["reasons"])

    from audits.forget_references import forget_references_report

    words = forget_references_report(audit)
    assert "retrained 2 model(s) without them" in words["statement"]
    assert words["findings"][0].startswith("Representation (the input of the model's last linear layer")
    assert "after 10 steps at lr 0.001: the new model" in words["findings"][1]

    # Random records (mixed labels) of the same version: neither check applies, and says why.
    random_keys = sorted(np.random.default_rng(0).choice(sorted(set(labels) - forget_keys), 40, replace=False))
    random_ids = list(DataRecord.objects.filter(dataset=dataset, external_key__in=random_keys)
                      .values_list("id", flat=True))
    audit = _audit(model, original, version, random_ids)
    assert not audit["forget_references"]["applies"] and audit["forget_references"]["population"]["kind"] == "records"
    for name in ("representation_retention", "relearning"):
        check = _check(audit, name)
        assert check["verdict"] == "NOT_APPLICABLE", check["reason"]
        assert "random records, not a class or sub-population" in check["reason"]
    assert not any(r.startswith(("representation_retention", "relearning")) for r in audit["verdict"]["reasons"])
    assert "did not apply" in forget_references_report(audit)["statement"]
    print(f"forget references audit test: {time.perf_counter() - started:.1f} s")
