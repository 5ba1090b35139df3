"""The admin's styles and the API docs' Swagger UI are served by the platform itself, under any
server (a walkthrough found the admin unstyled under gunicorn, which serves no static files, and
/api/docs/ blank offline: it loaded Swagger UI from a CDN, unpinned, onto the admin's origin)."""

import re

import pytest
from django.test import Client


def _body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


@pytest.mark.parametrize("path", ["/static/admin/css/base.css",
                                  "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js"])
def test_static_files_are_served_without_runserver(settings, path):
    settings.DEBUG = False  # as under gunicorn: django.contrib.staticfiles serves nothing then
    response = Client().get(path)
    assert response.status_code == 200 and len(_body(response)) > 1000


def test_the_api_docs_load_nothing_from_another_origin():
    html = _body(Client().get("/api/docs/")).decode()
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert any("swagger-ui-bundle.js" in s for s in sources)
    assert all(s.startswith("/") for s in sources), sources
    assert "cdn." not in html
