"""The ledger's two tables. Rows are written only by the SQL function ``ledger_append`` (created by
the deletion app's migrations 0003, 0007 and 0008, which made these tables); a trigger refuses
UPDATE and DELETE, and TRUNCATE is revoked from every role but the owner."""

from __future__ import annotations

from django.db import models


class LedgerHead(models.Model):
    """The single row holding the chain's head; appends lock it, which orders the chain."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    seq = models.BigIntegerField(default=0)
    hash = models.BinaryField(max_length=32)

    class Meta:
        db_table = "deletion_ledgerhead"


class LedgerEvent(models.Model):
    """Append-only, hash-chained: hash = sha256(prev_hash || payload), where payload is the event's
    canonical JSON exactly as hashed."""

    seq = models.BigIntegerField(primary_key=True)
    prev_hash = models.BinaryField(max_length=32)
    hash = models.BinaryField(max_length=32)
    payload = models.TextField()
    # The request an event belongs to (also inside the payload): indexed, for timelines.
    request_ref = models.UUIDField(null=True, blank=True, db_index=True)
    created_at = models.DateTimeField()

    class Meta:
        db_table = "deletion_ledgerevent"
        ordering = ["seq"]

    def __str__(self) -> str:
        return f"#{self.seq} {bytes(self.hash).hex()[:12]}"
