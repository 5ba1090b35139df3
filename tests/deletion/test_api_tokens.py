import io

import pytest
from django.core.management import call_command

from foundation.access.models import ApiToken

pytestmark = pytest.mark.django_db


def test_token_is_stored_only_as_a_hash(api_client_for):
    client = api_client_for("ml_engineer")
    row = ApiToken.objects.get()
    assert client.token_value not in (row.token_hash, row.prefix)
    assert len(row.token_hash) == 64
    assert client.get("/api/v1/models/").status_code == 200


def test_wrong_or_revoked_token_is_401(api_client_for):
    from rest_framework.test import APIClient

    from foundation.access.authentication import api_token_revoke

    anonymous = APIClient()
    assert anonymous.get("/api/v1/models/").status_code in (401, 403)
    forged = APIClient()
    forged.credentials(HTTP_AUTHORIZATION="Bearer dpt_not-a-real-token")
    assert forged.get("/api/v1/models/").status_code == 401
    client = api_client_for("ml_engineer")
    api_token_revoke(token=ApiToken.objects.get())
    response = client.get("/api/v1/models/")
    assert response.status_code == 401 and response.json()["error"]["code"] == "authentication_failed"


def test_create_api_token_command_prints_the_token_once():
    out, err = io.StringIO(), io.StringIO()
    call_command("create_api_token", "--role", "dpo", "--name", "alice", stdout=out, stderr=err)
    token = out.getvalue().strip()
    assert token.startswith("dpt_") and len(token) > 40
    row = ApiToken.objects.get(name="alice")
    assert row.role == "dpo" and token not in row.token_hash
