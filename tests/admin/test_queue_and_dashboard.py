"""The request queue (badges, filters, search) and the dashboard (figures and the SVG chart)."""

from __future__ import annotations

import re
from datetime import date, timedelta

import pytest
from django.utils import timezone

from deletion import selectors
from deletion.admin_dashboard import nice_ceiling, weekly_bar_chart
from deletion.models import DeletionRequest, RequestStatus
from tests.admin.conftest import make_request

pytestmark = pytest.mark.django_db
QUEUE = "/admin/deletion/deletionrequest/"
DASHBOARD = "/admin/deletion/deletionrequest/dashboard/"


def short(request: DeletionRequest) -> str:
    return str(request.public_id)[:8]


@pytest.fixture
def queue(trained):
    """Four requests: overdue, due in three days, due in a month (CCPA), and one completed."""
    requests = {
        "overdue": make_request(email="p0@example.org", due_in_days=-3.5),
        "soon": make_request(email="p1@example.org", due_in_days=3.5),
        "later": make_request(email="p2@example.org", jurisdiction="CCPA", scoped=False),
        "done": make_request(email="nobody@example.org", due_in_days=-10),
    }
    DeletionRequest.objects.filter(pk=requests["done"].pk).update(status=RequestStatus.COMPLETED,
                                                                  completed_at=timezone.now())
    return requests


def rows(html: str) -> list[str]:
    return re.findall(r'<tr[^>]*>.*?</tr>', html.split('id="result_list"')[1], flags=re.S)[1:]


def test_queue_badges_deadlines(client_for, queue):
    html = client_for("alice").get(QUEUE).content.decode()
    by_id = {short(r): r for r in queue.values()}
    found = {next(k for k in by_id if k in row): row for row in rows(html)}
    assert 'dp-bad">overdue 4 d' in found[short(queue["overdue"])]
    assert 'dp-warn">3 d left' in found[short(queue["soon"])]
    assert 'dp-ok">44 d left' in found[short(queue["later"])]
    assert 'dp-off">ended' in found[short(queue["done"])]
    assert "churn v1" in found[short(queue["overdue"])]
    # Open requests first, the most urgent at the top; ended ones last.
    order = [next(name for name, r in queue.items() if short(r) in row) for row in rows(html)]
    assert order == ["overdue", "soon", "later", "done"]


@pytest.mark.parametrize("query, expected", [
    ("due=overdue", {"overdue"}),
    ("due=week", {"soon"}),
    ("due=open", {"overdue", "soon", "later"}),
    ("status__exact=RECEIVED", {"later"}),
    ("jurisdiction=CCPA", {"later"}),
    ("model=churn", {"overdue", "soon"}),
])
def test_queue_filters(client_for, queue, query, expected):
    html = client_for("alice").get(f"{QUEUE}?{query}").content.decode()
    listed = {name for name, r in queue.items() if short(r) in html.split('id="result_list"')[1]}
    assert listed == expected


def test_queue_search_by_request_id(client_for, queue):
    alice = client_for("alice")
    target = queue["soon"]
    for term in (str(target.public_id), short(target)):
        html = alice.get(QUEUE, {"q": term}).content.decode()
        assert short(target) in html and short(queue["overdue"]) not in html.split('id="result_list"')[1]


def test_queue_offers_no_add_or_delete(client_for, queue):
    html = client_for("alice").get(QUEUE).content.decode()
    assert "/admin/deletion/deletionrequest/add/" not in html and "delete_selected" not in html
    assert client_for("alice").get(f"{QUEUE}add/").status_code == 403


def test_dashboard_figures(client_for, queue):
    now = timezone.now()
    for days in (1, 2, 10):  # three completed requests took 1, 2 and 10 days
        request = make_request(email=f"x{days}@example.org", scoped=False)
        DeletionRequest.objects.filter(pk=request.pk).update(
            status=RequestStatus.COMPLETED, received_at=now - timedelta(days=days), completed_at=now)
    DeletionRequest.objects.filter(pk=queue["done"].pk).update(completed_at=None)  # no duration known
    stats = selectors.request_stats(now=now)
    assert stats.open_by_status["SCOPED"] == 2 and stats.open_by_status["RECEIVED"] == 1
    assert (stats.open_total, stats.due_this_week, stats.overdue, stats.completed) == (3, 1, 1, 3)
    assert stats.median_seconds == pytest.approx(2 * 86400, rel=1e-6)
    assert stats.p95_seconds == pytest.approx(9.2 * 86400, rel=1e-6)  # linear interpolation

    html = client_for("bob").get(DASHBOARD).content.decode()
    assert re.search(r'id="dp-kpi-overdue">\s*<div class="dp-kpi-value">1<', html)
    assert re.search(r'id="dp-kpi-week">\s*<div class="dp-kpi-value">1<', html)
    assert "2.0 d" in html and "9.2 d" in html
    assert html.count("<rect") == 2 * 12 and "received (7)" in html
    assert "<script" not in html.split('id="content-main"')[1] and "cdn" not in html.lower()


def test_dashboard_without_completed_requests(client_for, trained):
    html = client_for("alice").get(DASHBOARD).content.decode()
    assert 'dp-kpi-value">—<' in html and "received (0)" in html


def test_index_links_the_dashboard(client_for, trained):
    for user in ("alice", "bob"):
        assert DASHBOARD in client_for(user).get("/admin/").content.decode()


def test_requests_per_week_counts_this_week(trained):
    make_request(scoped=False)
    weeks = selectors.requests_per_week(weeks=4)
    assert len(weeks) == 4 and weeks[-1].week == date.today() - timedelta(days=date.today().weekday())
    assert (weeks[-1].received, sum(w.received for w in weeks[:-1])) == (1, 0)


def test_chart_geometry():
    assert [nice_ceiling(v) for v in (0, 1, 3, 7, 12, 50, 51)] == [1, 1, 5, 10, 20, 50, 100]
    weeks = [selectors.WeekCount(date(2026, 1, 5) + timedelta(weeks=i), received=i, completed=0) for i in range(4)]
    chart = weekly_bar_chart(weeks)
    received = [b for b in chart.bars if b.series == "received"]
    assert [b.height for b in received][0] == 0
    assert received[3].height == pytest.approx(3 / 5 * (chart.plot_bottom - chart.plot_top), abs=0.1)  # axis top 5
    assert [t.label for t in chart.y_ticks] == ["0", "1", "2", "3", "4", "5"]
    assert [t.label for t in weekly_bar_chart([selectors.WeekCount(date(2026, 1, 5), 17, 3)]).y_ticks] == [
        "0", "5", "10", "15", "20"]


def test_what_waits_for_a_decision(client_for, queue, trained):
    from deletion import decisions
    from deletion.models import ModelOutcome
    from tests.admin.conftest import finish_job

    for name, verdict in (("overdue", "FAIL"), ("soon", "PASS")):
        approved = decisions.deletion_request_approve(request=queue[name], actor="tests")
        finish_job(approved.outcomes.get(), trained, verdict=verdict)
    assert set(ModelOutcome.objects.values_list("request__public_id", "status")) == {
        (queue["overdue"].public_id, "audit_failed"), (queue["soon"].public_id, "awaiting_deployment")}
    waiting = {key: set(selectors.requests_awaiting(decision=key)) for key in selectors.DECISIONS}
    assert waiting == {"verify": {queue["later"]}, "approve": set(), "audit_failed": {queue["overdue"]},
                       "inconclusive": set(), "confirm": {queue["soon"]}}
    assert selectors.request_stats().awaiting == {"verify": 1, "approve": 0, "audit_failed": 1, "inconclusive": 0,
                                                  "confirm": 1}
    with pytest.raises(ValueError, match="unknown decision 'later'"):
        selectors.requests_awaiting(decision="later")

    alice = client_for("alice")
    for key, expected in (("audit_failed", {"overdue"}), ("confirm", {"soon"}), ("verify", {"later"})):
        html = alice.get(f"{QUEUE}?awaiting={key}").content.decode().split('id="result_list"')[1]
        assert {name for name, r in queue.items() if short(r) in html} == expected, key
    dashboard = client_for("bob").get(DASHBOARD).content.decode()
    row = re.search(r'<tr id="dp-awaiting-audit_failed">.*?</tr>', dashboard, flags=re.S).group(0)
    assert f'href="{QUEUE}?awaiting=audit_failed"' in row and 'dp-bad">1<' in row
    approve_row = re.search(r'<tr id="dp-awaiting-approve">.*?</tr>', dashboard, flags=re.S).group(0)
    assert 'dp-muted">0<' in approve_row
