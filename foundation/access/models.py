"""API clients and their roles."""

from __future__ import annotations

from django.db import models


class Role(models.TextChoices):
    INTAKE = "intake", "Intake (create requests, read its own)"
    DPO = "dpo", "Data-protection officer (everything on requests)"
    ML_ENGINEER = "ml_engineer", "ML engineer (registry)"
    AUDITOR = "auditor", "Auditor (read-only requests and reports)"


class ApiToken(models.Model):
    """An API client's token, stored only as its SHA-256 (tokens are 256-bit random, so an unsalted
    hash cannot be reversed by guessing). The token itself is shown once, at creation."""

    name = models.CharField(max_length=200)
    role = models.CharField(max_length=20, choices=Role.choices)
    token_hash = models.CharField(max_length=64, unique=True)
    prefix = models.CharField(max_length=16, help_text="The token's first characters, to tell tokens apart.")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "deletion_apitoken"

    def __str__(self) -> str:
        return f"{self.name} ({self.role}, {self.prefix}…)"

    @property
    def is_authenticated(self) -> bool:  # lets DRF treat the client as an authenticated user
        return True
