"""The rendered report: pages render to images, charts are drawn, results are stated plainly."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from audits.rendering import render_report_pdf
from tests.audits.conftest import rendered_text, require_tool
from tests.audits.report_factory import build_report

SCREENSHOTS = Path(__file__).resolve().parents[1] / "_screenshots"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """The factory report rendered once: its PDF, page PNGs (pdftoppm) and text per page."""
    folder = tmp_path_factory.mktemp("rendered")
    report = build_report()
    pdf = folder / "report.pdf"
    pdf.write_bytes(render_report_pdf(report))
    subprocess.run([require_tool("pdftoppm"), "-r", "60", "-png", str(pdf), str(folder / "page")],
                   check=True, timeout=120)
    pages = sorted(folder.glob("page-*.png"), key=lambda p: int(p.stem.split("-")[1]))
    texts = [subprocess.run([require_tool("pdftotext"), "-layout", "-f", str(n), "-l", str(n), str(pdf), "-"],
                            check=True, capture_output=True, text=True).stdout
             for n in range(1, len(pages) + 1)]
    return {"report": report, "pdf": pdf, "pages": pages, "texts": texts}


def _chart_blue_pixels(path: Path) -> int:
    """Pixels of the charts' blue (kept records, new-model curve). Nothing else in the report is
    blue: text and rules are grey, the result boxes green, amber or red."""
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)
    return int(((pixels[..., 2] - pixels[..., 0]) > 60).sum())


def test_every_page_renders_to_an_image(rendered):
    assert len(rendered["pages"]) >= 5
    for page in rendered["pages"]:
        assert Image.open(page).size[0] > 300
    SCREENSHOTS.mkdir(exist_ok=True)
    shutil.copy(rendered["pages"][0], SCREENSHOTS / "report-page-1.png")


def test_chart_pages_are_not_blank(rendered):
    chart_pages = [i for i, text in enumerate(rendered["texts"]) if "Figure A." in text]
    # Three models; the suppressed one has no ROC curve but a histogram (its Figure A).
    assert len(chart_pages) == 3
    for index, page in enumerate(rendered["pages"]):
        if index in chart_pages:
            assert _chart_blue_pixels(page) > 100, f"page {index + 1}: the chart is blank"
        else:
            assert _chart_blue_pixels(page) < 10, f"page {index + 1} has no chart but blue pixels"
    shutil.copy(rendered["pages"][chart_pages[0]], SCREENSHOTS / "report-charts.png")


def test_results_are_stated_plainly(rendered):
    text = "\n".join(rendered["texts"])
    first = rendered["texts"][0]
    # The withdrawn model is not counted as unlearned: it was taken out of serving and erased.
    assert "Overall result: INCONCLUSIVE" in first
    assert ("Erasure is NOT confirmed for: churn-predictor, version 7. It is confirmed only where the result is "
            "PASS.") in " ".join(first.split())
    assert ("support-assistant, version 2: withdrawn from serving (GDPR Art. 18) and erased: its copies that "
            "held the records were destroyed (section 2).") in " ".join(first.split())
    assert "WITHDRAWN" in first  # the results table names what happened, not a verdict of an unlearning
    assert "Result: INCONCLUSIVE" in text and "This is NOT a confirmation of erasure." in " ".join(text.split())
    assert "Result: FAIL" in text
    # Nothing claims the data were forgotten (the approximate class's text says it will not).
    negated = "instead of claiming the records are forgotten"
    assert negated in " ".join(text.split())
    claims = re.findall(r"\b(?:is|are|was|were|been|be)\s+forgotten\b", " ".join(text.split()).replace(negated, ""),
                        re.IGNORECASE)
    assert claims == []
    # Plain words, no JSON.
    assert '{"' not in text and "null" not in text


def test_report_reads_as_a_document(rendered):
    text = " ".join("\n".join(rendered["texts"]).split())
    report = rendered["report"]
    for heading in ("1. The request", "2. What was in scope", "3.1 Model credit-risk, version 3",
                    "What it does not promise", "Why this result", "4. What these tests cannot show",
                    "5. Signature and ledger"):
        assert heading in text
    assert report["subject_reference"] in text
    assert "3 March 2025, 09:12 UTC" in text
    assert report["scope"]["purged_artifacts"][0]["sha256"] in text
    assert "The request was completed within the legal deadline." in text
    assert "estimated 21 min 00 s, actual 18 min 24 s (on cuda:0)" in text
    assert f"Page 1 of {len(rendered['pages'])}" in rendered["texts"][0]


def test_report_without_models_and_a_late_extended_request(tmp_path):
    report = build_report()
    report["model_versions"] = []
    report["scope"]["model_versions"] = []
    report["timeline"].update(extended="2025-03-20T10:00:00+00:00", extension_reason="Complex request: 9 datasets",
                              completed="2025-05-06T10:00:00+00:00")
    text = rendered_text(report, tmp_path / "empty.pdf")
    assert "No model version was trained on this person's records" in text
    assert "Reason for the extension: Complex request: 9 datasets" in text
    assert "completed 34 days after the legal deadline" in text


def test_invalid_report_is_refused_naming_the_field():
    report = build_report()
    del report["model_versions"][0]["verdict"]["rule"]
    with pytest.raises(ValueError, match=r"model_versions\[0\]\.verdict\.rule is missing"):
        render_report_pdf(report)


def test_an_escalated_attempt_is_shown_with_its_failed_audit(tmp_path):
    from tests.audits.report_factory import fake_sha256

    report = build_report()
    exact = report["model_versions"][0]
    attempt = {
        "method": "npo", "guarantee": "Approximate unlearning", "new_version": 4,
        "new_artifact_sha256": fake_sha256("failed attempt v4"),
        "verdict": {"verdict": "FAIL", "rule": "FAIL when any erased record is still detected",
                    "reasons": ["5 of 12 erased records still detected by the population attack"],
                    "warnings": [], "notes": []},
        "metrics": [{"name": "Test accuracy", "before": 0.91, "after": 0.873, "reference": None}],
        "escalated_at": "2026-11-30T09:15:00+00:00", "escalated_by": "user:alice",
        "purged_artifacts": [{"description": "weights", "sha256": fake_sha256("failed attempt v4")}],
    }
    exact["earlier_attempts"] = [attempt]
    text = rendered_text(report, tmp_path / "escalated.pdf")
    assert "Earlier attempt: FAIL, escalated" in text
    assert "npo (Approximate unlearning)" in text and "version 4" in text
    assert "5 of 12 erased records still detected by the population attack" in text
    assert "by user:alice" in text and "0.873" in text
    assert f"For {exact['model']}, version {exact['version']} an earlier attempt did not pass its audit" in text

    attempt["new_version"] = None
    with pytest.raises(ValueError, match=r"model_versions\[0\]\.earlier_attempts\[0\]: new_version and "
                                         r"new_artifact_sha256 must be given together"):
        render_report_pdf(report)
    attempt["new_version"], attempt["escalated_at"] = 4, "yesterday"
    with pytest.raises(ValueError, match=r"model_versions\[0\]\.earlier_attempts\[0\]\.escalated_at"):
        render_report_pdf(report)


def test_a_method_the_dpo_chose_is_named_with_the_plans(tmp_path):
    report = build_report()
    entry = report["model_versions"][0]
    entry["method_choice"] = {"planned": "finetune", "chosen": entry["method"], "chosen_by": "user:alice",
                              "chosen_at": "2026-11-30T09:15:00+00:00",
                              "statement": f"The plan proposed finetune; at approval user:alice chose {entry['method']} "
                                           "instead, among the methods the plan offered for this model."}
    text = " ".join(rendered_text(report, tmp_path / "chosen.pdf").split())
    assert f"{entry['method']} (chosen by user:alice at approval; the plan proposed finetune)" in text
