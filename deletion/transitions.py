"""Every state change of a request goes through :func:`transition`: a conditional UPDATE (two
racing callers cannot both move a request), its ledger event checked before the UPDATE and written
in the same transaction, then the clients' webhooks. An illegal move raises Conflict with the
machine-readable code ``illegal_transition``."""

from __future__ import annotations

from typing import Any

from deletion.models import (
    ENDED_STATES,
    DeletionRequest,
    RequestStatus,
)
from deletion.webhooks import webhooks_notify
from foundation.access.models import ApiToken
from foundation.errors import Conflict
from foundation.ledger.services import ledger_event, ledger_write

S = RequestStatus


def actor_name(client) -> str:
    """Who acted and by which path, as the ledger records it: ``platform``; ``user:<username>`` (the
    admin, or a username given by code); ``api:<token name>(<role>)`` for a service client's token;
    ``user:<username> via api:<token name>(<role>)`` for a token bound to its user."""
    if client is None:
        return "platform"
    person = actor_person(client)
    if isinstance(client, ApiToken):
        token = f"api:{client.name}({client.role})"
        return f"{person} via {token}" if person else token
    return person


def actor_person(client) -> str | None:
    """The person behind an actor, as ``user:<username>``: a user is themself, a token bound to a
    user is that user (the admin and that token are one person); a token bound to no one (a
    service client) and the platform are nobody (None). Rules that need distinct people compare
    this, never :func:`actor_name`."""
    if client is None:
        return None
    if isinstance(client, ApiToken):
        return f"user:{client.user.get_username()}" if client.user_id else None
    return f"user:{getattr(client, 'username', client)}"


def transition(request: DeletionRequest, allowed_from: tuple[str, ...], to: str, *, actor: str, event: str,
               **fields: Any) -> DeletionRequest:
    """Move ``request`` from one of ``allowed_from`` to ``to``, setting ``fields`` too; the ledger
    event (with the fields that are plain values) is checked before anything changes, so a value the
    ledger refuses (a NaN) stops the move before it starts. Returns the request as now stored."""
    draft = ledger_event(event_type=event, actor=actor, request=str(request.public_id), to=to,
                         **{k: v for k, v in fields.items() if isinstance(v, (str, int, float, bool, type(None)))})
    changed = DeletionRequest.objects.filter(pk=request.pk, status__in=allowed_from).update(status=to, **fields)
    if changed != 1:
        current = DeletionRequest.objects.values_list("status", flat=True).get(pk=request.pk)
        if current in ENDED_STATES:  # as the outcome decisions say it (deletion.decisions)
            raise Conflict(f"this request is {current}: it has ended and takes no more decisions",
                           code="request_ended", details={"status": current})
        raise Conflict(f"this request is {current}; this step needs it {' or '.join(allowed_from)} "
                       f"(it would move it to {to})", code="illegal_transition",
                       details={"status": current, "allowed_from": list(allowed_from)})
    ledger_write(draft)
    request.refresh_from_db()
    webhooks_notify(request=request, event=event)
    return request
