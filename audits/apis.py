"""Reports REST API (DPO and auditor, read-only). Views call one selector and serialise."""

from __future__ import annotations

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from audits import reports
from foundation.access.authentication import HasRole

ReportAccess = HasRole.of("dpo", "auditor")


class ReportOut(serializers.Serializer):
    id = serializers.IntegerField()
    request_id = serializers.UUIDField(source="request.public_id")
    created_at = serializers.DateTimeField()
    pdf_sha256 = serializers.CharField()
    ledger_seq = serializers.IntegerField()
    ledger_hash = serializers.CharField()
    signer = serializers.CharField()
    signature_profile = serializers.CharField()
    report = serializers.JSONField(source="json", help_text="The report data (audits/report_schema.py), as signed.")


class ReportDetailApi(APIView):
    permission_classes = [ReportAccess]

    @extend_schema(responses=ReportOut)
    def get(self, request, report_id: int):
        return Response(ReportOut(reports.report_get(report_id=report_id)).data)


class PdfRenderer(BaseRenderer):
    """Lets a client ask for ``Accept: application/pdf``; errors still go out as JSON bytes."""

    media_type = "application/pdf"
    format = "pdf"
    charset = None
    render_style = "binary"

    def render(self, data, accepted_media_type=None, renderer_context=None) -> bytes:
        return data if isinstance(data, bytes) else JSONRenderer().render(data)


class ReportPdfApi(APIView):
    permission_classes = [ReportAccess]
    renderer_classes = [JSONRenderer, PdfRenderer]

    @extend_schema(responses={(200, "application/pdf"): OpenApiResponse(OpenApiTypes.BINARY,
                                                                          description="The signed PDF")})
    def get(self, request, report_id: int):
        report = reports.report_get(report_id=report_id)
        response = HttpResponse(reports.report_pdf_bytes(report=report), content_type="application/pdf")
        response["Content-Disposition"] = (
            f'attachment; filename="erasure-report-{report.request.public_id}-{report.pk}.pdf"')
        response["X-Content-SHA256"] = report.pdf_sha256
        return response
