"""Token authentication with hashed tokens, and role permissions.

Clients send ``Authorization: Bearer <token>``. Tokens are stored only as SHA-256 hashes
(DRF's built-in authtoken keeps them in plain text). ``request.user`` becomes the ApiToken.
"""

from __future__ import annotations

import hashlib
import secrets

from django.utils import timezone
from rest_framework import authentication, exceptions, permissions

from foundation.access.models import ApiToken, Role
from foundation.errors import ValidationFailed

TOKEN_PREFIX = "dpt_"


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def api_token_create(*, name: str, role: str) -> tuple[ApiToken, str]:
    """Create a client; returns the row and the token (shown once, never stored)."""
    if role not in Role.values:
        raise ValidationFailed(f"role must be one of {', '.join(Role.values)}", field="role")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken.objects.create(name=name, role=role, token_hash=_hash(token), prefix=token[:10])
    return row, token


def api_token_revoke(*, token: ApiToken) -> None:
    token.revoked_at = timezone.now()
    token.save(update_fields=["revoked_at"])


class HashedTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() not in (b"bearer", b"token"):
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Authorization header must be 'Bearer <token>'")
        try:
            token = header[1].decode()
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("token is not valid text") from None
        client = ApiToken.objects.filter(token_hash=_hash(token), revoked_at__isnull=True).first()
        if client is None:
            raise exceptions.AuthenticationFailed("invalid or revoked token")
        now = timezone.now()
        if client.last_used_at is None or (now - client.last_used_at).total_seconds() > 60:
            ApiToken.objects.filter(pk=client.pk).update(last_used_at=now)  # at most once a minute
        return client, client

    def authenticate_header(self, request) -> str:
        return self.keyword


def role_of(request) -> str | None:
    """The caller's role: an API token's, or a staff user's from their groups (admin session)."""
    user = request.user
    if isinstance(user, ApiToken):
        return user.role
    if getattr(user, "is_authenticated", False):
        if user.is_superuser:
            return Role.DPO
        groups = set(user.groups.values_list("name", flat=True))
        for role in (Role.DPO, Role.ML_ENGINEER, Role.AUDITOR, Role.INTAKE):
            if role in groups:
                return role
    return None


class HasRole(permissions.BasePermission):
    """Use as ``HasRole.of("dpo", "auditor")``; read-only roles may be given for safe methods."""

    allowed: tuple[str, ...] = ()
    read_only: tuple[str, ...] = ()

    @classmethod
    def of(cls, *roles: str, read_only: tuple[str, ...] = ()) -> type[HasRole]:
        return type(f"HasRole_{'_'.join(roles)}", (cls,), {"allowed": roles, "read_only": read_only})

    def has_permission(self, request, view) -> bool:
        role = role_of(request)
        if role in self.allowed:
            return True
        return role in self.read_only and request.method in permissions.SAFE_METHODS


try:  # describe the scheme in the OpenAPI schema (drf-spectacular is installed with the web side)
    from drf_spectacular.extensions import OpenApiAuthenticationExtension

    class HashedTokenScheme(OpenApiAuthenticationExtension):
        target_class = "foundation.access.authentication.HashedTokenAuthentication"
        name = "bearerToken"

        def get_security_definition(self, auto_schema):
            return {"type": "http", "scheme": "bearer", "description": "API token (create_api_token)"}
except ImportError:  # pragma: no cover
    pass
