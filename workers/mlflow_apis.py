"""The company's MLflow registry over the REST API (workers.mlflow_registry): import a registered
model's versions, read and retry the changes the platform owes MLflow (new versions, alias moves)."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import JSONParser
from rest_framework.response import Response
from rest_framework.views import APIView

from foundation.access.authentication import HasRole
from foundation.errors import ValidationFailed
from models_registry.apis import StrictSerializer
from models_registry.models import RegisteredModel
from workers.mlflow_registry import mlflow_sync_retry, mlflow_versions_import
from workers.models import MlflowSync, MlflowSyncStatus


class MlflowImportIn(StrictSerializer):
    registered_model = serializers.CharField(max_length=256, help_text="The registered model's name in MLflow.")
    model = serializers.CharField(max_length=200, help_text="The platform's registered model its versions join.")
    alias = serializers.CharField(max_length=256, help_text="The alias the company serves the model from.")
    training_runs = serializers.DictField(
        child=serializers.IntegerField(min_value=1), required=False, default=dict,
        help_text="MLflow run id -> platform training run id (its membership), for runs without the "
                  "deletion_platform.training_run tag.")


class PlatformVersionOut(serializers.Serializer):
    id = serializers.IntegerField()
    version = serializers.IntegerField()


class MlflowVersionOut(serializers.Serializer):
    """One MLflow version: ``status`` imported, check_queued (a worker checks its weights:
    ``upload_check``), refused or no_membership (``code``, ``reason``: what to log or map instead),
    registered_back (an unlearned version the platform registered)."""

    mlflow_version = serializers.IntegerField()
    run_id = serializers.CharField()
    aliases = serializers.ListField(child=serializers.CharField())
    status = serializers.CharField()
    code = serializers.CharField()
    reason = serializers.CharField()
    form = serializers.CharField(help_text="Where its weights were: sklearn_flavor, transformers_flavor, skops_file, "
                                           "hf_folder, safetensors_file.")
    platform_version = PlatformVersionOut(allow_null=True)
    upload_check = serializers.IntegerField(allow_null=True)
    training_run = serializers.IntegerField(required=False, help_text="Whose membership it got.")
    membership_from = serializers.CharField(required=False, help_text="request or run_tag.")


class MlflowImportOut(serializers.Serializer):
    registered_model = serializers.CharField()
    model = serializers.CharField()
    alias = serializers.CharField()
    alias_version = serializers.IntegerField()
    versions = MlflowVersionOut(many=True)


class MlflowImportApi(APIView):
    """POST: import a registered model's versions from the MLflow tracking server (409
    ``mlflow_not_configured`` without MLFLOW_TRACKING_URI; 503 ``mlflow_unavailable`` when it cannot
    be reached: what was imported before stays, and a second POST goes on from there)."""

    permission_classes = [HasRole.of("ml_engineer")]
    parser_classes = [JSONParser]

    @extend_schema(request=MlflowImportIn, responses={200: MlflowImportOut})
    def post(self, request):
        body = MlflowImportIn(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        model = RegisteredModel.objects.filter(name=data["model"]).first()
        if model is None:
            raise ValidationFailed(f"no registered model is named {data['model']!r}", field="model")
        result = mlflow_versions_import(model=model, registered_model=data["registered_model"], alias=data["alias"],
                                        training_runs=data["training_runs"])
        return Response(MlflowImportOut(result).data)


class MlflowSyncOut(serializers.ModelSerializer):
    """A change owed to MLflow: ``status`` pending (attempted, or retried with backoff:
    ``attempts``, ``last_error``), done (``result``: the MLflow version made, the alias moved or
    removed, or why it was left) or failed (``last_error``; POST .../retry/ tries it again)."""

    model = serializers.CharField(source="model_version.model.name")

    class Meta:
        model = MlflowSync
        fields = ["id", "kind", "model", "model_version", "registered_model", "alias", "deletion_request",
                  "guarantee_class", "status", "attempts", "last_error", "result", "created_at", "finished_at"]


class MlflowSyncListApi(APIView):
    """GET: the changes owed to MLflow, newest first (``?status=pending|done|failed``)."""

    permission_classes = [HasRole.of("ml_engineer", read_only=("dpo", "auditor"))]

    @extend_schema(parameters=[OpenApiParameter("status", str, enum=MlflowSyncStatus.values)],
                   responses={200: MlflowSyncOut(many=True)})
    def get(self, request):
        syncs = MlflowSync.objects.select_related("model_version__model")
        wanted = request.query_params.get("status")
        if wanted is not None:
            if wanted not in MlflowSyncStatus.values:
                raise ValidationFailed(f"status is one of {', '.join(MlflowSyncStatus.values)}", field="status")
            syncs = syncs.filter(status=wanted)
        return Response(MlflowSyncOut(syncs[:500], many=True).data)


class MlflowSyncRetryApi(APIView):
    """POST: try a failed change again (202; 409 for one that is not failed)."""

    permission_classes = [HasRole.of("ml_engineer")]

    @extend_schema(request=None, responses={202: MlflowSyncOut})
    def post(self, request, sync_id: int):
        sync = mlflow_sync_retry(sync=get_object_or_404(MlflowSync, pk=sync_id))
        return Response(MlflowSyncOut(sync).data, status=status.HTTP_202_ACCEPTED)
