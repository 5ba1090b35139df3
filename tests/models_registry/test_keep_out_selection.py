"""Keep-out transfer lineage (KeepOutSelection): what each non-static record selected is recorded per
version, refused when it contradicts the membership, and followed by scoping, for a subject as for
named records, though the non-static record is in no membership."""

from __future__ import annotations

import pytest

from foundation.errors import ValidationFailed
from models_registry import selectors, services
from models_registry.models import DataRecord, DataSubject
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def keep_out_version():
    ds = factories.dataset()
    factories.import_records(ds, [{"record_key": key, "content": key, "email": f"{key}@example.org"}
                                  for key in ("static-1", "public-1", "public-2", "user-1", "user-2")])
    model = factories.registered_model(recipe="keep_out_transfer")
    _, version = factories.trained_version(model, ds, [("static-1", 0, 0), ("public-1", 0, 0), ("public-2", 0, 0)])
    return ds, version


def test_the_selection_is_recorded_and_scoping_follows_it(keep_out_version):
    ds, version = keep_out_version
    selection = {"user-1": ("public-1", "public-2"), "user-2": ("public-1",)}
    assert services.keep_out_selection_record(version=version, dataset=ds, selection=selection) == 3
    assert selectors.keep_out_selection_of(version=version) == selection
    user = DataRecord.objects.get(dataset=ds, external_key="user-1")
    [affected] = selectors.records_scope(record_ids=[user.id]).versions
    assert affected.version_id == version.id
    assert [(p.record_id, p.via) for p in affected.placements] == [(user.id, "keep_out_selection")]
    [by_subject] = selectors.subject_scope(subject=DataSubject.objects.get(records=user)).versions
    assert by_subject.version_id == version.id
    # A member is still found through its membership; a record neither selected nor trained on, not at all.
    member = DataRecord.objects.get(dataset=ds, external_key="public-1")
    [held] = selectors.records_scope(record_ids=[member.id]).versions
    assert [p.via for p in held.placements] == ["training"]
    assert selectors.keep_out_selection_of(version=factories.trained_version(
        factories.registered_model(), ds, [("user-1", 0, 0)])[1]) == {}


@pytest.mark.parametrize(("selection", "message"), [
    ({"user-1": ("public-9",)}, "does not hold: public-9"),
    ({"static-1": ("public-1",)}, "non-static records may not enter training, but"),
    ({"user-1": ("user-2",)}, "selected auxiliary examples missing from"),
])
def test_a_selection_that_contradicts_the_membership_is_refused_by_name(keep_out_version, selection, message):
    ds, version = keep_out_version
    with pytest.raises(ValidationFailed) as refused:
        services.keep_out_selection_record(version=version, dataset=ds, selection=selection)
    assert message in refused.value.message and refused.value.field == "selection"
    assert selectors.keep_out_selection_of(version=version) == {}
