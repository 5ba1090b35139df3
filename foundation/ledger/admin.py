"""The ledger on the admin site: read-only for everyone (the database refuses changes anyway)."""

from __future__ import annotations

import json

from django.contrib import admin
from django.http import HttpRequest

from foundation.ledger.models import LedgerEvent


@admin.register(LedgerEvent)
class LedgerEventAdmin(admin.ModelAdmin):
    """The ledger, read-only for everyone (the database refuses changes anyway)."""

    list_display = ("seq", "created_at", "event_type", "request_ref", "hash_prefix")
    search_fields = ("request_ref",)
    fields = ("seq", "created_at", "request_ref", "payload", "hash_hex", "prev_hash_hex")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: LedgerEvent | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: LedgerEvent | None = None) -> bool:
        return False

    @admin.display(description="event")
    def event_type(self, obj: LedgerEvent) -> str:
        return json.loads(obj.payload).get("type", "")

    @admin.display(description="hash")
    def hash_prefix(self, obj: LedgerEvent) -> str:
        return bytes(obj.hash).hex()[:16] + "…"

    @admin.display(description="hash")
    def hash_hex(self, obj: LedgerEvent) -> str:
        return bytes(obj.hash).hex()

    @admin.display(description="previous hash")
    def prev_hash_hex(self, obj: LedgerEvent) -> str:
        return bytes(obj.prev_hash).hex()
