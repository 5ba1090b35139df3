"""A sanity-check flag on an exact deletion is investigated (issue 18, finding 3): exact copies of the
erased record by content fingerprint, near-duplicates in the model's representation, and the ones
that belong to the same person offered to the DPO; keys and counts, never content."""

from __future__ import annotations

import pytest
import torch

from audits.investigation import investigate_flags
from deletion.report_data import flag_notes
from models_registry.models import DataRecord
from tests import factories
from workers.datasets.memory import TensorRecordDataset
from workers.training.architectures import build_model

pytestmark = pytest.mark.django_db

MLP = {"name": "mlp", "config": {"in_features": 6, "num_classes": 2, "hidden": [8], "input_norm": "none"}}


@pytest.fixture
def flagged_case():
    ds = factories.dataset()
    factories.import_records(ds, [{"record_key": f"r{i}", "content": f"content {i}", "email": f"p{i % 3}@example.org"}
                                  for i in range(20)])
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(20, 6, generator=generator) * 3
    features[5] = features[0] + 1e-5  # a near-duplicate of r0, another person's (p2)
    train = TensorRecordDataset([f"r{i}" for i in range(20)], features, torch.zeros(20, dtype=torch.int64))
    test = TensorRecordDataset([f"t{i}" for i in range(50)], torch.randn(50, 6, generator=generator) * 3,
                               torch.zeros(50, dtype=torch.int64))
    erased = DataRecord.objects.get(dataset=ds, external_key="r0")
    # r6 holds the same content as r0 (the same person, p0): an exact copy by fingerprint.
    DataRecord.objects.filter(dataset=ds, external_key="r6").update(content_fingerprint=erased.content_fingerprint)
    torch.manual_seed(0)
    return dict(ds=ds, train=train, test=test, model=build_model(MLP).eval())


def test_copies_and_near_duplicates_are_found_and_the_same_persons_are_offered(flagged_case):
    c = flagged_case
    found = investigate_flags(flagged_keys=["r0"], dataset=c["ds"], kept_keys=[f"r{i}" for i in range(1, 20)],
                              model=c["model"], train=c["train"], test=c["test"], device="cpu")
    (finding,) = found["findings"]
    assert finding["exact_copies"] == ["r6"]
    assert finding["near_duplicates"] == ["r5"]
    assert finding["same_person"] == ["r6"]  # r5 is p2's record: not offered
    assert found["scope_additions"] == [{"record_key": "r6", "of_erased_record": "r0", "why": "exact copy"}]
    notes = " ".join(flag_notes({"flag_investigation": found}))
    assert "1 exact copy by content fingerprint and 1 near-duplicate(s)" in notes
    assert "r6 (exact copy of r0)" in notes
    assert "content 0" not in notes and "content 6" not in notes  # keys and counts, never content


def test_a_flag_nothing_explains_says_so(flagged_case):
    c = flagged_case
    found = investigate_flags(flagged_keys=["r1"], dataset=c["ds"], kept_keys=[f"r{i}" for i in range(2, 20)],
                              model=c["model"], train=c["train"], test=c["test"], device="cpu")
    assert found["findings"][0]["exact_copies"] == [] and found["scope_additions"] == []
    assert "0 of 1 flag(s) explained" in found["summary"]


def test_nothing_flagged_nothing_investigated(flagged_case):
    c = flagged_case
    assert investigate_flags(flagged_keys=[], dataset=c["ds"], kept_keys=[], model=c["model"], train=c["train"],
                             test=c["test"], device="cpu")["findings"] == []
