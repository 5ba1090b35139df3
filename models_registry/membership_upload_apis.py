"""REST API of chunked membership uploads (models_registry.membership_uploads): open or resume an
upload, PUT numbered chunks (a retry is a no-op), complete it."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import JSONParser
from rest_framework.response import Response
from rest_framework.views import APIView

from foundation.access.authentication import HasRole
from foundation.errors import NotFound
from models_registry.apis import (
    _FORMAT_PARAM,
    RawUploadParser,
    RegistryAccess,
    StrictSerializer,
    UploadFormatNegotiation,
    _upload_format,
)
from models_registry.membership_uploads import (
    MAX_CHUNKS,
    membership_chunk_apply,
    membership_upload_complete,
    membership_upload_open,
)
from models_registry.models import Dataset, MembershipUpload, TrainingRun


class MembershipUploadOut(serializers.ModelSerializer):
    training_run = serializers.IntegerField(source="run_id")
    dataset = serializers.IntegerField(source="dataset_id")
    chunks = serializers.SerializerMethodField(help_text="numbers of the chunks applied, ascending")
    url = serializers.SerializerMethodField()

    class Meta:
        model = MembershipUpload
        fields = ["id", "url", "training_run", "dataset", "status", "rows", "chunks", "created_at", "completed_at"]

    def get_chunks(self, upload) -> list[int]:
        return sorted(upload.chunks.values_list("number", flat=True))

    def get_url(self, upload) -> str:
        return f"/api/v1/membership-uploads/{upload.id}/"


class MembershipUploadIn(StrictSerializer):
    dataset = serializers.IntegerField(min_value=1, max_value=2**31 - 1)


class MembershipChunkOut(serializers.Serializer):
    upload = serializers.IntegerField(source="upload_id")
    chunk = serializers.IntegerField(source="number")
    rows = serializers.IntegerField()
    sha256 = serializers.CharField()
    received_at = serializers.DateTimeField()


class MembershipCompleteIn(StrictSerializer):
    chunks = serializers.IntegerField(min_value=1, max_value=MAX_CHUNKS,
                                      help_text="how many chunks were sent: 0..chunks-1 must all be applied")
    rows = serializers.IntegerField(min_value=0, required=False, help_text="the rows of all chunks, checked when given")


class MembershipUploadListApi(APIView):
    permission_classes = [HasRole.of("ml_engineer")]
    parser_classes = [JSONParser]

    @extend_schema(request=MembershipUploadIn, responses={200: MembershipUploadOut, 201: MembershipUploadOut})
    def post(self, request, run_id: int):
        """Open the upload of the run's membership of a dataset; the same run and dataset answer the
        same upload (200) with the chunks it holds, which is how a client resumes."""
        run = get_object_or_404(TrainingRun, pk=run_id)
        body = MembershipUploadIn(data=request.data)
        body.is_valid(raise_exception=True)
        dataset = Dataset.objects.filter(pk=body.validated_data["dataset"]).first()
        if dataset is None:
            raise NotFound(f"no dataset {body.validated_data['dataset']}", field="dataset")
        upload, created = membership_upload_open(run=run, dataset=dataset)
        return Response(MembershipUploadOut(upload).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class MembershipUploadDetailApi(APIView):
    permission_classes = [RegistryAccess]

    @extend_schema(responses={200: MembershipUploadOut})
    def get(self, request, upload_id: int):
        return Response(MembershipUploadOut(get_object_or_404(MembershipUpload, pk=upload_id)).data)


class MembershipChunkApi(APIView):
    permission_classes = [HasRole.of("ml_engineer")]
    parser_classes = [RawUploadParser]
    content_negotiation_class = UploadFormatNegotiation

    @extend_schema(request={"text/csv": bytes, "application/x-ndjson": bytes}, parameters=[_FORMAT_PARAM],
                   responses={200: MembershipChunkOut, 201: MembershipChunkOut})
    def put(self, request, upload_id: int, number: int):
        """Chunk ``number`` (rows record_key, shard, slice, position): 201 applied, 200 the same bytes
        applied before (nothing changes)."""
        upload = get_object_or_404(MembershipUpload, pk=upload_id)
        fmt = _upload_format(request)  # checks the body's length against IMPORT_MAX_UPLOAD_BYTES
        data = request.stream.read()
        chunk, applied = membership_chunk_apply(upload=upload, number=number, data=data, fmt=fmt)
        return Response(MembershipChunkOut(chunk).data, status=status.HTTP_201_CREATED if applied else status.HTTP_200_OK)


class MembershipUploadCompleteApi(APIView):
    permission_classes = [HasRole.of("ml_engineer")]
    parser_classes = [JSONParser]

    @extend_schema(request=MembershipCompleteIn, responses={200: MembershipUploadOut})
    def post(self, request, upload_id: int):
        """Close the upload once every chunk is applied; from then on it is the run's membership of the dataset."""
        upload = get_object_or_404(MembershipUpload, pk=upload_id)
        body = MembershipCompleteIn(data=request.data)
        body.is_valid(raise_exception=True)
        upload = membership_upload_complete(upload=upload, **body.validated_data)
        return Response(MembershipUploadOut(upload).data)
