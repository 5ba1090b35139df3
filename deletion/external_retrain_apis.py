"""The upload of an external retrain: the company's pipeline POSTs the version it retrained to the
URL of its signed job, authorised by the job's upload token alone (``Authorization: Upload <token>``),
not by an API token. See deletion.external_retrain."""

from __future__ import annotations

from dataclasses import dataclass

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import authentication, exceptions, permissions, serializers, status
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from deletion.external_retrain import (
    UploadTokenRefused,
    external_retrain_authenticate,
    external_retrain_state,
    external_retrain_upload,
)
from foundation.access.authentication import HashedTokenAuthentication
from foundation.errors import ValidationFailed

SCHEME = "Upload"


@dataclass(frozen=True)
class UploadGrant:
    """What an upload token authorises: one upload to one external retrain."""

    retrain_id: str
    token: str


@dataclass(frozen=True)
class CompanyPipeline:
    """The caller an upload token authenticates (``request.user``): the company's pipeline."""

    attested_by: str
    is_authenticated: bool = True


class UploadTokenAuthentication(authentication.BaseAuthentication):
    """``Authorization: Upload <token>`` for the retrain in the URL. A token that does not open it
    is refused with the reason: 401 (forged, expired) or 403 (used before, the retrain closed)."""

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != SCHEME.lower().encode():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed(f"Authorization header must be '{SCHEME} <token>'",
                                                  code="upload_token_invalid")
        try:
            token = header[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("the upload token is not valid text", code="upload_token_invalid") from None
        retrain_id = (request.parser_context or {}).get("kwargs", {}).get("retrain_id")
        try:
            retrain = external_retrain_authenticate(public_id=retrain_id, token=token)
        except UploadTokenRefused as exc:
            raise _api_error(exc) from None
        return CompanyPipeline(attested_by=retrain.attested_by), UploadGrant(str(retrain.public_id), token)

    def authenticate_header(self, request) -> str:
        return f'{SCHEME} realm="external retrain"'


def _api_error(exc: UploadTokenRefused) -> exceptions.APIException:
    if exc.status == 403:
        return exceptions.PermissionDenied(exc.message, code=exc.code)
    return exceptions.AuthenticationFailed(exc.message, code=exc.code)


class HoldsUploadToken(permissions.BasePermission):
    """Only the upload token opens the upload: an API token, of any role, does not."""

    message = (f"an API token does not authorise this upload: send the upload token of the signed job "
               f"(Authorization: {SCHEME} <token>)")
    code = "upload_token_required"

    def has_permission(self, request, view) -> bool:
        return isinstance(request.auth, UploadGrant)


class ExternalRetrainUploadApi(APIView):
    """POST (multipart/form-data) the version the company's pipeline retrained without the records:
    ``weights``, ``membership`` (JSONL, or CSV with ``membership_format=csv``), ``run`` (JSON: code_version,
    seed, config) and optionally ``reference_weights`` with ``reference_membership`` (repeated, paired by
    order). 201 with the retrain registered (its audit is queued); 409 ``erased_records_in_membership``
    naming the erased keys the declared membership still holds (the token is spent, nothing is stored,
    the request is back with the DPO); 400 for a malformed upload (nothing spent)."""

    authentication_classes = [UploadTokenAuthentication, HashedTokenAuthentication]
    permission_classes = [HoldsUploadToken]
    parser_classes = [MultiPartParser]

    def permission_denied(self, request, message=None, code=None):
        if request.authenticators and not request.successful_authenticator:
            raise exceptions.NotAuthenticated(f"send the upload token of the signed job: Authorization: {SCHEME} <token>",
                                              code="upload_token_missing")
        super().permission_denied(request, message=message, code=code)

    @extend_schema(
        request={"multipart/form-data": inline_serializer("ExternalRetrainUploadIn", {
            "weights": serializers.FileField(),
            "membership": serializers.FileField(),
            "membership_format": serializers.ChoiceField(["jsonl", "csv"], required=False),
            "run": serializers.CharField(help_text="JSON: {code_version, seed, config}"),
            "reference_weights": serializers.ListField(child=serializers.FileField(), required=False),
            "reference_membership": serializers.ListField(child=serializers.FileField(), required=False),
        })},
        responses={201: inline_serializer("ExternalRetrainOut", {
            "id": serializers.CharField(), "status": serializers.CharField(),
            "new_version_id": serializers.IntegerField(allow_null=True),
            "membership_check": serializers.DictField(), "reference_models": serializers.IntegerField()})},
    )
    def post(self, request, retrain_id):
        grant: UploadGrant = request.auth
        files = request.FILES
        weights, membership = files.get("weights"), files.get("membership")
        if weights is None or membership is None:
            raise ValidationFailed("send the new version as multipart fields 'weights' and 'membership' (and 'run')",
                                   field="weights" if weights is None else "membership")
        reference_weights = files.getlist("reference_weights")
        reference_membership = files.getlist("reference_membership")
        if len(reference_weights) != len(reference_membership):
            raise ValidationFailed(f"{len(reference_weights)} reference_weights but {len(reference_membership)} "
                                   "reference_membership: send one membership per reference model, in the same order",
                                   field="reference_membership")
        try:
            retrain = external_retrain_upload(
                public_id=grant.retrain_id, token=grant.token, weights=weights.read(), membership=membership,
                membership_format=request.data.get("membership_format") or "jsonl", run=request.data.get("run"),
                references=[(w.read(), m) for w, m in zip(reference_weights, reference_membership, strict=True)])
        except UploadTokenRefused as exc:  # spent or expired meanwhile (a concurrent upload won)
            raise _api_error(exc) from None
        state = external_retrain_state(retrain)
        return Response(state, status=status.HTTP_201_CREATED)


try:  # describe the scheme in the OpenAPI schema
    from drf_spectacular.extensions import OpenApiAuthenticationExtension

    class UploadTokenScheme(OpenApiAuthenticationExtension):
        target_class = "deletion.external_retrain_apis.UploadTokenAuthentication"
        name = "uploadToken"

        def get_security_definition(self, auto_schema):
            return {"type": "apiKey", "in": "header", "name": "Authorization",
                    "description": f"'{SCHEME} <token>': the upload token of an external-retrain job (single use)"}
except ImportError:  # pragma: no cover
    pass
