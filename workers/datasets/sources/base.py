"""The data-source interface: where a dataset's rows live, and the schema that maps them to records.

A source yields rows (column -> value) from the company's data: a file kept in the artifact store
(Parquet, CSV, JSON Lines) or a query against its own PostgreSQL. A :class:`DatasetSchema` names
which columns are the record key, the subject's identifiers, the features and label (tabular) or
the text (and label), and the split. :func:`source_records` turns rows into :class:`SourceRecord`\\ s,
checking every value's type and naming the row and column of the first problems.

Each record has a canonical content (:meth:`SourceRecord.content`: what the model trains on, as
canonical JSON); its keyed fingerprint is stored with the record at import, so a later read notices
that the source changed under a model trained on it (workers.datasets.source_reading).

Torch-free and Django-free: the web process imports a file's records through it, the workers read
training data through it. One module per source, registered by naming it in the class statement.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from foundation.registry import Registry

IDENTIFIER_KINDS = ("email", "customer_id", "phone")
MODALITIES = ("tabular", "text")
MAX_ERRORS = 20
MAX_FEATURES = 4096
_SCHEMA_FIELDS = {"record_key", "subjects", "features", "text", "label", "split", "default_split"}


class SourceError(ValueError):
    """A source that cannot be read, or rows that do not fit the schema. ``problems`` holds
    (row, message) pairs (row 0: the source or its columns as a whole); the message names the first."""

    def __init__(self, problems: list[tuple[int, str]], *, total: int | None = None) -> None:
        self.problems = problems[:MAX_ERRORS]
        count = total if total is not None else len(problems)
        row, first = problems[0]
        where = f"row {row}: " if row else ""
        more = f" (and {count - 1} more problem(s))" if count > 1 else ""
        super().__init__(f"{where}{first}{more}")


class SchemaError(ValueError):
    """A schema that is not well formed (names the field)."""


@dataclass(frozen=True)
class DatasetSchema:
    """How a source's columns map to records.

    ``record_key``: the column with each record's key (unique in the dataset). ``subjects``: column
    -> identifier kind (email, customer_id, phone); rows without any identifier have no subject
    (background data). ``features`` (tabular): numeric columns, in order; ``text`` (text): the text
    column. ``label``: the integer label column (required for tabular; optional for text, 0 when
    absent). ``split``: the column naming each record's split (train, test, ...); without it every
    record is in ``default_split``. A subject spread over several rows is one subject: rows whose
    identifiers agree are joined at import.
    """

    modality: str
    record_key: str
    subjects: dict[str, str] = field(default_factory=dict)
    features: tuple[str, ...] = ()
    text: str = ""
    label: str = ""
    split: str = ""
    default_split: str = "train"

    @classmethod
    def from_dict(cls, modality: str, data: Any) -> DatasetSchema:
        """The schema from its JSON form; SchemaError naming the field that is wrong."""
        if modality not in MODALITIES:
            raise SchemaError(f"a dataset read from a source is tabular or text, not {modality!r}")
        if not isinstance(data, Mapping):
            raise SchemaError("the schema must be an object")
        unknown = sorted(set(data) - _SCHEMA_FIELDS)
        if unknown:
            raise SchemaError(f"unknown schema field {unknown[0]!r}; fields: {', '.join(sorted(_SCHEMA_FIELDS))}")

        def column(name: str, *, required: bool = False) -> str:
            value = data.get(name, "")
            if not isinstance(value, str) or (required and not value):
                raise SchemaError(f"schema.{name} must name a column")
            return value

        subjects = data.get("subjects", {})
        if not isinstance(subjects, Mapping) or not all(isinstance(c, str) and c for c in subjects):
            raise SchemaError("schema.subjects must map column names to identifier kinds")
        for name, kind in subjects.items():
            if kind not in IDENTIFIER_KINDS:
                raise SchemaError(f"schema.subjects.{name}: {kind!r} is not an identifier kind "
                                  f"({', '.join(IDENTIFIER_KINDS)})")
        features = data.get("features", [])
        if not isinstance(features, list) or not all(isinstance(c, str) and c for c in features):
            raise SchemaError("schema.features must be a list of column names")
        if len(features) > MAX_FEATURES:
            raise SchemaError(f"schema.features names {len(features)} columns; at most {MAX_FEATURES}")
        default_split = data.get("default_split", "train")
        if not isinstance(default_split, str) or not default_split.isidentifier() or default_split != default_split.lower():
            raise SchemaError("schema.default_split must be a lower-case name such as train")
        schema = cls(modality=modality, record_key=column("record_key", required=True), subjects=dict(subjects),
                     features=tuple(features), text=column("text"), label=column("label"), split=column("split"),
                     default_split=default_split)
        if modality == "tabular":
            if not schema.features:
                raise SchemaError("a tabular schema names its feature columns (schema.features)")
            if not schema.label:
                raise SchemaError("a tabular schema names its label column (schema.label)")
            if schema.text:
                raise SchemaError("a tabular schema has no text column")
        else:
            if not schema.text:
                raise SchemaError("a text schema names its text column (schema.text)")
            if schema.features:
                raise SchemaError("a text schema has no feature columns")
        named = schema.columns()
        repeated = sorted({c for c in named if named.count(c) > 1})
        if repeated:
            raise SchemaError(f"column {repeated[0]!r} is named twice in the schema")
        return schema

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"record_key": self.record_key, "subjects": dict(self.subjects),
                               "default_split": self.default_split}
        for name in ("text", "label", "split"):
            if getattr(self, name):
                out[name] = getattr(self, name)
        if self.features:
            out["features"] = list(self.features)
        return out

    def columns(self) -> list[str]:
        """Every column the schema names."""
        named = [self.record_key, *self.subjects, *self.features]
        return named + [c for c in (self.text, self.label, self.split) if c]

    def missing(self, available: Iterable[str]) -> list[str]:
        present = set(available)
        return [c for c in self.columns() if c not in present]


@dataclass(frozen=True)
class SourceRecord:
    """One record as a source holds it."""

    row: int
    key: str
    split: str
    identifiers: dict[str, str]
    label: int
    features: tuple[float, ...] = ()
    text: str | None = None

    def content(self) -> str:
        """Canonical JSON of what a model trains on (the features or text, and the label): the
        record's stored content and the input of its content fingerprint."""
        body: dict[str, Any] = {"label": self.label}
        if self.text is not None:
            body["text"] = self.text
        else:
            body["features"] = list(self.features)
        return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class DataSource(ABC):
    """One kind of source. ``config``: the dataset's source configuration (its ``kind`` and what
    the kind needs); ``data``: the file's bytes for a file source (None for a database).
    ``columns`` lists the source's columns before any row is read (so a schema naming a missing
    column is refused before anything is imported); ``rows`` yields (row number from 1, values)."""

    name: ClassVar[str]
    holds_file: ClassVar[bool] = True

    def __init_subclass__(cls, *, name: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if name is not None:
            cls.name = name
            SOURCES.register(name)(cls)

    def __init__(self, config: Mapping[str, Any], *, data: bytes | None = None) -> None:
        self.config = config
        self.data = data

    @classmethod
    def config_problem(cls, config: Mapping[str, Any]) -> str | None:
        """Why ``config`` cannot configure this source, or None (checked when a dataset is registered).
        A file source takes only its kind: the file is uploaded, never named (a client must not
        point a dataset at another dataset's file)."""
        unknown = sorted(set(config) - {"kind"})
        if unknown:
            return (f"a {cls.name} source takes only its kind; its file is uploaded to the dataset's import "
                    f"operation ({unknown[0]!r} is not accepted)")
        return None

    @abstractmethod
    def columns(self) -> list[str]: ...

    @abstractmethod
    def rows(self) -> Iterator[tuple[int, Mapping[str, Any]]]: ...

    def check_types(self, schema: DatasetSchema) -> None:
        """A source that knows its column types (Parquet) refuses wrong ones before reading rows."""
        return None

    def rewritten_without(self, keys: set[str], schema: DatasetSchema) -> bytes | None:
        """The file without the rows whose key is in ``keys`` (a purge), or None when it holds none."""
        return None


SOURCES: Registry[type[DataSource]] = Registry("data source")


def source_class(config: Any) -> type[DataSource]:
    """The registered source ``config["kind"]`` names; ValueError naming what exists otherwise."""
    if not isinstance(config, Mapping) or not isinstance(config.get("kind"), str):
        raise ValueError(f"a data source is {{\"kind\": one of {', '.join(SOURCES.names())}, ...}}")
    return SOURCES.get(config["kind"])


def source_config_problem(config: Any, modality: str, schema: Any) -> str | None:
    """Why a dataset cannot be registered with this source and schema, or None. Light: nothing is read."""
    try:
        cls = source_class(config)
        DatasetSchema.from_dict(modality, schema)
    except (ValueError, SchemaError) as exc:
        return str(exc)
    return cls.config_problem(config)


def source_records(source: DataSource, schema: DatasetSchema) -> Iterator[SourceRecord]:
    """The source's rows as records, every value checked. Raises SourceError listing the first
    problems (at most MAX_ERRORS) once the rows are read: a missing column before any row, a value
    of the wrong type, an empty or repeated record key."""
    missing = schema.missing(source.columns())
    if missing:
        raise SourceError([(0, f"the schema names column(s) the source does not have: {', '.join(missing)}; "
                               f"it has: {', '.join(source.columns())}")])
    source.check_types(schema)
    problems: list[tuple[int, str]] = []
    total = 0
    seen: dict[str, int] = {}
    records: list[SourceRecord] = []
    for row, values in source.rows():
        try:
            record = _record(row, values, schema)
        except ValueError as exc:
            total += 1
            if len(problems) < MAX_ERRORS:
                problems.append((row, str(exc)))
            continue
        if record.key in seen:
            total += 1
            if len(problems) < MAX_ERRORS:
                problems.append((row, f"record key {record.key!r} repeats row {seen[record.key]}"))
            continue
        seen[record.key] = row
        records.append(record)
    if problems:
        raise SourceError(problems, total=total)
    yield from records


def _record(row: int, values: Mapping[str, Any], schema: DatasetSchema) -> SourceRecord:
    key = values.get(schema.record_key)
    if isinstance(key, int) and not isinstance(key, bool):
        key = str(key)
    if not isinstance(key, str) or not key.strip():
        raise ValueError(f"{schema.record_key}: the record key is empty or not text")
    identifiers = {}
    for column, kind in schema.subjects.items():
        value = values.get(column)
        if value is None or value == "":
            continue
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise ValueError(f"{column}: an identifier must be text, got {type(value).__name__}")
        identifiers[kind] = value
    split = schema.default_split
    if schema.split:
        split = values.get(schema.split)
        if not isinstance(split, str) or not split:
            raise ValueError(f"{schema.split}: the split is empty or not text")
    label = 0
    if schema.label:
        label = _integer(values.get(schema.label), schema.label)
    if schema.modality == "text":
        text = values.get(schema.text)
        if not isinstance(text, str) or not text:
            raise ValueError(f"{schema.text}: the text is empty or not text")
        return SourceRecord(row, key, split, identifiers, label, text=text)
    features = tuple(_number(values.get(c), c) for c in schema.features)
    return SourceRecord(row, key, split, identifiers, label, features=features)


def _number(value: Any, column: str) -> float:
    if isinstance(value, bool) or value is None or value == "":
        raise ValueError(f"{column}: a feature must be a number, got {value!r}")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"{column}: a feature must be a number, got {value[:40]!r}") from None
    if not isinstance(value, (int, float)):
        raise ValueError(f"{column}: a feature must be a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{column}: a feature must be finite, got {number}")
    return number


def _integer(value: Any, column: str) -> int:
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            raise ValueError(f"{column}: a label must be an integer, got {value[:40]!r}") from None
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ValueError(f"{column}: a label must be an integer, got {value!r}")
    return value
