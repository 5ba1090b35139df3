"""Erased data goes on the suppression list; later imports and training runs refuse it."""

import io

import pytest

from models_registry import services
from models_registry.importing import ImportRejected, training_membership_import_file
from models_registry.models import DataRecord, RecordStatus
from tests import factories

pytestmark = pytest.mark.django_db


def _erased_dataset():
    ds = factories.dataset()
    factories.import_records(ds, [
        {"record_key": "keep", "content": "kept content", "email": "keep@example.org"},
        {"record_key": "gone", "content": "erased content", "email": "gone@example.org"},
    ])
    gone = DataRecord.objects.get(dataset=ds, external_key="gone")
    services.records_erase(records=[gone], reason="request 1")
    services.subject_suppress(subject=gone.subject, reason="request 1")
    return ds, gone


def test_erased_record_is_marked_and_suppressed():
    _, gone = _erased_dataset()
    gone.refresh_from_db()
    assert gone.status == RecordStatus.ERASED and gone.erased_at is not None


@pytest.mark.parametrize("row,problem", [
    ({"record_key": "gone", "content": "new content"}, "suppression list"),  # same key
    ({"record_key": "renamed", "content": "erased content"}, "suppression list"),  # same content, new key
    ({"record_key": "other", "content": "fresh", "email": "GONE@example.org"}, "subject was erased"),
])
def test_reimport_of_suppressed_data_is_refused(row, problem):
    ds, _ = _erased_dataset()
    with pytest.raises(ImportRejected) as caught:
        factories.import_records(ds, [row])
    assert problem in caught.value.errors[0].problem


def test_training_run_cannot_take_in_an_erased_record():
    ds, _ = _erased_dataset()
    model = factories.registered_model()
    run = services.training_run_start(model=model, recipe="plain", config={}, seed=0, code_version="t", datasets=[ds])
    with pytest.raises(ImportRejected) as caught:
        training_membership_import_file(run=run, dataset=ds, source=io.BytesIO(b"record_key\nkeep\ngone\n"), fmt="csv")
    assert caught.value.errors[0].line == 3
    assert "suppression list" in caught.value.errors[0].problem
