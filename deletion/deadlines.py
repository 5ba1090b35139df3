"""Legal deadlines: when a request is due (GDPR/UK GDPR one month, CCPA 45 days), how many days
are left, extensions' limits, and the beat task that flags requests due soon or overdue."""

from __future__ import annotations

import calendar
from datetime import datetime, timedelta

from django.utils import timezone

from deletion.models import (
    OPEN_STATES,
    DeletionRequest,
    Jurisdiction,
)

GDPR_LIKE = (Jurisdiction.GDPR, Jurisdiction.UK_GDPR)


CCPA_DAYS = 45


GDPR_MAX_EXTENSION_MONTHS = 2


def add_months(moment: datetime, months: int) -> datetime:
    """Calendar months, clamped to the month's end (31 Jan + 1 month = 28/29 Feb)."""
    month_index = moment.month - 1 + months
    year, month = moment.year + month_index // 12, month_index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def due_date(*, jurisdiction: str, received_at: datetime) -> datetime:
    """GDPR/UK GDPR Art. 12(3): one month from receipt; CCPA §1798.130: 45 days."""
    if jurisdiction in GDPR_LIKE:
        return add_months(received_at, 1)
    return received_at + timedelta(days=CCPA_DAYS)


def days_left(request: DeletionRequest, now: datetime | None = None) -> int:
    now = now or timezone.now()
    return (request.due_at - now).days if request.due_at >= now else -((now - request.due_at).days + 1)


def deadlines_mark(*, now: datetime | None = None, soon_days: int = 7) -> tuple[int, int]:
    """Beat task: flag open requests due within ``soon_days`` and those overdue."""
    now = now or timezone.now()
    base = DeletionRequest.objects.filter(status__in=OPEN_STATES)
    overdue = base.filter(due_at__lt=now).update(overdue=True, due_soon=False)
    soon = base.filter(due_at__gte=now, due_at__lt=now + timedelta(days=soon_days)).update(due_soon=True)
    return soon, overdue
