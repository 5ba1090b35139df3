"""REST API for concept requests ("stop using attribute X"): validate, call the service, serialise.

The request is then read, approved, cancelled like any other (``/api/v1/deletion-requests/<id>/...``).
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from deletion.apis import MAX_IDEMPOTENCY_KEY, DeletionRequestOut, _plain
from deletion.concept_requests import concept_request_create
from deletion.models import Jurisdiction
from deletion.throttling import IntakeThrottle
from foundation.access.authentication import HasRole
from foundation.errors import ValidationFailed
from models_registry.apis import StrictSerializer
from workers.concept_layers import MAX_LABELS


class ConceptModelIn(StrictSerializer):
    model = serializers.CharField(max_length=200)
    version = serializers.IntegerField(required=False, min_value=1, help_text=(
        "the version to erase the attribute from; the one serving (else the newest kept one) when left out"))
    layer = serializers.CharField(required=False, max_length=200, help_text=(
        "the module whose output is erased (model.get_submodule's name); the last hidden activation of the "
        "platform's own architectures when left out"))


class AttributeLabelsField(serializers.DictField):
    """``{record key: integer value}``, at most MAX_LABELS entries."""

    def __init__(self, **kwargs):
        super().__init__(child=serializers.IntegerField(min_value=-(2**31), max_value=2**31 - 1), **kwargs)

    def to_internal_value(self, data):
        if isinstance(data, dict) and len(data) > MAX_LABELS:
            raise serializers.ValidationError(f"at most {MAX_LABELS:,} labelled records, got {len(data):,}")
        if isinstance(data, dict) and any(not 0 < len(str(key)) <= 200 or "\x00" in str(key) for key in data):
            raise serializers.ValidationError("record keys are 1 to 200 characters, without NUL")
        return super().to_internal_value(data)


class ConceptRequestIn(StrictSerializer):
    attribute = serializers.CharField(max_length=200, help_text="the attribute in words, e.g. 'digit parity'")
    dataset = serializers.CharField(max_length=260, help_text="the models' training dataset, name@version")
    labels = AttributeLabelsField(help_text=(
        "the attribute's value (an integer) for each labelled record, by record key of the dataset (any split); "
        "at least two values, each on at least 20 records. Two thirds fit the eraser, the rest are probed"))
    models = ConceptModelIn(many=True, min_length=1, max_length=50)
    jurisdiction = serializers.ChoiceField(Jurisdiction.choices, help_text="the law the company works under")
    channel = serializers.CharField(max_length=50)
    reason = serializers.CharField(required=False, max_length=5000, default="")
    # No default here: a body without it keeps the fingerprint it had before the choice existed (idempotency).
    method = serializers.CharField(required=False, max_length=50, help_text=(
        "the concept method: leace (default; holds against linear probes only) or pef_coupling (holds against "
        "non-linear probes too, but the served model needs the attribute of every input at inference)"))
    seed = serializers.IntegerField(required=False, min_value=0, max_value=2**31 - 1, default=0, help_text=(
        "splits the labelled records into the eraser's and the probes' (and seeds the probes)"))


class ConceptRequestListApi(APIView):
    """File a concept request: the named models stop using an attribute (LEACE or the PEF-style coupling,
    class concept_erased).
    It names no person and erases no one's data; it comes back planned (SCOPED), for a DPO to approve."""

    permission_classes = [HasRole.of("intake", "dpo")]
    throttle_classes = [IntakeThrottle]
    throttle_scope = "intake"

    @extend_schema(parameters=[OpenApiParameter("Idempotency-Key", str, OpenApiParameter.HEADER, required=False)],
                   request=ConceptRequestIn, responses={201: DeletionRequestOut, 200: DeletionRequestOut})
    def post(self, request):
        key = request.headers.get("Idempotency-Key", "")
        if len(key) > MAX_IDEMPOTENCY_KEY:
            raise ValidationFailed(f"Idempotency-Key is longer than {MAX_IDEMPOTENCY_KEY} characters",
                                   field="Idempotency-Key")
        body = ConceptRequestIn(data=request.data)
        body.is_valid(raise_exception=True)
        created_request, created = concept_request_create(client=request.user, body=_plain(body.validated_data),
                                                          idempotency_key=key)
        out = DeletionRequestOut(created_request, context={"detail": True}).data
        return Response(out, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)
