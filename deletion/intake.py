"""Taking a request in: legal grounds per jurisdiction, identifiers pseudonymised on arrival,
idempotency by (client, Idempotency-Key) with a keyed body fingerprint."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from deletion.deadlines import due_date
from deletion.models import (
    GROUNDS_BY_JURISDICTION,
    DeletionRequest,
    ModelOutcome,
    NoticeKind,
)
from deletion.notices import contact_discard, contact_sealed, notice_contact_validate, notice_send
from deletion.selectors import timeline_entry
from deletion.transitions import actor_name
from foundation.access.models import ApiToken
from foundation.errors import Conflict, ValidationFailed
from foundation.ledger.services import ledger_append
from foundation.strict_json import canonical_json
from models_registry.models import DataRecord, Dataset
from models_registry.services import identifier_digests, subjects_find


def _body_fingerprint(body: dict[str, Any]) -> str:
    # Keyed: the body holds raw identifiers, and a plain hash of a short e-mail can be guessed.
    key = hmac.new(settings.SUBJECT_PEPPERS[settings.SUBJECT_PEPPER_VERSION].encode(), b"idempotency",
                   hashlib.sha256).digest()
    return hmac.new(key, canonical_json(body).encode(), hashlib.sha256).hexdigest()


def _resolve_record_keys(record_keys: list[dict[str, str]]) -> list[int]:
    ids = []
    for index, item in enumerate(record_keys):
        name, _, version = item["dataset"].partition("@")
        dataset = Dataset.objects.filter(name=name, version=version or "1").first()
        if dataset is None:
            raise ValidationFailed(f"unknown dataset {item['dataset']!r}", field=f"record_keys[{index}].dataset")
        # A planted canary is nobody's record: like an unknown key, it holds nothing of the person.
        record = DataRecord.objects.filter(dataset=dataset, external_key=item["record_key"], canary=False).first()
        if record is not None:  # an unknown key is not an error: it simply holds nothing
            ids.append(record.id)
    return ids


def deletion_request_create(*, client, body: dict[str, Any], idempotency_key: str = "") -> tuple[DeletionRequest, bool]:
    """Take in a request. Returns (request, created). The same Idempotency-Key with the same body
    returns the original; with another body it is a Conflict. Raw identifiers are pseudonymised
    here and dropped.

    A new key is the common case, so the insert comes first and the unique (client, key)
    constraint finds repeats; a repeat costs one failed insert and one read."""
    fingerprint = _body_fingerprint(body)
    created_by = client if isinstance(client, ApiToken) else None
    if body["legal_ground"] not in GROUNDS_BY_JURISDICTION[body["jurisdiction"]]:
        raise ValidationFailed(
            f"legal_ground {body['legal_ground']} does not apply under {body['jurisdiction']}; "
            f"allowed: {', '.join(GROUNDS_BY_JURISDICTION[body['jurisdiction']])}", field="legal_ground")
    notice_contact_validate(contact=body.get("contact"), language=body.get("language"), client=created_by)
    identifiers = [(kind, value) for kind, value in body.get("identifiers", {}).items() if value]
    subjects = subjects_find(identifiers=identifiers) if identifiers else []
    record_ids = _resolve_record_keys(body.get("record_keys", []))
    now = timezone.now()
    public_id = uuid.uuid4()
    # The person's e-mail address, if given, is kept only encrypted under a key of its own.
    sealed = contact_sealed(public_id=str(public_id), contact=body.get("contact"))
    try:
        with transaction.atomic():
            request = DeletionRequest.objects.create(
                public_id=public_id, jurisdiction=body["jurisdiction"], legal_ground=body["legal_ground"],
                language=body.get("language") or "", **sealed, channel=body["channel"], subject=subjects[0] if subjects else None,
                identifier_kinds=sorted(kind for kind, _ in identifiers), record_ids=record_ids,
                identifier_digests=identifier_digests(identifiers=identifiers),
                verification=body.get("verification") or {}, created_by=created_by,
                idempotency_key=idempotency_key, body_fingerprint=fingerprint, received_at=now,
                due_at=due_date(jurisdiction=body["jurisdiction"], received_at=now),
            )
            if subjects[1:]:
                request.linked_subjects.add(*subjects[1:])
            received = ledger_append(
                event_type="request.received", actor=actor_name(client), request=str(request.public_id),
                jurisdiction=request.jurisdiction, legal_ground=request.legal_ground, channel=request.channel,
                subject=request.subject.reference if request.subject else None,
                linked_subjects=[x.reference for x in subjects[1:]], due_at=request.due_at.isoformat())
            notice_send(request=request, kind=NoticeKind.RECEIPT)
    except IntegrityError:
        contact_discard(key_ref=sealed.get("contact_key_ref", ""))
        existing = DeletionRequest.objects.filter(created_by=created_by, idempotency_key=idempotency_key).first()
        if not idempotency_key or existing is None:
            raise
        return _same_body_or_conflict(existing, fingerprint), False
    # What a reader of the new request would find, known without reading it back: no outcomes yet,
    # and one ledger event.
    request._prefetched_objects_cache = {"outcomes": ModelOutcome.objects.none()}
    request.known_timeline = [timeline_entry(seq=received.seq, event=received.event)]
    return request, True


def _same_body_or_conflict(existing: DeletionRequest, fingerprint: str) -> DeletionRequest:
    if not hmac.compare_digest(existing.body_fingerprint, fingerprint):
        raise Conflict("this Idempotency-Key was used with a different body", code="idempotency_key_reused")
    return existing
