"""The DPO dashboard: open requests by status, due this week, overdue, time to completion, and a
bar chart of requests over time drawn as inline SVG on the server (no JavaScript, nothing fetched)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from django.contrib.admin import AdminSite
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse

from deletion import selectors
from deletion.models import OPEN_STATES, RequestStatus

CHART_WEEKS = 12


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    series: str
    title: str


@dataclass(frozen=True)
class Tick:
    position: float
    label: str


@dataclass(frozen=True)
class BarChart:
    width: int
    height: int
    plot_left: int
    plot_right: int
    plot_top: int
    plot_bottom: int
    bars: list[Bar]
    y_ticks: list[Tick]
    x_ticks: list[Tick]


def duration_text(seconds: float | None) -> str:
    """Seconds as a short human duration ('45 s', '12 min', '3.5 h', '2.1 d'); '—' for None."""
    if seconds is None:
        return "—"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def nice_ceiling(value: float) -> int:
    """The smallest of 1, 2, 5 × 10^k that is at least ``value`` (an axis top that reads well)."""
    if value <= 1:
        return 1
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * magnitude >= value:
            return int(step * magnitude)
    return int(10 * magnitude)  # pragma: no cover


def weekly_bar_chart(weeks: list[selectors.WeekCount], *, width: int = 720, height: int = 240) -> BarChart:
    """Geometry for a grouped bar chart: per week, one bar for received and one for completed."""
    left, right, top, bottom = 40, width - 10, 14, height - 30
    top_value = nice_ceiling(max([w.received for w in weeks] + [w.completed for w in weeks] + [1]))
    plot_height = bottom - top
    group = (right - left) / max(len(weeks), 1)
    bar_width = group * 0.36

    def y_of(value: float) -> float:
        return bottom - plot_height * value / top_value

    bars, x_ticks = [], []
    for i, week in enumerate(weeks):
        start = left + i * group + group * 0.12
        label = week.week.strftime("%d %b")
        for offset, series, value in ((0, "received", week.received), (1, "completed", week.completed)):
            bars.append(Bar(x=round(start + offset * bar_width, 1), y=round(y_of(value), 1),
                            width=round(bar_width, 1), height=round(bottom - y_of(value), 1), series=series,
                            title=f"week of {label}: {value} {series}"))
        if (len(weeks) - 1 - i) % 2 == 0 or len(weeks) <= 8:  # always label the current week
            x_ticks.append(Tick(round(left + (i + 0.5) * group, 1), label))
    steps = top_value if top_value <= 2 else 4 if str(top_value)[0] == "2" else 5  # whole-number ticks
    y_ticks = [Tick(round(y_of(top_value * k / steps), 1), f"{top_value * k / steps:g}") for k in range(steps + 1)]
    return BarChart(width, height, left, right, top, bottom, bars, y_ticks, x_ticks)


def dashboard_view(request: HttpRequest, admin_site: AdminSite, opts: Any) -> HttpResponse:
    """The dashboard page (the caller has checked the permission to view requests)."""
    stats = selectors.request_stats()
    weeks = selectors.requests_per_week(weeks=CHART_WEEKS)
    queue = reverse("admin:deletion_deletionrequest_changelist")
    status_rows = [{"status": status, "count": count, "url": f"{queue}?status__exact={status}"}
                   for status, count in stats.open_by_status.items()]
    decision_rows = [{"key": key, "label": label, "count": stats.awaiting[key], "url": f"{queue}?awaiting={key}"}
                     for key, label in selectors.DECISIONS.items()]
    context = {
        **admin_site.each_context(request),
        "title": "Deletion requests: dashboard",
        "opts": opts,
        "stats": stats,
        "status_rows": status_rows,
        "decision_rows": decision_rows,
        "status_max": max([row["count"] for row in status_rows] + [1]),
        "median_text": duration_text(stats.median_seconds),
        "p95_text": duration_text(stats.p95_seconds),
        "chart": weekly_bar_chart(weeks),
        "weeks": weeks,
        "queue_url": queue,
        "received_total": sum(w.received for w in weeks),
        "completed_total": sum(w.completed for w in weeks),
        "open_statuses": [s for s in RequestStatus.values if s in OPEN_STATES],
    }
    return TemplateResponse(request, "admin/deletion/dashboard.html", context)
