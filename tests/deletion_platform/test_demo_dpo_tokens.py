"""The demos' two DPO consoles are two people: each API token is bound to its own DPO user, whose
admin login the demo makes the way it always made the ``dpo`` one (a password generated once and
kept under DATA_DIR). Accepting a residual risk counts the users, so the demos still reach their
end states with two tokens."""

import pytest

pytestmark = pytest.mark.django_db


def test_the_demo_dpo_tokens_are_held_by_two_dpo_users(settings, tmp_path):
    from django.contrib.auth.models import User

    from deletion.transitions import actor_name, actor_person
    from deletion_platform.demo import DPO_CONSOLES, _dpo_login, dpo_tokens
    from foundation.access.models import ApiToken

    settings.DATA_DIR = tmp_path
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    tokens = dpo_tokens()
    assert len(tokens) == 2
    rows = [ApiToken.objects.select_related("user").get(name=name) for name, _ in DPO_CONSOLES]
    assert [row.user.username for row in rows] == ["dpo", "dpo2"]
    assert [actor_person(row) for row in rows] == ["user:dpo", "user:dpo2"]
    assert actor_name(rows[0]) == "user:dpo via api:dpo-console(dpo)"
    for username in ("dpo", "dpo2"):
        user = User.objects.get(username=username)
        assert user.is_staff and user.is_active and list(user.groups.values_list("name", flat=True)) == ["dpo"]
        secret = tmp_path / "secrets" / f"{username}_password"
        assert secret.stat().st_mode & 0o777 == 0o600
        password = secret.read_text().strip()
        assert user.check_password(password) and _dpo_login(username) == password  # kept, not regenerated
