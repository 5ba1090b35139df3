"""A data folder from before request erasures destroyed shadow models can hold shadows trained on records
erased since (an audit that reruns a method on them fails). ``manage.py erased_shadows_purge`` finds them
(``--dry-run`` lists only), destroys them like a request's erasure does, queues their replacement and
says so in the ledger; the replacement leaves the erased records out. Run for real in this process."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command

from foundation.ledger.models import LedgerEvent
from models_registry.models import ArtifactKind, StoredArtifact
from models_registry.selectors import artifacts_holding
from models_registry.services import records_erase
from tests.workers.test_queued_requests import _run
from tests.workers.test_shadow_erasure import _shadows_holding, _trained_with_shadows
from workers.models import Job
from workers.runners.storage import artifact_store

pytestmark = pytest.mark.django_db


def _command(*args: str) -> dict:
    out = io.StringIO()
    call_command("erased_shadows_purge", "--json", *args, stdout=out)
    return json.loads(out.getvalue())


def test_shadows_that_hold_records_erased_before_are_destroyed_and_replaced():
    v1, (record, _) = _trained_with_shadows("bc-legacy-shadows")
    [holding] = [a for a in artifacts_holding(record_ids=[record.id]) if a.kind == ArtifactKind.SHADOW_MODEL]
    records_erase(records=[record], reason="erased before shadows were destroyed with the request's data")
    assert _shadows_holding([record]) == [holding.label]  # what a legacy data folder holds

    listed = _command("--dry-run")
    assert listed["shadow_models"] == [{"sha256": holding.sha256, "label": holding.label}]
    assert not listed["purged"] and artifact_store().exists(holding.sha256)  # a dry run destroys nothing

    done = _command()
    assert done["purged"] and done["shadow_models"] == listed["shadow_models"]
    assert not artifact_store().exists(holding.sha256) and StoredArtifact.objects.get(pk=holding.id).status == "purged"
    [event] = [e for e in map(json.loads, LedgerEvent.objects.values_list("payload", flat=True))
               if e["type"] == "shadow_models.purged"]
    assert event["data"]["shadow_models_purged"] == listed["shadow_models"]
    [job_id] = done["replenish_jobs"]
    assert event["data"]["shadow_replenish_jobs"] == [job_id]

    replenished = _run(Job.objects.get(pk=job_id))
    assert len(replenished.result["shadows_trained"]) == 1 and _shadows_holding([record]) == []
    assert _command()["shadow_models"] == []  # nothing left to find
    out = io.StringIO()
    call_command("erased_shadows_purge", stdout=out)
    assert out.getvalue().strip() == "0 shadow model(s) hold any of the 1 erased record(s)"
