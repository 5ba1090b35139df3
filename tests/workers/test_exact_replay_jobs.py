"""The audit of an exact deletion replays it (issue 18, finding 4): through the real jobs, a correct
SISA deletion is rebuilt bit for bit and PASSes; a corrupted SISA method that skips one record, and
the original model presented as the result of an exact deletion, are FAILed by the replay although
the registry's bookkeeping (ExcludedRecord rows) says the records are gone."""

from __future__ import annotations

import pytest

from deletion.models import ModelOutcome
from deletion.report_data import replay_notes
from models_registry.models import DataRecord
from tests import factories
from tests.flows import approved_request, run_job
from workers.reference_data import reference_dataset_register
from workers.services import model_train, shadow_models_train
from workers.unlearning.exact.sisa import SisaUnlearning

pytestmark = pytest.mark.django_db

MLP = {"name": "mlp", "config": {"in_features": 30, "num_classes": 2, "hidden": [16], "input_norm": "asinh"}}
SISA = {"architecture": MLP, "epochs": 3, "shards": 3, "slices": 2, "seed": 0}


@pytest.fixture
def sisa_model():
    dataset = reference_dataset_register(name="breast_cancer")
    model = factories.registered_model(name="bc-sisa-replay", recipe="sisa")
    version = run_job(model_train(model=model, dataset=dataset, enqueue=False, recipe_config=SISA)).result_version
    return dataset, model, version


def _records_in_two_shards(dataset, version) -> list[DataRecord]:
    from models_registry.models import TrainingMembership

    rows = {}
    for record_id, shard in TrainingMembership.objects.filter(run=version.training_run).values_list("record_id",
                                                                                                   "shard"):
        rows.setdefault(shard, record_id)
    return list(DataRecord.objects.filter(id__in=sorted(rows.values())[:2]).order_by("id"))


def _delete_and_audit(dataset, records) -> ModelOutcome:
    request = approved_request(records)
    outcome = ModelOutcome.objects.get(request=request)
    assert (outcome.method, outcome.guarantee_class) == ("sisa", "exact")
    run_job(outcome.job)
    outcome.refresh_from_db()
    run_job(outcome.audit_job)
    outcome.refresh_from_db()
    return outcome


def _check(outcome, name: str) -> dict:
    return next(c for c in outcome.audit["checks"] if c["check"] == name)


def test_a_correct_sisa_deletion_is_replayed_bit_for_bit(sisa_model, monkeypatch):
    import audits.runner

    dataset, _, version = sisa_model
    run_job(shadow_models_train(version=version, count=2, enqueue=False))
    records = _records_in_two_shards(dataset, version)
    # As if the sanity check had flagged the first record: the audit investigates the flag.
    monkeypatch.setattr(audits.runner, "flagged_record_keys", lambda checks: [records[0].external_key])
    outcome = _delete_and_audit(dataset, records)
    investigation = outcome.audit["flag_investigation"]
    assert [f["record_key"] for f in investigation["findings"]] == [records[0].external_key]
    assert investigation["threshold"] is not None and "investigated for 1 record(s)" in investigation["summary"]
    replay = outcome.audit["replay"]
    assert replay["ran"] and replay["comparison"]["identical"], replay
    assert replay["comparison"]["tensors_compared"] > 0 and replay["comparison"]["max_abs_difference"] == 0.0
    assert replay["recorded_environment"]["torch"] == replay["replay_environment"]["torch"]
    assert _check(outcome, "exact_replay")["verdict"] == "PASS"
    assert outcome.verdict == "PASS", outcome.audit["verdict"]["reasons"]
    assert "independent replay rebuilt identical weights" in outcome.audit["verdict"]["reason"]
    from deletion.report_data import report_data

    [entry] = report_data(request=outcome.request)["model_versions"]
    assert any(n.startswith("Sanity check, not proof: on records provably absent from the model")
               for n in entry["verdict"]["notes"])
    note = replay_notes(outcome.audit)[0]
    assert note.startswith("Independent replay (by the audit job") and "tensors identical" in note
    assert "cannot show a bug shared by both computations" in note


def test_a_corrupted_exact_method_that_skips_one_record_is_failed_by_the_replay(sisa_model, monkeypatch):
    dataset, _, version = sisa_model
    honest = SisaUnlearning.replace

    def skips_the_last_record(self, run, forget_keys, retain, *, device, progress):
        return honest(self, run, forget_keys[:-1], retain, device=device, progress=progress)

    monkeypatch.setattr(SisaUnlearning, "replace", skips_the_last_record)
    outcome = _delete_and_audit(dataset, _records_in_two_shards(dataset, version))
    # The bookkeeping says both records are gone; the weights say otherwise.
    assert outcome.job.result_version.excluded_records.count() == 2
    replay = outcome.audit["replay"]
    assert replay["ran"] and not replay["comparison"]["identical"]
    assert replay["comparison"]["records_only_stored"] == 1
    assert _check(outcome, "exact_replay")["verdict"] == "FAIL"
    assert outcome.verdict == "FAIL"
    assert any(r.startswith("Replay: The stored version is not what the deletion should have produced")
               for r in outcome.audit["verdict"]["reasons"])
    assert outcome.audit["older_copies_purged"] is None  # a FAIL keeps the parent for the DPO's decision


def test_the_original_presented_as_an_exact_deletion_is_failed(sisa_model, monkeypatch):
    dataset, _, version = sisa_model

    def does_nothing(self, run, forget_keys, retain, *, device, progress):
        return run, 0, {"records_forgotten": len(forget_keys), "not_members": []}

    monkeypatch.setattr(SisaUnlearning, "replace", does_nothing)
    outcome = _delete_and_audit(dataset, _records_in_two_shards(dataset, version))
    replay = outcome.audit["replay"]
    assert replay["ran"] and replay["comparison"]["differing_count"] > 0
    assert replay["comparison"]["records_only_stored"] == 2
    assert outcome.verdict == "FAIL"


def test_an_environment_the_audit_cannot_reproduce_leaves_the_exact_verdict_open(sisa_model, monkeypatch):
    from workers.training import device as device_module

    dataset, _, version = sisa_model
    recorded = device_module.training_environment

    def from_another_torch(device):
        return {**recorded(device), "torch": "2.99.0"}

    # The unlearning job records one torch version; the audit job runs another.
    import workers.unlearning.exact.common as common

    monkeypatch.setattr(common, "training_environment", from_another_torch)
    outcome = _delete_and_audit(dataset, _records_in_two_shards(dataset, version))
    replay = outcome.audit["replay"]
    assert not replay["ran"] and "torch 2.99.0 recorded" in replay["environment_problem"]
    assert _check(outcome, "exact_replay")["verdict"] == "INCONCLUSIVE"
    assert outcome.verdict == "INCONCLUSIVE"
    assert outcome.status == "awaiting_decision"
    assert "cannot be reproduced here: torch 2.99.0 recorded" in replay_notes(outcome.audit)[0]


def test_the_plan_says_when_the_replay_runs_and_what_it_costs(sisa_model):
    from deletion.planning import replay_plan

    dataset, model, version = sisa_model
    sisa = replay_plan(version=version, method="sisa")
    assert sisa["runs"] == "every audit" and "bit for bit" in sisa["summary"]
    retrain = replay_plan(version=version, method="retrain")
    assert retrain["runs"] == "on request" and "one more full training" in retrain["summary"]
    model.unlearning_policy = {"replay_retrain": True}
    model.save()
    version.refresh_from_db()
    assert replay_plan(version=version, method="retrain")["runs"] == "every audit"
    assert replay_plan(version=version, method="finetune") is None
