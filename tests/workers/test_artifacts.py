"""The content-addressed artifact store: round trips, deduplication, purging, and refusing every
file that is not an honest safetensors file (without ever unpickling it). The store's own tests run
on both backends (``any_store``: a local folder and an S3 bucket of moto's server, see
tests/workers/store_backends.py); the S3-only ones follow them."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import pickletools
import struct
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, example, given
from hypothesis import settings as settings_hypothesis
from hypothesis import strategies as st

from tests.workers import store_backends as backends
from tests.workers.training.data import settings  # noqa: F401  (no Django settings needed)
from workers.artifacts import (
    ArtifactIntegrityError,
    ArtifactInUse,
    ArtifactManifest,
    ArtifactStore,
    UnsafeArtifactError,
    check_safetensors_bytes,
    flatten_state,
    read_safetensors,
    tensors_to_bytes,
    unflatten_state,
)

torch.set_num_threads(1)


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "store")


@pytest.fixture(params=backends.STORE_BACKENDS)
def any_store(request, tmp_path: Path) -> ArtifactStore:
    if request.param == "local":
        return ArtifactStore(tmp_path / "store")
    return backends.s3_store(request.getfixturevalue("s3_server"), tmp_path)


def weights(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {"layer.weight": torch.randn(4, 3, generator=generator), "layer.bias": torch.zeros(4),
            "steps": torch.tensor([7], dtype=torch.int64)}


def manifest(**fields) -> ArtifactManifest:
    return ArtifactManifest(kind="model", architecture={"name": "mlp", "config": {"in_features": 3}},
                            recipe={"name": "plain", "config": {"seed": 0}}, code_version="test", **fields)


class _RunsCode:
    """Unpickling this calls Path.touch(marker): the classic pickle code-execution payload."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


# ---------------------------------------------------------------- round trips


def test_weights_round_trip_and_manifest_records_what_made_them(any_store: ArtifactStore) -> None:
    store = any_store
    ref = store.put(manifest(parent=None, extra={"note": "x"}), {"weights": weights()})
    loaded = store.load(ref.artifact_id)
    assert loaded.keys() == weights().keys()
    assert all(torch.equal(loaded[k], weights()[k]) for k in loaded)
    stored = store.manifest(ref.artifact_id)
    assert stored.architecture == {"name": "mlp", "config": {"in_features": 3}}
    assert stored.recipe["name"] == "plain" and stored.code_version == "test"
    blob = store._read("blob", ref.weights_sha256)
    assert hashlib.sha256(blob).hexdigest() == ref.weights_sha256
    manifest_bytes = store._read("manifest", ref.artifact_id)
    assert hashlib.sha256(manifest_bytes).hexdigest() == ref.artifact_id
    if store.backend == "s3":  # what leaves the host is sealed: the tensors' bytes are not in it
        sealed = backends.raw_bytes(store, ("blob", ref.weights_sha256))
        assert weights()["layer.weight"].numpy().tobytes() in blob
        assert weights()["layer.weight"].numpy().tobytes() not in sealed
        assert b'"architecture"' not in backends.raw_bytes(store, ("manifest", ref.artifact_id))


def test_identical_content_is_stored_once(any_store: ArtifactStore) -> None:
    store = any_store
    first = store.put(manifest(), {"weights": weights()})
    second = store.put(manifest(), {"weights": weights()})
    other = store.put(manifest(extra={"run": 2}), {"weights": weights()})
    assert first == second
    assert other.artifact_id != first.artifact_id and other.weights_sha256 == first.weights_sha256
    assert backends.count(store, "blob") == 1 and backends.count(store, "manifest") == 2
    assert len(backends.everything(store)) == 3  # no temporary file, no open upload


def test_optimizer_state_flattens_to_tensors_and_json_and_back() -> None:
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    model(torch.randn(5, 3)).sum().backward()
    optimizer.step()
    state = optimizer.state_dict()
    tensors, skeleton = flatten_state(state)
    json.dumps(skeleton)  # JSON-able, no pickle needed
    restored = unflatten_state(safetensors_round_trip(tensors), skeleton)
    assert restored["param_groups"] == state["param_groups"]
    assert restored["state"].keys() == state["state"].keys()  # int keys survive
    for index, entry in state["state"].items():
        for name, value in entry.items():
            assert torch.equal(restored["state"][index][name], value)
    clone = torch.optim.Adam(torch.nn.Linear(3, 2).parameters(), lr=0.5)
    clone.load_state_dict(restored)
    assert clone.param_groups[0]["lr"] == 0.01


def test_flatten_refuses_what_only_pickle_could_store() -> None:
    with pytest.raises(TypeError, match="cannot store"):
        flatten_state({"callback": print})


def safetensors_round_trip(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    from workers.artifacts import safetensors_from_bytes

    return safetensors_from_bytes(tensors_to_bytes(tensors))


# ---------------------------------------------------------------- refusing bad files


def test_a_pickle_whose_reduce_runs_code_is_refused_and_never_run(tmp_path: Path, store: ArtifactStore) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"weights": _RunsCode(marker)})
    # The payload is live: read without running it, it calls Path.touch(marker) on load (a global
    # the pickle imports, then REDUCE). Nothing here unpickles it.
    opcodes = [(op.name, arg) for op, arg, _ in pickletools.genops(payload)]
    assert ("STACK_GLOBAL", None) in opcodes and ("REDUCE", None) in opcodes
    assert {"Path", "touch", "Path.touch"} & {arg for _, arg in opcodes if isinstance(arg, str)}

    path = tmp_path / "model.safetensors"
    path.write_bytes(payload)
    with pytest.raises(UnsafeArtifactError, match="this is a Python pickle; pickles are never loaded"):
        read_safetensors(path)
    # Smuggled into the store under its own sha256, it is refused there too.
    digest = hashlib.sha256(payload).hexdigest()
    store.blob_path(digest).write_bytes(payload)
    with pytest.raises(UnsafeArtifactError):
        store.load_blob(digest)
    assert not marker.exists()


def test_a_torch_save_checkpoint_is_refused_and_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "checkpoint.pt"
    torch.save({"weights": _RunsCode(marker)}, path)
    with pytest.raises(UnsafeArtifactError,
                       match=r"this is a zip archive \(torch.save checkpoint\?\); only safetensors is loaded"):
        read_safetensors(path)
    assert not marker.exists()


def test_a_truncated_file_is_refused(tmp_path: Path) -> None:
    data = tensors_to_bytes(weights())
    for cut in (4, 20, len(data) - 1):
        path = tmp_path / f"cut{cut}.safetensors"
        path.write_bytes(data[:cut])
        with pytest.raises(UnsafeArtifactError):
            read_safetensors(path)


def test_a_header_claiming_ten_gigabytes_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "huge.safetensors"
    path.write_bytes(struct.pack("<Q", 10 * 1024**3) + b"{}" + b"\0" * 64)
    with pytest.raises(UnsafeArtifactError, match=r"header claims 10737418240 bytes \(cap"):
        read_safetensors(path)


def _with_header(header: dict, buffer: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + buffer


@pytest.mark.parametrize(
    ("header", "buffer", "problem"),
    [
        ({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8, "outside"),
        ({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}, b"\0" * 8, "need 16"),
        ({"a": {"dtype": "PICKLE", "shape": [1], "data_offsets": [0, 1]}}, b"\0", "unknown dtype"),
        ({"a": {"dtype": "U8", "shape": [-1], "data_offsets": [0, 1]}}, b"\0", "bad shape"),
        ({"a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]},
          "b": {"dtype": "U8", "shape": [2], "data_offsets": [1, 3]}}, b"\0" * 3, "overlap"),
        ({"a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}}, b"\0" * 4, "cover 2 bytes"),
        ({"__metadata__": {"x": 1}}, b"", "__metadata__"),
    ],
)
def test_headers_inconsistent_with_the_file_are_refused(header: dict, buffer: bytes, problem: str) -> None:
    with pytest.raises(UnsafeArtifactError, match=problem):
        check_safetensors_bytes(_with_header(header, buffer))


def test_header_that_is_not_json_is_refused() -> None:
    bad = struct.pack("<Q", 5) + b"\xff\xfe{}x"
    with pytest.raises(UnsafeArtifactError, match="not valid JSON"):
        check_safetensors_bytes(bad)


def test_a_valid_file_passes_the_same_checks() -> None:
    table = check_safetensors_bytes(tensors_to_bytes(weights()))
    assert table["layer.weight"].shape == (4, 3) and table["layer.weight"].dtype == "F32"


def test_a_blob_changed_on_disk_is_detected(any_store: ArtifactStore) -> None:
    store = any_store
    ref = store.put(manifest(), {"weights": weights()})
    item = backends.handle(store, "blob", ref.weights_sha256)
    tampered = bytearray(backends.raw_bytes(store, item))
    tampered[-1] ^= 0xFF
    backends.overwrite(store, item, bytes(tampered))
    with pytest.raises(ArtifactIntegrityError):
        store.load(ref.artifact_id)


# ---------------------------------------------------------------- purging


def test_purge_removes_the_files_and_says_which(any_store: ArtifactStore) -> None:
    store = any_store
    ref = store.put(manifest(), {"weights": weights(), "optimizer": {"m": torch.ones(2)}})
    items = {backends.handle(store, "blob", s) for s in ref.files.values()} | {
        backends.handle(store, "manifest", ref.artifact_id)}
    report = store.purge(ref.artifact_id)
    if store.backend == "local":
        assert {Path(r.path) for r in report.removed} == items
    else:
        assert {r.path for r in report.removed} == {store.location(*item) for item in items}
    assert {r.sha256 for r in report.removed} == set(ref.files.values()) | {ref.artifact_id}
    assert not any(backends.exists(store, item) for item in items)
    assert not store.exists(ref.artifact_id) and report.retained == []


def test_purge_keeps_what_another_artifact_still_references(any_store: ArtifactStore) -> None:
    store = any_store
    shared = store.put(ArtifactManifest(kind="checkpoint", config={"slice": 0}), {"weights": weights(1)})
    only_parent = store.put(ArtifactManifest(kind="checkpoint", config={"slice": 1}), {"weights": weights(2)})
    parent = store.put(manifest(parts={"s0": shared.artifact_id, "s1": only_parent.artifact_id}))
    replaced = store.put(ArtifactManifest(kind="checkpoint", config={"slice": 1}), {"weights": weights(3)})
    child = store.put(manifest(parent=parent.artifact_id,
                               parts={"s0": shared.artifact_id, "s1": replaced.artifact_id}))
    with pytest.raises(ArtifactInUse):
        store.purge(shared.artifact_id, refuse_if_referenced=True)
    report = store.purge(parent.artifact_id)
    removed = {r.sha256 for r in report.removed}
    assert removed == {parent.artifact_id, only_parent.artifact_id, only_parent.weights_sha256}
    assert shared.artifact_id in report.kept_shared
    assert store.exists(child.artifact_id) and store.exists(shared.artifact_id)
    assert torch.equal(store.load(shared.artifact_id)["layer.weight"], weights(1)["layer.weight"])


def test_writes_are_atomic_renames(store: ArtifactStore, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real_replace = os.replace

    def spy(src, dst):
        calls.append((Path(src).name, Path(dst).name))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    ref = store.put(manifest(), {"weights": weights()})
    assert {dst for _, dst in calls} == {f"{ref.weights_sha256}.safetensors", f"{ref.artifact_id}.json"}
    assert all(src.endswith(".tmp") for src, _ in calls)


def test_purging_a_part_by_itself_removes_it_and_names_who_referenced_it(any_store: ArtifactStore) -> None:
    """The unlearning job purges superseded checkpoints one by one, before or after the parent's
    top level: the data must go either way."""
    store = any_store
    checkpoint = store.put(ArtifactManifest(kind="checkpoint"), {"weights": weights(4)})
    parent = store.put(manifest(parts={"s0": checkpoint.artifact_id}))
    report = store.purge(checkpoint.artifact_id, include_parts=False)
    assert report.referenced_by == [parent.artifact_id]
    assert {r.sha256 for r in report.removed} == {checkpoint.artifact_id, checkpoint.weights_sha256}
    assert not backends.exists(store, backends.handle(store, "blob", checkpoint.weights_sha256))
    store.purge(parent.artifact_id)  # the parent goes afterwards without complaint
    assert store.artifact_ids() == []


# ---------------------------------------------------------------- the S3 backend: versions, Object Lock, backups


def _versions(store, item) -> list[dict]:
    key = store.objects.location.key(store._relative(*item))
    listing = store.objects.client.list_object_versions(Bucket=store.objects.location.bucket, Prefix=key)
    return [v for v in listing.get("Versions", []) + listing.get("DeleteMarkers", []) if v["Key"] == key]


def _items(store, ref) -> set:
    return {("manifest", ref.artifact_id), *{("blob", s) for s in ref.files.values()}}


def test_a_purge_in_a_versioned_bucket_deletes_every_version(s3_server, tmp_path: Path) -> None:
    store = backends.s3_store(s3_server, tmp_path)
    ref = store.put(manifest(), {"weights": weights()})
    store.put(manifest(), {"weights": weights()})  # put again: a second version of each object
    assert all(len(_versions(store, item)) == 2 for item in _items(store, ref))

    report = store.purge(ref.artifact_id)

    assert {r.sha256 for r in report.removed} == set(ref.files.values()) | {ref.artifact_id}
    assert report.retained == []
    assert all(_versions(store, item) == [] for item in _items(store, ref))  # no old version, no delete marker
    assert not any(store.keys.has_key(store.key_ref(*item)) for item in _items(store, ref))


def test_object_lock_retention_is_reported_and_never_called_purged(s3_server, tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    store = backends.s3_store(s3_server, tmp_path, bucket=s3_server.locked_bucket)
    ref = store.put(manifest(), {"weights": weights(5)})
    until = datetime.now(tz=UTC) + timedelta(days=30)
    locked = ("blob", ref.weights_sha256)
    for version in _versions(store, locked):
        store.objects.client.put_object_retention(
            Bucket=store.objects.location.bucket, Key=version["Key"], VersionId=version["VersionId"],
            Retention={"Mode": "COMPLIANCE", "RetainUntilDate": until})

    report = store.purge(ref.artifact_id)

    assert [r.sha256 for r in report.removed] == [ref.artifact_id]  # the manifest went; the blob did not
    assert [(r["sha256"], r["mode"]) for r in report.retained] == [(ref.weights_sha256, "COMPLIANCE")]
    assert "Object Lock retention (COMPLIANCE) until" in report.retained[0]["reason"]
    assert backends.exists(store, locked)  # the copy is there, as the report says...
    with pytest.raises(ArtifactIntegrityError, match="data key is destroyed"):
        store.load_blob(ref.weights_sha256)  # ...and unreadable: its data key is gone


def test_a_purged_artifact_restored_from_a_backup_cannot_be_read(s3_server, tmp_path: Path) -> None:
    store = backends.s3_store(s3_server, tmp_path)
    ref = store.put(manifest(), {"weights": weights(6)})
    backup = {item: backends.raw_bytes(store, item) for item in _items(store, ref)}  # a copy of the bucket

    store.purge(ref.artifact_id)
    for item, sealed in backup.items():  # the backup is restored into the bucket
        backends.overwrite(store, item, sealed)

    assert store.exists(ref.artifact_id)
    with pytest.raises(ArtifactIntegrityError, match="data key is destroyed"):
        store.manifest(ref.artifact_id)
    with pytest.raises(ArtifactIntegrityError, match="data key is destroyed"):
        store.load_blob(ref.weights_sha256)
    assert weights(6)["layer.weight"].numpy().tobytes() not in b"".join(backup.values())
    # Put again (the same content stored anew), it is sealed under a new key and reads.
    again = store.put(manifest(), {"weights": weights(6)})
    assert again == ref and torch.equal(store.load(ref.artifact_id)["layer.weight"], weights(6)["layer.weight"])


# ---------------------------------------------------------------- header lengths that look foreign
# A safetensors file begins with its header length (u64, little-endian). Lengths of 640, 896, 1152 or
# 1408 modulo 65,536 begin 80 02..05 (the pickle PROTO opcode), 67,324,752 begins "PK\x03\x04" (a
# zip): such files are valid and must load; a file is judged by parsing it, not by its first bytes.

FOREIGN_LOOKING_LENGTHS = [r + k * 65536 for r in (640, 896, 1152, 1408) for k in (0, 1) if r + k * 65536 <= 70000]
ZIP_LOOKING_LENGTH = 0x04034B50  # 67,324,752: bytes 50 4B 03 04 = "PK\x03\x04"


class HeaderTooShort(ValueError):
    pass


def _file_with_header_length(tensors: dict[str, torch.Tensor], length: int, *, pad: str = " ") -> bytes:
    """Safetensors bytes for ``tensors`` whose JSON header is exactly ``length`` bytes, padded the
    way the format allows (trailing spaces, as safetensors' own writer pads to 8)."""
    offsets, buffer, cursor = {}, b"", 0
    for name, tensor in tensors.items():
        raw = tensor.contiguous().numpy().tobytes()
        offsets[name] = {"dtype": {torch.float32: "F32", torch.int64: "I64", torch.uint8: "U8"}[tensor.dtype],
                         "shape": list(tensor.shape), "data_offsets": [cursor, cursor + len(raw)]}
        buffer += raw
        cursor += len(raw)
    text = json.dumps(offsets, separators=(",", ":")).encode()
    if len(text) > length:
        raise HeaderTooShort(f"the table needs {len(text)} bytes, not {length}")
    return struct.pack("<Q", length) + text + pad.encode() * (length - len(text)) + buffer


def _store_written_file_with_header_length(length: int) -> dict[str, torch.Tensor] | None:
    """Tensors whose file, as the store itself writes it, has a header of exactly ``length`` bytes
    (the writer pads to 8, so only multiples of 8 are reachable; None where none is)."""
    if length == 8:
        return {}
    tensors = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
    base = struct.unpack("<Q", tensors_to_bytes(tensors)[:8])[0]
    if length % 8 or length < base:
        return None
    # Lengthening the tensor's name by d bytes lengthens the unpadded header by d.
    for extra in range(length - base - 8, length - base + 8):
        if extra < 0:
            continue
        candidate = {"w" + "x" * extra: tensors["w"]}
        if struct.unpack("<Q", tensors_to_bytes(candidate)[:8])[0] == length:
            return candidate
    raise AssertionError(f"no tensor name reaches a header of {length} bytes")


def _assert_round_trip(store: ArtifactStore, data: bytes, tensors: dict[str, torch.Tensor], length: int) -> None:
    assert struct.unpack("<Q", data[:8])[0] == length
    assert set(check_safetensors_bytes(data)) == set(tensors)
    # Stored under its sha256 (as a registered upload is) and loaded through the store's checks.
    digest = hashlib.sha256(data).hexdigest()
    store.blob_path(digest).write_bytes(data)
    loaded = store.load_blob(digest)
    assert set(loaded) == set(tensors) and all(torch.equal(loaded[n], t) for n, t in tensors.items())


@given(length=st.one_of(st.integers(min_value=8, max_value=70_000), st.sampled_from(FOREIGN_LOOKING_LENGTHS)))
@example(length=8)
@example(length=70_000)
@settings_hypothesis(max_examples=int(os.environ.get("FUZZ_MAX_EXAMPLES", "60")), deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_header_length_round_trips_through_the_store(store: ArtifactStore, length: int) -> None:
    tensors = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "n": torch.tensor([3], dtype=torch.int64)}
    try:
        data = _file_with_header_length(tensors, length)
    except HeaderTooShort:  # a header this short holds only the empty table
        tensors = {}
        data = _file_with_header_length(tensors, length)
    _assert_round_trip(store, data, tensors, length)

    written = _store_written_file_with_header_length(length)
    if written is not None:
        ref = store.put(manifest(), {"weights": written})
        blob = store.blob_path(ref.weights_sha256).read_bytes()
        assert struct.unpack("<Q", blob[:8])[0] == length
        loaded = store.load(ref.artifact_id)
        assert set(loaded) == set(written) and all(torch.equal(loaded[n], t) for n, t in written.items())


@pytest.mark.parametrize("length", FOREIGN_LOOKING_LENGTHS)
def test_store_written_files_whose_length_looks_like_a_pickle_load(store: ArtifactStore, length: int) -> None:
    written = _store_written_file_with_header_length(length)
    ref = store.put(manifest(), {"weights": written})
    blob = store.blob_path(ref.weights_sha256).read_bytes()
    assert blob[:1] == b"\x80" and blob[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")
    assert set(store.load(ref.artifact_id)) == set(written)


def test_a_header_whose_length_reads_pk_zip_loads(store: ArtifactStore) -> None:
    tensors = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
    data = _file_with_header_length(tensors, ZIP_LOOKING_LENGTH)
    assert data[:4] == b"PK\x03\x04"
    _assert_round_trip(store, data, tensors, ZIP_LOOKING_LENGTH)


def test_the_model_that_hit_the_bug_stores_and_loads(store: ArtifactStore) -> None:
    from workers.training.architectures import build_model

    model = build_model({"name": "mlp", "config": {"in_features": 30, "num_classes": 2, "hidden": [32],
                                                    "input_norm": "batchnorm"}})
    ref = store.put(manifest(), {"weights": model.state_dict()})
    blob = store.blob_path(ref.weights_sha256).read_bytes()
    assert blob[:2] == b"\x80\x02"  # its 640-byte header: what was refused as a pickle
    assert set(store.load(ref.artifact_id)) == set(model.state_dict())


@pytest.mark.parametrize("length", [640, 896, 1152, 1408, ZIP_LOOKING_LENGTH])
def test_a_foreign_looking_file_that_does_not_parse_is_named_by_what_it_resembles(length: int) -> None:
    # The same first bytes, but the file is cut short: not safetensors, so named for what it resembles.
    data = struct.pack("<Q", length) + b"{}"
    with pytest.raises(UnsafeArtifactError, match="pickle" if length < 2**16 else "zip archive"):
        check_safetensors_bytes(data)
