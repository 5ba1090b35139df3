import pytest

from foundation.errors import ValidationFailed
from models_registry import services
from models_registry.models import DataSubject, SubjectIdentifier
from models_registry.pseudonyms import identifier_digest, normalise_identifier

OLD_PEPPER = "o" * 40
NEW_PEPPER = "n" * 40


def test_normalisation_makes_spellings_of_one_address_equal():
    assert normalise_identifier("email", "  Ann.Lee@Example.ORG ") == "ann.lee@example.org"
    assert normalise_identifier("phone", "+44 (20) 7946-0958") == "+442079460958"


@pytest.mark.parametrize("kind,value", [("email", "not-an-address"), ("phone", "12"), ("email", ""), ("passport", "x")])
def test_bad_identifiers_are_refused_naming_the_kind(kind, value):
    with pytest.raises(ValidationFailed) as caught:
        normalise_identifier(kind, value)
    assert caught.value.field in (kind, "kind")


def test_digest_is_keyed_by_the_pepper(settings):
    settings.SUBJECT_PEPPERS = {1: OLD_PEPPER}
    first = identifier_digest("email", "ann@example.org")
    settings.SUBJECT_PEPPERS = {1: NEW_PEPPER}
    assert identifier_digest("email", "ann@example.org") != first
    assert len(first) == 32


@pytest.mark.django_db
def test_raw_identifier_is_never_stored(settings):
    subject = services.subject_get_or_create(identifiers=[("email", "Secret.Person@example.org")])
    stored = list(SubjectIdentifier.objects.filter(subject=subject).values_list("digest", flat=True))
    assert stored and all(b"secret.person" not in bytes(d).lower() for d in stored)
    assert "secret" not in subject.reference.lower()


@pytest.mark.django_db
def test_same_person_spelled_differently_is_one_subject():
    a = services.subject_get_or_create(identifiers=[("email", "ann@example.org")])
    b = services.subject_get_or_create(identifiers=[("email", " ANN@example.org")])
    assert a.pk == b.pk


@pytest.mark.django_db
def test_pepper_rotation_finds_old_identifiers_and_rekeys_them(settings):
    settings.SUBJECT_PEPPER_VERSION = 1
    settings.SUBJECT_PEPPERS = {1: OLD_PEPPER}
    subject = services.subject_get_or_create(identifiers=[("email", "ann@example.org")])
    assert list(subject.identifiers.values_list("key_version", flat=True)) == [1]

    settings.SUBJECT_PEPPER_VERSION = 2
    settings.SUBJECT_PEPPERS = {2: NEW_PEPPER, 1: OLD_PEPPER}
    found = services.subjects_find(identifiers=[("email", "ann@example.org")])
    assert [s.pk for s in found] == [subject.pk]
    # Re-keyed as seen: the identifier now exists only under the new pepper.
    rows = list(subject.identifiers.values_list("key_version", "digest"))
    assert rows == [(2, identifier_digest("email", "ann@example.org", key_version=2))]

    # With the old pepper retired, the person is still found.
    settings.SUBJECT_PEPPERS = {2: NEW_PEPPER}
    assert [s.pk for s in services.subjects_find(identifiers=[("email", "ann@example.org")])] == [subject.pk]
    assert DataSubject.objects.count() == 1


@pytest.mark.django_db
def test_identifiers_of_two_subjects_conflict():
    from foundation.errors import Conflict

    services.subject_get_or_create(identifiers=[("email", "a@example.org")])
    services.subject_get_or_create(identifiers=[("customer_id", "C-2")])
    with pytest.raises(Conflict):
        services.subject_get_or_create(identifiers=[("email", "a@example.org"), ("customer_id", "C-2")])
