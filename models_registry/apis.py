"""Registry REST API (ml_engineer; auditors and DPOs may read). Views validate input, call one
service and serialise the result."""

from __future__ import annotations

from django.conf import settings
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.parsers import BaseParser, JSONParser
from rest_framework.response import Response
from rest_framework.views import APIView

from foundation.access.authentication import HasRole
from foundation.errors import NotFound, ValidationFailed
from models_registry import importing, services
from models_registry.models import (
    Dataset,
    LegalBasis,
    Modality,
    ModelVersion,
    RegisteredModel,
    Task,
    TrainingRun,
)

RegistryAccess = HasRole.of("ml_engineer", read_only=("dpo", "auditor"))


class StrictSerializer(serializers.Serializer):
    """Unknown fields are an error, not silently dropped."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["unknown field"] for name in unknown})
        return super().to_internal_value(data)


class UploadFormatNegotiation(DefaultContentNegotiation):
    """On the import operations ``?format=`` names the body's format (csv, jsonl), not the
    response's, which is always JSON; DRF's own reading of it would answer 404 (no such renderer)."""

    def select_renderer(self, request, renderers, format_suffix=None):
        renderer = next(r for r in renderers if r.format == "json")
        return renderer, renderer.media_type


class RawUploadParser(BaseParser):
    """CSV or JSONL bodies, streamed to the import service without loading them whole."""

    media_type = "*/*"

    def parse(self, stream, media_type=None, parser_context=None):
        return stream


class DatasetIn(StrictSerializer):
    name = serializers.CharField(max_length=200)
    version = serializers.CharField(max_length=50)
    modality = serializers.ChoiceField(Modality.choices)
    storage_location = serializers.CharField(max_length=1000, required=False, default="")
    purpose = serializers.CharField(max_length=2000)
    legal_basis = serializers.ChoiceField(LegalBasis.choices)
    source = serializers.DictField(required=False, default=dict, help_text=(
        'Where the records are read: {"kind": "parquet" | "csv" | "jsonl"} (then upload the file to '
        '/datasets/<id>/import/) or {"kind": "postgresql", "query": <a query the operator configured>}.'))
    record_schema = serializers.DictField(required=False, default=dict, help_text=(
        "How the source's columns map to records: record_key, subjects {column: email | customer_id | phone}, "
        "features and label (tabular) or text (and label), split or default_split."))


class DatasetOut(serializers.ModelSerializer):
    record_count = serializers.SerializerMethodField()

    class Meta:
        model = Dataset
        fields = ["id", "name", "version", "modality", "storage_location", "purpose", "legal_basis",
                  "source", "record_schema", "created_at", "record_count"]

    def get_record_count(self, obj) -> int:
        return obj.records.filter(canary=False).count()  # planted canaries are nobody's records


class DatasetListApi(APIView):
    permission_classes = [RegistryAccess]
    parser_classes = [JSONParser]

    @extend_schema(responses=DatasetOut(many=True))
    def get(self, request):
        return Response(DatasetOut(Dataset.objects.all(), many=True).data)

    @extend_schema(request=DatasetIn, responses={201: DatasetOut})
    def post(self, request):
        body = DatasetIn(data=request.data)
        body.is_valid(raise_exception=True)
        dataset = services.dataset_register(**body.validated_data)
        return Response(DatasetOut(dataset).data, status=status.HTTP_201_CREATED)


class ImportOut(serializers.Serializer):
    dataset = serializers.CharField()
    rows = serializers.IntegerField()
    subjects_created = serializers.IntegerField()
    run_id = serializers.IntegerField(allow_null=True)


_FORMATS = {"text/csv": "csv", "application/x-ndjson": "jsonl", "application/jsonl": "jsonl"}
_FORMAT_PARAM = OpenApiParameter("format", str, enum=["csv", "jsonl"], required=False,
                                 description="Overrides the Content-Type (text/csv or application/x-ndjson).")


def _upload_format(request) -> str:
    fmt = request.query_params.get("format") or _FORMATS.get(request.content_type.split(";")[0].strip())
    if fmt not in ("csv", "jsonl"):
        raise ValidationFailed("send text/csv or application/x-ndjson (or ?format=csv|jsonl)", field="format")
    length = int(request.META.get("CONTENT_LENGTH") or 0)
    if request.stream is None:  # DRF gives no stream for a body of length 0 (or none given)
        raise ValidationFailed("the body is empty; send the file with its Content-Length", field="body")
    if length > settings.IMPORT_MAX_UPLOAD_BYTES:
        raise ValidationFailed(f"upload larger than {settings.IMPORT_MAX_UPLOAD_BYTES} bytes; use the "
                               "import_records management command", field="body")
    return fmt


class DatasetRecordsImportApi(APIView):
    permission_classes = [HasRole.of("ml_engineer")]
    parser_classes = [RawUploadParser]
    content_negotiation_class = UploadFormatNegotiation

    @extend_schema(request={"text/csv": bytes, "application/x-ndjson": bytes}, parameters=[_FORMAT_PARAM],
                   responses={201: ImportOut})
    def post(self, request, dataset_id: int):
        dataset = get_object_or_404(Dataset, pk=dataset_id)
        fmt = _upload_format(request)
        result = importing.dataset_records_import(dataset=dataset, source=request.stream, fmt=fmt)
        return Response(ImportOut(result).data, status=status.HTTP_201_CREATED)


class TrainingRunIn(StrictSerializer):
    model = serializers.CharField(max_length=200)
    recipe = serializers.CharField(max_length=50)
    config = serializers.DictField(required=False, default=dict)
    seed = serializers.IntegerField(min_value=0, max_value=2**63 - 1)
    code_version = serializers.CharField(max_length=100)
    datasets = serializers.ListField(child=serializers.IntegerField(min_value=1), min_length=1, max_length=50)


class TrainingRunOut(serializers.ModelSerializer):
    class Meta:
        model = TrainingRun
        fields = ["id", "model", "recipe", "config", "seed", "code_version", "datasets", "started_at", "finished_at"]


class TrainingRunListApi(APIView):
    permission_classes = [RegistryAccess]
    parser_classes = [JSONParser]

    @extend_schema(request=TrainingRunIn, responses={201: TrainingRunOut})
    def post(self, request):
        body = TrainingRunIn(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        model = RegisteredModel.objects.filter(name=data["model"]).first()
        if model is None:
            raise ValidationFailed(f"unknown model {data['model']!r}", field="model")
        datasets = list(Dataset.objects.filter(pk__in=data["datasets"]))
        if len(datasets) != len(set(data["datasets"])):
            raise ValidationFailed("unknown dataset id", field="datasets")
        run = services.training_run_start(model=model, recipe=data["recipe"], config=data["config"],
                                          seed=data["seed"], code_version=data["code_version"], datasets=datasets)
        return Response(TrainingRunOut(run).data, status=status.HTTP_201_CREATED)


class TrainingMembershipImportApi(APIView):
    permission_classes = [HasRole.of("ml_engineer")]
    parser_classes = [RawUploadParser]
    content_negotiation_class = UploadFormatNegotiation

    @extend_schema(request={"text/csv": bytes, "application/x-ndjson": bytes},
                   parameters=[_FORMAT_PARAM, OpenApiParameter("dataset", int, required=True)],
                   responses={201: ImportOut})
    def post(self, request, run_id: int):
        run = get_object_or_404(TrainingRun, pk=run_id)
        dataset_id = request.query_params.get("dataset", "")
        if not (dataset_id.isascii() and dataset_id.isdigit()):  # "١".isdigit() too
            raise ValidationFailed("dataset (an id) is required as a query parameter", field="dataset")
        dataset = Dataset.objects.filter(pk=int(dataset_id)).first()
        if dataset is None:
            raise NotFound(f"no dataset {dataset_id}", field="dataset")
        fmt = _upload_format(request)
        result = importing.training_membership_import_file(run=run, dataset=dataset, source=request.stream, fmt=fmt)
        return Response(ImportOut(result).data, status=status.HTTP_201_CREATED)


class ModelVersionOut(serializers.ModelSerializer):
    class Meta:
        model = ModelVersion
        fields = ["id", "version", "parent", "status", "artifact_sha256", "training_run", "guarantee_class",
                  "dp_epsilon", "dp_delta", "created_at"]


class RegisteredModelOut(serializers.ModelSerializer):
    versions = ModelVersionOut(many=True, read_only=True)

    class Meta:
        model = RegisteredModel
        fields = ["id", "name", "task", "training_recipe", "unlearning_policy", "s3t_kept_data_floor", "created_at",
                  "versions"]


class RegisteredModelIn(StrictSerializer):
    name = serializers.CharField(max_length=200)
    task = serializers.ChoiceField(choices=Task.choices)
    training_recipe = serializers.CharField(max_length=50)
    architecture = serializers.DictField(required=False, default=dict,
                                         help_text="{name, config}: the model's family reads it (see README, "
                                                   "'Bring your own model')")
    unlearning_policy = serializers.DictField(required=False, default=dict)
    s3t_kept_data_floor = serializers.FloatField(required=False, allow_null=True, default=None)


class RegisteredModelListApi(APIView):
    permission_classes = [RegistryAccess]
    parser_classes = [JSONParser]

    @extend_schema(responses=RegisteredModelOut(many=True))
    def get(self, request):
        models = RegisteredModel.objects.prefetch_related("versions").order_by("name")
        return Response(RegisteredModelOut(models, many=True).data)

    @extend_schema(request=RegisteredModelIn, responses={201: RegisteredModelOut})
    def post(self, request):
        """Register a model (its family through ``architecture``); versions come by training or upload."""
        body = RegisteredModelIn(data=request.data)
        body.is_valid(raise_exception=True)
        model = services.registered_model_create(**body.validated_data)
        return Response(RegisteredModelOut(model).data, status=status.HTTP_201_CREATED)
