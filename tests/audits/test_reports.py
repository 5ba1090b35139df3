"""Signed reports end to end: create, check with pdfsig and pyHanko, tamper, verify against the
ledger, and serve over the API to the right roles only."""

from __future__ import annotations

import hashlib
import io
import json
import time
import uuid
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from audits.models import Report
from audits.report_schema import REPORT_ATTACHMENT
from audits.reports import report_create, report_pdf_file, report_verify
from audits.signing import embedded_files, verify_pdf_signature
from deletion.models import DeletionRequest
from foundation.errors import ValidationFailed
from foundation.ledger.services import GENESIS, ledger_append, ledger_head
from tests.audits.conftest import pdfsig
from tests.audits.report_factory import build_report

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("signing_settings"),
              pytest.mark.urls("tests.audits.report_urls")]


def _request() -> DeletionRequest:
    now = timezone.now()
    request = DeletionRequest.objects.create(
        public_id=uuid.uuid4(), jurisdiction="GDPR", legal_ground="art17_1_b", channel="test",
        received_at=now, due_at=now + timedelta(days=30))
    for event in ("request.received", "request.verified", "request.approved"):
        ledger_append(event_type=event, actor="test", request=str(request.public_id))
    return request


def _create() -> Report:
    request = _request()
    return report_create(request=request, report=build_report(request_id=str(request.public_id)))


def _tampered_copy(report: Report, tmp_path) -> tuple:
    """The report's PDF with one byte changed inside the signed range (in the document info)."""
    original = report_pdf_file(report)
    data = bytearray(original.read_bytes())
    where = data.index(b"Data-deletion platform")  # the /Creator entry, well before the signature
    data[where] = ord("d")
    tampered = tmp_path / "tampered.pdf"
    tampered.write_bytes(bytes(data))
    return original, tampered


def test_signed_report_verifies_and_one_changed_byte_breaks_it(tmp_path, nss_db, settings):
    started = time.perf_counter()
    report = _create()
    elapsed = time.perf_counter() - started
    print(f"report_create (render + sign + store): {elapsed:.2f} s")

    original, tampered = _tampered_copy(report, tmp_path)
    # Stored content-addressed, and the row records the anchored ledger head.
    assert original == settings.REPORT_ROOT / f"{report.pdf_sha256}.pdf" and str(original) == report.pdf_path
    assert hashlib.sha256(original.read_bytes()).hexdigest() == report.pdf_sha256
    seq, _ = ledger_head()
    assert report.ledger_seq == seq - 1  # the report.signed event came after the anchored head
    assert report.json["ledger_head"] == {"seq": report.ledger_seq, "hash": report.ledger_hash}
    assert report.signature_profile == "PAdES-B-B (validation data embedded)"

    # Debian's poppler (NSS), trusting the development root.
    good = pdfsig(original, nss_db)
    assert "Signature is Valid." in good and "Certificate is Trusted." in good, good
    assert "ETSI.CAdES.detached" in good and "Total document signed" in good
    bad = pdfsig(tampered, nss_db)
    assert "Digest Mismatch." in bad and "Signature is Valid." not in bad, bad

    # pyHanko agrees, directly and through our check.
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign.validation import validate_pdf_signature
    from pyhanko_certvalidator import ValidationContext

    from audits.signing import verification_trust_roots

    context = ValidationContext(trust_roots=verification_trust_roots())
    for path, intact in ((original, True), (tampered, False)):
        with path.open("rb") as handle:
            status = validate_pdf_signature(PdfFileReader(handle).embedded_signatures[0], context)
        assert status.intact is intact and status.bottom_line is intact
    assert verify_pdf_signature(original.read_bytes()).problems == []
    assert any("digest does not match" in p for p in verify_pdf_signature(tampered.read_bytes()).problems)

    # The embedded JSON is the report as signed.
    embedded = json.loads(embedded_files(original.read_bytes())[REPORT_ATTACHMENT])
    assert embedded["ledger_head"]["seq"] == report.ledger_seq
    assert embedded["signer"]["name"] == report.signer == "Development report signer"

    # verify_report: the whole check, as a function and as a command.
    assert report_verify(original) == [] and report_verify(report.pdf_path) == []
    problems = report_verify(tampered)
    assert any("digest does not match" in p for p in problems)
    assert any("no report.signed entry for this file" in p for p in problems)
    out = io.StringIO()
    call_command("verify_report", str(original), stdout=out)
    assert f"ledger entry {report.ledger_seq} still has hash {report.ledger_hash}" in out.getvalue()
    with pytest.raises(SystemExit) as exited:
        call_command("verify_report", str(tampered), stdout=io.StringIO(), stderr=io.StringIO())
    assert exited.value.code == 1


def _as_attacker(statements: list[tuple[str, list]]) -> None:
    """Raw database access: switch the ledger's triggers off and change rows."""
    with connection.cursor() as cursor:
        cursor.execute("SET session_replication_role = replica")
        for sql, params in statements:
            cursor.execute(sql, params)
        cursor.execute("SET session_replication_role = DEFAULT")


def _rewrite_chain(from_seq: int, payload: str) -> None:
    """Replace one entry's payload and recompute every later hash and the head: a chain that is
    consistent in itself, which only an anchor held outside the table can expose."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT seq, payload FROM deletion_ledgerevent ORDER BY seq")
        rows = cursor.fetchall()
    statements, previous = [], GENESIS
    for seq, body in rows:
        body = payload if seq == from_seq else body
        digest = hashlib.sha256(previous + body.encode()).digest()
        if seq >= from_seq:
            statements.append(("UPDATE deletion_ledgerevent SET payload = %s, prev_hash = %s, hash = %s WHERE seq = %s",
                               [body, previous, digest, seq]))
        previous = digest
    statements.append(("UPDATE deletion_ledgerhead SET hash = %s WHERE id = 1", [previous]))
    _as_attacker(statements)


def test_verify_fails_when_the_ledger_changed_after_signing():
    report = _create()
    path = report_pdf_file(report)
    assert report_verify(path) == []
    with connection.cursor() as cursor:
        cursor.execute("SELECT payload FROM deletion_ledgerevent WHERE seq = %s", [report.ledger_seq])
        original = cursor.fetchone()[0]

    # An entry edited in place: the chain breaks at the anchored entry.
    edited = original.replace("request.approved", "request.rejected")
    _as_attacker([("UPDATE deletion_ledgerevent SET payload = %s WHERE seq = %s", [edited, report.ledger_seq])])
    problems = report_verify(path)
    assert any(f"ledger entry {report.ledger_seq}" in p and "edited" in p for p in problems), problems
    _as_attacker([("UPDATE deletion_ledgerevent SET payload = %s WHERE seq = %s", [original, report.ledger_seq])])
    assert report_verify(path) == []

    # The same edit with every later hash recomputed: only the head anchored in the report shows it.
    _rewrite_chain(report.ledger_seq, edited)
    problems = report_verify(path)
    assert any("anchor's hash for this entry differs" in p for p in problems), problems


def test_report_for_another_request_or_with_a_bad_field_is_refused():
    request = _request()
    with pytest.raises(ValidationFailed, match="is not this request"):
        report_create(request=request, report=build_report())
    bad = build_report(request_id=str(request.public_id))
    bad["model_versions"][0]["verdict"]["verdict"] = "FORGOTTEN"
    with pytest.raises(ValidationFailed, match=r"model_versions\[0\]\.verdict\.verdict must be one of"):
        report_create(request=request, report=bad)
    assert not Report.objects.filter(request=request).exists()


def test_report_endpoints_answer_dpo_and_auditor_only(api_client_for):
    from rest_framework.test import APIClient

    report = _create()
    detail, pdf = f"/api/v1/reports/{report.pk}/", f"/api/v1/reports/{report.pk}/pdf/"
    for role in ("dpo", "auditor"):
        client = api_client_for(role)
        answer = client.get(detail)
        assert answer.status_code == 200, answer.content
        body = answer.json()
        assert body["request_id"] == str(report.request.public_id)
        assert body["pdf_sha256"] == report.pdf_sha256
        assert body["report"]["ledger_head"] == {"seq": report.ledger_seq, "hash": report.ledger_hash}
        answer = client.get(pdf, HTTP_ACCEPT="application/pdf")
        assert answer.status_code == 200
        assert answer["Content-Type"] == "application/pdf"
        assert hashlib.sha256(answer.content).hexdigest() == report.pdf_sha256
        assert client.get("/api/v1/reports/999999999/").status_code == 404
        assert client.get("/api/v1/reports/99999999999999999999/pdf/").status_code == 404
    for role in ("intake", "ml_engineer"):
        client = api_client_for(role)
        assert client.get(detail).status_code == 403
        assert client.get(pdf).status_code == 403
    anonymous = APIClient()
    assert anonymous.get(detail).status_code == 401
    assert anonymous.get(pdf).status_code == 401
    assert anonymous.get(pdf, HTTP_ACCEPT="application/pdf").status_code == 401


def test_pdf_endpoint_refuses_a_changed_or_missing_file(api_client_for, settings):
    content = b"%PDF-1.7 stand-in for a signed report"
    sha256 = hashlib.sha256(content).hexdigest()
    settings.REPORT_ROOT.mkdir(parents=True)
    (settings.REPORT_ROOT / f"{sha256}.pdf").write_bytes(content)
    report = Report.objects.create(request=_request(), json={}, pdf_sha256=sha256,
                                   pdf_path=str(settings.REPORT_ROOT / f"{sha256}.pdf"),
                                   ledger_seq=1, ledger_hash="0" * 64, signer="test", signature_profile="none")
    client, url = api_client_for("dpo"), f"/api/v1/reports/{report.pk}/pdf/"
    assert client.get(url).content == content
    path = report_pdf_file(report)
    path.write_bytes(path.read_bytes() + b"\n% appended\n")
    answer = client.get(url)
    assert answer.status_code == 409 and answer.json()["error"]["code"] == "report_file_changed"
    path.unlink()
    answer = client.get(url)
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "report_file_missing"
