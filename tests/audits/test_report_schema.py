"""The report schema: a realistic report passes, every kind of bad field is named by its path."""

from __future__ import annotations

import copy
import re

import pytest

from audits.report_schema import guarantee_entry, validate_report
from tests.audits.report_factory import build_report


@pytest.fixture(scope="module")
def report():
    return build_report()


def test_factory_report_is_valid_and_carries_all_three_verdicts(report):
    validate_report(report)
    assert [e["verdict"]["verdict"] for e in report["model_versions"]] == ["PASS", "INCONCLUSIVE", "FAIL"]


def _broken(report, change):
    bad = copy.deepcopy(report)
    change(bad)
    return bad


@pytest.mark.parametrize("change,message", [
    (lambda r: r.pop("subject_reference"), "report.subject_reference is missing"),
    (lambda r: r["timeline"].pop("due"), "report.timeline.due is missing"),
    (lambda r: r.update(colour="blue"), "report.colour is not a field"),
    (lambda r: r.update(jurisdiction="EU"), "report.jurisdiction must be one of GDPR, UK_GDPR, CCPA"),
    (lambda r: r.update(request_id="not-a-uuid"), "report.request_id must be a UUID"),
    (lambda r: r["timeline"].update(received="2025-03-03 09:12"), "report.timeline.received must be an ISO 8601"),
    (lambda r: r["model_versions"][1]["verdict"].update(verdict="FORGOTTEN"),
     "report.model_versions[1].verdict.verdict must be one of PASS, FAIL, INCONCLUSIVE"),
    (lambda r: r["model_versions"][0].update(old_artifact_sha256="abc"),
     "report.model_versions[0].old_artifact_sha256 must be 64 lowercase hex"),
    (lambda r: r["model_versions"][0]["metrics"][0].update(after=float("nan")),
     "report.model_versions[0].metrics[0].after must be a finite number"),
    (lambda r: r["model_versions"][0].update(shadow_model_count=True),
     "report.model_versions[0].shadow_model_count must be an integer"),
    (lambda r: r["model_versions"][0].update(shadow_model_count=-1),
     "report.model_versions[0].shadow_model_count must be zero or more"),
    (lambda r: r["model_versions"][0]["roc_curves"][0]["true_positive_rate"].pop(),
     "roc_curves[0]: false_positive_rate and true_positive_rate differ in length"),
    (lambda r: r["model_versions"][0]["roc_curves"][0]["true_positive_rate"].__setitem__(3, 1.5),
     "true_positive_rate must be a list of rates between 0 and 1"),
    (lambda r: r["model_versions"][0]["score_histograms"]["forget"].append(1),
     "score_histograms.forget must have one count per bin"),
    (lambda r: r["model_versions"][0].update(new_version=None),
     "new_version and new_artifact_sha256 must be given together"),
    (lambda r: r.update(limitations=[]), "report.limitations must be non-empty"),
    (lambda r: r["ledger_head"].update(hash=None), "report.ledger_head.hash must not be null"),
])
def test_bad_field_is_named(report, change, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        validate_report(_broken(report, change))


def test_optional_fields_may_be_left_out(report):
    def drop(r):
        r["model_versions"][0]["metrics"][0].pop("description")
        r["model_versions"][0]["metrics"][0].pop("result")
        r["model_versions"][2]["cost"].pop("device", None)
        r["model_versions"][0]["score_histograms"] = None
        r["model_versions"][0]["roc_curves"] = []
    validate_report(_broken(report, drop))


def test_guarantee_entry_uses_the_checks_plain_words():
    entry = guarantee_entry("suppressed")
    assert entry["title"] == "Suppressed at output"
    assert "still inside the model" in entry["does_not_promise"]
    with pytest.raises(ValueError, match="unknown guarantee class"):
        guarantee_entry("magic")
