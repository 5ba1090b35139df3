"""Scoping: subject -> records -> versions (model-to-model lineage included) -> artifacts."""

import pytest

from models_registry import selectors, services
from models_registry.models import DataRecord, DataSubject
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def registry():
    ds = factories.dataset()
    factories.import_records(ds, [
        {"record_key": f"r{i}", "content": f"c{i}", "email": f"p{i % 3}@example.org"} for i in range(9)
    ])  # p0 owns r0, r3, r6
    model = factories.registered_model(recipe="sisa")
    run, v1 = factories.trained_version(model, ds, [(f"r{i}", i % 2, i // 3) for i in range(9)])
    other_model = factories.registered_model()
    _, unrelated = factories.trained_version(other_model, ds, [("r1", 0, 0), ("r2", 0, 0)])
    subject = DataRecord.objects.get(dataset=ds, external_key="r0").subject
    return dict(ds=ds, model=model, run=run, v1=v1, unrelated=unrelated, subject=subject)


def test_records_of_subject(registry):
    keys = sorted(selectors.records_of_subject(subject=registry["subject"]).values_list("external_key", flat=True))
    assert keys == ["r0", "r3", "r6"]


def test_versions_trained_on_records_with_shard_and_slice(registry):
    ids = list(DataRecord.objects.filter(external_key__in=["r0", "r3"]).values_list("id", flat=True))
    affected = selectors.versions_trained_on(record_ids=ids)
    assert [v.version_id for v in affected] == [registry["v1"].id]
    placements = {(p.shard, p.slice) for p in affected[0].placements}
    assert placements == {(0, 0), (1, 1)}  # r0: shard 0 slice 0; r3: shard 1 slice 1


def test_fine_tuned_and_distilled_descendants_are_in_scope(registry):
    model = factories.registered_model()
    child = services.model_version_create(model=model, artifact_sha256="1" * 64, training_run=None, status="serving")
    grandchild = services.model_version_create(model=model, artifact_sha256="2" * 64, training_run=None, status="retained")
    services.model_lineage_edge_add(parent=registry["v1"], child=child, kind="fine_tuned_from")
    services.model_lineage_edge_add(parent=child, child=grandchild, kind="distilled_from")
    scope = selectors.subject_scope(subject=registry["subject"])
    found = {v.version_id: v for v in scope.versions}
    assert set(found) == {registry["v1"].id, child.id, grandchild.id}
    assert found[grandchild.id].placements[0].via == "distilled_from"
    assert registry["unrelated"].id not in found


def test_lineage_cycle_is_refused(registry):
    from foundation.errors import ValidationFailed

    model = factories.registered_model()
    child = services.model_version_create(model=model, artifact_sha256="1" * 64, training_run=None)
    services.model_lineage_edge_add(parent=registry["v1"], child=child, kind="fine_tuned_from")
    with pytest.raises(ValidationFailed):
        services.model_lineage_edge_add(parent=child, child=registry["v1"], kind="fine_tuned_from")


def test_unlearned_version_no_longer_holds_the_record(registry):
    r0 = DataRecord.objects.get(external_key="r0", dataset=registry["ds"])
    new = services.model_version_create(
        model=registry["model"], artifact_sha256="3" * 64, training_run=registry["run"],
        parent=registry["v1"], status="serving", excluded_record_ids=[r0.id],
    )
    registry["v1"].status = "purged"
    registry["v1"].save()
    affected = selectors.versions_trained_on(record_ids=[r0.id])
    assert affected == []
    r3 = DataRecord.objects.get(external_key="r3", dataset=registry["ds"])
    assert [v.version_id for v in selectors.versions_trained_on(record_ids=[r3.id])] == [new.id]


def test_retired_versions_are_not_in_scope_but_their_artifacts_are(registry):
    registry["v1"].status = "retired"
    registry["v1"].save()
    shard0 = services.stored_artifact_register(sha256="a" * 64, kind="checkpoint", training_run=registry["run"], shard=0, slices=[0, 1, 2])
    shard0_late = services.stored_artifact_register(sha256="b" * 64, kind="checkpoint", training_run=registry["run"], shard=0, slices=[2])
    shard1 = services.stored_artifact_register(sha256="c" * 64, kind="checkpoint", training_run=registry["run"], shard=1, slices=[0])
    weights = services.stored_artifact_register(sha256="d" * 64, kind="weights", training_run=registry["run"], model_version=registry["v1"])
    cache = services.stored_artifact_register(sha256="e" * 64, kind="dataset_cache", dataset=registry["ds"])
    purged = services.stored_artifact_register(sha256="f" * 64, kind="weights", training_run=registry["run"])
    purged.status = "purged"
    purged.save()
    r0 = DataRecord.objects.get(external_key="r0", dataset=registry["ds"])  # shard 0, slice 0
    assert selectors.versions_trained_on(record_ids=[r0.id]) == []
    held = {a.id for a in selectors.artifacts_holding(record_ids=[r0.id])}
    assert held == {shard0.id, weights.id, cache.id}
    assert shard0_late.id not in held and shard1.id not in held


def test_subject_with_no_data_has_an_empty_scope(registry):
    nobody = DataSubject.objects.create()
    scope = selectors.subject_scope(subject=nobody)
    assert scope.is_empty and scope.versions == [] and scope.artifacts == []
    assert selectors.subject_scope(subject=None).is_empty


def test_scope_counts_records_by_dataset(registry):
    scope = selectors.subject_scope(subject=registry["subject"])
    assert scope.records_by_dataset == {f"{registry['ds'].name}@1": 3}
    assert len(scope.record_ids) == 3


def test_record_side_index_agrees_with_the_membership_table():
    """The block index (offsets and packed placements per 256 record ids and run) gives back, for
    every record, exactly the runs, shards and slices the membership table holds — across block
    boundaries, two runs, a run imported in two parts, and shard/slice values beyond one byte."""
    import random

    from models_registry.importing import training_membership_import
    from models_registry.models import TrainingMembership

    ds = factories.dataset()
    factories.import_records(ds, [{"record_key": f"k{i}", "content": f"c{i}"} for i in range(700)])
    model = factories.registered_model(recipe="sisa")
    rng = random.Random(3)
    factories.trained_version(model, ds, [(f"k{i}", rng.randrange(4000), rng.randrange(300))
                                          for i in rng.sample(range(700), 400)])
    run_b = services.training_run_start(model=model, recipe="sisa", config={}, seed=1, code_version="t", datasets=[ds])
    keys = rng.sample(range(700), 500)
    for part in (keys[:250], keys[250:]):
        rows = [(n + 1, f"k{i}", rng.randrange(50), rng.randrange(7), n) for n, i in enumerate(part)]
        training_membership_import(run=run_b, dataset=ds, rows=rows)
    ids = list(DataRecord.objects.filter(dataset=ds).values_list("id", flat=True))
    expected = sorted(TrainingMembership.objects.filter(record_id__in=ids).values_list("record_id", "run_id", "shard", "slice"))
    assert len(expected) == 900
    assert selectors.memberships_of_records(record_ids=ids) == expected
    one = expected[123][0]
    assert selectors.memberships_of_records(record_ids=[one]) == [row for row in expected if row[0] == one]
