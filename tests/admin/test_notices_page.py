"""Issue 22 (7): the request page lists the notices sent about the request (kind, channel, when,
status), never the address they went to."""

from __future__ import annotations

import pytest
from django.urls import reverse

from deletion import decisions, intake, notices
from deletion.models import NoticeDelivery
from tests.admin.conftest import BODY

pytestmark = pytest.mark.django_db


def test_the_request_page_shows_the_notices_and_not_the_address(client_for, trained):
    request, _ = intake.deletion_request_create(client=None, body={
        **BODY, "contact": {"email": "someone@example.net"}, "language": "de"})
    decisions.deletion_request_reject(request=request, actor="tests", ground="art17_3_e", reason="a lawsuit")
    for notice in NoticeDelivery.objects.all():
        notices.notice_deliver(notice_id=notice.id)
    page = client_for("alice").get(reverse("admin:deletion_deletionrequest_change", args=[request.pk]))
    html = page.content.decode()
    assert page.status_code == 200 and 'id="dp-notices"' in html
    receipt, refusal = NoticeDelivery.objects.order_by("id")
    for notice, label in ((receipt, "Request received"), (refusal, "Request refused")):
        row = html.split(f'id="dp-notice-{notice.pk}"')[1].split("</tr>")[0]
        assert label in row and "email" in row and "sent" in row and ">de<" in row
    assert "contact address was destroyed" in html and "someone@example.net" not in html
