"""The domain's one error type, mapped to HTTP in deletion_platform.api.exception_handler.

Services raise these; views never catch them. ``code`` is machine-readable and stable.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    status_code = 400
    default_code = "invalid"

    def __init__(self, message: str, *, code: str | None = None, field: str | None = None,
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.field = field
        self.details = details or {}


class ValidationFailed(DomainError):
    status_code = 400
    default_code = "validation_failed"


class NotFound(DomainError):
    status_code = 404
    default_code = "not_found"


class Conflict(DomainError):
    status_code = 409
    default_code = "conflict"


class PermissionDenied(DomainError):
    status_code = 403
    default_code = "permission_denied"
