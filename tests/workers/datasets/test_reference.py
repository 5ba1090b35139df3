"""Reference datasets: deterministic, split by subject, synthetic identifiers, canaries marked."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from pathlib import Path

import pytest

from workers.datasets.reference import (
    dataset_info,
    load_reference_split,
    materialise_reference,
    plant_canaries,
    record_import_row,
    reference_records,
)


@pytest.fixture(scope="module")
def reference_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("reference")
    for name in ("breast_cancer", "mnist", "synthetic_pii_text"):
        materialise_reference(name, root, seed=0)
    return root


def _digests(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


@pytest.mark.parametrize("name", ["breast_cancer", "synthetic_pii_text"])
def test_materialising_is_deterministic_in_the_seed(reference_root: Path, tmp_path: Path, name: str) -> None:
    again = materialise_reference(name, tmp_path / "again", seed=0)
    assert _digests(again) == _digests(reference_root / name)
    other = materialise_reference(name, tmp_path / "other", seed=1)
    assert _digests(other)["records.jsonl"] != _digests(again)["records.jsonl"]


def test_breast_cancer_has_one_patient_per_record(reference_root: Path) -> None:
    rows = list(reference_records(reference_root / "breast_cancer"))
    assert len(rows) == 569
    assert len({r["subject"]["email"] for r in rows}) == 569
    train = load_reference_split(reference_root / "breast_cancer", "train")
    test = load_reference_split(reference_root / "breast_cancer", "test")
    assert len(train) + len(test) == 569 and abs(len(test) - 114) <= 2
    assert train[0][1].shape == (30,)


def test_mnist_images_belong_to_subjects_with_several_images_and_splits_follow_subjects(
    reference_root: Path,
) -> None:
    rows = list(reference_records(reference_root / "mnist"))
    assert len(rows) == 5000
    per_subject = Counter(r["subject"]["customer_id"] for r in rows)
    assert min(per_subject.values()) >= 2 and max(per_subject.values()) <= 8
    splits_of: dict[str, set[str]] = {}
    for r in rows:
        splits_of.setdefault(r["subject"]["customer_id"], set()).add(r["split"])
    assert all(len(s) == 1 for s in splits_of.values())  # no subject on both sides
    assert 800 <= sum(r["split"] == "test" for r in rows) <= 1200
    assert len(rows[0]["content_bytes"]) == 28 * 28
    assert rows[0]["content"].startswith("label=")


def test_identifiers_are_synthetic_and_rows_fit_the_importer(reference_root: Path) -> None:
    for name in ("breast_cancer", "mnist", "synthetic_pii_text"):
        for row in reference_records(reference_root / name):
            if row["subject"] is not None:
                assert row["subject"]["email"].endswith("@example.org")
            flat = record_import_row(row)
            assert set(flat) <= {"record_key", "split", "content", "email", "customer_id"}
            assert flat["content"] and flat["record_key"][0] not in "=+-@"


def test_text_set_holds_personal_records_and_subjectless_background(reference_root: Path) -> None:
    rows = list(reference_records(reference_root / "synthetic_pii_text"))
    personal = [r for r in rows if r["subject"] is not None]
    background = [r for r in rows if r["subject"] is None]
    assert len(background) == 300 and all(r["label"] == 0 for r in background)
    assert personal and all(r["label"] == 1 for r in personal)
    profiles = [r for r in personal if r["record_key"].endswith("-0")]
    for row in profiles:
        assert row["subject"]["email"] in row["content"]
        assert row["subject"]["customer_id"] in row["content"]
        iban = re.search(r"DE\d{2}(?: \d{4}){4} \d{2}", row["content"]).group(0).replace(" ", "")
        rearranged = "".join(str(int(ch, 36)) for ch in iban[4:] + iban[:4])
        assert int(rearranged) % 97 == 1  # ISO 7064 check digits are valid
    # Subjects have several records (1-3), and a subject's records share a split.
    by_subject = Counter(r["subject"]["customer_id"] for r in personal)
    assert max(by_subject.values()) == 3


def test_canaries_are_planted_in_train_and_marked(reference_root: Path, tmp_path: Path) -> None:
    directory = materialise_reference("breast_cancer", tmp_path, seed=0)
    duplicates = plant_canaries(directory, kind="duplicate", count=3, seed=5)
    mislabelled = plant_canaries(directory, kind="mislabel", count=2, seed=5)
    rows = {r["record_key"]: r for r in reference_records(directory)}
    train = load_reference_split(directory, "train")
    assert set(duplicates + mislabelled) <= set(train.record_keys)
    for key in duplicates:
        source = rows[rows[key]["canary"]["source_key"]]
        assert rows[key]["content"] == source["content"] and rows[key]["split"] == "train"
    for key in mislabelled:
        source = rows[rows[key]["canary"]["source_key"]]
        assert rows[key]["label"] != source["label"]
        assert rows[key]["content"].split(";")[1] == source["content"].split(";")[1]
    assert sum(r["canary"] is not None for r in rows.values()) == 5
    assert [c["kind"] for c in dataset_info(directory)["canaries"]] == ["duplicate", "mislabel"]
    # Planting rewrote the training file without changing the original records' values.
    original = load_reference_split(reference_root / "breast_cancer", "train")
    by_key = dict(zip(train.record_keys, train.features, strict=True))
    assert all((by_key[k] == original.features[i]).all() for i, k in enumerate(original.record_keys))


def test_image_canaries_copy_pixels(tmp_path: Path, reference_root: Path) -> None:
    directory = tmp_path / "mnist"
    directory.mkdir()
    for item in (reference_root / "mnist").iterdir():
        (directory / item.name).write_bytes(item.read_bytes())
    keys = plant_canaries(directory, kind="mislabel", count=2, seed=0)
    train = load_reference_split(directory, "train")
    rows = {r["record_key"]: r for r in reference_records(directory)}
    for key in keys:
        source = rows[key]["canary"]["source_key"]
        assert rows[key]["content_bytes"] == rows[source]["content_bytes"]
        assert rows[key]["label"] != rows[source]["label"]
    assert len(train) == dataset_info(reference_root / "mnist")["splits"]["train"]["records"] + 2
