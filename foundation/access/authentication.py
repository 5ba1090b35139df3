"""Token authentication with hashed tokens, and role permissions.

Clients send ``Authorization: Bearer <token>``. Tokens are stored only as SHA-256 hashes
(DRF's built-in authtoken keeps them in plain text). ``request.user`` becomes the ApiToken: it acts
with the token's role; a token bound to a user also names the person who holds it.
"""

from __future__ import annotations

import hashlib
import secrets

from django.contrib.auth import get_user_model
from django.utils import timezone
from rest_framework import authentication, exceptions, permissions

from foundation.access.models import ApiToken, Role
from foundation.errors import ValidationFailed

TOKEN_PREFIX = "dpt_"


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def api_token_create(*, name: str, role: str, user: str | None = None) -> tuple[ApiToken, str]:
    """Create a client; returns the row and the token (shown once, never stored). ``user``: the
    username of the person who holds the token (an active user), or None for a service client
    (the intake web form, the serving side), which no decision that needs a person accepts.
    ValidationFailed for an unknown role, or a user who does not exist or is inactive."""
    if role not in Role.values:
        raise ValidationFailed(f"role must be one of {', '.join(Role.values)}", field="role")
    holder = _token_holder(user, role) if user is not None else None
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken.objects.create(name=name, role=role, user=holder, token_hash=_hash(token), prefix=token[:10])
    return row, token


def _token_holder(username: str, role: str):
    users = get_user_model()
    holder = users.objects.filter(**{users.USERNAME_FIELD: username}).first()
    if holder is None:
        raise ValidationFailed(f"there is no user {username!r} to hold the token: create the user first "
                               "(python manage.py create_staff_user, or the admin's Users page)", field="user")
    if not holder.is_active:
        raise ValidationFailed(f"user {username!r} is inactive: a token held by them would not work", field="user")
    if not holds_role(holder, role):
        raise ValidationFailed(f"user {username!r} is not in the {role} group: a {role} token held by them would act "
                               f"with a role they do not have (add them to the group in the admin first)", field="user")
    return holder


def holds_role(user, role: str) -> bool:
    """Whether ``user`` has ``role`` as a person: a superuser, or a member of the group of that name
    (the admin's groups, ``manage.py setup_roles``). A token bound to a user acts with its role only
    while they do."""
    return bool(user.is_superuser or user.groups.filter(name=role).exists())


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
        client = (ApiToken.objects.select_related("user")
                  .filter(token_hash=_hash(token), revoked_at__isnull=True).first())
        if client is None:
            raise exceptions.AuthenticationFailed("invalid or revoked token")
        if client.user is not None and not client.user.is_active:  # the person left: their tokens go with them
            raise exceptions.AuthenticationFailed("this token's user is inactive")
        if client.user is not None and not holds_role(client.user, client.role):  # the person changed roles
            raise exceptions.AuthenticationFailed(f"this token's user is no longer in the {client.role} group")
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
