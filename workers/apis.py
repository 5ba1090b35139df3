"""The workers' REST API: weights trained elsewhere registered as a new version (checked here, in
the process that owns the artifact store and the architectures; nothing is unpickled), or, for a
model from the company's own package, checked by a worker job whose outcome a client reads."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from foundation.access.authentication import HasRole
from foundation.errors import ValidationFailed
from models_registry.apis import ModelVersionOut, RawUploadParser
from models_registry.models import RegisteredModel, TrainingRun
from workers.models import Job, JobKind
from workers.services import MAX_CHECKPOINT_BYTES, model_version_upload
from workers.upload_checks import upload_check_state


class UploadRefusalOut(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()


class UploadCheckOut(serializers.Serializer):
    """An upload a worker checks: ``status`` pending, running, registered (``version``), refused
    (``refused``: nothing was stored), failed (``error``: the check itself crashed) or cancelled."""

    id = serializers.IntegerField()
    url = serializers.SerializerMethodField()
    model = serializers.CharField()
    training_run = serializers.IntegerField()
    status = serializers.CharField()
    progress = serializers.DictField()
    version = ModelVersionOut(allow_null=True)
    refused = UploadRefusalOut(allow_null=True)
    error = serializers.CharField()
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)

    def get_url(self, state) -> str:
        return f"/api/v1/upload-checks/{state['id']}/"


class ModelVersionUploadApi(APIView):
    """POST safetensors weights (application/octet-stream) as a new version of a model, with its
    lineage given by an imported training run (?training_run=ID)."""

    permission_classes = [HasRole.of("ml_engineer")]
    parser_classes = [RawUploadParser]

    @extend_schema(request={"application/octet-stream": bytes},
                   parameters=[OpenApiParameter("training_run", int, required=True)],
                   responses={201: ModelVersionOut, 202: UploadCheckOut})
    def post(self, request, model_name: str):
        model = get_object_or_404(RegisteredModel, name=model_name)
        run_id = request.query_params.get("training_run", "")
        if not run_id.isdigit():
            raise ValidationFailed("training_run (an id) is required as a query parameter", field="training_run")
        run = get_object_or_404(TrainingRun, pk=int(run_id))
        length = int(request.META.get("CONTENT_LENGTH") or 0)
        if length > MAX_CHECKPOINT_BYTES:
            raise ValidationFailed(f"checkpoint larger than {MAX_CHECKPOINT_BYTES} bytes", field="body")
        data = request.stream.read(MAX_CHECKPOINT_BYTES + 1) if request.stream else b""
        outcome = model_version_upload(model=model, training_run=run, data=data)
        if isinstance(outcome, Job):  # checked by a worker: 202 with where to read the outcome
            body = UploadCheckOut(upload_check_state(outcome)).data
            return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": body["url"]})
        return Response(ModelVersionOut(outcome).data, status=status.HTTP_201_CREATED)


class UploadCheckDetailApi(APIView):
    """An upload a worker checks (a model from the company's own package): pending, running,
    registered with its version, or refused with the reason (nothing stored)."""

    permission_classes = [HasRole.of("ml_engineer", read_only=("dpo", "auditor"))]

    @extend_schema(responses={200: UploadCheckOut})
    def get(self, request, check_id: int):
        job = get_object_or_404(Job.objects.select_related("registered_model", "result_version"),
                                pk=check_id, kind=JobKind.UPLOAD_CHECK)
        return Response(UploadCheckOut(upload_check_state(job)).data)
