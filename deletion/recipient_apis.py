"""Recipients of model copies (GDPR Art. 19): a DPO or an ML engineer registers who holds a copy of
a model version and where they are told of erasures (a signed webhook, see deletion.notices)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from deletion.models import ModelRecipient
from deletion.notices import model_recipient_register
from deletion.transitions import actor_name
from foundation.access.authentication import HasRole
from foundation.errors import NotFound
from models_registry.apis import StrictSerializer
from models_registry.models import ModelVersion


class ModelRecipientIn(StrictSerializer):
    model = serializers.CharField(max_length=200, help_text="the registered model's name")
    version = serializers.IntegerField(min_value=1, help_text="the version whose copy the recipient holds")
    name = serializers.CharField(max_length=200, help_text="who the recipient is, e.g. the partner company")
    url = serializers.URLField(max_length=2000, help_text="the recipient's webhook for recipient.erasure_notice")


class ModelRecipientOut(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    model = serializers.CharField(source="model_version.model.name")
    version = serializers.IntegerField(source="model_version.version")
    endpoint_id = serializers.IntegerField()
    url = serializers.CharField(source="endpoint.url")
    active = serializers.BooleanField(source="endpoint.active")
    registered_by = serializers.CharField()
    created_at = serializers.DateTimeField()


class ModelRecipientListApi(APIView):
    permission_classes = [HasRole.of("dpo", "ml_engineer", read_only=("auditor",))]

    @extend_schema(responses=ModelRecipientOut(many=True))
    def get(self, request):
        recipients = (ModelRecipient.objects.filter(endpoint__active=True)
                      .select_related("model_version__model", "endpoint").order_by("id"))
        return Response(ModelRecipientOut(recipients, many=True).data)

    @extend_schema(request=ModelRecipientIn, responses={201: ModelRecipientOut})
    def post(self, request):
        body = ModelRecipientIn(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        version = ModelVersion.objects.filter(model__name=data["model"], version=data["version"]).first()
        if version is None:
            raise NotFound(f"no version {data['version']} of model {data['model']!r}", field="version")
        recipient, secret = model_recipient_register(actor=actor_name(request.user), client=request.user,
                                                     model_version=version, name=data["name"], url=data["url"])
        # The signing secret is shown once, to be handed to the recipient.
        return Response({**ModelRecipientOut(recipient).data, "secret": secret}, status=status.HTTP_201_CREATED)


class ModelRecipientDetailApi(APIView):
    permission_classes = [HasRole.of("dpo", "ml_engineer")]

    @extend_schema(responses={204: None})
    def delete(self, request, recipient_id: int):
        recipient = ModelRecipient.objects.filter(pk=recipient_id, endpoint__active=True).select_related(
            "endpoint").first()
        if recipient is None:
            raise NotFound("no such recipient")
        type(recipient.endpoint).objects.filter(pk=recipient.endpoint_id).update(active=False)
        return Response(status=status.HTTP_204_NO_CONTENT)
