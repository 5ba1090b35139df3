"""The tamper-evident ledger: append in the caller's transaction, verify against anchors.

hash_n = sha256(hash_{n-1} || canonical_json(event_n)), hash_0 = 32 zero bytes. A chain alone
cannot show that its newest rows were cut off, so the head (seq, hash) is anchored outside the
table: in every signed report and in signed checkpoint files under DATA_DIR/ledger-checkpoints.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from django.conf import settings
from django.db import connection

from foundation.strict_json import canonical_json

GENESIS = bytes(32)


class LedgerEntry(NamedTuple):
    seq: int
    hash: bytes
    event: dict[str, Any]  # what was hashed: {"type", "actor", "at", "data"}


class LedgerEventDraft(NamedTuple):
    """An event checked and serialised, not yet written: what :func:`ledger_write` appends."""

    event: dict[str, Any]
    payload: str
    request_ref: str | None


def ledger_event(*, event_type: str, actor: str, **data: Any) -> LedgerEventDraft:
    """Check and serialise one event without writing it. Raises ValueError (a NaN or infinite
    number) or TypeError (a value that is not JSON) naming the event, so that a caller can refuse
    before it changes anything (see deletion.transitions)."""
    event = {"type": event_type, "actor": actor, "at": datetime.now(UTC).isoformat(), "data": data}
    try:
        payload = canonical_json(event)
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"ledger event {event_type!r} cannot be written: {exc}") from None
    return LedgerEventDraft(event, payload, data.get("request"))


def ledger_write(draft: LedgerEventDraft) -> LedgerEntry:
    """Append a checked event in the current transaction (one SQL statement)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT seq, hash FROM ledger_append(%s, %s)", [draft.payload, draft.request_ref])
        seq, digest = cursor.fetchone()
    return LedgerEntry(seq, bytes(digest), draft.event)


def ledger_append(*, event_type: str, actor: str, **data: Any) -> LedgerEntry:
    """Append one event in the current transaction: checked and serialised in full before the one
    SQL statement that writes it."""
    return ledger_write(ledger_event(event_type=event_type, actor=actor, **data))


def ledger_head() -> tuple[int, bytes]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT seq, hash FROM deletion_ledgerhead WHERE id = 1")
        row = cursor.fetchone()
    return (row[0], bytes(row[1])) if row else (0, GENESIS)


@dataclass
class LedgerProblem:
    seq: int
    problem: str


def _anchor_key() -> bytes:
    return hmac.new(settings.SECRET_KEY.encode(), b"ledger-checkpoint", hashlib.sha256).digest()


def checkpoint_dir() -> Path:
    return Path(settings.DATA_DIR) / "ledger-checkpoints"


def ledger_checkpoint_write() -> Path:
    """Write a signed checkpoint of the current head (HMAC under a key derived from SECRET_KEY)."""
    seq, digest = ledger_head()
    body = {"seq": seq, "hash": digest.hex(), "at": datetime.now(UTC).isoformat()}
    body["signature"] = hmac.new(_anchor_key(), canonical_json(body).encode(), hashlib.sha256).hexdigest()
    directory = checkpoint_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"checkpoint-{seq:012d}.json"
    path.write_text(canonical_json(body))
    return path


def _read_anchors(extra: list[dict] | None = None) -> tuple[list[dict], list[LedgerProblem]]:
    anchors, problems = list(extra or []), []
    directory = checkpoint_dir()
    for path in sorted(directory.glob("checkpoint-*.json")) if directory.exists() else []:
        body = json.loads(path.read_text())
        signature = body.pop("signature", "")
        expected = hmac.new(_anchor_key(), canonical_json(body).encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(signature, expected):
            problems.append(LedgerProblem(body.get("seq", -1), f"checkpoint {path.name} has a bad signature"))
            continue
        anchors.append(body)
    return anchors, problems


def ledger_verify(*, anchors: list[dict] | None = None) -> list[LedgerProblem]:
    """Recompute the chain and compare it with the head row and every anchor (checkpoint files
    plus ``anchors`` given, e.g. from reports). Returns the problems, first broken entry first."""
    problems: list[LedgerProblem] = []
    previous, expected_seq = GENESIS, 1
    chain: dict[int, bytes] = {}
    with connection.cursor() as cursor:
        cursor.execute("SELECT seq, prev_hash, hash, payload FROM deletion_ledgerevent ORDER BY seq")
        for seq, prev_hash, digest, payload in cursor:
            prev_hash, digest = bytes(prev_hash), bytes(digest)
            if seq != expected_seq:
                problems.append(LedgerProblem(expected_seq, f"entry {expected_seq} is missing (next is {seq})"))
                return problems
            if prev_hash != previous:
                problems.append(LedgerProblem(seq, "its previous hash does not match the entry before it"))
                return problems
            if hashlib.sha256(previous + payload.encode()).digest() != digest:
                problems.append(LedgerProblem(seq, "its content does not match its hash (edited)"))
                return problems
            chain[seq] = digest
            previous, expected_seq = digest, seq + 1
    last_seq = expected_seq - 1
    head_seq, head_hash = ledger_head()
    if (head_seq, head_hash) != (last_seq, previous):
        problems.append(LedgerProblem(last_seq + 1, f"the head row says entry {head_seq} but the chain ends at {last_seq}"))
    found, anchor_problems = _read_anchors(anchors)
    problems += anchor_problems
    for anchor in found:
        seq, digest = int(anchor["seq"]), bytes.fromhex(anchor["hash"])
        if seq > last_seq:
            problems.append(LedgerProblem(last_seq + 1, f"an anchor records entry {seq} but the chain ends at {last_seq} (truncated)"))
        elif seq > 0 and chain.get(seq) != digest:
            problems.append(LedgerProblem(seq, "an anchor's hash for this entry differs from the chain"))
    return sorted(problems, key=lambda p: p.seq)
