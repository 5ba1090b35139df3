"""One exception handler for the whole API: every error is JSON with a machine-readable code."""

from __future__ import annotations

import logging

from django.db import DatabaseError, InterfaceError, OperationalError
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from foundation.errors import DomainError

logger = logging.getLogger(__name__)


def _error(status_code: int, code: str, message: str, fields: dict | None = None, **extra) -> Response:
    body = {"error": {"code": code, "message": message}}
    if fields:
        body["error"]["fields"] = fields
    body["error"].update(extra)
    return Response(body, status=status_code)


def exception_handler(exc, context):
    if isinstance(exc, DomainError):
        fields = {exc.field: [exc.message]} if exc.field else None
        extra = {"details": exc.details} if exc.details else {}
        return _error(exc.status_code, exc.code, exc.message, fields, **extra)
    if isinstance(exc, (OperationalError, InterfaceError)):
        # The database is unreachable: tell the client to retry, never a 500.
        logger.warning("database unavailable: %s", exc)
        response = _error(503, "service_unavailable", "the database is unavailable; retry later")
        response["Retry-After"] = "5"
        return response
    if isinstance(exc, DatabaseError):
        logger.exception("database error")
        return _error(503, "service_unavailable", "a database error occurred; retry later")
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        detail = exc.detail
        fields = detail if isinstance(detail, dict) else {"non_field_errors": detail}
        first = next(iter(fields), "request")
        return _error(response.status_code, "validation_failed", f"invalid input: {first}", fields)
    code = getattr(exc, "default_code", "error")
    if isinstance(exc, exceptions.APIException):
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else code
    message = response.data.get("detail", str(exc)) if isinstance(response.data, dict) else str(exc)
    out = _error(response.status_code, str(code), str(message))
    for header in ("WWW-Authenticate", "Retry-After", "Allow"):
        if header in response:
            out[header] = response[header]
    return out
