"""Shared files (dataset folders, pending uploads, signed reports) on both store backends, from the
store test table (tests/workers/store_backends.py): the same calls on a local folder and on the
moto server's bucket; on S3 every file is sealed under a key of its own, a replace or a delete
leaves no readable older version, and nothing is written to the host's disk."""

from __future__ import annotations

import hashlib
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from tests.audits.conftest import dev_identity, signing_settings  # noqa: F401 (fixtures)
from workers.runners.storage import shared_files
from workers.shared_files import FILE_AREAS

pytestmark = [pytest.mark.django_db]


def _local_files(*roots: Path) -> list[Path]:
    return [p for root in roots if Path(root).exists() for p in Path(root).rglob("*") if p.is_file()]


@pytest.mark.parametrize("area", FILE_AREAS)
def test_a_shared_file_is_put_read_replaced_and_deleted(store_backend, area):
    files = shared_files(area)
    assert files.backend == store_backend
    files.put("folder/first.bin", b"first content")
    assert files.get("folder/first.bin") == b"first content"
    assert files.names("folder/") == ["folder/first.bin"]
    sealed_before = old_ref = None
    if store_backend == "s3":
        sealed_before = files.objects.get(f"{area}/folder/first.bin")
        old_ref = files.current_key_ref("folder/first.bin")
        assert b"first content" not in sealed_before  # sealed, not stored in clear
    assert files.put("folder/first.bin", b"second content").removed
    assert files.get("folder/first.bin") == b"second content"
    if store_backend == "s3":
        location = files.objects.location
        versions = files.objects.client.list_object_versions(Bucket=location.bucket,
                                                             Prefix=location.key(f"{area}/folder/first.bin"))
        assert len(versions.get("Versions", [])) == 1  # the replaced version is gone, not kept behind
        from foundation.data_keys import KeyDestroyed
        from workers.object_store import SealedObjectUnreadable, unseal

        assert not files.keys.has_key(old_ref) and files.current_key_ref("folder/first.bin") != old_ref
        with pytest.raises(KeyDestroyed):  # a backup of the old object cannot be opened again
            unseal(files.keys.data_key(old_ref), old_ref, sealed_before)
        with pytest.raises(SealedObjectUnreadable):  # nor under the new version's key
            new_ref = files.current_key_ref("folder/first.bin")
            unseal(files.keys.data_key(new_ref), new_ref, sealed_before)
        new_ref = files.current_key_ref("folder/first.bin")
    removal = files.delete("folder/first.bin")
    assert removal.removed and not removal.retained
    assert files.get("folder/first.bin") is None and files.names("folder/") == []
    if store_backend == "s3":
        assert not files.keys.has_key(new_ref)
    with pytest.raises(ValueError, match="bad shared file name"):
        files.put("../escape", b"x")


def test_a_reference_dataset_lives_on_the_backend_and_an_erasure_rewrites_it(store_backend, settings, tmp_path):
    from models_registry.models import DataRecord
    from workers.data_sources import dataset_split
    from workers.purge import request_data_erase
    from workers.reference_data import reference_dataset_register

    settings.DATASET_ROOT = tmp_path / "datasets"
    dataset = reference_dataset_register(name="breast_cancer")
    train = dataset_split(dataset, "train")
    record = DataRecord.objects.filter(dataset=dataset, split="train").order_by("id").first()
    assert record.external_key in train.record_keys and len(train) > 100
    subject_records = list(DataRecord.objects.filter(subject=record.subject))
    if store_backend == "s3":
        assert dataset.storage_location == "object store: datasets/breast_cancer"
        files = shared_files("datasets")
        old_sealed = files.objects.get("datasets/breast_cancer/train.csv")
        old_ref = files.current_key_ref("breast_cancer/train.csv")

    outcome = request_data_erase(record_ids=[r.id for r in subject_records], subjects=[record.subject],
                                 reason="test")

    assert outcome["purged"]
    dataset.refresh_from_db()
    again = dataset_split(dataset, "train")
    assert record.external_key not in again.record_keys and len(again) == len(train) - len(
        [r for r in subject_records if r.split == "train"])
    if store_backend == "s3":
        assert _local_files(settings.DATASET_ROOT) == []  # read and rewritten in memory
        from foundation.data_keys import KeyDestroyed
        from workers.object_store import unseal

        with pytest.raises(KeyDestroyed):  # the old file's copies cannot be opened again
            unseal(files.keys.data_key(old_ref), old_ref, old_sealed)
        location = files.objects.location
        versions = files.objects.client.list_object_versions(Bucket=location.bucket,
                                                             Prefix=location.key("datasets/breast_cancer/train.csv"))
        assert len(versions.get("Versions", [])) == 1
    else:
        assert all(record.external_key.encode() not in p.read_bytes() for p in _local_files(settings.DATASET_ROOT))


@pytest.mark.usefixtures("signing_settings")
def test_a_signed_report_is_kept_on_the_backend_and_verifies(store_backend, settings, tmp_path):
    from audits.reports import report_create, report_pdf_bytes, report_verify
    from deletion.models import DeletionRequest
    from foundation.ledger.services import ledger_append
    from tests.audits.report_factory import build_report

    settings.REPORT_ROOT = tmp_path / "reports"
    now = timezone.now()
    request = DeletionRequest.objects.create(public_id=uuid.uuid4(), jurisdiction="GDPR", legal_ground="art17_1_b",
                                             channel="test", received_at=now, due_at=now + timedelta(days=30))
    ledger_append(event_type="request.received", actor="test", request=str(request.public_id))
    report = report_create(request=request, report=build_report(request_id=str(request.public_id)))

    data = report_pdf_bytes(report=report)
    assert hashlib.sha256(data).hexdigest() == report.pdf_sha256
    assert report_verify(data) == []
    if store_backend == "s3":
        assert report.pdf_path.startswith("s3://") and _local_files(settings.REPORT_ROOT) == []
        assert b"%PDF" not in shared_files("reports").objects.get(f"reports/{report.pdf_sha256}.pdf")[:64]
    else:
        assert Path(report.pdf_path).read_bytes() == data
