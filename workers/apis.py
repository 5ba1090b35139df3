"""The workers' REST API: weights trained elsewhere registered as a new version (checked here, in
the process that owns the artifact store and the architectures; nothing is unpickled)."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from foundation.access.authentication import HasRole
from foundation.errors import ValidationFailed
from models_registry.apis import ModelVersionOut, RawUploadParser
from models_registry.models import RegisteredModel, TrainingRun
from workers.services import MAX_CHECKPOINT_BYTES, model_version_upload


class ModelVersionUploadApi(APIView):
    """POST safetensors weights (application/octet-stream) as a new version of a model, with its
    lineage given by an imported training run (?training_run=ID)."""

    permission_classes = [HasRole.of("ml_engineer")]
    parser_classes = [RawUploadParser]

    @extend_schema(request={"application/octet-stream": bytes},
                   parameters=[OpenApiParameter("training_run", int, required=True)],
                   responses={201: ModelVersionOut})
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
        version = model_version_upload(model=model, training_run=run, data=data)
        return Response(ModelVersionOut(version).data, status=status.HTTP_201_CREATED)
