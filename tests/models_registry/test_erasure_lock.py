"""An erasure and a membership import whose transactions overlap: the import waits for the erasure
(models_registry.importing.erasure_lock) and then reads its records as erased, so no run trained on
them is registered after the erasure listed the copies to destroy (a shadow model registering while a
request's data was erased could otherwise commit the records the erasure had just marked). Two real
connections to PostgreSQL, in two threads."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, transaction

from models_registry import services
from models_registry.importing import ImportRejected, erasure_lock, training_membership_import
from models_registry.models import DataRecord
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_import_overlapping_an_erasure_waits_for_it_and_is_refused():
    ds = factories.dataset()
    factories.import_records(ds, [{"record_key": f"k{i}", "content": f"c{i}"} for i in range(4)])
    model = factories.registered_model()
    erased = DataRecord.objects.get(dataset=ds, external_key="k0")
    marked, finish = threading.Event(), threading.Event()
    failures: list[BaseException] = []

    def erasure() -> None:  # request_data_erase's order: the lock, then the records, then (later) commit
        try:
            with transaction.atomic():
                erasure_lock(exclusive=True)
                services.records_erase(records=[DataRecord.objects.get(pk=erased.pk)], reason="test")
                marked.set()
                finish.wait(timeout=30)
        except BaseException as exc:  # noqa: BLE001 (reported to the test's thread)
            failures.append(exc)
        finally:
            marked.set()
            connection.close()

    eraser = threading.Thread(target=erasure)
    eraser.start()
    assert marked.wait(timeout=30)
    outcome: dict = {}

    def membership() -> None:
        run = services.training_run_start(model=model, recipe="plain", config={}, seed=0, code_version="test",
                                          datasets=[ds])
        try:
            training_membership_import(run=run, dataset=ds, rows=[(i + 1, f"k{i}", 0, 0, i) for i in range(4)])
            outcome["result"] = "imported"
        except ImportRejected as exc:
            outcome["result"] = str(exc)
        finally:
            connection.close()

    importer = threading.Thread(target=membership)
    importer.start()
    importer.join(timeout=2)
    assert importer.is_alive(), f"the import did not wait for the erasure: {outcome}"  # blocked on the lock
    finish.set()
    eraser.join(timeout=30)
    importer.join(timeout=30)
    assert not failures, failures
    assert "k0" in outcome["result"] and "was erased" in outcome["result"], outcome
