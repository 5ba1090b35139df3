"""The CSV, image-array and JSONL adapters: items carry their record keys; bad files fail loudly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from workers.datasets.images import ImageArrayDataset, npz_bytes, write_npz
from workers.datasets.tabular import TabularCsvDataset
from workers.datasets.text import IGNORE_INDEX, PAD_ID, TextJsonlDataset, byte_tokenize


def test_csv_rows_become_keyed_float_features_and_int_targets(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("record_key,target,a,b,note\nr1,1,0.5,2\u00a0,x\nr2,0,-1,3e2,y\n".replace("\u00a0", ""))
    dataset = TabularCsvDataset(path, exclude=["note"])
    assert list(dataset.record_keys) == ["r1", "r2"]
    key, features, target = dataset[1]
    assert key == "r2" and torch.equal(features, torch.tensor([-1.0, 300.0])) and int(target) == 0
    assert dataset.feature_columns == ["a", "b"]
    assert [k for k, _, _ in dataset.without(["r1"])] == ["r2"]


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("r1,1,abc\n", ":2: could not convert"),
        ("r1,1,1\nr1,0,2\n", ":3: record key 'r1' is empty or repeated"),
        ("r1,1\n", ":2: 2 fields"),
    ],
)
def test_csv_problems_name_the_line(tmp_path: Path, body: str, problem: str) -> None:
    path = tmp_path / "d.csv"
    path.write_text("record_key,target,a\n" + body)
    with pytest.raises(ValueError, match=problem):
        TabularCsvDataset(path)


def test_npz_images_are_scaled_channel_first_and_byte_stable(tmp_path: Path) -> None:
    arrays = {
        "record_keys": np.array(["img-0", "img-1"]),
        "images": np.array([np.zeros((4, 4)), np.full((4, 4), 255)], dtype=np.uint8),
        "targets": np.array([3, 7]),
    }
    path = tmp_path / "d.npz"
    write_npz(path, arrays)
    assert path.read_bytes() == npz_bytes(arrays)  # no timestamps: same arrays, same bytes
    dataset = ImageArrayDataset(path)
    key, image, target = dataset[1]
    assert key == "img-1" and image.shape == (1, 4, 4) and float(image.max()) == 1.0
    assert image.dtype == torch.float32 and int(target) == 7


def test_npz_with_object_arrays_is_refused_without_unpickling(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, record_keys=np.array(["a"], dtype=object), images=np.zeros((1, 2, 2), np.uint8),
             targets=np.array([0]))
    with pytest.raises(ValueError, match="allow_pickle"):
        ImageArrayDataset(path)


def test_jsonl_text_is_byte_tokenised_with_labels_or_lm_targets(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [
        {"record_key": "t1", "text": "hé", "label": 1},
        {"record_key": "t2", "text": "abcdef", "label": 0},
    ]) + "\n")
    by_label = TextJsonlDataset(path, max_length=4)
    key, ids, label = by_label[0]
    assert key == "t1" and ids.tolist() == byte_tokenize("hé") + [PAD_ID] and int(label) == 1
    assert by_label[1][1].tolist() == byte_tokenize("abcd")  # truncated
    _, ids, targets = TextJsonlDataset(path, max_length=4, target="lm")[0]
    assert targets.tolist() == ids.tolist()[:3] + [IGNORE_INDEX]


def test_jsonl_repeated_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"record_key": "a", "text": "x"}\n{"record_key": "a", "text": "y"}\n')
    with pytest.raises(ValueError, match=":2: record_key"):
        TextJsonlDataset(path)
