"""What every audit check returns: numbers, a verdict, and the rule that produced the verdict.

A result is a frozen dataclass. ``to_dict`` gives plain JSON data (NumPy scalars and arrays become
Python numbers and lists; a non-finite float becomes the string ``"inf"``, ``"-inf"`` or ``"nan"``)
so that the report and the ledger can store it with ``json.dumps(..., allow_nan=False)``.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


class Verdict(enum.StrEnum):
    """The four outcomes a check can have. The final verdict uses only the first three."""

    PASS = "PASS"
    FAIL = "FAIL"
    INCONCLUSIVE = "INCONCLUSIVE"
    NOT_APPLICABLE = "NOT_APPLICABLE"


@dataclass(frozen=True, kw_only=True)
class CheckResult:
    """Base of every check result.

    ``check`` is the registered check name, ``rule`` the decision rule in words with the numbers
    that were compared (what a reader needs to re-derive the verdict), ``reason`` why the verdict
    came out this way, in plain words.
    """

    check: str
    verdict: Verdict
    rule: str
    reason: str = ""

    def false_fail_level(self) -> float | None:
        """The most this check FAILs a model that forgot the records (its nominal level, family-wise
        over its own records and figures), for the verdict's bound over every check that can FAIL
        it; None where its rule is a margin or tolerance, not a test at a stated level."""
        alpha = getattr(self, "alpha", None)
        return float(alpha) if isinstance(alpha, int | float) and not isinstance(alpha, bool) else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of every field (nested results included)."""
        return {f.name: json_safe(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no NaN literals)."""
        return json.dumps(self.to_dict(), sort_keys=True, allow_nan=False, separators=(",", ":"))


def json_safe(value: Any) -> Any:
    """Convert a value made of dataclasses, enums, NumPy and Python containers to JSON data."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        if isinstance(value, CheckResult):
            return value.to_dict()
        return {f.name: json_safe(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, np.ndarray):
        return [json_safe(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return json_safe(value.item())
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def fmt(value: float, digits: int = 4) -> str:
    """A number as rule text prints it: fixed significant digits, 'inf'/'nan' spelled out."""
    if value is None:
        return "n/a"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value:.{digits}g}"


def record_id_tuple(record_ids: Sequence[str], n: int) -> tuple[str, ...]:
    """Record ids as a tuple of strings; raises unless there are ``n`` of them, all distinct."""
    ids = tuple(str(r) for r in record_ids)
    if len(ids) != n:
        raise ValueError(f"{len(ids)} record ids for {n} records")
    if len(set(ids)) != len(ids):
        raise ValueError("record ids must be unique")
    return ids
