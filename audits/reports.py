"""Signed erasure reports: create (render, sign, store, record) and verify.

``report_create`` anchors the ledger head in the report, renders the PDF, embeds the report JSON
in it, signs it (PAdES), stores it content-addressed (``<sha256>.pdf`` in the shared files' ``reports``
area: ``settings.REPORT_ROOT``, or sealed in the object store with ARTIFACT_STORE=s3) and records a
``report.signed`` ledger event. ``report_verify`` checks a PDF against the trust root and the
ledger: the signature, the embedded report, the anchored ledger entry, and the ``report.signed``
event naming this very file.

Rendering and signing take a second or two; they run outside any database transaction, so the
ledger (whose appends lock its head row) is not held up meanwhile.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction

from audits.models import Report
from audits.report_schema import REPORT_ATTACHMENT, validate_report
from foundation.errors import Conflict, NotFound, ValidationFailed
from foundation.ledger.models import LedgerEvent
from foundation.ledger.services import ledger_append, ledger_head, ledger_verify
from foundation.strict_json import canonical_json

logger = logging.getLogger(__name__)


def report_pdf_file(report: Report) -> Path:
    """Where the report's PDF is: ``pdf_path``, or, when the report store has moved, the file of
    the same content-addressed name under the current ``REPORT_ROOT``."""
    recorded = Path(report.pdf_path)
    if recorded.exists():
        return recorded
    moved = Path(settings.REPORT_ROOT) / f"{report.pdf_sha256}.pdf"
    return moved if moved.exists() else recorded


def report_pdf_read(report: Report) -> bytes | None:
    """The stored PDF's bytes (None when it is gone): the shared files' ``reports`` area, or the
    recorded ``pdf_path`` of a report kept on a local disk (see :func:`report_pdf_file`)."""
    from workers.runners.storage import shared_files

    files = shared_files("reports")
    if files.backend == "local":
        try:
            return report_pdf_file(report).read_bytes()
        except FileNotFoundError:
            return None
    return files.get(f"{report.pdf_sha256}.pdf")


def report_create(*, request, report: dict[str, Any]) -> Report:
    """Render, sign and store the erasure report of ``request``.

    In: the request (a ``deletion.DeletionRequest``: its ``public_id`` and row; the reports know
    no request model) and the report dict (:mod:`audits.report_schema`; ``ledger_head`` and
    ``signer`` may be left out, they are set here from the ledger and the signing certificate).
    Out: the saved :class:`Report`. Raises ``ValidationFailed`` (code ``invalid_report``) naming
    the bad field, and ``ImproperlyConfigured`` when no signing identity is configured.
    """
    from audits.rendering import render_report_pdf
    from audits.signing import sign_pdf_detailed, signing_identity
    from workers.runners.storage import shared_files

    if report.get("request_id") != str(request.public_id):
        raise ValidationFailed(
            f"the report's request_id {report.get('request_id')!r} is not this request ({request.public_id})",
            code="invalid_report", field="request_id")
    identity = signing_identity()
    seq, digest = ledger_head()
    body = {
        **report,
        "ledger_head": {"seq": seq, "hash": digest.hex()},
        "signer": {"name": identity.name, "organisation": identity.organisation,
                   "certificate_sha256": identity.certificate_sha256},
    }
    try:
        validate_report(body)
    except ValueError as exc:
        raise ValidationFailed(str(exc), code="invalid_report") from exc

    pdf = render_report_pdf(body)
    signed = sign_pdf_detailed(pdf, attachments={REPORT_ATTACHMENT: canonical_json(body).encode()},
                               identity=identity)
    sha256 = hashlib.sha256(signed.pdf).hexdigest()
    files = shared_files("reports")
    files.put(f"{sha256}.pdf", signed.pdf)
    path = files.location(f"{sha256}.pdf")
    with transaction.atomic():
        row = Report.objects.create(
            request=request, json=body, pdf_sha256=sha256, pdf_path=str(path), ledger_seq=seq,
            ledger_hash=digest.hex(), signer=identity.name, signature_profile=signed.profile)
        ledger_append(event_type="report.signed", actor=f"signer:{identity.name}",
                      request=str(request.public_id), report=row.id, pdf_sha256=sha256,
                      anchored_seq=seq, anchored_hash=digest.hex(), profile=signed.profile,
                      certificate_sha256=identity.certificate_sha256)
    logger.info("report %s of request %s signed (%s, %s)", row.id, request.public_id, signed.profile, sha256)
    return row


# ---------------------------------------------------------------- verification


@dataclass
class ReportVerification:
    """What ``report_verify_detailed`` found; ``problems`` is empty when the report checks out."""

    problems: list[str] = field(default_factory=list)
    request_id: str | None = None
    signer: str | None = None
    signed_at: datetime | None = None
    ledger_seq: int | None = None
    ledger_hash: str | None = None


def report_verify(pdf_path: str | Path | bytes) -> list[str]:
    """Check a report PDF; returns the problems in words (empty: the report checks out).

    Checks: the PAdES signature (intact, valid, issued under ``REPORT_TRUST_ROOT`` or the
    development root, nothing added after signing); the embedded report JSON and the signer it
    names; the ledger in the database (its chain is intact and its entry at the anchored seq has
    the anchored hash); and a ``report.signed`` ledger event naming this file's sha256.
    """
    return report_verify_detailed(pdf_path).problems


def report_verify_detailed(pdf_path: str | Path | bytes) -> ReportVerification:
    """:func:`report_verify` with what was found besides the problems (signer, ledger entry).
    ``pdf_path`` may be the PDF's bytes (a report kept in the object store: report_pdf_read)."""
    from audits.signing import embedded_files, verify_pdf_signature

    result = ReportVerification()
    try:
        data = pdf_path if isinstance(pdf_path, bytes) else Path(pdf_path).read_bytes()
    except OSError as exc:
        result.problems.append(f"the file cannot be read: {exc}")
        return result
    signature = verify_pdf_signature(data)
    result.problems += signature.problems
    result.signer, result.signed_at = signature.signer, signature.signed_at

    # The report is read from the signed revision only: whatever was appended later is not evidence.
    try:
        attached = embedded_files(signature.signed_pdf or data).get(REPORT_ATTACHMENT)
    except Exception as exc:  # a damaged file: pyHanko raises several kinds
        result.problems.append(f"the embedded report cannot be read: {exc}")
        return result
    if attached is None:
        result.problems.append(f"the PDF carries no embedded report data ({REPORT_ATTACHMENT})")
        return result
    try:
        report = json.loads(attached)
        validate_report(report)
    except ValueError as exc:
        result.problems.append(f"the embedded report data are not valid: {exc}")
        return result
    head = report["ledger_head"]
    result.request_id, result.ledger_seq, result.ledger_hash = report["request_id"], head["seq"], head["hash"]
    if signature.certificate_sha256 and signature.certificate_sha256 != report["signer"]["certificate_sha256"]:
        result.problems.append("the report names another signing certificate than the one that signed it")

    for problem in ledger_verify(anchors=[{"seq": head["seq"], "hash": head["hash"]}]):
        result.problems.append(f"ledger entry {problem.seq}: {problem.problem}")
    sha256 = hashlib.sha256(data).hexdigest()
    recorded = LedgerEvent.objects.filter(request_ref=report["request_id"],
                                          payload__contains=f'"pdf_sha256":"{sha256}"')
    if not any(json.loads(event.payload)["type"] == "report.signed" for event in recorded):
        result.problems.append(
            f"the ledger has no report.signed entry for this file (sha256 {sha256}): it is not "
            "the file the platform signed")
    return result


# ---------------------------------------------------------------- reads

_LARGEST_ID = 2**63 - 1


def report_get(*, report_id: int) -> Report:
    """The report with this id, or ``NotFound``."""
    report = None
    if 0 < report_id <= _LARGEST_ID:
        report = Report.objects.select_related("request").filter(pk=report_id).first()
    if report is None:
        raise NotFound("no such report")
    return report


def report_pdf_bytes(*, report: Report) -> bytes:
    """The stored PDF, checked against the sha256 recorded at signing.

    Raises ``NotFound`` (code ``report_file_missing``) when the file is gone and ``Conflict``
    (code ``report_file_changed``) when its content no longer matches; both are logged as errors,
    since either means the report store was tampered with or lost.
    """
    data = report_pdf_read(report)
    if data is None:
        logger.error("the PDF of report %s is missing from the report store", report.pk)
        raise NotFound("the report's PDF file is missing from the report store",
                       code="report_file_missing") from None
    if hashlib.sha256(data).hexdigest() != report.pdf_sha256:
        logger.error("the PDF of report %s does not match its recorded sha256", report.pk)
        raise Conflict("the stored PDF no longer matches the sha256 recorded when it was signed",
                       code="report_file_changed")
    return data
