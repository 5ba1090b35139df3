"""API clients and their roles."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class Role(models.TextChoices):
    INTAKE = "intake", "Intake (create requests, read its own)"
    DPO = "dpo", "Data-protection officer (everything on requests)"
    ML_ENGINEER = "ml_engineer", "ML engineer (registry)"
    AUDITOR = "auditor", "Auditor (read-only requests and reports)"


class ApiToken(models.Model):
    """An API client's token, stored only as its SHA-256 (tokens are 256-bit random, so an unsalted
    hash cannot be reversed by guessing). The token itself is shown once, at creation.

    A token is a client, not a person: ``user`` says which person holds it (a DPO's console token),
    and is empty for a service client (the intake web form, the serving side). Decisions that must
    be taken by distinct people (the two-DPO acceptance of a residual risk) count the user, never
    the token."""

    name = models.CharField(max_length=200)
    role = models.CharField(max_length=20, choices=Role.choices)
    # PROTECT: a person's tokens name them in the ledger; a person who leaves is deactivated
    # (their tokens stop working), not deleted.
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True,
                             related_name="api_tokens",
                             help_text="The person who holds this token; empty for a service client.")
    token_hash = models.CharField(max_length=64, unique=True)
    prefix = models.CharField(max_length=16, help_text="The token's first characters, to tell tokens apart.")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "deletion_apitoken"

    def __str__(self) -> str:
        holder = f", for {self.user.get_username()}" if self.user_id else ""
        return f"{self.name} ({self.role}{holder}, {self.prefix}…)"

    @property
    def is_authenticated(self) -> bool:  # lets DRF treat the client as an authenticated user
        return True
