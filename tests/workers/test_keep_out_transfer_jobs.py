"""Keep-out transfer (arXiv 2405.10425) through the real jobs, on scikit-learn's bundled breast-cancer
set: the keep_out_transfer recipe trains on the static records and the auxiliary examples the
non-static records select; no non-static record is in the membership, and KeepOutSelection records
what each selected. A request naming a non-static record is scoped to the model through that table
and planned with the keep_out_transfer exact method. Deleting a record whose example another record
still selects keeps the weights (same hash; its selection rows dropped); deleting one that changes
the selection retrains on the new one, and the new version excludes the dropped example. The
report says which, and why."""

from __future__ import annotations

import re

import pytest

from deletion import decisions
from deletion.models import ModelOutcome
from models_registry.models import DataRecord, KeepOutSelection, ModelVersion, TrainingMembership
from models_registry.selectors import keep_out_selection_of, records_scope, version_membership
from tests import factories
from tests.flows import approved_request, run_job
from workers.reference_data import reference_dataset_register
from workers.runners.storage import artifact_store
from workers.services import model_train

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("one_torch_thread")]

MLP = {"name": "mlp", "config": {"in_features": 30, "num_classes": 2, "hidden": [16], "input_norm": "asinh"}}
STATIC, AUXILIARY = r"bc-00[0-2]\d", r"bc-0[12]\d\d"  # bc-0000..0029 static, bc-0100..0299 the pool
KEEP_OUT = {"architecture": MLP, "epochs": 5, "batch_size": 32, "lr": 0.01, "seed": 0,
            "static_records": STATIC, "auxiliary_records": AUXILIARY, "neighbours": 1}



def _weights_sha256(version: ModelVersion) -> str:
    return artifact_store().manifest(version.artifact_sha256).files["weights"]["sha256"]


def _member_keys(version: ModelVersion) -> set[str]:
    return {row[0] for row in version_membership(version=version)}


def _delete(record: DataRecord) -> ModelOutcome:
    """File, approve, unlearn and audit an erasure of ``record``; the serving side confirms."""
    request = approved_request([record])
    outcome = ModelOutcome.objects.get(request=request)
    assert (outcome.method, outcome.guarantee_class) == ("keep_out_transfer", "exact")
    run_job(outcome.job)
    outcome.refresh_from_db()
    run_job(outcome.audit_job)
    outcome.refresh_from_db()
    if outcome.status == "awaiting_deployment":
        decisions.deployment_confirm(request=outcome.request, actor="serving", manual=True,
                                     new_version_id=outcome.new_version_id)
        outcome.refresh_from_db()
    return outcome


def test_keep_out_transfer_trains_without_non_static_records_and_deletes_them_exactly(capsys):
    dataset = reference_dataset_register(name="breast_cancer")
    model = factories.registered_model(name="bc-keep-out", recipe="keep_out_transfer", architecture=MLP)
    version = run_job(model_train(model=model, dataset=dataset, enqueue=False, recipe_config=KEEP_OUT)).result_version

    # Lineage: the membership holds the static records and the selected examples, no non-static record.
    train = set(DataRecord.objects.filter(dataset=dataset, split="train").values_list("external_key", flat=True))
    static = {k for k in train if re.fullmatch(STATIC, k)}
    non_static = {k for k in train if not re.fullmatch(STATIC, k) and not re.fullmatch(AUXILIARY, k)}
    selection = keep_out_selection_of(version=version)
    members = set(TrainingMembership.objects.filter(run=version.training_run)
                  .values_list("record__external_key", flat=True))
    assert set(selection) == non_static and not members & non_static
    assert members == static | {aux for chosen in selection.values() for aux in chosen}
    assert version.metrics["non_static_records"] == len(non_static) and version.metrics["test_accuracy"] > 0.7

    choosers: dict[str, list[str]] = {}
    for key, chosen in selection.items():
        choosers.setdefault(chosen[0], []).append(key)
    shared_key = next(keys[0] for keys in choosers.values() if len(keys) > 1)
    alone_key = next(keys[0] for keys in choosers.values() if len(keys) == 1)
    shared, alone = (DataRecord.objects.get(dataset=dataset, external_key=k) for k in (shared_key, alone_key))

    # Scoping finds the model through the selection, though the record is in no membership.
    [affected] = records_scope(record_ids=[shared.id]).versions
    assert affected.version_id == version.id
    assert [(p.record_id, p.via) for p in affected.placements] == [(shared.id, "keep_out_selection")]

    # 1. Its example is still selected by another record: same weights, its selection rows dropped.
    original_weights = _weights_sha256(version)
    first = _delete(shared)
    details = first.job.result["unlearning"]["details"]
    assert details["weights_unchanged"] and not details["retrained"] and details["auxiliary_dropped"] == []
    assert "training set is unchanged" in details["reason"]
    unchanged = first.new_version
    assert _weights_sha256(unchanged) == original_weights
    assert keep_out_selection_of(version=unchanged) == {k: v for k, v in selection.items() if k != shared_key}
    assert _member_keys(unchanged) == members
    assert not KeepOutSelection.objects.filter(version=unchanged, record=shared).exists()
    assert first.audit["verdict"]["verdict"] in ("PASS", "INCONCLUSIVE"), first.audit["verdict"]
    from deletion.report_data import report_data

    [entry] = report_data(request=first.request)["model_versions"]
    assert any(n.startswith("Keep-out transfer: the model did not change") for n in entry["verdict"]["notes"])
    version.refresh_from_db()
    assert version.status == "purged"  # the parent's copy (its selection named the record) is gone
    from workers.training.storage import load_run

    # The weights file both versions named stays for the new one, which loads whole.
    assert load_run(artifact_store(), unchanged.artifact_sha256).keep_out_selection == \
        keep_out_selection_of(version=unchanged)

    # 2. Its example is selected by no other record: the model is retrained without that example.
    unchanged_weights = _weights_sha256(unchanged)
    second = _delete(alone)
    details = second.job.result["unlearning"]["details"]
    assert details["retrained"] and details["auxiliary_dropped"] == list(selection[alone_key])
    assert "selection changed" in details["reason"]
    retrained = second.new_version
    assert retrained.parent_id == unchanged.id
    assert _weights_sha256(retrained) != unchanged_weights
    assert _member_keys(retrained) == members - set(selection[alone_key])
    assert set(keep_out_selection_of(version=retrained)) == non_static - {shared_key, alone_key}
    [entry] = report_data(request=second.request)["model_versions"]
    assert any(n.startswith("Keep-out transfer: the model was retrained") for n in entry["verdict"]["notes"])
    for outcome in (first, second):  # the audit's replay retrained the model: the same weights, bit for bit
        replay = outcome.audit["replay"]
        assert replay["ran"] and replay["comparison"]["identical"], replay
    with capsys.disabled():
        print(f"\nkeep-out transfer on breast cancer: {len(static)} static, {len(non_static)} non-static, "
              f"{len(members) - len(static)} auxiliary selected; test accuracy {version.metrics['test_accuracy']}; "
              f"audits: unchanged {first.audit['verdict']['verdict']}, retrained {second.audit['verdict']['verdict']} "
              f"({second.audit['verdict'].get('reasons')})")
    # Neither record is in any held version's scope any more.
    assert records_scope(record_ids=[shared.id, alone.id]).versions == []


def test_shadow_models_train_as_the_recipe_does_on_halves_of_its_inputs():
    """Each shadow of a keep-out transfer model trains on a half of the recipe's inputs (static and
    non-static records) as the recipe does: the half's static records and the auxiliary examples the
    half's non-static records selected (before: the static records alone, poor references for a
    model that trains on the selected examples too)."""
    from workers.runners.shadow import shadow_half, shadow_runs
    from workers.services import shadow_models_train

    dataset = reference_dataset_register(name="breast_cancer")
    model = factories.registered_model(name="bc-keep-out-shadows", recipe="keep_out_transfer", architecture=MLP)
    version = run_job(model_train(model=model, dataset=dataset, enqueue=False, recipe_config=KEEP_OUT)).result_version
    selection = keep_out_selection_of(version=version)
    static = {k for k in _member_keys(version) if re.fullmatch(STATIC, k)}
    run_job(shadow_models_train(version=version, count=2, enqueue=False))

    runs = shadow_runs(version=version)
    assert [run.config["shadow_index"] for run in runs] == [0, 1]
    halves_static = []
    for run in runs:
        half = set(shadow_half(sorted(static | set(selection)), version_id=version.id,
                               index=run.config["shadow_index"]))
        members = set(TrainingMembership.objects.filter(run=run).values_list("record__external_key", flat=True))
        selected = {aux for key, chosen in selection.items() if key in half for aux in chosen}
        assert selected and members == (static & half) | selected
        assert not members & set(selection)  # no non-static record trains a shadow either
        halves_static.append(static & half)
    # A complementary pair: every static record trains exactly one of the two.
    assert halves_static[0] | halves_static[1] == static and not halves_static[0] & halves_static[1]

