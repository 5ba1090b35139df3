"""Content fingerprints are keyed apart from the pepper (issue 22, finding 3): a pepper rotation
leaves suppressed content matchable, and a rotation of the content key is followed by re-keying
every stored fingerprint without the (erased) content."""

import io

import pytest
from django.core.management import call_command

from models_registry import services
from models_registry.importing import ImportRejected
from models_registry.models import DataRecord, SuppressionEntry, SuppressionKind
from models_registry.pseudonyms import content_fingerprint
from tests import factories

pytestmark = pytest.mark.django_db

OLD_PEPPER, NEW_PEPPER = "o" * 40, "n" * 40
FIRST_KEY, SECOND_KEY = "1" * 40, "2" * 40


def _erased_record(name: str) -> DataRecord:
    ds = factories.dataset(name=name)
    factories.import_records(ds, [
        {"record_key": "keep", "content": "kept content", "email": "keep@example.org"},
        {"record_key": "gone", "content": "erased content", "email": "gone@example.org"},
    ])
    gone = DataRecord.objects.get(dataset=ds, external_key="gone")
    services.records_erase(records=[gone], reason="request 1")
    services.subject_suppress(subject=gone.subject, reason="request 1")
    return gone


def _reimport_refused(name: str, version: str) -> str:
    """The erased content again, under a new key and no identifier, in a new version of the dataset."""
    with pytest.raises(ImportRejected) as caught:
        factories.import_records(factories.dataset(name=name, version=version),
                                 [{"record_key": "renamed", "content": "erased content"}])
    return caught.value.errors[0].problem


def test_a_suppressed_records_content_is_refused_after_a_pepper_rotation(settings):
    settings.SUBJECT_PEPPER_VERSION, settings.SUBJECT_PEPPERS = 1, {1: OLD_PEPPER}
    _erased_record("crm")
    settings.SUBJECT_PEPPER_VERSION, settings.SUBJECT_PEPPERS = 2, {2: NEW_PEPPER}  # the old pepper retired
    assert "suppression list" in _reimport_refused("crm", "2")


def test_a_content_key_rotation_is_followed_by_rekeying_without_the_content(settings):
    settings.CONTENT_FINGERPRINT_KEY_VERSION, settings.CONTENT_FINGERPRINT_KEYS = 1, {1: FIRST_KEY}
    _erased_record("crm")
    settings.CONTENT_FINGERPRINT_KEY_VERSION, settings.CONTENT_FINGERPRINT_KEYS = 2, {1: FIRST_KEY, 2: SECOND_KEY}
    # Before re-keying, the entries under version 1 still match.
    assert "suppression list" in _reimport_refused("crm", "2")

    out = io.StringIO()
    call_command("content_fingerprints_rekey", stdout=out)
    assert "key version 2: 2 record(s) and 1 suppression entries re-keyed" in out.getvalue()
    entries = SuppressionEntry.objects.filter(kind=SuppressionKind.CONTENT)
    assert set(entries.values_list("key_version", flat=True)) == {2}
    assert set(DataRecord.objects.values_list("fingerprint_key_version", flat=True)) == {2}
    # Re-keyed equals fingerprinted afresh: a source read still recognises the kept record's content.
    keep = DataRecord.objects.get(external_key="keep")
    assert bytes(keep.content_fingerprint) == content_fingerprint("kept content")[0]
    assert "suppression list" in _reimport_refused("crm", "3")

    before = sorted(bytes(d) for d in entries.values_list("digest", flat=True))
    again = io.StringIO()
    call_command("content_fingerprints_rekey", stdout=again)
    assert "0 record(s) and 0 suppression entries re-keyed" in again.getvalue()
    assert sorted(bytes(d) for d in entries.values_list("digest", flat=True)) == before


def test_a_content_key_may_not_be_dropped():
    import os
    import subprocess
    import sys

    env = {**os.environ, "CONTENT_FINGERPRINT_KEY_VERSION": "3", "CONTENT_FINGERPRINT_KEY": "k" * 40,
           "CONTENT_FINGERPRINT_KEY_PREVIOUS": "1:" + "a" * 40}
    result = subprocess.run([sys.executable, "-c", "import deletion_platform.settings"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "none may be dropped" in result.stderr
