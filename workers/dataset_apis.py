"""Importing a dataset from its data source: the file of a file source is the body (Parquet, CSV,
JSON Lines), a database source is read by the operator's query (no body). One call imports every
record (subjects pseudonymised) or nothing, and keeps the file in the artifact store."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from foundation.access.authentication import HasRole
from foundation.errors import ValidationFailed
from models_registry.apis import RawUploadParser, UploadFormatNegotiation
from models_registry.models import Dataset
from workers.data_sources import MAX_SOURCE_FILE_BYTES, dataset_source_import


class SourceImportOut(serializers.Serializer):
    dataset = serializers.CharField()
    rows = serializers.IntegerField()
    subjects_created = serializers.IntegerField()
    source = serializers.DictField(source="extra.source")


class DatasetSourceImportApi(APIView):
    permission_classes = [HasRole.of("ml_engineer")]
    parser_classes = [RawUploadParser]
    content_negotiation_class = UploadFormatNegotiation

    @extend_schema(request={"application/octet-stream": bytes}, responses={201: SourceImportOut})
    def post(self, request, dataset_id: int):
        dataset = get_object_or_404(Dataset, pk=dataset_id)
        length = int(request.META.get("CONTENT_LENGTH") or 0)
        if length > MAX_SOURCE_FILE_BYTES:
            raise ValidationFailed(f"file larger than {MAX_SOURCE_FILE_BYTES} bytes", field="body")
        data = request.stream.read(MAX_SOURCE_FILE_BYTES + 1) if request.stream else b""
        result = dataset_source_import(dataset=dataset, data=data or None)
        return Response(SourceImportOut(result).data, status=status.HTTP_201_CREATED)
