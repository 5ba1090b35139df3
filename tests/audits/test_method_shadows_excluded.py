"""A method that learns from the lineage's shadow models (oracle matching, DMM) states which it read
(``details.shadow_split``); the audit then calibrates with the others only, so that it does not judge
the method against its own oracle (issue 24)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import audits.runner
import workers.runners.shadow
from models_registry import services
from tests import factories
from workers.models import Job, JobKind

pytestmark = pytest.mark.django_db


@pytest.fixture
def versions():
    dataset = factories.dataset()
    factories.import_records(dataset, [{"record_key": f"r{i}", "content": f"c{i}"} for i in range(4)])
    model = factories.registered_model(name="shadow-split")
    run, source = factories.trained_version(model, dataset, [(f"r{i}", 0, 0) for i in range(4)])
    new = services.model_version_create(model=model, artifact_sha256="1" * 64, training_run=run, parent=source,
                                        status="retained")
    return source, new


def _audited_shadows(monkeypatch, source, new, unlearning_result: dict) -> list[int]:
    runs = [SimpleNamespace(config={"shadow_index": i}) for i in range(6)]
    monkeypatch.setattr(workers.runners.shadow, "shadow_runs", lambda version: runs)
    monkeypatch.setattr(audits.runner, "shadow_procedure_of", lambda version: None)
    Job.objects.create(kind=JobKind.UNLEARN, registered_model=new.model, source_version=source, result_version=new,
                       method="dmm", guarantee_class="approximate", result={"unlearning": unlearning_result})
    audit = Job(kind=JobKind.AUDIT, guarantee_class="approximate")
    shadows, _ = audits.runner.reference_models_for(audit, source=source, new=new)
    return [run.config["shadow_index"] for run in shadows]


def test_the_audit_leaves_out_the_shadow_models_the_method_read(versions, monkeypatch):
    source, new = versions
    split = {"method_shadow_indices": [0, 1, 2, 3], "audit_shadow_indices": [4, 5]}
    assert _audited_shadows(monkeypatch, source, new, {"details": {"shadow_split": split}}) == [4, 5]


def test_a_method_that_read_no_shadow_model_is_audited_with_all_of_them(versions, monkeypatch):
    source, new = versions
    assert _audited_shadows(monkeypatch, source, new, {"details": {"epochs": 5}}) == [0, 1, 2, 3, 4, 5]


def test_u_lira_runs_a_shadow_reading_method_with_the_shadows_it_read_for_the_request(versions, monkeypatch):
    # Before, U-LiRA did not run for DMM and oracle matching ("reads the lineage's shadow models itself"),
    # so their full-audit PASS rested on output metrics that matching aims at by construction.
    from audits.unlearned_shadows import audited_method, method_context, ulira_notes

    source, new = versions
    Job.objects.create(kind=JobKind.UNLEARN, registered_model=new.model, source_version=source, result_version=new,
                       method="oracle_matching", guarantee_class="approximate", config={"epochs": 10}, result={})
    audited = audited_method(Job(kind=JobKind.AUDIT), new)
    assert "not_run" not in audited
    assert (audited["method"], audited["config"], audited["references_from"]) == ("oracle_matching", {"epochs": 10},
                                                                                   source.id)
    listed = []
    monkeypatch.setattr(workers.runners.shadow, "shadow_references",
                        lambda version: listed.append(version.id) or ["shadow 0", "shadow 1"])
    cache: dict = {}
    assert method_context(audited, cache) == {"references": ["shadow 0", "shadow 1"]}
    assert method_context(audited, cache) == {"references": ["shadow 0", "shadow 1"]} and listed == [source.id]
    assert method_context({"method": "finetune", "config": {}}, {}) == {}
    section = {"ran": True, "design": "d", "method": "oracle_matching", "unlearned_shadows": 4, "seconds": 1.0,
               "unlearned_per_record": {"min": 2, "max": 2}, "out_per_record": {"min": 8, "max": 8}, "storage": "s",
               "method_read": "the shadow models it read for the request"}
    assert any("reads shadow models itself" in note for note in ulira_notes(section))
