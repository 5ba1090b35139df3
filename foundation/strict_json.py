"""JSON the platform hashes, signs or parses strictly. Plain Python: the web side, the ledger, the
artifact store and the method library all use it.

- :func:`canonical_json`: the one canonical form (sorted keys, no whitespace, UTF-8 text, finite
  numbers, JSON types only). What is hashed or signed (ledger events, artifact manifests, webhook
  bodies, report attachments) goes through it, so the same value always gives the same bytes,
  and a NaN or an object that only ``str()`` could write is refused instead of hashed as text.
- :func:`fields_once`: an ``object_pairs_hook`` refusing a field given twice (parsers disagree on
  which of two repeated fields wins).
- :func:`jsonable`: numbers from numpy and tuples turned into plain JSON values, for results
  stored in JSON columns (which refuse a NaN: it becomes the string ``"nan"``, as in a check's result).
"""

from __future__ import annotations

import json
from typing import Any


def canonical_json(value: Any) -> str:
    """The canonical JSON text of ``value``. Raises ValueError for a NaN or infinite number and
    TypeError for a value that is not JSON (an object, bytes, a set, ...)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def fields_once(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` for ``json.loads``: ValueError naming a field given twice."""
    row: dict[str, Any] = {}
    for key, value in pairs:
        if key in row:
            raise ValueError(f"field {key[:100]!r} given twice")
        row[key] = value
    return row


_NON_FINITE = {"NaN": "nan", "Infinity": "inf", "-Infinity": "-inf"}


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON values: numpy scalars as Python numbers (``.item()``), tuples as
    lists, a NaN or infinite number as the string ``"nan"``, ``"inf"`` or ``"-inf"`` (the spelling
    of ``audits.checks.result.json_safe``: PostgreSQL's JSON refuses the literals, so one undefined
    figure failed the whole job's save), anything else JSON cannot hold as its ``str``."""
    text = json.dumps(value, default=lambda item: item.item() if hasattr(item, "item") else str(item))
    return json.loads(text, parse_constant=_NON_FINITE.__getitem__)
