"""Training runs and shadow-model sets started over the REST API, and the jobs that run them: read
their progress, cancel them. Starting a training run is an ML engineer's; shadow models, the
reference the audits need, an auditor may ask for too (workers.services.JOB_STARTERS)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import JSONParser
from rest_framework.response import Response
from rest_framework.views import APIView

from foundation.access.authentication import HasRole, role_of
from foundation.errors import NotFound, PermissionDenied, ValidationFailed
from models_registry.apis import StrictSerializer
from models_registry.models import Dataset, ModelVersion, RegisteredModel
from workers.canaries import MAX_CANARIES
from workers.models import Job, JobKind, JobStatus
from workers.selectors import job_state, job_with_state
from workers.services import (
    JOB_STARTERS,
    REQUEST_JOB_CANCELLERS,
    model_train,
    shadow_models_train,
    started_job_cancel,
)


class TrainingJobIn(StrictSerializer):
    model = serializers.CharField(max_length=200, help_text="The registered model's name.")
    dataset = serializers.IntegerField(help_text="The registered dataset's id.")
    recipe = serializers.CharField(max_length=50, required=False,
                                   help_text="The model's registered recipe (the default; no other is accepted).")
    recipe_config = serializers.JSONField(required=False, default=dict,
                                          help_text="The recipe's configuration; architecture defaults to the "
                                          "model's registered one.")
    split = serializers.CharField(max_length=20, default="train")
    parent_version = serializers.IntegerField(
        required=False, help_text="For a recipe that derives a model (distill, finetune): the id of the version it is "
        "distilled or fine-tuned from; the new version records that lineage.")
    canaries = serializers.IntegerField(
        required=False, default=0, min_value=0, max_value=MAX_CANARIES, help_text="How many canaries to plant (plain, sisa, s3t, dp "
        "classifiers on tabular or image data): mislabelled synthetic records drawn from the dataset's test split "
        "with the run's seed, recorded as canaries; the audits show they detect memorisation in this model by "
        "them. Nobody's data: no request, record count or export includes them.")


class ShadowJobIn(StrictSerializer):
    model = serializers.CharField(max_length=200, help_text="The registered model's name.")
    version = serializers.IntegerField(help_text="The version number of the trained version.")
    count = serializers.IntegerField(default=32, help_text="At least 2, in complementary pairs; an approximate "
                                     "verdict needs every record OUT in 16 shadows, which 32 give.")


class VersionRefOut(serializers.Serializer):
    id = serializers.IntegerField()
    model = serializers.CharField()
    version = serializers.IntegerField()


class JobProgressOut(serializers.Serializer):
    stage = serializers.CharField()
    percent = serializers.FloatField()
    fraction = serializers.FloatField()


class JobOut(serializers.Serializer):
    """A job: ``status`` pending, running, succeeded, failed (``error``) or cancelled; a finished
    training job names the version it made (``result_version``)."""

    id = serializers.IntegerField()
    url = serializers.SerializerMethodField()
    kind = serializers.CharField()
    status = serializers.CharField()
    model = serializers.CharField(allow_null=True)
    method = serializers.CharField()
    dataset = serializers.IntegerField(allow_null=True)
    source_version = VersionRefOut(allow_null=True)
    count = serializers.IntegerField(allow_null=True)
    progress = JobProgressOut()
    cancel_requested = serializers.BooleanField()
    error = serializers.CharField()
    result_version = VersionRefOut(allow_null=True)
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)

    def get_url(self, state) -> str:
        return f"/api/v1/jobs/{state['id']}/"


def _job_response(job, code: int = status.HTTP_202_ACCEPTED) -> Response:
    body = JobOut(job_state(job=job_with_state(job_id=job.id))).data
    return Response(body, status=code, headers={"Location": body["url"]})


def _job(job_id: int) -> Job:
    job = job_with_state(job_id=job_id)
    if job is None:
        raise NotFound(f"no job has id {job_id}")
    return job


def _model(name: str) -> RegisteredModel:
    model = RegisteredModel.objects.filter(name=name).first()
    if model is None:
        raise ValidationFailed(f"no registered model is named {name!r}", field="model")
    return model


class TrainingJobListApi(APIView):
    """POST: queue a training run of a registered model on a registered dataset (202 with the job)."""

    permission_classes = [HasRole.of(*JOB_STARTERS[JobKind.TRAIN])]
    parser_classes = [JSONParser]

    @extend_schema(request=TrainingJobIn, responses={202: JobOut})
    def post(self, request):
        body = TrainingJobIn(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        model = _model(data["model"])
        dataset = Dataset.objects.filter(pk=data["dataset"]).first()
        if dataset is None:
            raise ValidationFailed(f"no registered dataset has id {data['dataset']}", field="dataset")
        parent = None
        if "parent_version" in data:
            parent = ModelVersion.objects.select_related("model").filter(pk=data["parent_version"]).first()
            if parent is None:
                raise ValidationFailed(f"no model version has id {data['parent_version']}", field="parent_version")
        job = model_train(model=model, dataset=dataset, recipe=data.get("recipe"),
                          recipe_config=data["recipe_config"], split=data["split"], parent_version=parent,
                          canaries=data["canaries"])
        return _job_response(job)


class ShadowJobListApi(APIView):
    """POST: queue a set of shadow models of a trained version (202 with the job)."""

    permission_classes = [HasRole.of(*JOB_STARTERS[JobKind.SHADOW])]
    parser_classes = [JSONParser]

    @extend_schema(request=ShadowJobIn, responses={202: JobOut})
    def post(self, request):
        body = ShadowJobIn(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        model = _model(data["model"])
        version = ModelVersion.objects.select_related("model").filter(model=model, version=data["version"]).first()
        if version is None:
            raise ValidationFailed(f"model {model.name!r} has no version {data['version']}", field="version")
        return _job_response(shadow_models_train(version=version, count=data["count"]))


class JobDetailApi(APIView):
    """A job of any kind: status, progress, error, the version it made."""

    permission_classes = [HasRole.of("ml_engineer", read_only=("dpo", "auditor"))]

    @extend_schema(responses={200: JobOut})
    def get(self, request, job_id: int):
        return Response(JobOut(job_state(job=_job(job_id))).data)


class JobCancelApi(APIView):
    """POST: cancel a training or shadow-model job, or a deletion request's unlearning job: 200 when
    it was pending (cancelled now), 202 when it runs (it stops at its next progress report). 409 for
    a job that has ended, or a request's audit or report job. Who may start a kind of job may cancel
    it; a request's unlearning job, the DPO (the request then waits for the DPO's decision)."""

    permission_classes = [HasRole.of(*sorted({role for roles in JOB_STARTERS.values() for role in roles}
                                             | set(REQUEST_JOB_CANCELLERS)))]

    @extend_schema(request=None, responses={200: JobOut, 202: JobOut})
    def post(self, request, job_id: int):
        job = _job(job_id)
        role = role_of(request)
        allowed = REQUEST_JOB_CANCELLERS if job.deletion_request_id else JOB_STARTERS.get(job.kind, ())
        if role not in allowed:
            raise PermissionDenied(f"the {role} role may not cancel this {job.kind} job")
        job = started_job_cancel(job=job)
        return _job_response(job, status.HTTP_200_OK if job.status == JobStatus.CANCELLED else status.HTTP_202_ACCEPTED)
