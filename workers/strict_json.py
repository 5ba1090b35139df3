"""JSON objects whose fields are each given once. Parsers disagree on which of two repeated
fields wins, so a repeat is refused instead. Plain Python: the web side (uploads) and the
method library (safetensors headers) both use it."""

from __future__ import annotations

from typing import Any


def fields_once(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` for ``json.loads``: ValueError naming a field given twice."""
    row: dict[str, Any] = {}
    for key, value in pairs:
        if key in row:
            raise ValueError(f"field {key[:100]!r} given twice")
        row[key] = value
    return row
