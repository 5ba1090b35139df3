"""Blobs above the multipart threshold go to S3 in parts, sealed chunk by chunk (each part its own
nonce and tag), and read back as a stream that checks every chunk; failed uploads leave no parts.
The format by hand first, then against moto's S3 server (tests/s3_server.py), which holds every
part but the last to S3's 5 MiB minimum, so the store uses 5 MiB parts and a blob of about 11 MiB."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest
import torch

from tests.workers import store_backends as backends
from workers.artifacts import ArtifactIntegrityError, ArtifactManifest, tensors_to_bytes
from workers.object_store import (
    S3_MAX_PARTS,
    MiB,
    S3Objects,
    SealedObjectUnreadable,
    open_stream,
    seal_stream,
    sealed_stream_size,
    stream_chunk_lengths,
    stream_chunk_size,
)

KEY = bytes(range(32))
REF = "artifact:blob:test"


def _open(sealed: bytes, *, ref: str = REF) -> bytes:
    return b"".join(open_stream(KEY, ref, io.BytesIO(sealed).read, len(sealed)))


# ---------------------------------------------------------------- the sealed stream, by hand


@pytest.mark.parametrize("size", [0, 1, 7, 8, 9, 24, 25])
def test_a_sealed_stream_round_trips_and_has_the_size_it_says(size):
    plaintext = bytes(range(size))
    parts = list(seal_stream(KEY, REF, plaintext, 8))
    assert len(parts) == max(1, -(-size // 8))  # one part per 8-byte chunk
    sealed = b"".join(parts)
    assert len(sealed) == sealed_stream_size(size, 8) and _open(sealed) == plaintext


def test_a_changed_reordered_or_cut_stream_does_not_open():
    parts = list(seal_stream(KEY, REF, bytes(range(40)), 8))  # five chunks
    header, first = parts[0][:19], parts[0][19:]
    flipped = bytearray(b"".join(parts))
    flipped[40] ^= 1
    cases = {
        "a flipped bit": bytes(flipped),
        "two chunks swapped": header + parts[2] + parts[1] + first + b"".join(parts[3:]),
        "the last chunk dropped": b"".join(parts[:-1]),
        "a chunk from another object": header + first + next(iter(seal_stream(KEY, REF, bytes(8), 8)))[19:]
        + b"".join(parts[2:]),
    }
    for what, sealed in cases.items():
        with pytest.raises(SealedObjectUnreadable):
            _open(sealed)
            pytest.fail(f"{what} opened")
    with pytest.raises(SealedObjectUnreadable, match="chunk 0"):
        _open(b"".join(parts), ref="artifact:blob:another")  # the key reference is bound in
    with pytest.raises(SealedObjectUnreadable, match="cannot be whole"):
        _open(b"".join(parts)[:-10])  # a size no stream has


def test_chunk_sizes_and_lengths():
    assert stream_chunk_size(10 * MiB, 5 * MiB) == 5 * MiB
    big = 5 * MiB * S3_MAX_PARTS + 1  # more than 10,000 parts of 5 MiB: the chunks grow
    assert stream_chunk_size(big, 5 * MiB) * S3_MAX_PARTS >= big
    assert stream_chunk_lengths(19 + 2 * 24 + 20, 8) == [24, 24, 20]
    assert stream_chunk_lengths(19 + 16, 8) == [16]  # the empty stream's one chunk


def test_sealing_and_opening_hold_a_few_chunks_at_a_time():
    """Memory stays bounded by the part size: 48 MiB sealed and opened in 3 MiB chunks never
    holds more than a few chunks beyond the input (sealing it whole would hold 48 MiB more)."""
    plaintext = bytes(48 * MiB)
    sealed = io.BytesIO(b"".join(seal_stream(KEY, REF, plaintext, 3 * MiB)))
    sealed_size, digest = len(sealed.getbuffer()), hashlib.sha256()
    tracemalloc.start()
    try:
        for _part in seal_stream(KEY, REF, plaintext, 3 * MiB):
            pass
        _, sealing_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for chunk in open_stream(KEY, REF, sealed.read, sealed_size):
            digest.update(chunk)
        _, opening_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert digest.digest() == hashlib.sha256(plaintext).digest()
    # At most two records and two plaintext chunks in flight: a third of the whole.
    assert sealing_peak < 16 * MiB and opening_peak < 16 * MiB, (sealing_peak, opening_peak)


# ---------------------------------------------------------------- on an S3 server


def _multipart_store(s3_server, tmp_path: Path, **limits):
    store = backends.s3_store(s3_server, tmp_path)
    store.objects = S3Objects(store.objects.location, part_size=5 * MiB, multipart_threshold=6 * MiB, **limits)
    return store


def _eleven_mib(seed: int) -> dict[str, torch.Tensor]:
    return {"w": torch.randn(11 * MiB // 4, generator=torch.Generator().manual_seed(seed))}


def _head(store, kind: str, name: str) -> dict:
    location = store.objects.location
    return store.objects.client.head_object(Bucket=location.bucket, Key=location.key(store._relative(kind, name)))


def test_a_large_blob_goes_up_in_sealed_parts_and_reads_back(s3_server, tmp_path: Path):
    store = _multipart_store(s3_server, tmp_path)
    weights = _eleven_mib(1)
    plaintext = tensors_to_bytes(weights)
    ref = store.put(ArtifactManifest(kind="model", code_version="test"), {"weights": weights})

    head = _head(store, "blob", ref.weights_sha256)
    assert head["ETag"].strip('"').endswith("-3")  # three parts: 5 MiB, 5 MiB, the rest
    assert head["Metadata"] == {"sealed-format": "2", "plain-bytes": str(len(plaintext))}
    raw = backends.raw_bytes(store, ("blob", ref.weights_sha256))
    assert len(raw) == sealed_stream_size(len(plaintext), 5 * MiB) and plaintext[1000:1100] not in raw
    assert torch.equal(store.load(ref.artifact_id)["w"], weights["w"])
    _, blobs, _ = store.scan()
    assert blobs[ref.weights_sha256].size == len(plaintext)  # the plaintext's size, as on a local disk
    assert store.objects.pending_uploads() == []

    # A changed byte in the second part: that chunk does not open.
    damaged = bytearray(raw)
    damaged[7 * MiB] ^= 1
    backends.overwrite(store, ("blob", ref.weights_sha256), bytes(damaged))
    with pytest.raises(ArtifactIntegrityError, match="chunk 1 of 3"):
        store.load(ref.artifact_id)


def test_a_blob_written_in_one_part_still_reads_and_a_purge_names_the_plaintext_bytes(s3_server, tmp_path: Path):
    single = backends.s3_store(s3_server, tmp_path)  # the defaults: 11 MiB is below 256 MiB, one PUT
    weights = _eleven_mib(2)
    ref = single.put(ArtifactManifest(kind="model", code_version="test"), {"weights": weights})
    assert "sealed-format" not in _head(single, "blob", ref.weights_sha256)["Metadata"]
    store = _multipart_store(s3_server, tmp_path)
    store.objects = S3Objects(single.objects.location, part_size=5 * MiB, multipart_threshold=6 * MiB)
    assert torch.equal(store.load(ref.artifact_id)["w"], weights["w"])

    large = store.put(ArtifactManifest(kind="model", code_version="test"), {"weights": _eleven_mib(3)})
    report = store.purge(large.artifact_id)
    sizes = {f.sha256: f.bytes for f in report.removed}
    assert sizes[large.weights_sha256] == store.manifest(ref.artifact_id).files["weights"]["bytes"]


def test_putting_a_large_blob_again_copies_it_onto_itself_in_parts_above_the_copy_limit(s3_server, tmp_path: Path):
    store = _multipart_store(s3_server, tmp_path, copy_limit=5 * MiB)
    weights = _eleven_mib(4)
    ref = store.put(ArtifactManifest(kind="model", code_version="test"), {"weights": weights})
    before = _head(store, "blob", ref.weights_sha256)
    time.sleep(1.1)  # LastModified has one-second resolution
    store.put(ArtifactManifest(kind="model", code_version="test"), {"weights": weights})  # stored: made young

    after = _head(store, "blob", ref.weights_sha256)
    assert after["LastModified"] > before["LastModified"] and after["ContentLength"] == before["ContentLength"]
    assert after["Metadata"]["sealed-format"] == "2" and "put-at" in after["Metadata"]
    assert torch.equal(store.load(ref.artifact_id)["w"], weights["w"]) and store.objects.pending_uploads() == []


def test_a_failed_or_refused_upload_leaves_no_parts(s3_server, tmp_path: Path, monkeypatch):
    store = _multipart_store(s3_server, tmp_path)
    real = store.objects.client.upload_part
    calls = []

    def upload_part(**arguments):
        calls.append(arguments["PartNumber"])
        if len(calls) == 2:
            raise ConnectionError("the network went away mid-upload")
        return real(**arguments)

    monkeypatch.setattr(store.objects.client, "upload_part", upload_part)
    with pytest.raises(ConnectionError):
        store.put_blob(_eleven_mib(5))
    assert calls == [1, 2] and store.objects.pending_uploads() == [] and backends.count(store, "blob") == 0
    monkeypatch.undo()

    # Another host completed the same object first: the conditional complete is refused, aborted.
    objects = store.objects
    parts = list(seal_stream(KEY, REF, bytes(6 * MiB), 5 * MiB))
    assert objects.put_parts("blobs/taken.safetensors", parts, if_absent=True) is True
    assert objects.put_parts("blobs/taken.safetensors", parts, if_absent=True) is False
    assert objects.pending_uploads() == []


@pytest.mark.django_db
def test_the_collector_aborts_a_stale_upload_with_its_parts(s3_server, tmp_path: Path):
    from workers.artifact_gc import artifact_store_gc

    store = _multipart_store(s3_server, tmp_path)
    location = store.objects.location
    client = store.objects.client
    key = location.key("blobs/" + "a" * 64 + ".safetensors")
    upload = client.create_multipart_upload(Bucket=location.bucket, Key=key)["UploadId"]
    client.upload_part(Bucket=location.bucket, Key=key, UploadId=upload, PartNumber=1, Body=bytes(5 * MiB))
    item = ("partial", f"blobs/{'a' * 64}.safetensors?uploadId={upload}")
    store.mtimes[item] = time.time()  # a writer killed just now: in flight, kept
    assert artifact_store_gc(min_age_seconds=3600, store=store).young_kept == 1
    assert [u.upload_id for u in store.objects.pending_uploads()] == [upload]

    backends.age(store, [item], 2 * 3600)
    report = artifact_store_gc(min_age_seconds=3600, store=store)
    assert [f.kind for f in report.removed] == ["partial"] and store.objects.pending_uploads() == []
    with pytest.raises(client.exceptions.NoSuchUpload):
        client.list_parts(Bucket=location.bucket, Key=key, UploadId=upload)


def test_part_sizes_s3_cannot_take_are_refused(monkeypatch):
    from tests.s3_server import S3Server

    location = S3Server("http://127.0.0.1:1").location("p")
    with pytest.raises(ValueError, match="part_size=1048576 must be between 5242880"):
        S3Objects(location, part_size=MiB)
    with pytest.raises(ValueError, match="multipart_threshold=1 must be at least"):
        S3Objects(location, multipart_threshold=1)
    from deletion_platform import embedded

    services = embedded.services_for()
    monkeypatch.setenv("DATABASE_URL", services.database_url)
    monkeypatch.setenv("CELERY_BROKER_URL", services.broker_url)
    monkeypatch.setenv("ARTIFACT_S3_PART_SIZE", str(6 * 1024**3))
    done = subprocess.run([sys.executable, "-c", "import deletion_platform.settings"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode != 0 and "ARTIFACT_S3_PART_SIZE=6442450944 must be <= 5368709120" in done.stderr
