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

Language models state their own minimum (:func:`lm_reference_policy`): their audit trains no shadow
models (a shadow LM would cost a fine-tune each); the reference for a forgotten record is the same
version on held-out records of the record's format that no version trained on. The check holds the
count of those per record against ``AUDIT_LM_MIN_REFERENCES`` (4 by default) and names a shortfall
the same way; it is reported (an approximate LM result cannot PASS on statistics anyway: the
per-record tests need shadow models).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from audits.checks.evidence import ClassifierEvidence, LanguageModelEvidence
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


DEFAULT_MIN_LM_REFERENCES = 4


@dataclass(frozen=True, kw_only=True)
class LMReferencePolicyResult(CheckResult):
    """Held-out references per forgotten record of a language model against the required minimum."""

    minimum: int
    references_per_record: tuple[int, ...]
    short: tuple[str, ...]


def _language_model_inputs(evidence: LanguageModelEvidence) -> dict[str, Any] | None:
    if evidence.references_per_record is None or evidence.reference_record_ids is None:
        return None
    return {"record_ids": evidence.reference_record_ids, "references_per_record": evidence.references_per_record,
            "minimum": evidence.min_references}


@register_check(CheckSpec(name="lm_reference_policy", role="power", applies_to=("language_model",),
                          inputs=_language_model_inputs))
def lm_reference_policy(*, record_ids: Sequence[str], references_per_record: ArrayLike,
                        minimum: int = DEFAULT_MIN_LM_REFERENCES) -> LMReferencePolicyResult:
    """Hold each forgotten record's count of held-out references (records of its format no version
    trained on: a language model's audit compares with those, not with shadow models) against
    ``minimum``. Out: :class:`LMReferencePolicyResult`: PASS when every record has at least
    ``minimum``, INCONCLUSIVE naming the shortfall otherwise (role ``power``: reported, never a FAIL)."""
    if minimum < 1:
        raise ValueError(f"the minimum of held-out references must be >= 1, got {minimum}")
    ids = tuple(str(r) for r in record_ids)
    counts = np.asarray(references_per_record, dtype=int).reshape(-1)
    record_id_tuple(ids, counts.shape[0])
    short = tuple(i for i, c in zip(ids, counts, strict=True) if c < minimum)
    rule = (f"A language model's audit trains no shadow models: each forgotten record is compared with held-out "
            f"records of its format that no version trained on. At least {minimum} of them per record; "
            "INCONCLUSIVE otherwise, naming the shortfall. Reported beside the verdict.")
    fewest = int(counts.min()) if counts.size else 0
    if short:
        reason = (f"{len(short)} of {len(ids)} record(s) have fewer than {minimum} held-out records of their format to "
                  f"compare with (the fewest: {fewest}); a record with none is not measured at all. More held-out "
                  "records of those formats in the dataset's test split would close it.")
        verdict = Verdict.INCONCLUSIVE
    elif not ids:
        reason, verdict = "No forgotten record to compare.", Verdict.NOT_APPLICABLE
    else:
        reason = (f"Every record has at least {minimum} held-out records of its format to compare with (the fewest: "
                  f"{fewest}).")
        verdict = Verdict.PASS
    return LMReferencePolicyResult(check="lm_reference_policy", verdict=verdict, rule=rule, reason=reason,
                                   minimum=minimum, references_per_record=tuple(int(c) for c in counts), short=short)
