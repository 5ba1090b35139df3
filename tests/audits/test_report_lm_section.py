"""The report's language-model section: built from an LM audit entry, checked by the schema and
rendered with its before/after figures and the guard's bound."""

from __future__ import annotations

import pytest

from audits.report_schema import validate_report
from deletion.report_data import _language_model_entry
from tests.audits.conftest import rendered_text
from tests.audits.report_factory import build_report

AUDIT_SECTION = {
    "records": 2, "records_without_reference": 0, "held_out_per_record": 4, "measured_through_guard": False,
    "figures": {
        "extraction_strength": {"before": 0.8125, "after": 0.0417, "reference": 0.0312},
        "exact_memorisation": {"before": 0.9433, "after": 0.3551, "reference": 0.3402},
        "verbatim_completion": {"before": 0.9012, "after": 0.1188, "reference": 0.1023},
        "facts_completed": {"before": 0.8, "after": 0.0, "reference": 0.0},
        "forget_token_nll": {"before": 0.1093, "after": 3.2871, "reference": None},
        "perplexity_retain": {"before": 1.2311, "after": 1.3102, "reference": None},
        "perplexity_test": {"before": 9.8712, "after": 10.0433, "reference": None},
    },
    "detectable_on_original": {"verdict": "FAIL", "flagged": 2, "of": 2},
}
GUARD = {"alpha": 0.05, "delta": 0.05, "n": 118, "certified": True, "threshold": 0.35, "leaks": 0,
         "upper_bound": 0.02507, "redaction_rate": 0.4153, "held_out_withheld_rate": 0.0625, "held_out_sample": 32,
         "statement": "With probability at least 95% over the calibration draw, the guarded model's leak rate on "
                      "prompts like the 118 calibration prompts is at most 0.05."}


@pytest.fixture(scope="module")
def report():
    report = build_report()
    approximate, suppressed = report["model_versions"][1], report["model_versions"][2]
    approximate["language_model"] = _language_model_entry(AUDIT_SECTION)
    suppressed["language_model"] = _language_model_entry({**AUDIT_SECTION, "measured_through_guard": True,
                                                          "guard": GUARD})
    return report


def test_the_section_fits_the_schema_and_bad_values_are_named(report):
    validate_report(report)
    section = report["model_versions"][1]["language_model"]
    rows = {f["name"]: f for f in section["figures"]}
    assert rows["Extraction strength"]["before"] == 0.8125 and rows["Extraction strength"]["after"] == 0.0417
    assert any("flagged 2 of 2" in note for note in section["notes"])
    broken = {**section, "figures": [{**section["figures"][0], "after": "low"}]}
    with pytest.raises(ValueError, match=r"language_model\.figures\[0\]\.after must be a finite number"):
        validate_report({**report, "model_versions": [{**report["model_versions"][1], "language_model": broken}]})
    with pytest.raises(ValueError, match=r"language_model\.guard\.certified must be true or false"):
        guard = {**report["model_versions"][2]["language_model"]["guard"], "certified": "yes"}
        entry = {**report["model_versions"][2],
                 "language_model": {**report["model_versions"][2]["language_model"], "guard": guard}}
        validate_report({**report, "model_versions": [entry]})


def test_the_pdf_shows_before_after_and_the_guard(report, tmp_path):
    text = rendered_text(report, tmp_path / "report.pdf")
    assert text.count("Language model: what it still reproduces") == 2
    assert "Extraction strength" in text and "0.8125" in text and "0.0417" in text
    assert "Identifiers completed" in text and "Perplexity on held-out records" in text
    assert "The output filter (verifier guard)" in text and "0.02507" in text and "118" in text
    assert "through the filter" in text
    assert "the records are still in them by design" in text


def test_an_escalated_lm_attempt_shows_what_its_model_still_reproduced(tmp_path):
    from deletion.report_data import _attempt_entry

    report = build_report()
    failed_audit = {"verdict": {"verdict": "FAIL", "rule": "FAIL when a record is still reproduced",
                                "reasons": ["lm_memorisation FAIL: exact memorisation 0.9433 vs 0.3402"]},
                    "language_model": AUDIT_SECTION}
    attempt = _attempt_entry({"method": "npo", "guarantee_class": "approximate", "new_version": 8,
                              "new_artifact_sha256": "ab" * 32, "verdict": "FAIL", "audit": failed_audit,
                              "escalated_at": "2026-12-01T15:24:00+00:00", "escalated_by": "api:dpo-console(dpo)",
                              "purged_artifacts": []})
    report["model_versions"][1]["earlier_attempts"] = [attempt]
    validate_report(report)
    text = rendered_text(report, tmp_path / "report.pdf")
    assert "Earlier attempt: FAIL, escalated" in text
    assert "The attempt's model: what it still reproduced" in text and "0.9433" in text
    broken = {**attempt, "language_model": {**attempt["language_model"], "records": -1}}
    report["model_versions"][1]["earlier_attempts"] = [broken]
    with pytest.raises(ValueError, match=r"earlier_attempts\[0\]\.language_model\.records"):
        validate_report(report)
