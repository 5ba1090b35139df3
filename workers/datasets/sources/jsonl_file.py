"""JSON Lines files kept in the artifact store: one JSON object per line, values typed as JSON
types them (a feature is a number, a label an integer). Strict JSON: a repeated field, NaN or
Infinity is refused."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from foundation.strict_json import fields_once
from workers.datasets.sources.base import DatasetSchema, DataSource, SourceError


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


class JsonLinesFileSource(DataSource, name="jsonl"):
    def _parsed(self) -> list[tuple[int, dict[str, Any]]]:
        if getattr(self, "_rows", None) is not None:
            return self._rows
        rows = []
        for number, raw in enumerate((self.data or b"").splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                value = json.loads(raw.decode("utf-8"), object_pairs_hook=fields_once, parse_constant=_no_constant)
            except UnicodeDecodeError as exc:
                raise SourceError([(number, f"not UTF-8: {exc.reason}")]) from None
            except (ValueError, RecursionError) as exc:
                raise SourceError([(number, f"not accepted JSON: {str(exc)[:200]}")]) from None
            if not isinstance(value, dict):
                raise SourceError([(number, "each line must be a JSON object")])
            rows.append((number, value))
        if not rows:
            raise SourceError([(0, "the JSON Lines file holds no rows")])
        self._rows = rows
        return rows

    def columns(self) -> list[str]:
        seen: dict[str, None] = {}
        for _, row in self._parsed():
            seen.update(dict.fromkeys(row))
        return list(seen)

    def rows(self) -> Iterator[tuple[int, Mapping[str, Any]]]:
        yield from self._parsed()

    def rewritten_without(self, keys: set[str], schema: DatasetSchema) -> bytes | None:
        lines = (self.data or b"").splitlines(keepends=True)  # numbered as _parsed numbers them
        dropped = 0
        for number, row in self._parsed():
            key = row.get(schema.record_key)
            if not isinstance(key, bool) and str(key) in keys:
                lines[number - 1] = b""
                dropped += 1
        if not dropped:
            return None
        return b"".join(line if line.endswith(b"\n") else line + b"\n" for line in lines if line.strip())
