"""Reads for deletion requests."""

from __future__ import annotations

import json

from deletion.models import DeletionRequest, LedgerEvent


def request_timeline(*, request: DeletionRequest) -> list[dict]:
    """The request's ledger events, oldest first (the ledger is the timeline's source of truth)."""
    events = LedgerEvent.objects.filter(request_ref=request.public_id).order_by("seq")
    timeline = []
    for event in events:
        body = json.loads(event.payload)
        timeline.append({"seq": event.seq, "at": body["at"], "event": body["type"], "actor": body["actor"],
                         "data": {k: v for k, v in body["data"].items() if k != "request"}})
    return timeline
