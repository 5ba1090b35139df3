"""Deletion-request REST API v1. Views validate, call one service, serialise."""

from __future__ import annotations

import logging

from django.db.models import Q
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.response import Response
from rest_framework.views import APIView

from deletion import deadlines, decisions, intake
from deletion.concept_requests import concept_entry
from deletion.external_retrain import external_retrain_latest, external_retrain_state
from deletion.models import (
    ENDED_STATES,
    DeletionRequest,
    Jurisdiction,
    LegalGround,
    RejectionGround,
    RequestStatus,
)
from deletion.selectors import (
    DECISIONS,
    deployments_pending,
    outcome_deployment_warnings,
    outcome_utility,
    request_timeline,
    requests_awaiting,
)
from deletion.throttling import IntakeThrottle
from deletion.webhooks import webhook_register
from foundation.access.authentication import HasRole, role_of
from foundation.access.models import ApiToken
from foundation.errors import NotFound, ValidationFailed
from models_registry.apis import StrictSerializer
from models_registry.models import VersionStatus

logger = logging.getLogger(__name__)

MAX_IDEMPOTENCY_KEY = 200


class IdentifiersIn(StrictSerializer):
    email = serializers.CharField(required=False, max_length=320)
    customer_id = serializers.CharField(required=False, max_length=200)
    phone = serializers.CharField(required=False, max_length=40)


class RecordKeyIn(StrictSerializer):
    dataset = serializers.CharField(max_length=260)
    record_key = serializers.CharField(max_length=200)


class VerificationIn(StrictSerializer):
    method = serializers.CharField(max_length=100)
    verified_at = serializers.DateTimeField()
    verifier = serializers.CharField(max_length=200)


class ContactIn(StrictSerializer):
    # Checked by the intake service (deletion.notices), which names the field in its error.
    email = serializers.CharField(required=False, max_length=254, help_text=(
        "where the person is told of the receipt, an extension, a refusal and the completion; kept only "
        "encrypted, and destroyed after the last notice"))
    handoff = serializers.ChoiceField(["webhook"], required=False, help_text=(
        "webhook: the notices go, written out, to this client's webhooks (event notice.<kind>) for its own "
        "request system to pass on"))


class DeletionRequestIn(StrictSerializer):
    identifiers = IdentifiersIn(required=False)
    record_keys = RecordKeyIn(many=True, required=False, max_length=1000)
    jurisdiction = serializers.ChoiceField(Jurisdiction.choices)
    legal_ground = serializers.ChoiceField(LegalGround.choices)
    channel = serializers.CharField(max_length=50)
    verification = VerificationIn(required=False)
    contact = ContactIn(required=False)
    language = serializers.CharField(required=False, max_length=35, help_text=(
        "the language the notices are written in (e.g. en, de); English where it has no translation"))

    def validate(self, data):
        if not data.get("identifiers") and not data.get("record_keys"):
            raise serializers.ValidationError({"identifiers": ["give at least one identifier or record key"]})
        return data


class OutcomeOut(serializers.Serializer):
    model_version_id = serializers.IntegerField()
    model = serializers.CharField(source="model_version.model.name")
    version = serializers.IntegerField(source="model_version.version")
    status = serializers.CharField()
    method = serializers.CharField()
    guarantee_class = serializers.CharField()
    estimated_seconds = serializers.FloatField(allow_null=True)
    new_version_id = serializers.IntegerField(allow_null=True)
    verdict = serializers.CharField()
    hold_reason = serializers.CharField()
    job = serializers.SerializerMethodField()
    earlier_attempts = serializers.SerializerMethodField()
    scope_additions_offered = serializers.SerializerMethodField(
        help_text="[{record_key, of_erased_record, why}]: records of the same person that the investigation of a "
                  "sanity-check flag found in the kept data (an exact copy, or a near-duplicate in the model's "
                  "representation); the DPO may add them to the scope with a new request")
    risk_acceptance = serializers.JSONField(
        help_text="{reason, proposed_by, proposed_by_person, proposed_at, confirmed_by?, confirmed_by_person?, "
                  "confirmed_at?}: the residual risk of a result that did not pass, accepted by two DPO users, two "
                  "different people ({} when none); *_by is the path (user:alice, or user:alice via api:<token>(dpo)), "
                  "*_by_person the person (absent in acceptances recorded before tokens named their users)")
    external_retrain = serializers.SerializerMethodField(
        help_text="{id, status, attested_by, sent_at, expires_at, uploaded_at, new_version_id, membership_check, "
                  "refusal, ...}: the latest job sent to the company's own pipeline for this outcome (null when none)")

    def get_external_retrain(self, outcome) -> dict | None:
        return external_retrain_state(external_retrain_latest(outcome))

    def get_job(self, outcome) -> dict | None:
        job = outcome.job
        if job is None:
            return None
        return {"id": job.id, "status": job.status, "stage": job.progress_stage, "percent": job.progress_percent,
                "wall_seconds": job.wall_seconds, "device": job.device}

    def get_scope_additions_offered(self, outcome) -> list[dict]:
        return list(((outcome.audit or {}).get("flag_investigation") or {}).get("scope_additions", []))

    def get_earlier_attempts(self, outcome) -> list[dict]:
        """Attempts whose audit failed and which were escalated (their audits are in the report)."""
        keys = ("method", "guarantee_class", "job_id", "new_version_id", "verdict", "escalated_at", "escalated_by")
        return [{k: attempt.get(k) for k in keys} for attempt in outcome.attempts]


class DeletionRequestOut(serializers.Serializer):
    id = serializers.UUIDField(source="public_id")
    kind = serializers.CharField(help_text="erasure (a person's data) or concept (an attribute, no person)")
    status = serializers.CharField()
    jurisdiction = serializers.CharField()
    legal_ground = serializers.CharField()
    channel = serializers.CharField()
    subject = serializers.SerializerMethodField()
    received_at = serializers.DateTimeField()
    due_at = serializers.DateTimeField()
    days_left = serializers.SerializerMethodField()
    overdue = serializers.SerializerMethodField()
    extended_at = serializers.DateTimeField(allow_null=True)
    extension_reason = serializers.CharField()
    scope = serializers.JSONField()
    plan = serializers.SerializerMethodField()
    outcomes = OutcomeOut(many=True, source="outcomes.all")
    rejection_ground = serializers.CharField()
    decision_reason = serializers.CharField()
    completed_at = serializers.DateTimeField(allow_null=True)
    timeline = serializers.SerializerMethodField()
    concept = serializers.SerializerMethodField(
        help_text="a concept request's {attribute, dataset, labelled_records, values, models, reason, holds_against, "
                  "not_a_persons_erasure} (never the labels); null for an erasure request")

    report = serializers.SerializerMethodField(
        help_text="the signed report once there is one: {id, url, pdf_url, created_at} (the reports API decides who "
                  "may read it); null before")

    def get_concept(self, obj) -> dict | None:
        return concept_entry(obj)

    @extend_schema_field(serializers.DictField(allow_null=True))
    def get_report(self, obj) -> dict | None:
        if obj.status not in (RequestStatus.COMPLETED, RequestStatus.CLOSED_RISK_ACCEPTED):
            return None  # the report job signs it as the request ends: no query before
        # Prefetched with the request (_visible_requests): no query per request of a list.
        report = max(obj.reports.all(), key=lambda r: (r.created_at, r.id), default=None)
        if report is None:
            return None
        return {"id": report.id, "url": f"/api/v1/reports/{report.id}/", "pdf_url": f"/api/v1/reports/{report.id}/pdf/",
                "created_at": report.created_at.isoformat()}

    def get_subject(self, obj) -> str | None:
        return obj.subject.reference if obj.subject else None

    def get_days_left(self, obj) -> int:
        return deadlines.days_left(obj)

    def get_overdue(self, obj) -> bool:
        return obj.status not in ENDED_STATES and obj.due_at < timezone.now()

    def get_plan(self, obj) -> list[dict]:
        return [{k: v for k, v in step.items() if k != "record_ids"} for step in obj.plan]

    def get_timeline(self, obj) -> list[dict]:
        if not self.context.get("detail"):
            return []
        known = getattr(obj, "known_timeline", None)  # a request just created knows its one event
        return known if known is not None else request_timeline(request=obj)


def _visible_requests(request):
    queryset = DeletionRequest.objects.select_related("subject").prefetch_related(
        "outcomes__model_version__model", "outcomes__job", "reports")
    if role_of(request) == "intake":
        queryset = queryset.filter(created_by=request.user)  # intake sees only its own
    return queryset


def _get_visible(request, request_id) -> DeletionRequest:
    found = _visible_requests(request).filter(public_id=request_id).first()
    if found is None:  # another client's request is a 404 too: its existence is not leaked
        raise NotFound("no such deletion request")
    return found


class DeletionRequestListApi(APIView):
    permission_classes = [HasRole.of("intake", "dpo", read_only=("auditor",))]
    throttle_classes = [IntakeThrottle]
    throttle_scope = "intake"

    @extend_schema(
        parameters=[
            OpenApiParameter("Idempotency-Key", str, OpenApiParameter.HEADER, required=False),
        ],
        request=DeletionRequestIn, responses={201: DeletionRequestOut, 200: DeletionRequestOut},
    )
    def post(self, request):
        key = request.headers.get("Idempotency-Key", "")
        if len(key) > MAX_IDEMPOTENCY_KEY:
            raise ValidationFailed(f"Idempotency-Key is longer than {MAX_IDEMPOTENCY_KEY} characters",
                                   field="Idempotency-Key")
        body = DeletionRequestIn(data=request.data)
        body.is_valid(raise_exception=True)
        data = _plain(body.validated_data)
        created_request, created = intake.deletion_request_create(client=request.user, body=data,
                                                                    idempotency_key=key)
        out = DeletionRequestOut(created_request, context={"detail": True}).data
        return Response(out, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    @extend_schema(
        parameters=[
            OpenApiParameter("status", str, enum=RequestStatus.values),
            OpenApiParameter("overdue", bool),
            OpenApiParameter("due_before", str, description="ISO date-time"),
            OpenApiParameter("model", str, description="registered model name"),
            OpenApiParameter("awaiting", str, enum=list(DECISIONS),
                             description="open requests waiting for this decision"),
        ],
        responses=DeletionRequestOut(many=True),
    )
    def get(self, request):
        queryset = _visible_requests(request)
        params = request.query_params
        if "status" in params:
            if params["status"] not in RequestStatus.values:
                raise ValidationFailed(f"status must be one of {', '.join(RequestStatus.values)}", field="status")
            queryset = queryset.filter(status=params["status"])
        if "overdue" in params:
            if params["overdue"] not in ("true", "false"):
                raise ValidationFailed("overdue must be true or false", field="overdue")
            late = Q(due_at__lt=timezone.now()) & ~Q(status__in=ENDED_STATES)
            queryset = queryset.filter(late) if params["overdue"] == "true" else queryset.exclude(late)
        if "due_before" in params:
            moment = serializers.DateTimeField().to_internal_value(params["due_before"]) if _is_datetime(
                params["due_before"]) else None
            if moment is None:
                raise ValidationFailed("due_before must be an ISO date-time", field="due_before")
            queryset = queryset.filter(due_at__lt=moment)
        if "model" in params:
            queryset = queryset.filter(outcomes__model_version__model__name=params["model"]).distinct()
        if "awaiting" in params:
            if params["awaiting"] not in DECISIONS:
                raise ValidationFailed(f"awaiting must be one of {', '.join(DECISIONS)}", field="awaiting")
            queryset = queryset.filter(pk__in=requests_awaiting(decision=params["awaiting"]).values("pk"))
        paginator = LimitOffsetPagination()
        page = paginator.paginate_queryset(queryset.order_by("due_at"), request, view=self)
        return paginator.get_paginated_response(DeletionRequestOut(page, many=True).data)


def _is_datetime(text: str) -> bool:
    try:
        serializers.DateTimeField().to_internal_value(text)
        return True
    except serializers.ValidationError:
        return False


def _plain(value):
    """Validated data (OrderedDicts, datetimes) as JSON-like plain values."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


class DeletionRequestDetailApi(APIView):
    permission_classes = [HasRole.of("intake", "dpo", "auditor")]

    @extend_schema(responses=DeletionRequestOut)
    def get(self, request, request_id):
        return Response(DeletionRequestOut(_get_visible(request, request_id), context={"detail": True}).data)


class ReasonIn(StrictSerializer):
    reason = serializers.CharField(max_length=5000, required=False, allow_blank=True, default="")


class RejectIn(StrictSerializer):
    ground = serializers.ChoiceField(RejectionGround.choices)
    reason = serializers.CharField(max_length=5000)


class ExtendIn(StrictSerializer):
    reason = serializers.CharField(max_length=5000)
    months = serializers.IntegerField(required=False, min_value=1, max_value=2)
    days = serializers.IntegerField(required=False, min_value=1, max_value=45)


class HoldIn(StrictSerializer):
    model_version_id = serializers.IntegerField(min_value=1)
    reason = serializers.CharField(max_length=5000)


class MethodChoiceIn(StrictSerializer):
    model_version_id = serializers.IntegerField(min_value=1)
    method = serializers.CharField(max_length=100)


class ApproveIn(StrictSerializer):
    legal_holds = HoldIn(many=True, required=False, max_length=500)
    # A method a plan step offers in its ``alternatives`` instead of its own (e.g. s3t_retrain).
    methods = MethodChoiceIn(many=True, required=False, max_length=500)


class ConfirmIn(StrictSerializer):
    new_version_id = serializers.IntegerField(min_value=1)


class WithdrawIn(StrictSerializer):
    model_version_id = serializers.IntegerField(min_value=1)
    reason = serializers.CharField(max_length=5000)


def _action(serializer_class, call, *, roles=("dpo",)):
    class ActionApi(APIView):
        permission_classes = [HasRole.of(*roles)]

        @extend_schema(request=serializer_class, responses=DeletionRequestOut)
        def post(self, request, request_id):
            target = _get_visible(request, request_id)
            body = serializer_class(data=request.data)
            body.is_valid(raise_exception=True)
            result = call(target, request.user, _plain(body.validated_data))
            return Response(DeletionRequestOut(result, context={"detail": True}).data)

    ActionApi.__name__ = f"{call.__name__}_api"
    return ActionApi


def _verify(target, actor, data):
    return decisions.deletion_request_verify(request=target, actor=actor, evidence=data)


def _approve(target, actor, data):
    holds = {h["model_version_id"]: h["reason"] for h in data.get("legal_holds", [])}
    methods = {m["model_version_id"]: m["method"] for m in data.get("methods", [])}
    return decisions.deletion_request_approve(request=target, actor=actor, holds=holds, methods=methods)


def _reject(target, actor, data):
    return decisions.deletion_request_reject(request=target, actor=actor, ground=data["ground"], reason=data["reason"])


def _extend(target, actor, data):
    return decisions.deletion_request_extend(request=target, actor=actor, reason=data["reason"],
                                            months=data.get("months"), days=data.get("days"))


def _cancel(target, actor, data):
    return decisions.deletion_request_cancel(request=target, actor=actor, reason=data.get("reason", ""))


def _confirm(target, actor, data):
    manual = not (isinstance(actor, ApiToken) and actor.role == "ml_engineer")
    return decisions.deployment_confirm(request=target, actor=actor, new_version_id=data["new_version_id"],
                                       manual=manual)


def _withdraw(target, actor, data):
    return decisions.model_withdraw(request=target, actor=actor, model_version_id=data["model_version_id"],
                                   reason=data["reason"])


class EscalateIn(StrictSerializer):
    model_version_id = serializers.IntegerField(min_value=1)
    method = serializers.ChoiceField(["retrain", "external_retrain"], required=False, help_text=(
        "the exact method: the company's own pipeline (external_retrain) where the model's policy declares one, "
        "else the platform's retrain (the default)"))


def _escalate(target, actor, data):
    return decisions.outcome_escalate(request=target, actor=actor, model_version_id=data["model_version_id"],
                                      method=data.get("method"))


VerifyApi = _action(VerificationIn, _verify)
EscalateApi = _action(EscalateIn, _escalate)


class AcceptRiskIn(StrictSerializer):
    model_version_id = serializers.IntegerField(min_value=1)
    reason = serializers.CharField(max_length=5000, required=False, allow_blank=True, default="")


def _accept_risk(target, actor, data):
    return decisions.outcome_risk_accept(request=target, actor=actor, model_version_id=data["model_version_id"],
                                         reason=data["reason"])


# POST twice, by two DPO users: the first records the acceptance and its reason, the second confirms. Two
# people: a token bound to no user is refused (403 person_required), the same person twice is a 409
# (second_dpo_required), whether through the admin or a token bound to them.
AcceptRiskApi = _action(AcceptRiskIn, _accept_risk)
ApproveApi = _action(ApproveIn, _approve)
RejectApi = _action(RejectIn, _reject)
ExtendApi = _action(ExtendIn, _extend)
CancelApi = _action(ReasonIn, _cancel)
ConfirmDeploymentApi = _action(ConfirmIn, _confirm, roles=("dpo", "ml_engineer"))
WithdrawApi = _action(WithdrawIn, _withdraw)


class WebhookIn(StrictSerializer):
    url = serializers.URLField(max_length=2000)


class WebhookOut(serializers.Serializer):
    id = serializers.IntegerField()
    url = serializers.CharField()
    active = serializers.BooleanField()
    created_at = serializers.DateTimeField()


class WebhookListApi(APIView):
    permission_classes = [HasRole.of("intake", "dpo", "auditor", "ml_engineer")]

    @extend_schema(responses=WebhookOut(many=True))
    def get(self, request):
        return Response(WebhookOut(request.user.webhooks.filter(active=True, recipient__isnull=True), many=True).data)

    @extend_schema(request=WebhookIn, responses={201: WebhookOut})
    def post(self, request):
        body = WebhookIn(data=request.data)
        body.is_valid(raise_exception=True)
        endpoint, secret = webhook_register(client=request.user, url=body.validated_data["url"])
        return Response({**WebhookOut(endpoint).data, "secret": secret}, status=status.HTTP_201_CREATED)


class WebhookDetailApi(APIView):
    permission_classes = [HasRole.of("intake", "dpo", "auditor", "ml_engineer")]

    @extend_schema(responses={204: None})
    def delete(self, request, webhook_id: int):
        changed = request.user.webhooks.filter(pk=webhook_id, active=True, recipient__isnull=True).update(active=False)
        if not changed:
            raise NotFound("no such webhook")
        return Response(status=status.HTTP_204_NO_CONTENT)


class PendingDeploymentOut(serializers.Serializer):
    request_id = serializers.UUIDField(source="request.public_id")
    due_at = serializers.DateTimeField(source="request.due_at")
    model = serializers.CharField(source="model_version.model.name")
    model_version_id = serializers.IntegerField()
    version = serializers.IntegerField(source="model_version.version")
    new_version_id = serializers.IntegerField()
    new_version = serializers.IntegerField(source="new_version.version")
    new_artifact_sha256 = serializers.CharField(source="new_version.artifact_sha256")
    guarantee_class = serializers.CharField()
    verdict = serializers.CharField()
    # What the new version costs in utility (the audit's utility check against the plan's declared bar),
    # and the verdict's warnings: a version can erase the records and still lose accuracy.
    utility = serializers.SerializerMethodField()
    warnings = serializers.SerializerMethodField()
    # What serves now: the versions to take out of service when the new one goes in (the scoped version
    # may be a newer one of the chain that never served, e.g. an earlier request's result not yet deployed).
    serving_versions = serializers.SerializerMethodField()
    confirm_url = serializers.SerializerMethodField()

    @extend_schema_field(serializers.ListField(child=serializers.IntegerField()))
    def get_serving_versions(self, outcome) -> list[int]:
        model = outcome.model_version.model
        serving = getattr(model, "serving", None)  # prefetched by deployments_pending
        if serving is None:
            serving = model.versions.filter(status=VersionStatus.SERVING)
        return sorted(version.version for version in serving)

    def get_confirm_url(self, outcome) -> str:
        return f"/api/v1/deletion-requests/{outcome.request.public_id}/confirm-deployment/"

    @extend_schema_field(serializers.DictField(allow_null=True))
    def get_utility(self, outcome) -> dict | None:
        return outcome_utility(outcome)

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_warnings(self, outcome) -> list[str]:
        return outcome_deployment_warnings(outcome)


class PendingDeploymentsApi(APIView):
    """What the serving side has to deploy: new versions whose audit let them through, oldest
    deadline first. Deploy the artifact, then POST its new_version_id to confirm_url."""

    permission_classes = [HasRole.of("ml_engineer", "dpo")]

    @extend_schema(responses=PendingDeploymentOut(many=True))
    def get(self, request):
        return Response(PendingDeploymentOut(deployments_pending(), many=True).data)
