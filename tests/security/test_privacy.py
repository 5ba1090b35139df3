"""The platform's own privacy: no raw subject identifier is stored anywhere — not in a full
database dump, not in the artifact store, not in the logs."""

import subprocess
from pathlib import Path

import pytest
from django.conf import settings

from tests import factories

IDENTIFIERS = ["Ada.Lovelace+erase@example.org", "CUST-99173-XQ", "+44 20 7946 0958"]


def _pg_dump() -> bytes:
    from deletion_platform.embedded import _postgres_bindir

    db = settings.DATABASES["default"]
    args = [str(_postgres_bindir() / "pg_dump"), "-h", db["HOST"], "-U", db["USER"], "-d", db["NAME"],
            "--data-only", "--no-owner"]
    return subprocess.run(args, capture_output=True, check=True, timeout=120).stdout


@pytest.mark.django_db(transaction=True)
def test_no_raw_identifier_in_the_database_dump_artifacts_or_logs(api_client_for, caplog):
    ds = factories.dataset()
    factories.import_records(ds, [{"record_key": "r1", "content": "c", "email": IDENTIFIERS[0],
                                   "customer_id": IDENTIFIERS[1], "phone": IDENTIFIERS[2]}])
    intake = api_client_for("intake")
    for key, body in enumerate([{"email": IDENTIFIERS[0]}, {"customer_id": IDENTIFIERS[1]},
                                {"phone": IDENTIFIERS[2]}]):
        response = intake.post("/api/v1/deletion-requests/", {"identifiers": body, "jurisdiction": "GDPR",
                                                              "legal_ground": "art17_1_a", "channel": "web"},
                               format="json", HTTP_IDEMPOTENCY_KEY=f"p{key}")
        assert response.status_code == 201
    dump = _pg_dump()
    assert b"deletion_deletionrequest" in dump and len(dump) > 1000  # the dump is real
    haystacks = {"database dump": dump.lower()}
    for root in (settings.ARTIFACT_ROOT, Path(settings.DATA_DIR) / "logs"):
        for path in Path(root).rglob("*") if Path(root).exists() else []:
            if path.is_file():
                haystacks[str(path)] = path.read_bytes().lower()
    haystacks["captured log"] = caplog.text.lower().encode()
    for identifier in IDENTIFIERS:
        forms = {identifier.lower(), identifier.lower().replace(" ", "")}
        for where, data in haystacks.items():
            for form in forms:
                assert form.encode() not in data, f"{identifier!r} found in {where}"
