"""CSV files (with a header row) kept in the artifact store. Every value is read as text and
converted by the schema (features to numbers, the label to an integer)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping
from typing import Any

from workers.datasets.sources.base import DatasetSchema, DataSource, SourceError

MAX_FIELD_BYTES = 1024 * 1024


class CsvFileSource(DataSource, name="csv"):
    def _text(self) -> str:
        try:
            return (self.data or b"").decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise SourceError([(0, f"the CSV file is not UTF-8: {exc.reason} at byte {exc.start}")]) from None

    def _reader(self) -> tuple[list[str], Any]:
        csv.field_size_limit(MAX_FIELD_BYTES)
        reader = csv.reader(io.StringIO(self._text(), newline=""))
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise SourceError([(0, "the CSV file is empty: it needs a header row")]) from None
        repeated = sorted({h for h in header if header.count(h) > 1})
        if repeated:
            raise SourceError([(0, f"column {repeated[0]!r} appears twice in the CSV header")])
        return header, reader

    def columns(self) -> list[str]:
        return self._reader()[0]

    def rows(self) -> Iterator[tuple[int, Mapping[str, Any]]]:
        header, reader = self._reader()
        row = 0
        try:
            for cells in reader:
                if not cells:
                    continue
                row += 1
                if len(cells) != len(header):
                    raise SourceError([(row, f"{len(cells)} cells, the header has {len(header)}")])
                yield row, dict(zip(header, cells, strict=True))
        except csv.Error as exc:
            raise SourceError([(row + 1, f"unreadable CSV: {exc}")]) from None

    def rewritten_without(self, keys: set[str], schema: DatasetSchema) -> bytes | None:
        header, reader = self._reader()
        at = header.index(schema.record_key)
        out = io.StringIO(newline="")
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        dropped = 0
        for cells in reader:
            if cells and cells[at] in keys:
                dropped += 1
                continue
            if cells:
                writer.writerow(cells)
        return out.getvalue().encode("utf-8") if dropped else None
