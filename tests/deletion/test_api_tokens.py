import io

import pytest
from django.core.management import call_command

from foundation.access.models import ApiToken
from tests.factories import staff_user

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


def test_a_token_is_bound_to_the_person_who_holds_it():

    from foundation.access.authentication import api_token_create

    alice = staff_user("alice", role="dpo")
    row, _ = api_token_create(name="dpo-console", role="dpo", user="alice")
    assert row.user == alice and "for alice" in str(row)
    service, _ = api_token_create(name="web-form", role="intake")
    assert service.user is None


def test_a_token_for_a_user_who_does_not_exist_or_is_inactive_is_refused():
    from django.contrib.auth.models import User

    from foundation.access.authentication import api_token_create
    from foundation.errors import ValidationFailed

    with pytest.raises(ValidationFailed, match="there is no user 'nobody' to hold the token") as refused:
        api_token_create(name="dpo-console", role="dpo", user="nobody")
    assert refused.value.field == "user"
    User.objects.create_user("gone", is_active=False)
    with pytest.raises(ValidationFailed, match="user 'gone' is inactive"):
        api_token_create(name="dpo-console", role="dpo", user="gone")
    # A DPO token held by someone who is not a DPO would give them a role they do not have.
    staff_user("eve", role="ml_engineer")
    with pytest.raises(ValidationFailed, match="user 'eve' is not in the dpo group"):
        api_token_create(name="eve-console", role="dpo", user="eve")
    assert not ApiToken.objects.exists()


def test_create_api_token_command_binds_the_token_to_a_user_by_username():
    from django.core.management.base import CommandError

    staff_user("alice", role="dpo")
    out, err = io.StringIO(), io.StringIO()
    call_command("create_api_token", "--role", "dpo", "--name", "dpo-console", "--user", "alice", stdout=out, stderr=err)
    assert ApiToken.objects.get(name="dpo-console").user.username == "alice"
    assert "held by user alice" in err.getvalue() and "bound to no user" not in err.getvalue()
    with pytest.raises(CommandError, match="there is no user 'bob' to hold the token"):
        call_command("create_api_token", "--role", "dpo", "--name", "bob-console", "--user", "bob",
                     stdout=io.StringIO(), stderr=io.StringIO())
    err = io.StringIO()
    call_command("create_api_token", "--role", "dpo", "--name", "shared", stdout=io.StringIO(), stderr=err)
    assert "this DPO token is bound to no user, so it cannot accept a residual risk" in err.getvalue()


def test_the_token_of_a_user_who_was_deactivated_stops_working(api_client_for):
    from django.contrib.auth.models import User

    client = api_client_for("ml_engineer", user="charlie")
    assert client.get("/api/v1/models/").status_code == 200
    User.objects.filter(username="charlie").update(is_active=False)
    response = client.get("/api/v1/models/")
    assert response.status_code == 401 and "inactive" in response.json()["error"]["message"]


def test_the_token_of_a_user_who_left_its_role_stops_working(api_client_for):
    from django.contrib.auth.models import User

    client = api_client_for("dpo", user="dana")
    assert client.get("/api/v1/deletion-requests/").status_code == 200
    User.objects.get(username="dana").groups.clear()  # moved to another team
    response = client.get("/api/v1/deletion-requests/")
    assert response.status_code == 401 and "no longer in the dpo group" in response.json()["error"]["message"]


def test_create_staff_user_makes_a_person_in_a_role_who_can_hold_a_token():
    from django.contrib.auth.models import User
    from django.core.management.base import CommandError

    out = io.StringIO()
    call_command("create_staff_user", "--username", "alice", "--role", "dpo", "--password-stdin",
                 stdin=io.StringIO("s3cret-Passw0rd\n"), stdout=out)
    alice = User.objects.get(username="alice")
    assert alice.is_staff and alice.check_password("s3cret-Passw0rd") and not alice.is_superuser
    assert alice.has_perm("deletion.change_deletionrequest")  # the dpo group with its permissions
    assert out.getvalue().strip() == "created staff user alice in the dpo group"
    call_command("create_staff_user", "--username", "bob", "--role", "dpo", stdout=(out := io.StringIO()))
    assert not User.objects.get(username="bob").has_usable_password() and "changepassword bob" in out.getvalue()
    call_command("create_api_token", "--role", "dpo", "--name", "bob-console", "--user", "bob",
                 stdout=io.StringIO(), stderr=io.StringIO())
    assert ApiToken.objects.get(name="bob-console").user.username == "bob"
    with pytest.raises(CommandError, match="user 'alice' exists already"):
        call_command("create_staff_user", "--username", "alice", "--role", "auditor", stdout=io.StringIO())
