"""Parquet files kept in the artifact store (read with pyarrow). The file's own column types are
checked against the schema before any row is read: a feature must be numeric, a label an integer,
a key, identifier, split or text column text (a key may be an integer)."""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping
from typing import Any

from workers.datasets.sources.base import DatasetSchema, DataSource, SourceError

BATCH_ROWS = 65536


def _table(data: bytes):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(io.BytesIO(data))
    except (pa.ArrowException, OSError) as exc:
        raise SourceError([(0, f"not a readable Parquet file: {exc}")]) from None


class ParquetFileSource(DataSource, name="parquet"):
    def _loaded(self):
        if getattr(self, "_table", None) is None:
            self._table = _table(self.data or b"")
        return self._table

    def columns(self) -> list[str]:
        return list(self._loaded().column_names)

    def check_types(self, schema: DatasetSchema) -> None:
        import pyarrow.types as t

        table = self._loaded()

        def text(kind) -> bool:
            return t.is_string(kind) or t.is_large_string(kind) or (t.is_dictionary(kind) and t.is_string(kind.value_type))

        wanted: list[tuple[str, str, Any]] = [(schema.record_key, "text or an integer", lambda k: text(k) or t.is_integer(k))]
        wanted += [(c, "text", text) for c in schema.subjects]
        wanted += [(c, "numeric (integer or floating point)", lambda k: t.is_integer(k) or t.is_floating(k))
                   for c in schema.features]
        if schema.label:
            wanted.append((schema.label, "an integer", t.is_integer))
        for column in (schema.text, schema.split):
            if column:
                wanted.append((column, "text", text))
        problems = [(0, f"column {name!r} has type {table.schema.field(name).type}; it must be {what}")
                    for name, what, fits in wanted if not fits(table.schema.field(name).type)]
        if problems:
            raise SourceError(problems)

    def rows(self) -> Iterator[tuple[int, Mapping[str, Any]]]:
        row = 0
        for batch in self._loaded().to_batches(max_chunksize=BATCH_ROWS):
            for values in batch.to_pylist():
                row += 1
                yield row, values

    def rewritten_without(self, keys: set[str], schema: DatasetSchema) -> bytes | None:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        table = self._loaded()
        column = pc.cast(table.column(schema.record_key), pa.string())
        drop = pc.is_in(column, value_set=pa.array(sorted(keys), pa.string()))
        if not pc.any(drop).as_py():
            return None
        out = io.BytesIO()
        pq.write_table(table.filter(pc.invert(drop)), out)
        return out.getvalue()
