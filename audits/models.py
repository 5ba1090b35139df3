"""Signed erasure reports."""

from __future__ import annotations

from django.db import models


class Report(models.Model):
    """A signed erasure report of one deletion request.

    ``json`` is the report dict (:mod:`audits.report_schema`) exactly as rendered and signed; the
    same data are embedded in the PDF. The PDF is stored content-addressed under
    ``settings.REPORT_ROOT`` as ``<pdf_sha256>.pdf``; ``pdf_path`` is where it was written (if
    the store moves, ``audits.reports.report_pdf_file`` finds it by name under the new root).
    ``ledger_seq``/``ledger_hash`` are the ledger head anchored in the report. Reports are
    evidence: a request with reports cannot be deleted.
    """

    request = models.ForeignKey("deletion.DeletionRequest", on_delete=models.PROTECT, related_name="reports")
    created_at = models.DateTimeField(auto_now_add=True)
    json = models.JSONField()
    pdf_sha256 = models.CharField(max_length=64, unique=True)
    pdf_path = models.CharField(max_length=1000)
    ledger_seq = models.BigIntegerField()
    ledger_hash = models.CharField(max_length=64)
    signer = models.CharField(max_length=300)
    signature_profile = models.CharField(max_length=60, help_text="PAdES level reached, e.g. PAdES-B-T")

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"report {self.pk} of request {self.request_id} ({self.pdf_sha256[:12]})"
