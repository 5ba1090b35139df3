"""Render an erasure report (see :mod:`audits.report_schema`) as a PDF a lawyer can read.

Plain headings, short sentences, tables rather than JSON, and charts drawn from the numbers in
the report. A result other than PASS is said plainly on the first page and at the top of the
model's section, and never as if the data had been removed. The report's own rule texts (from
:mod:`audits.checks.verdict`) are quoted word for word.

reportlab (platypus) lays out the pages; matplotlib (object API, Agg canvas, no pyplot state)
draws the charts and is imported inside the chart functions only. The text font is DejaVu Sans,
taken from matplotlib's bundled fonts when present (it covers the characters the rule texts
use), else the PDF base fonts.
"""

from __future__ import annotations

import importlib.util
import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen import canvas as rl_canvas
from reportlab.platypus import (
    BaseDocTemplate,
    CondPageBreak,
    Frame,
    Image,
    KeepTogether,
    ListFlowable,
    ListItem,
    PageBreak,
    PageTemplate,
    Paragraph,
    Spacer,
    Table,
    TableStyle,
)

from audits.report_schema import REPORT_ATTACHMENT, validate_report

PAGE_WIDTH, PAGE_HEIGHT = A4
MARGIN = 18 * mm
TEXT_WIDTH = PAGE_WIDTH - 2 * MARGIN

INK = colors.HexColor("#1f2328")
MUTED = colors.HexColor("#57606a")
RULE = colors.HexColor("#d0d7de")
HEADER_FILL = colors.HexColor("#f3f4f6")
VERDICT_COLOURS = {
    "PASS": (colors.HexColor("#1a7f37"), colors.HexColor("#e8f5ec")),
    "FAIL": (colors.HexColor("#b42318"), colors.HexColor("#fdecea")),
    "INCONCLUSIVE": (colors.HexColor("#9a6700"), colors.HexColor("#fff4d6")),
}
# Colour-blind-safe (Okabe-Ito) colours for the charts.
GROUP_COLOURS = {"forget": "#D55E00", "retain": "#0072B2", "test": "#6e6e6e"}
CHART_DPI = 170
CURVE_COLOURS = ("#D55E00", "#0072B2", "#009E73", "#CC79A7", "#E69F00")

JURISDICTIONS = {
    "GDPR": "EU General Data Protection Regulation (GDPR), Article 17",
    "UK_GDPR": "UK General Data Protection Regulation (UK GDPR), Article 17",
    "CCPA": "California Consumer Privacy Act (CCPA), §1798.105",
}
OUTCOMES = {
    "planned": "Planned, not yet carried out",
    "held": "Not erased: under legal hold",
    "executing": "Erasure in progress",
    "auditing": "Erasure done, audit in progress",
    "awaiting_deployment": "New version made, not yet in service",
    "confirmed": "New version in service; the old one is no longer used",
    "withdrawn": "Withdrawn from service (GDPR Art. 18 restriction)",
    "audit_failed": "Audit failed",
    "awaiting_decision": "Audit inconclusive; awaiting the DPO's decision",
    "failed": "Erasure failed",
}
HEADLINES = {
    "exact": "The new version of this model was trained without this person's records, and every "
             "older copy that held them has been deleted.",
    "approximate": "The model was changed to remove the influence of this person's records. The "
                   "tests found no trace of them, within the limits stated below.",
    "dp_bounded": "The influence of this person's records on the model is within the stated "
                  "privacy limit. The records were not removed from the model's weights.",
    "suppressed": "The model's answers pass through a filter whose measured leak rate is within its "
                  "target. The data are still inside the model.",
    "exact_attested": "The company's own pipeline retrained this model without this person's records and "
                      "says so; the platform checked that declaration, audited the new version, and deleted "
                      "every older copy that held the records.",
    "concept_erased": "An attribute was erased from one layer of this model, against the kinds of probe its "
                      "method's guarantee names (the first page and the limitations say which: LEACE linear read-outs "
                      "only, the PEF-style coupling non-linear ones too). This is not "
                      "erasure of anyone's personal data.",
}
NOT_PASSED = {
    "FAIL": "The checks found that this model may still hold or reveal this person's data, or that "
            "a required step is missing. Erasure from this model is NOT confirmed.",
    "INCONCLUSIVE": "The checks could not establish whether this person's data were removed from "
                    "this model. This is NOT a confirmation of erasure.",
}
GROUP_LABELS = {
    "forget": "Erased records",
    "retain": "Training records kept",
    "test": "Records never trained on",
}

_fonts: dict[str, str] = {}


# ---------------------------------------------------------------- entry point


def render_report_pdf(report: dict[str, Any]) -> bytes:
    """Render a report dict as PDF bytes (unsigned).

    In: a dict that passes :func:`audits.report_schema.validate_report` (``ValueError`` naming
    the field otherwise). Out: the PDF, A4, with charts as images.
    """
    validate_report(report)
    styles = _styles()
    story: list[Any] = []
    story += _first_page(report, styles)
    story += _request_section(report, styles)
    story += _scope_section(report, styles)
    story += _recipients_paragraphs(report, styles)
    for index, entry in enumerate(report["model_versions"], start=1):
        story.append(PageBreak())
        story += _model_section(entry, index, styles)
    story.append(CondPageBreak(60 * mm))
    story += _limitations_section(report, styles)
    story.append(KeepTogether(_integrity_section(report, styles)))

    output = io.BytesIO()
    frame = Frame(MARGIN, MARGIN + 6 * mm, TEXT_WIDTH, PAGE_HEIGHT - 2 * MARGIN - 10 * mm,
                  leftPadding=0, rightPadding=0, topPadding=0, bottomPadding=0)
    document = BaseDocTemplate(
        output, pagesize=A4, leftMargin=MARGIN, rightMargin=MARGIN, topMargin=MARGIN,
        bottomMargin=MARGIN, pageTemplates=[PageTemplate("page", [frame])],
        title=f"{_report_title(report)} for request {report['request_id']}",
        author=report["signer"]["organisation"] or report["signer"]["name"],
        subject=(f"Concept erasure of the attribute {report['concept']['attribute']!r} from machine-learning models, "
                 "not an erasure of anyone's data" if report.get("concept") else
                 f"Erasure of the data of {report['subject_reference']} from machine-learning models"),
        creator="Data-deletion platform", lang="en-GB", displayDocTitle=True,
    )
    document.build(story, canvasmaker=_page_canvas(
        f"{_report_title(report)} · request {report['request_id']}", styles["_fonts"]))
    return output.getvalue()


# ---------------------------------------------------------------- text helpers


def _font_names() -> dict[str, str]:
    """Register DejaVu Sans from matplotlib's data folder once; fall back to the base fonts."""
    if _fonts:
        return _fonts
    spec = importlib.util.find_spec("matplotlib")
    folder = None
    if spec is not None and spec.submodule_search_locations:
        folder = Path(list(spec.submodule_search_locations)[0]) / "mpl-data" / "fonts" / "ttf"
    files = {"regular": "DejaVuSans.ttf", "bold": "DejaVuSans-Bold.ttf",
             "italic": "DejaVuSans-Oblique.ttf", "bolditalic": "DejaVuSans-BoldOblique.ttf",
             "mono": "DejaVuSansMono.ttf"}
    if folder is not None and all((folder / name).is_file() for name in files.values()):
        for role, name in files.items():
            pdfmetrics.registerFont(TTFont(f"Report-{role}", str(folder / name)))
        pdfmetrics.registerFontFamily("Report-regular", normal="Report-regular", bold="Report-bold",
                                      italic="Report-italic", boldItalic="Report-bolditalic")
        _fonts.update({role: f"Report-{role}" for role in files})
    else:
        _fonts.update(regular="Helvetica", bold="Helvetica-Bold", italic="Helvetica-Oblique",
                      bolditalic="Helvetica-BoldOblique", mono="Courier")
    return _fonts


def _styles() -> dict[str, Any]:
    fonts = _font_names()
    body = ParagraphStyle("body", fontName=fonts["regular"], fontSize=9.5, leading=13.5,
                          textColor=INK, spaceAfter=4)
    return {
        "_fonts": fonts,
        "body": body,
        "small": ParagraphStyle("small", parent=body, fontSize=8, leading=10.5, textColor=MUTED),
        "cell": ParagraphStyle("cell", parent=body, fontSize=8.5, leading=11, spaceAfter=0),
        "cell_bold": ParagraphStyle("cell_bold", parent=body, fontName=fonts["bold"], fontSize=8.5,
                                    leading=11, spaceAfter=0),
        "mono": ParagraphStyle("mono", parent=body, fontName=fonts["mono"], fontSize=7.2, leading=9.5,
                               spaceAfter=0),
        "label": ParagraphStyle("label", parent=body, fontName=fonts["bold"], fontSize=8,
                                leading=10, textColor=MUTED, spaceAfter=2),
        "title": ParagraphStyle("title", parent=body, fontName=fonts["bold"], fontSize=22,
                                leading=27, spaceAfter=2),
        "subtitle": ParagraphStyle("subtitle", parent=body, fontSize=11, leading=15,
                                   textColor=MUTED, spaceAfter=10),
        "h1": ParagraphStyle("h1", parent=body, fontName=fonts["bold"], fontSize=15, leading=19,
                             spaceBefore=6, spaceAfter=6),
        "h2": ParagraphStyle("h2", parent=body, fontName=fonts["bold"], fontSize=11.5, leading=15,
                             spaceBefore=8, spaceAfter=4),
        "quote": ParagraphStyle("quote", parent=body, fontSize=8.5, leading=11.5, leftIndent=6, rightIndent=6,
                                textColor=INK, backColor=HEADER_FILL, borderPadding=(5, 6, 5, 6),
                                spaceBefore=4, spaceAfter=8),
        "caption": ParagraphStyle("caption", parent=body, fontName=fonts["italic"], fontSize=8,
                                  leading=10.5, textColor=MUTED, spaceAfter=0),
    }


def _p(text: str, style: ParagraphStyle) -> Paragraph:
    """A paragraph of plain text (escaped: report text is data, not markup)."""
    return Paragraph(escape(text), style)


def _when(value: str | None) -> str:
    if not value:
        return "–"
    moment = datetime.fromisoformat(value).astimezone(UTC)
    return f"{moment.day} {moment:%B %Y}, {moment:%H:%M} UTC"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "not recorded"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def _number(value: float | None) -> str:
    if value is None:
        return "–"
    if float(value).is_integer() and abs(value) < 1e9:
        return f"{int(value):,}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def _plural(count: int, word: str, plural: str | None = None) -> str:
    return f"{count:,} {word if count == 1 else (plural or word + 's')}"


def _table(rows: list[list[Any]], widths: list[float], *, header: bool = True,
           extra: list[tuple] | None = None) -> Table:
    table = Table(rows, colWidths=widths, repeatRows=1 if header else 0, hAlign="LEFT")
    style = [
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("LINEBELOW", (0, 0), (-1, -1), 0.4, RULE),
        ("TOPPADDING", (0, 0), (-1, -1), 3.5),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 3.5),
        ("LEFTPADDING", (0, 0), (-1, -1), 4),
        ("RIGHTPADDING", (0, 0), (-1, -1), 4),
    ]
    if header:
        style += [("BACKGROUND", (0, 0), (-1, 0), HEADER_FILL),
                  ("LINEBELOW", (0, 0), (-1, 0), 0.8, MUTED)]
    table.setStyle(TableStyle(style + (extra or [])))
    return table


def _facts(rows: list[tuple[str, Any]], styles: dict[str, Any], label_width: float = 42 * mm) -> Table:
    """A two-column table of label and value (value: text or a flowable)."""
    body = [[_p(label, styles["cell_bold"]), value if not isinstance(value, str) else _p(value, styles["cell"])]
            for label, value in rows]
    return _table(body, [label_width, TEXT_WIDTH - label_width], header=False)


def _bullets(items: list[str], style: ParagraphStyle) -> ListFlowable:
    return ListFlowable([ListItem(_p(item, style), leftIndent=12, value="•") for item in items],
                        bulletType="bullet", start="•", leftIndent=12, bulletFontSize=8)


def _verdict_box(verdict: str, sentence: str, styles: dict[str, Any], *, prefix: str = "Result") -> Table:
    ink, fill = VERDICT_COLOURS[verdict]
    word = ParagraphStyle("verdict_word", parent=styles["body"], fontName=styles["_fonts"]["bold"],
                          fontSize=13, leading=16, textColor=ink, spaceAfter=2)
    text = ParagraphStyle("verdict_text", parent=styles["body"], fontSize=10, leading=14, spaceAfter=0)
    box = Table([[_p(f"{prefix}: {verdict}", word)], [_p(sentence, text)]], colWidths=[TEXT_WIDTH])
    box.setStyle(TableStyle([
        ("BACKGROUND", (0, 0), (-1, -1), fill),
        ("LINEBEFORE", (0, 0), (0, -1), 4, ink),
        ("LEFTPADDING", (0, 0), (-1, -1), 10),
        ("TOPPADDING", (0, 0), (-1, -1), 5),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 5),
    ]))
    return box


def _model_name(entry: dict[str, Any]) -> str:
    return f"{entry['model']}, version {entry['version']}"


def _headline(entry: dict[str, Any]) -> str:
    verdict = entry["verdict"]["verdict"]
    if verdict == "PASS":
        return HEADLINES[entry["guarantee"]["guarantee_class"]]
    return NOT_PASSED[verdict]


# Outcomes that end a model's part without an unlearned version, and what they mean.
SETTLED_WITHOUT_UNLEARNING = {
    "withdrawn": "withdrawn from serving (GDPR Art. 18) and erased: its copies that held the records "
                 "were destroyed (section 2)",
    "held": "not erased: kept under a legal hold, for the reason in its section",
}


def _overall(report: dict[str, Any]) -> tuple[str | None, str]:
    entries = [e for e in report["model_versions"] if e["outcome"] not in SETTLED_WITHOUT_UNLEARNING]
    settled = " ".join(f"{_model_name(e)}: {SETTLED_WITHOUT_UNLEARNING[e['outcome']]}."
                       for e in report["model_versions"] if e["outcome"] in SETTLED_WITHOUT_UNLEARNING)
    if not entries:
        if settled:
            return None, settled
        return None, ("No model version was trained on this person's records, so no model had to "
                      "change. The stored records and copies listed in section 2 were deleted.")
    settled = f" {settled}" if settled else ""
    verdicts = [entry["verdict"]["verdict"] for entry in entries]
    passed = verdicts.count("PASS")
    worst = "FAIL" if "FAIL" in verdicts else "INCONCLUSIVE" if "INCONCLUSIVE" in verdicts else "PASS"
    retried = [_model_name(e) for e in entries if e.get("earlier_attempts")]
    retried_sentence = (f" For {'; '.join(retried)} an earlier attempt did not pass its audit; it was "
                        "escalated and its result destroyed (see that model's section).") if retried else ""
    kept = [_model_name(e) for e in entries if e.get("dp_bound")]
    if kept:  # a dp_bounded result: the model was kept as trained, on its privacy bound
        retried_sentence += (f" Nothing was deleted from the weights of {'; '.join(kept)}: trained with differential "
                             "privacy, it was kept on its privacy bound for this person's records (see its section), "
                             "which is a risk decision, not erasure.")
    # Utility never decides a verdict, but a PASS that halved a model's accuracy must not read as "all well".
    below_bar = [_model_name(e) for e in entries
                 if any(m.get("name") == "utility" and m.get("result") == "FAIL" for m in e.get("metrics") or [])]
    if below_bar:
        retried_sentence += (f" Utility below the declared bar for: {'; '.join(below_bar)}: the new version's accuracy "
                             "(or error) fell below the bar its plan declared (see its section); this warns, it does "
                             "not change the result.")
    if worst == "PASS":
        return worst, (f"All {_plural(len(entries), 'unlearned model version')} passed their audit. "
                       "What each result promises, and what it does not, is set out per model below."
                       + retried_sentence + settled)
    failed = [_model_name(e) for e in entries if e["verdict"]["verdict"] != "PASS"]
    return worst, (f"{passed} of {_plural(len(entries), 'unlearned model version')} passed. Erasure is "
                   f"NOT confirmed for: {'; '.join(failed)}. It is confirmed only where the result "
                   "is PASS." + retried_sentence + settled)


# How a request ended (its status), in the words the first page and section 1 use.
END_STATES = {"COMPLETED": "completed, erasure confirmed",
              "CLOSED_RISK_ACCEPTED": "closed with the residual risk accepted, erasure NOT confirmed for every model"}
# A concept request's (an attribute, no person): its end says nothing of anyone's erasure.
CONCEPT_END_STATES = {
    "COMPLETED": "completed, the attribute's concept erasure confirmed against the probes its method names",
    "CLOSED_RISK_ACCEPTED": "closed with the residual risk accepted, concept erasure NOT confirmed for every model"}


def _law(report: dict[str, Any]) -> str:
    """The law row: a concept request invokes no article of it (no person asked for anything)."""
    if report.get("concept"):
        return f"{report['jurisdiction'].replace('_', ' ')}, under which the company works; no person's right invoked"
    return JURISDICTIONS[report["jurisdiction"]]


def _report_title(report: dict[str, Any]) -> str:
    return "Concept-erasure report" if report.get("concept") else "Erasure report"


def _risk_sentence(entry: dict[str, Any]) -> str:
    risk = entry["risk_acceptance"]
    return (f"Residual risk accepted for {_model_name(entry)}: erasure not confirmed; accepted by "
            f"{risk['proposed_by']} and {risk['confirmed_by']} on {_when(risk['confirmed_at'])} because: "
            f"{risk['reason']}")


def _deadline_sentence(timeline: dict[str, Any], end: dict[str, Any] | None = None) -> str:
    due = datetime.fromisoformat(timeline["due"])
    if not timeline["completed"]:
        return f"The request was not completed when this report was made. The deadline is {_when(timeline['due'])}."
    # A request closed on an accepted risk ended, but its erasure was not completed: say "closed".
    done = "closed (erasure not confirmed for every model)" if end and end["status"] != "COMPLETED" else "completed"
    completed = datetime.fromisoformat(timeline["completed"])
    if completed <= due:
        return f"The request was {done} within the legal deadline."
    late = (completed - due).days + 1
    return f"The request was {done} {_plural(late, 'day')} after the legal deadline."


# ---------------------------------------------------------------- sections


def _first_page(report: dict[str, Any], styles: dict[str, Any]) -> list[Any]:
    timeline, signer = report["timeline"], report["signer"]
    concept = report.get("concept")
    story: list[Any] = [
        _p("CONFIDENTIAL" if concept else "CONFIDENTIAL · CONTAINS PSEUDONYMOUS PERSONAL DATA", styles["label"]),
        _p(_report_title(report), styles["title"]),
        _p(concept["statement"] if concept else
           "What was done to erase one person's data from machine-learning models, and what the "
           "tests show.", styles["subtitle"]),
    ]
    worst, sentence = _overall(report)
    if worst is not None:
        story += [_verdict_box(worst, sentence, styles, prefix="Overall result"), Spacer(1, 8)]
    else:
        story += [_p(sentence, styles["body"])]
    end = report.get("end_state")
    if end:
        ended = (CONCEPT_END_STATES if concept else END_STATES)[end["status"]]
        story += [_p(f"How the request ended: {ended}.", styles["h2"]),
                  _p(end["meaning"], styles["body"])]
        for entry in report["model_versions"]:
            if entry.get("risk_acceptance"):
                story.append(_p(_risk_sentence(entry), styles["body"]))
        story.append(Spacer(1, 6))
    deadline = _when(timeline["due"])
    if timeline["extended"]:
        deadline += f" (extended on {_when(timeline['extended'])})"
    story += [
        _facts([
            ("Request", report["request_id"]),
            ("Data subject", report["subject_reference"] if concept else
             f"{report['subject_reference']} (a pseudonymous reference; this report holds no name or contact details)"),
            *([("Attribute", f"{concept['attribute']} ({concept['labelled_records']:,} labelled records of "
                             f"{concept['dataset']})")] if concept else []),
            ("Law", _law(report)),
            ("Legal ground", report["legal_ground"]["text"]),
            ("Received", _when(timeline["received"])),
            ("Deadline", deadline),
            ("Closed" if end and end["status"] != "COMPLETED" else "Completed",
             _when(timeline["completed"]) if timeline["completed"] else "not yet"),
            ("Report data assembled", _when(report["generated_at"])),
            ("Signed by", ", ".join(x for x in (signer["name"], signer["organisation"]) if x)),
            ("Ledger entry", f"no. {report['ledger_head']['seq']:,} (see section 5)"),
        ], styles),
        Spacer(1, 10),
    ]
    if report["model_versions"]:
        rows = [[_p(h, styles["cell_bold"]) for h in ("Model version", "Guarantee", "Result")]]
        extra = []
        for row, entry in enumerate(report["model_versions"], start=1):
            verdict = entry["verdict"]["verdict"]
            action = entry["guarantee"].get("action")
            what = entry["guarantee"]["title"] + (f": {action}" if action else "")
            if entry.get("attestation"):
                what += f"; attested by {entry['attestation']['attested_by']}"
            result = verdict
            if entry["outcome"] in SETTLED_WITHOUT_UNLEARNING:  # nothing was unlearned: say what happened
                what, result = SETTLED_WITHOUT_UNLEARNING[entry["outcome"]], entry["outcome"].upper()
            rows.append([_p(_model_name(entry), styles["cell"]), _p(what, styles["cell"]),
                         _p(result, styles["cell_bold"])])
            extra.append(("TEXTCOLOR", (2, row), (2, row), VERDICT_COLOURS[verdict][0]))
        story += [_p("Results per model", styles["h2"]),
                  _table(rows, [70 * mm, TEXT_WIDTH - 105 * mm, 35 * mm], extra=extra)]
    story += [
        _p("How to read this report", styles["h2"]),
        _p("PASS means the evidence that the model's guarantee requires was found. FAIL means the "
           "checks found evidence against erasure, or a required step is missing. INCONCLUSIVE "
           "means the checks could not decide; it is not a confirmation of erasure.", styles["body"]),
        _p("Each model has a guarantee class that says what kind of promise can be made for it. "
           "Section 3 states, per model, what the promise is and what it is not.", styles["body"]),
        _p("A fingerprint (sha256) is a 64-character code computed from a file's content. Any "
           "change to the file changes the code, so a fingerprint identifies one exact file.",
           styles["body"]),
        _p("The decision rules are quoted word for word from the platform. In them, "
           "“forgotten record” means a record this request asked to erase; the phrase does not "
           "say that the erasure succeeded.", styles["body"]),
        PageBreak(),
    ]
    return story


def _request_section(report: dict[str, Any], styles: dict[str, Any]) -> list[Any]:
    timeline = report["timeline"]
    rows = [[_p("Step", styles["cell_bold"]), _p("Date and time", styles["cell_bold"])]]
    steps = [
        ("Request received", timeline["received"]),
        ("Identity of the requester verified", timeline["verified"]),
        ("Erasure approved", timeline["approved"]),
        ("Legal deadline", timeline["due"]),
    ]
    if timeline["extended"]:
        steps.append(("Deadline extended", timeline["extended"]))
    steps.append(("Completed", timeline["completed"]))
    for label, value in steps:
        rows.append([_p(label, styles["cell"]),
                     _p(_when(value) if value else "not recorded", styles["cell"])])
    story: list[Any] = [
        _p("1. The request", styles["h1"]),
        _p("The company filed this concept request itself (no person asked for it and no identity was verified). "
           f"Legal ground: {report['legal_ground']['text']}." if report.get("concept") else
           f"The request was made under the {JURISDICTIONS[report['jurisdiction']]}. The legal "
           f"ground given is: {report['legal_ground']['text']}.", styles["body"]),
        _table(rows, [80 * mm, TEXT_WIDTH - 80 * mm]),
        Spacer(1, 4),
        _p(_deadline_sentence(timeline, report.get("end_state")), styles["body"]),
    ]
    if timeline["extended"]:
        reason = timeline["extension_reason"] or "no reason was recorded"
        story.append(_p(f"Reason for the extension: {reason}", styles["body"]))
    return story


def _scope_section(report: dict[str, Any], styles: dict[str, Any]) -> list[Any]:
    scope, concept = report["scope"], report.get("concept")
    story: list[Any] = [
        _p("2. What was in scope", styles["h1"]),
        _p(f"This request names no person and no record: it asks for the attribute {concept['attribute']!r} "
           f"({concept['labelled_records']:,} labelled records of {concept['dataset']} define it) to be erased from "
           f"{_plural(len(scope['model_versions']), 'model version')}." if concept else
           f"The platform found {_plural(scope['records'], 'record')} of this person in "
           f"{_plural(len(scope['datasets']), 'dataset')}. "
           f"{_plural(len(scope['model_versions']), 'model version')} had been trained on them.",
           styles["body"]),
    ]
    if scope["datasets"]:
        rows = [[_p(h, styles["cell_bold"]) for h in ("Dataset", "Version", "Records of this person")]]
        rows += [[_p(d["name"], styles["cell"]), _p(d["version"], styles["cell"]),
                  _p(_number(d["records"]), styles["cell"])] for d in scope["datasets"]]
        story += [_p("Datasets", styles["h2"]), _table(rows, [85 * mm, 30 * mm, TEXT_WIDTH - 115 * mm])]
        story += [_p(f"{d['name']}@{d['version']}: {d['source']}", styles["body"])
                  for d in scope["datasets"] if d.get("source")]
    if scope["model_versions"]:
        rows = [[_p(h, styles["cell_bold"]) for h in ("Model", "Version", "Status when scoped")]]
        rows += [[_p(m["model"], styles["cell"]), _p(str(m["version"]), styles["cell"]),
                  _p(m["status"], styles["cell"])] for m in scope["model_versions"]]
        story += [_p("Model versions the attribute is erased from" if concept else
                     "Model versions trained on the records", styles["h2"]),
                  _table(rows, [85 * mm, 30 * mm, TEXT_WIDTH - 115 * mm])]
    story += [_p("Copies deleted", styles["h2"])]
    if concept and not scope["purged_artifacts"]:
        story.append(_p("None: no one's data was erased, so no copy holds anything to delete. The version that "
                        "still uses the attribute is retired once the new one serves, not purged.", styles["body"]))
    elif scope["purged_artifacts"]:
        rows = [[_p(h, styles["cell_bold"]) for h in ("What was deleted", "Fingerprint (sha256)")]]
        rows += [[_p(a["description"], styles["cell"]), _p(a["sha256"], styles["mono"])]
                 for a in scope["purged_artifacts"]]
        story += [
            _p("Every stored copy that still held the records was deleted: the old model files, "
               "checkpoints, adapters, reference models and cached data. Each is listed by its "
               "fingerprint. Where another model's copy is the very same file, the file goes with "
               "the last copy, and the entry says so.", styles["body"]),
            _table(rows, [TEXT_WIDTH - 102 * mm, 102 * mm]),
        ]
    else:
        story.append(_p("No stored copy was listed for deletion.", styles["body"]))
    return story


def _recipients_paragraphs(report: dict[str, Any], styles: dict[str, Any]) -> list[Any]:
    """GDPR Art. 19: the recipients of model copies who were told of the erasure (by a signed
    webhook), each with what they were asked to do."""
    recipients = report.get("recipients_notified") or []
    if not recipients:
        return []
    items = [f"{r['name']} (webhook endpoint #{r['endpoint_id']}), holding {r['model']} version {r['version_held']}: "
             + (f"asked to replace it with version {r['new_version']} and delete every copy of it"
                if r["action"] == "replace" else "asked to stop using it and delete every copy of it")
             for r in recipients]
    return [_p("Recipients of model copies told of the erasure (GDPR Art. 19):", styles["body"]),
            _bullets(items, styles["body"])]


def _model_section(entry: dict[str, Any], index: int, styles: dict[str, Any]) -> list[Any]:
    verdict, guarantee = entry["verdict"], entry["guarantee"]
    new_version = (f"version {entry['new_version']}" if entry["new_version"] is not None
                   else "none (no new version was made)")
    story: list[Any] = [
        _p(f"3.{index} Model {_model_name(entry)}", styles["h1"]),
        _verdict_box(verdict["verdict"], _headline(entry), styles),
        Spacer(1, 8),
        _facts([
            *([("Model kind", entry["model_kind"]["words"])] if entry.get("model_kind") else []),
            ("Guarantee", guarantee["title"]),
            ("Method", entry["method"] + (f" (chosen by {entry['method_choice']['chosen_by']} at approval; "
                                          f"the plan proposed {entry['method_choice']['planned']})"
                                          if entry.get("method_choice") else "")),
            ("New version", new_version),
            ("Status", OUTCOMES.get(entry["outcome"], entry["outcome"])),
            ("Old model fingerprint", _p(entry["old_artifact_sha256"], styles["mono"])),
            ("New model fingerprint", _p(entry["new_artifact_sha256"], styles["mono"])
             if entry["new_artifact_sha256"] else "none"),
            ("Code version", _p(entry["code_version"], styles["mono"])),
            ("Reference models", _reference_models_text(entry["shadow_model_count"],
                                                        from_pipeline=bool(entry.get("attestation")))),
            ("Cost", _cost_text(entry["cost"])),
        ], styles),
        *_attestation(entry, styles),
        *_dp_bound(entry, styles),
        *_promise(entry, styles),
        _p("What it does not promise", styles["h2"]),
        _p(guarantee["does_not_promise"], styles["body"]),
        _p("What the result rests on", styles["h2"]),
        _p(guarantee["evidence"], styles["body"]),
        _p("Why this result", styles["h2"]),
        _p("The rule applied (quoted from the platform):", styles["small"]),
        _p(verdict["rule"], styles["quote"]),
    ]
    if verdict["reasons"]:
        story += [_p("What decided it:", styles["body"]), _bullets(verdict["reasons"], styles["body"])]
    concept = guarantee["guarantee_class"] == "concept_erased"
    if verdict["warnings"]:
        story += [_p("Warnings. These concern the model's quality, not the attribute's erasure:" if concept else
                     "Warnings. These concern the model's quality or other people's data, not this "
                     "person's records:", styles["body"]), _bullets(verdict["warnings"], styles["body"])]
    if verdict.get("power"):
        story += [_p("How much the test could see (its power):", styles["body"]),
                  _bullets(verdict["power"], styles["body"])]
    if verdict.get("false_fail"):
        story += [_p("How often such a result is wrong: " + verdict["false_fail"], styles["body"])]
    if verdict["notes"]:
        story += [_p("What the probes and the task measured, and what this result is not:" if concept else
                     "Checks that did not count towards this result:", styles["body"]),
                  _bullets(verdict["notes"], styles["small"])]
    if entry["metrics"]:
        story += [CondPageBreak(40 * mm), _p("Measurements", styles["h2"]), _metrics_table(entry["metrics"], styles),
                  _p("Before: the model before erasure. After: the model with the eraser. Reference: the value to "
                     "compare with (chance, or the bar the check holds)." if concept else
                     "Before: the old model. After: the new model. Reference: the value to compare "
                     "with (from models trained without the records, or the target).", styles["small"])]
    if entry.get("language_model"):
        story += _language_model_section(entry["language_model"], styles)
    story += _forget_references(entry, styles)
    story += _charts(entry, styles)
    for number, attempt in enumerate(entry.get("earlier_attempts") or [], start=1):
        story += _attempt_section(attempt, number, len(entry["earlier_attempts"]), styles)
    return story


def _attempt_section(attempt: dict[str, Any], number: int, total: int, styles: dict[str, Any]) -> list[Any]:
    """An earlier attempt whose audit failed: what was tried, what the audit found, who escalated
    it and what of it was destroyed. The result above is the one that counts."""
    verdict = attempt["verdict"]
    made = (f"version {attempt['new_version']}" if attempt["new_version"] is not None
            else "no new version")
    title = "Earlier attempt" + (f" {number} of {total}" if total > 1 else "")
    story: list[Any] = [
        CondPageBreak(60 * mm),
        _p(f"{title}: {verdict['verdict']}, escalated", styles["h2"]),
        _p("Before the result above, this model was unlearned by another method. Its audit did not "
           "pass, so the attempt was escalated to the method above and its result was destroyed; "
           "it was never confirmed for serving.", styles["body"]),
        _facts([
            ("Method", f"{attempt['method']} ({attempt['guarantee']})"),
            ("It made", made),
            ("Its fingerprint", _p(attempt["new_artifact_sha256"], styles["mono"])
             if attempt["new_artifact_sha256"] else "none"),
            ("Audit result", verdict["verdict"]),
            ("Escalated", f"{_when(attempt['escalated_at'])} by {attempt['escalated_by']}"),
            ("Files destroyed", _plural(len(attempt["purged_artifacts"]), "file")
             + (" (fingerprints in section 2)" if attempt["purged_artifacts"] else "")),
        ], styles),
        _p("The rule applied to it:", styles["small"]),
        _p(verdict["rule"], styles["quote"]),
    ]
    if verdict["reasons"]:
        story += [_p("What decided it:", styles["body"]), _bullets(verdict["reasons"], styles["body"])]
    if attempt["metrics"]:
        story += [_metrics_table(attempt["metrics"], styles),
                  _p("Before: the old model. After: the attempt's model, since destroyed.", styles["small"])]
    if attempt.get("language_model"):
        story += _language_model_section(attempt["language_model"], styles,
                                         title="The attempt's model: what it still reproduced")
    return story


def _language_model_section(section: dict[str, Any], styles: dict[str, Any], *,
                            title: str = "Language model: what it still reproduces") -> list[Any]:
    """What the old and the new language model reproduce of the erased records, and the filter."""
    records = _plural(section["records"], "erased record")
    intro = (f"Measured on {records}: how much of each the model still writes out or completes. "
             f"Before: the old model. After: the new model"
             + (", through the filter" if section["measured_through_guard"] else "")
             + ". Reference: " + section["reference"])
    story: list[Any] = [CondPageBreak(50 * mm), _p(title, styles["h2"]),
                        _p(intro, styles["body"])]
    if section["figures"]:
        heads = ("Measure", "Before", "After", "Reference")
        rows = [[_p(h, styles["cell_bold"]) for h in heads]]
        for figure in section["figures"]:
            name: list[Any] = [_p(figure["name"], styles["cell"])]
            if figure["description"]:
                name.append(_p(figure["description"], styles["small"]))
            rows.append([name] + [_p(_number(figure[k]), styles["cell"]) for k in ("before", "after", "reference")])
        story.append(_table(rows, [TEXT_WIDTH - 75 * mm, 25 * mm, 25 * mm, 25 * mm],
                            extra=[("ALIGN", (1, 1), (3, -1), "RIGHT")]))
    guard = section.get("guard")
    if guard:
        story += [
            _p("The output filter (verifier guard)", styles["h2"]),
            _facts([
                ("Target leak rate", f"at most {_number(guard['alpha'])} with confidence {1 - guard['delta']:.0%}"),
                ("Calibration prompts", _number(guard["n"])),
                ("Leaks at the chosen setting", _number(guard["leaks"])),
                ("Upper bound on the leak rate", _number(guard["upper_bound"])),
                ("Bound established", "yes" if guard["certified"] else "no"),
                ("Answers withheld in calibration", _number(guard["redaction_rate"])),
            ], styles),
            _p(guard["statement"], styles["quote"]),
        ]
    if section["notes"]:
        story.append(_bullets(section["notes"], styles["small"]))
    return story


def _attestation(entry: dict[str, Any], styles: dict[str, Any]) -> list[Any]:
    """For a version the company's own pipeline retrained: who attests, what the platform checked
    of the company's declaration, and the promise in one paragraph."""
    attestation = entry.get("attestation")
    if not attestation:
        return []
    found = attestation["erased_found"]
    checked = (f"{_plural(attestation['request_records_checked'], 'record')} of this request and "
               f"{_plural(attestation['erased_before_checked'], 'record')} erased before: "
               + ("none of them is in the declaration" if found == 0 else f"{found} of them ARE in the declaration"))
    references = attestation["reference_models"]
    return [
        _p("Who attests, and what the platform checked", styles["h2"]),
        _facts([
            ("Attested by", attestation["attested_by"]),
            ("Company pipeline", attestation["pipeline"]),
            ("Job sent to the pipeline", _when(attestation["job_sent"])),
            ("New version uploaded", _when(attestation["uploaded"])),
            ("Records declared", f"{_number(attestation['records_declared'])} (the records the company says the "
                                 "new version was trained on)"),
            ("Checked against", checked),
            ("Reference models from the pipeline", _number(references) if references else
             "none: the company provided none"),
        ], styles),
        _p(attestation["statement"], styles["quote"]),
    ]


def _forget_references(entry: dict[str, Any], styles: dict[str, Any]) -> list[Any]:
    """For a forgotten class or sub-population: what the representation and relearning checks
    compared the new model with, and what they found (or why they did not apply)."""
    section = entry.get("forget_references")
    if not section:
        return []
    story: list[Any] = [CondPageBreak(40 * mm), _p("Representation and relearning", styles["h2"]),
                        _p(section["statement"], styles["body"])]
    if section["findings"]:
        story.append(_bullets(section["findings"], styles["body"]))
    return story


def _dp_bound(entry: dict[str, Any], styles: dict[str, Any]) -> list[Any]:
    """For a model kept on its differential-privacy bound (dp_bounded): the person's bound, how it
    was computed, the limits, vacuous or not, and what of the training pipeline was private."""
    bound = entry.get("dp_bound")
    if not bound:
        return []

    def figure(value: float | None) -> str:
        return "infinite" if value is None else f"{value:.4g}"

    per_record = bound["per_record"]
    accountant = bound["accountant"]
    holds = {True: "private", False: "NOT private", None: "not known"}
    return [
        _p("The differential-privacy bound (nothing was deleted from the weights)", styles["h2"]),
        _p(bound["statement"], styles["quote"]),
        _facts([
            ("This person's records (k)", str(bound["k"])),
            ("Bound", f"epsilon {figure(bound['epsilon'])}, delta {figure(bound['delta'])}"),
            ("Computed by", bound["computed_by"] + (
                " (the group accounted as one unit by Opacus' accountant)" if bound["computed_by"] != "generic"
                else " (k epsilon, k e^((k-1) epsilon) delta)")),
            ("Generic bound", f"epsilon {figure(bound['generic']['epsilon'])}, delta {figure(bound['generic']['delta'])}"),
            ("Accountant's group bound", f"epsilon {figure(accountant['epsilon'])}, delta {figure(accountant['delta'])}"
             if accountant else "not computed"),
            ("Per record (the run)", f"epsilon {figure(per_record['epsilon'])} at delta {figure(per_record['delta'])}, "
                                     f"{per_record['accountant']} accountant, sampling rate "
                                     f"{figure(per_record['sample_rate'])}, noise multiplier "
                                     f"{figure(per_record['noise_multiplier'])}, {per_record['steps']} steps"),
            ("Policy limits", f"epsilon <= {figure(bound['max_epsilon'])}, delta <= {figure(bound['max_delta'])}"),
            ("Within the limits", "yes" if bound["within_limits"] else "NO: the bound is vacuous"),
            ("Whole pipeline private", holds[bound["whole_pipeline_private"]]),
        ], styles),
        *([_p("What the training run recorded of its pipeline (the bound holds only if all of it was private):",
              styles["body"]),
           _bullets([f"{c['condition'].replace('_', ' ')}: {holds[c['holds']]} ({c['known_by']}): {c['detail']}"
                     for c in bound["conditions"]], styles["small"])] if bound["conditions"] else
          [_p("The training run recorded nothing of what was private beyond DP-SGD itself: whether the whole "
              "pipeline was private is not known.", styles["body"])]),
    ]


def _promise(entry: dict[str, Any], styles: dict[str, Any]) -> list[Any]:
    """The class's promise; for a result other than PASS, said to be what was NOT established."""
    guarantee, verdict = entry["guarantee"], entry["verdict"]["verdict"]
    if verdict == "PASS":
        return [_p(f"What “{guarantee['title']}” promises", styles["h2"]),
                _p(guarantee["promises"], styles["body"])]
    return [_p(f"What “{guarantee['title']}” would promise", styles["h2"]),
            _p(f"The result is {verdict}, so this promise is NOT established for this model. It is "
               "stated here so that the reader knows what was aimed at:", styles["body"]),
            _p(guarantee["promises"], styles["quote"])]


def _reference_models_text(count: int, *, from_pipeline: bool = False) -> str:
    if count == 0:
        return "none (this result does not rest on a comparison with reference models)"
    if from_pipeline:
        return (f"{_plural(count, 'reference model')} (for comparison; for a version the company's pipeline "
                "retrained, its own where it provided them: see below)")
    return f"{_plural(count, 'reference model')} (trained with and without the records, for comparison)"


def _cost_text(cost: dict[str, Any]) -> str:
    text = f"estimated {_duration(cost['estimated_seconds'])}, actual {_duration(cost['actual_seconds'])}"
    if cost.get("device"):
        text += f" (on {cost['device']})"
    return text


def _metrics_table(metrics: list[dict[str, Any]], styles: dict[str, Any]) -> Table:
    heads = ("Measure", "Before", "After", "Reference", "Check")
    rows = [[_p(h, styles["cell_bold"]) for h in heads]]
    for metric in metrics:
        name: list[Any] = [_p(metric["name"], styles["cell"])]
        if metric.get("description"):
            name.append(_p(metric["description"], styles["small"]))
        rows.append([name] + [_p(_number(metric[k]), styles["cell"]) for k in ("before", "after", "reference")]
                    + [_p(metric.get("result", ""), styles["cell"])])
    return _table(rows, [TEXT_WIDTH - 112 * mm, 22 * mm, 22 * mm, 22 * mm, 46 * mm],
                  extra=[("ALIGN", (1, 1), (3, -1), "RIGHT")])


def _charts(entry: dict[str, Any], styles: dict[str, Any]) -> list[Any]:
    cells, captions = [], []
    width = (TEXT_WIDTH - 6 * mm) / 2
    if entry["roc_curves"]:
        cells.append(_image(_roc_png(entry["roc_curves"]), width))
        captions.append(_p(
            "Figure A. How well an attacker can tell this person's records apart from records the "
            "model never saw. The dashed line is guessing. A curve close to it means the records "
            "cannot be told apart; a curve well above it means they can. AUC 0.5 is guessing, "
            "1.0 is certain detection.", styles["caption"]))
    histograms = entry["score_histograms"]
    if histograms is not None:
        cells.append(_image(_histogram_png(histograms), width))
        text = (f"Figure {'B' if cells[1:] else 'A'}. {histograms['score']}, for three groups of "
                "records under the new model. If the erasure worked, the erased records (orange) "
                "look like records never trained on (grey), not like the training records kept "
                "(blue).")
        if entry["guarantee"]["guarantee_class"] == "suppressed":
            text += (" For this model the data are still in the weights by design, so the erased "
                     "records are expected to look like training records here.")
        captions.append(_p(text, styles["caption"]))
    if not cells:
        return [_p("No chart: the membership tests were not part of this model's evidence.",
                   styles["small"])]
    table = Table([cells, captions], colWidths=[width + 3 * mm] * len(cells), hAlign="LEFT")
    table.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"),
                               ("LEFTPADDING", (0, 0), (-1, -1), 0),
                               ("RIGHTPADDING", (0, 0), (-1, -1), 3 * mm)]))
    return [KeepTogether([_p("Charts", styles["h2"]), table])]


def _limitations_section(report: dict[str, Any], styles: dict[str, Any]) -> list[Any]:
    return [_p("4. What these tests cannot show", styles["h1"]),
            _bullets(report["limitations"], styles["body"])]


def _integrity_section(report: dict[str, Any], styles: dict[str, Any]) -> list[Any]:
    signer, head = report["signer"], report["ledger_head"]
    who = signer["name"] + (f" ({signer['organisation']})" if signer["organisation"] else "")
    return [
        _p("5. Signature and ledger", styles["h1"]),
        _p(f"This PDF carries the digital signature of {who}. Any change to the file after "
           "signing breaks the signature, and PDF readers then show it as invalid.", styles["body"]),
        _p(f"A machine-readable copy of this report is attached to the PDF ({REPORT_ATTACHMENT}) "
           "and is covered by the same signature.", styles["body"]),
        _p("The platform records every step of every request in a ledger in which each entry is "
           "linked to the one before it. Changing or removing an earlier entry changes the "
           f"fingerprint of every later one. When this report was signed, the ledger ended at "
           f"entry no. {head['seq']:,}. Checking that this entry still has the fingerprint below "
           "shows that the record of this request was not rewritten after the report was "
           "signed.", styles["body"]),
        _facts([
            ("Ledger entry", f"no. {head['seq']:,}"),
            ("Ledger fingerprint", _p(head["hash"], styles["mono"])),
            ("Signing certificate", _p(signer["certificate_sha256"], styles["mono"])),
        ], styles),
        Spacer(1, 6),
        _p("To check the signature and the ledger together, run: "
           "python manage.py verify_report FILE.pdf", styles["small"]),
    ]


# ---------------------------------------------------------------- charts


def _image(png: bytes, width: float) -> Image:
    from reportlab.lib.utils import ImageReader

    reader = ImageReader(io.BytesIO(png))
    pixels_wide, pixels_high = reader.getSize()
    return Image(io.BytesIO(png), width=width, height=width * pixels_high / pixels_wide)


def _figure(*, legend_rows: int):
    """A chart figure with fixed margins (no layout engine: it doubles the drawing time), room
    below the axes for ``legend_rows`` legend lines."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    height = 2.3 + 0.14 * legend_rows
    figure = Figure(figsize=(3.4, height), dpi=CHART_DPI)
    FigureCanvasAgg(figure)
    figure.subplots_adjust(left=0.19, right=0.94, top=1 - 0.26 / height,
                           bottom=(0.48 + 0.14 * legend_rows) / height)
    axes = figure.add_subplot()
    axes.tick_params(labelsize=7)
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)
    return figure, axes


def _legend_below(figure, axes) -> None:
    """The legend in the strip :func:`_figure` keeps free under the axis label."""
    handles, labels = axes.get_legend_handles_labels()
    figure.legend(handles, labels, fontsize=6.5, loc="lower left", bbox_to_anchor=(0.03, 0.01),
                  frameon=False, ncols=1, borderaxespad=0, handlelength=1.8, labelspacing=0.25)


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=CHART_DPI, facecolor="white")
    return buffer.getvalue()


def _roc_png(curves: list[dict[str, Any]]) -> bytes:
    """ROC curves as a PNG: detection rate against false-alarm rate, with the guessing line."""
    figure, axes = _figure(legend_rows=len(curves) + 1)
    axes.plot([0, 1], [0, 1], linestyle="--", color="#8c8c8c", linewidth=1, label="Guessing")
    for number, curve in enumerate(curves):
        label = curve["label"] + (f" (AUC {curve['auc']:.2f})" if curve["auc"] is not None else "")
        axes.plot(curve["false_positive_rate"], curve["true_positive_rate"], linewidth=1.6,
                  color=CURVE_COLOURS[number % len(CURVE_COLOURS)], label=label)
    from matplotlib.ticker import PercentFormatter

    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.02)
    axes.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    axes.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    axes.set_xlabel("Records never trained on, wrongly flagged", fontsize=7.5)
    axes.set_ylabel("This person's records, flagged", fontsize=7.5)
    axes.set_title("Can the records be detected?", fontsize=8.5)
    _legend_below(figure, axes)
    return _png(figure)


def _histogram_png(histograms: dict[str, Any]) -> bytes:
    """Score distributions (share of each group per bin) as a PNG."""
    figure, axes = _figure(legend_rows=3)
    edges = histograms["bin_edges"]
    for group in ("retain", "test", "forget"):
        counts = histograms[group]
        total = sum(counts)
        if not total:
            continue
        shares = [c / total for c in counts]
        colour = GROUP_COLOURS[group]
        axes.stairs(shares, edges, color=colour, linewidth=1.6 if group == "forget" else 1.2,
                    fill=False, label=f"{GROUP_LABELS[group]} ({total:,})")
        if group != "forget":
            axes.stairs(shares, edges, color=colour, alpha=0.12, fill=True)
    # A long description of the score goes into the caption; the axis takes a short one only.
    axes.set_xlabel(histograms["score"] if len(histograms["score"]) <= 45 else "Score", fontsize=7.5)
    from matplotlib.ticker import PercentFormatter

    axes.yaxis.set_major_formatter(PercentFormatter(1.0))
    axes.set_ylabel("Share of the group's records", fontsize=7.5)
    axes.set_title("Scores of three groups of records", fontsize=8.5)
    _legend_below(figure, axes)
    return _png(figure)


# ---------------------------------------------------------------- page furniture


def _page_canvas(footer: str, fonts: dict[str, str]) -> type[rl_canvas.Canvas]:
    """A canvas class that writes "page N of M" and the footer once the page count is known."""

    class PageCanvas(rl_canvas.Canvas):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._pages: list[dict[str, Any]] = []

        def showPage(self) -> None:  # noqa: N802 - reportlab's name
            self._pages.append(dict(self.__dict__))
            self._startPage()

        def save(self) -> None:
            total = len(self._pages)
            for state in self._pages:
                self.__dict__.update(state)
                self._furniture(total)
                super().showPage()
            super().save()

        def _furniture(self, total: int) -> None:
            self.saveState()
            self.setStrokeColor(RULE)
            self.setLineWidth(0.5)
            self.line(MARGIN, MARGIN, PAGE_WIDTH - MARGIN, MARGIN)
            self.setFont(fonts["regular"], 7.5)
            self.setFillColor(MUTED)
            self.drawString(MARGIN, MARGIN - 10, footer)
            self.drawRightString(PAGE_WIDTH - MARGIN, MARGIN - 10, f"Page {self._pageNumber} of {total}")
            self.restoreState()

    return PageCanvas
