"""Shadow policy: enough reference models, per forgotten record, for a statistical verdict to mean it.

A per-record membership test compares the audited model with the shadow models in which the record
was absent (OUT). With a handful of them the OUT distribution is a guess: LiRA's authors use
dozens to hundreds, and the design (and the README) promise 16 or more. The shadows are trained in
complementary pairs (each pair splits the training records in two halves, one each), so every
record is OUT in exactly half of them: 32 shadows give every record exactly 16.

PASS when every forgotten record has at least the configured minimum of OUT shadows (the
platform's ``AUDIT_MIN_OUT_SHADOWS``, 16 by default; a model's policy may raise it); INCONCLUSIVE
otherwise, naming the shortfall (how many records, the fewest OUT shadows any record has, and how
many shadow models it takes). The approximate class needs this PASS for a PASS (its evidence is
statistical); for the exact and dp_bounded classes the statistics are sanity checks, so a
shortfall is reported beside the verdict, not a downgrade (the check's role is ``power``, which
never FAILs a verdict).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from audits.checks.evidence import ClassifierEvidence
from audits.checks.registry import CheckSpec, register_check
from audits.checks.result import CheckResult, Verdict, record_id_tuple

DEFAULT_MIN_OUT_SHADOWS = 16


@dataclass(frozen=True, kw_only=True)
class ShadowPolicyResult(CheckResult):
    """OUT shadow models per forgotten record against the required minimum."""

    minimum: int
    shadow_models: int
    out_per_record: tuple[int, ...]
    short: tuple[str, ...]


def _classifier_inputs(evidence: ClassifierEvidence) -> dict[str, Any]:
    return {"record_ids": evidence.record_ids, "out_per_record": evidence.out_shadow_counts,
            "shadow_models": evidence.shadow_models, "minimum": evidence.min_out_shadows}


@register_check(CheckSpec(name="shadow_policy", role="power",
                          needed_for_approximate_pass="the number of shadow models per record was not checked",
                          applies_to=("classifier",), inputs=_classifier_inputs))
def shadow_policy(*, record_ids: Sequence[str], out_per_record: ArrayLike | None, shadow_models: int,
                  minimum: int = DEFAULT_MIN_OUT_SHADOWS) -> ShadowPolicyResult:
    """Hold each forgotten record's count of OUT shadow models against ``minimum``.

    In: the record ids, their OUT counts (None or empty when no shadow model exists), the number of
    shadow models, the minimum. Out: :class:`ShadowPolicyResult` (PASS or INCONCLUSIVE)."""
    if minimum < 1:
        raise ValueError(f"the minimum of OUT shadow models must be >= 1, got {minimum}")
    ids = tuple(str(r) for r in record_ids)
    counts = np.zeros(len(ids), dtype=int) if out_per_record is None or np.size(out_per_record) == 0 \
        else np.asarray(out_per_record, dtype=int)
    record_id_tuple(ids, counts.shape[0])
    short = tuple(i for i, c in zip(ids, counts, strict=True) if c < minimum)
    needed = 2 * minimum  # complementary pairs: each record is OUT in exactly half
    rule = (f"At least {minimum} shadow models in which each forgotten record was absent (the shadows come in "
            f"complementary pairs, so {needed} shadows give every record exactly {minimum}); INCONCLUSIVE otherwise, "
            "naming the shortfall. Counts against an approximate verdict only; reported for the other classes.")
    fewest = int(counts.min()) if counts.size else 0
    if short:
        missing_pairs = math.ceil(max(0, minimum - fewest))
        reason = (f"{len(short)} of {len(ids)} record(s) have fewer than {minimum} OUT shadow models (the fewest: "
                  f"{fewest}, of {shadow_models} shadow models); about {missing_pairs} more complementary pair(s) "
                  f"({needed} shadows in all) would give every record {minimum}.")
        verdict = Verdict.INCONCLUSIVE
    else:
        reason = f"Every record has at least {minimum} OUT shadow models (the fewest: {fewest}, of {shadow_models})."
        verdict = Verdict.PASS
    return ShadowPolicyResult(check="shadow_policy", verdict=verdict, rule=rule, reason=reason, minimum=minimum,
                              shadow_models=shadow_models, out_per_record=tuple(int(c) for c in counts), short=short)
