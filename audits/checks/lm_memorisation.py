"""Language models: does the model still reproduce a forgotten text or complete its facts?

No model code here: the model comes in as a callable, so these functions run against any LM
(and against the inference-time guard, for the ``suppressed`` class).

* ``next_token_logits(ids) -> (vocab,)`` logits for the token that follows ``ids``, or
  ``sequence_logits(ids) -> (len(ids), vocab)`` logits at every position of one causal forward
  pass (row t predicts token t + 1: the usual causal-LM output, and much cheaper);
* ``generate(prompt) -> text`` for fact completion.

Metrics (definitions as in open-unlearning's ``exact_memorization`` and ``extraction_strength``):

* exact memorisation: the fraction of a text's tokens that teacher-forced greedy decoding
  predicts correctly;
* extraction strength: ``1 - k/m`` for the smallest number of given target tokens ``k`` after
  which greedy decoding reproduces the rest of the text exactly (``m`` target tokens); 0 when
  not even the last token is reproduced, 1 when the whole text follows from its first token.
  With teacher forcing, "every prediction from position k on is right" is exactly "greedy
  generation from the first k tokens reproduces the suffix", so one pass suffices;
* suffix reproduction: free-running greedy generation from increasing prefixes, the fraction
  of the true suffix reproduced position by position;
* fact completion: a record's facts as (prompt, fact) pairs; the fact counts as completed when
  the generation contains it up to fuzzy matching (case, punctuation, small edits).

A text or fact that a model which never saw the record also produces (a common phrase, a famous
fact) is not evidence of memorisation, so the check compares with a reference model.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from audits.checks.evidence import LanguageModelEvidence
from audits.checks.registry import CheckSpec, register_check
from audits.checks.result import CheckResult, Verdict, fmt

NextTokenLogits = Callable[[Sequence[int]], ArrayLike]
SequenceLogits = Callable[[Sequence[int]], ArrayLike]
Generate = Callable[[str], str]

# Fuzzy-match similarity at which a fact counts as completed: tolerates case, punctuation and an
# edit or two ("Jan 5 1990" vs "Jan. 5, 1990"), not a different value.
DEFAULT_FACT_THRESHOLD = 0.85
DEFAULT_ES_TOLERANCE = 0.1
DEFAULT_EM_TOLERANCE = 0.1


def _token_ids(token_ids: Sequence[int]) -> NDArray[np.int64]:
    ids = np.asarray(token_ids, dtype=np.int64)
    if ids.ndim != 1 or ids.size < 2:
        raise ValueError("a text needs at least two tokens (one of context, one to predict)")
    return ids


def teacher_forced_predictions(
    token_ids: Sequence[int],
    *,
    next_token_logits: NextTokenLogits | None = None,
    sequence_logits: SequenceLogits | None = None,
) -> NDArray[np.int64]:
    """Greedy prediction of every token after the first, each given the true tokens before it.

    In: token ids ``(n,)`` and exactly one of the two logits callables. Out: ``(n - 1,)``
    predictions; entry t is the model's arg-max for token t + 1.
    """
    ids = _token_ids(token_ids)
    if (next_token_logits is None) == (sequence_logits is None):
        raise ValueError("pass exactly one of next_token_logits and sequence_logits")
    if sequence_logits is not None:
        logits = np.asarray(sequence_logits(ids.tolist()))
        if logits.ndim != 2 or logits.shape[0] != ids.size:
            raise ValueError(f"sequence_logits must return ({ids.size}, vocab), got {logits.shape}")
        return np.argmax(logits[:-1], axis=-1).astype(np.int64)
    return np.array(
        [int(np.argmax(next_token_logits(ids[:t].tolist()))) for t in range(1, ids.size)],
        dtype=np.int64,
    )


def exact_memorisation(predictions: ArrayLike, token_ids: Sequence[int]) -> float:
    """Fraction of target tokens (all but the first) that the teacher-forced prediction matches."""
    ids = _token_ids(token_ids)
    preds = np.asarray(predictions, dtype=np.int64)
    if preds.shape != (ids.size - 1,):
        raise ValueError(f"need {ids.size - 1} predictions, got {preds.shape}")
    return float(np.mean(preds == ids[1:]))


def extraction_strength(predictions: ArrayLike, token_ids: Sequence[int]) -> float:
    """``1 - k/m``: smallest ``k`` target tokens after which every prediction is right.

    In: teacher-forced predictions ``(m,)`` and the text ``(m + 1,)``. Out: in [0, 1].
    """
    ids = _token_ids(token_ids)
    preds = np.asarray(predictions, dtype=np.int64)
    if preds.shape != (ids.size - 1,):
        raise ValueError(f"need {ids.size - 1} predictions, got {preds.shape}")
    wrong = np.flatnonzero(preds != ids[1:])
    k = 0 if wrong.size == 0 else int(wrong[-1]) + 1
    return 1.0 - k / preds.size


def greedy_continuation(
    prefix: Sequence[int], next_token_logits: NextTokenLogits, steps: int
) -> list[int]:
    """``steps`` tokens of free-running greedy generation after ``prefix`` (the new tokens only)."""
    generated = [int(t) for t in prefix]
    for _ in range(steps):
        generated.append(int(np.argmax(next_token_logits(generated))))
    return generated[len(prefix) :]


def suffix_match(continuation: Sequence[int], token_ids: Sequence[int], prefix_length: int) -> float:
    """Fraction of the true suffix ``token_ids[prefix_length:]`` that ``continuation`` matches
    position by position (missing positions count as not matched)."""
    ids = _token_ids(token_ids)
    suffix = ids[prefix_length:]
    if suffix.size == 0:
        raise ValueError(f"prefix length {prefix_length} leaves no suffix of {ids.size} tokens")
    got = np.full(suffix.size, -1, dtype=np.int64)
    head = np.asarray(list(continuation)[: suffix.size], dtype=np.int64)
    got[: head.size] = head
    return float(np.mean(got == suffix))


def suffix_reproduction(
    token_ids: Sequence[int], next_token_logits: NextTokenLogits, prefix_lengths: Sequence[int]
) -> dict[int, float]:
    """Free-running greedy generation from each prefix length; fraction of the suffix matched.

    In: the text, the logits callable, prefix lengths in ``[1, n)``. Out: ``{prefix_length:
    fraction of the true suffix's positions the generation reproduces}``. Costs O(n) calls per
    prefix; keep texts short or cache inside the callable.
    """
    ids = _token_ids(token_ids)
    curve: dict[int, float] = {}
    for p in sorted(set(int(p) for p in prefix_lengths)):
        if not 1 <= p < ids.size:
            raise ValueError(f"prefix length {p} must lie in [1, {ids.size})")
        continuation = greedy_continuation(ids[:p].tolist(), next_token_logits, ids.size - p)
        curve[p] = suffix_match(continuation, ids, p)
    return curve


def normalise_text(text: str) -> str:
    """Lower case, accents folded, punctuation dropped, whitespace collapsed."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return " ".join(re.sub(r"[^\w\s]", " ", folded.lower()).split())


def fact_similarity(fact: str, generation: str) -> float:
    """Best fuzzy similarity (0..1) of ``fact`` with any run of words in ``generation``.

    Windows of the fact's word count +-1 are compared with ``difflib``'s ratio; an exact
    normalised substring scores 1.0.
    """
    target = normalise_text(fact)
    text = normalise_text(generation)
    if not target:
        raise ValueError("a fact must contain at least one word")
    if f" {target} " in f" {text} ":
        return 1.0
    words = text.split()
    n = len(target.split())
    best = 0.0
    for size in {max(1, n - 1), n, n + 1}:
        for start in range(max(1, len(words) - size + 1)):
            window = " ".join(words[start : start + size])
            best = max(best, difflib.SequenceMatcher(None, target, window).ratio())
    return best


@dataclass(frozen=True)
class FactCompletion:
    """One (prompt, fact) probe's outcome: similarity of the generation to the fact, and the call.

    The prompt, the fact and the generation are deliberately not kept: this result goes into the
    report, and the report must not carry the erased data.
    """

    similarity: float
    completed: bool


def fact_completion(
    prompt: str, fact: str, generate: Generate, *, threshold: float = DEFAULT_FACT_THRESHOLD
) -> FactCompletion:
    """Ask the model to continue ``prompt``; completed when the output contains ``fact`` (fuzzy)."""
    similarity = fact_similarity(fact, generate(prompt))
    return FactCompletion(similarity, similarity >= threshold)


@dataclass(frozen=True)
class LMRecordMemorisation:
    """What one model reproduces of one record."""

    record_id: str
    extraction_strength: float
    exact_memorisation: float
    facts: tuple[FactCompletion, ...] = ()


def measure_record(
    record_id: str,
    token_ids: Sequence[int],
    *,
    next_token_logits: NextTokenLogits | None = None,
    sequence_logits: SequenceLogits | None = None,
    facts: Sequence[tuple[str, str]] = (),
    generate: Generate | None = None,
    fact_threshold: float = DEFAULT_FACT_THRESHOLD,
) -> LMRecordMemorisation:
    """Extraction strength, exact memorisation and fact completion of one record on one model."""
    preds = teacher_forced_predictions(
        token_ids, next_token_logits=next_token_logits, sequence_logits=sequence_logits
    )
    if facts and generate is None:
        raise ValueError("facts need a generate callable")
    probes = tuple(
        fact_completion(prompt, fact, generate, threshold=fact_threshold) for prompt, fact in facts
    )
    return LMRecordMemorisation(
        record_id=str(record_id),
        extraction_strength=extraction_strength(preds, token_ids),
        exact_memorisation=exact_memorisation(preds, token_ids),
        facts=probes,
    )


@dataclass(frozen=True, kw_only=True)
class LMMemorisationResult(CheckResult):
    """Per-record memorisation of the unlearned model against a reference that never saw it."""

    es_tolerance: float
    em_tolerance: float
    unlearned: tuple[LMRecordMemorisation, ...]
    reference: tuple[LMRecordMemorisation, ...]
    flagged_ids: tuple[str, ...]


def _language_model_inputs(evidence: LanguageModelEvidence) -> dict[str, Any]:
    return {"unlearned": evidence.memorisation, "reference": evidence.reference_memorisation}


# Measured through the guard on a guarded version: it counts for the suppressed class.
@register_check(
    CheckSpec(
        name="lm_memorisation",
        role="forget",
        applies_to=("language_model",),
        inputs=_language_model_inputs,
        false_fail="margin",
    )
)
def lm_memorisation(
    *,
    unlearned: Sequence[LMRecordMemorisation],
    reference: Sequence[LMRecordMemorisation],
    es_tolerance: float = DEFAULT_ES_TOLERANCE,
    em_tolerance: float = DEFAULT_EM_TOLERANCE,
) -> LMMemorisationResult:
    """Compare each forgotten record's memorisation on the unlearned and on a reference model.

    In: :func:`measure_record` results for the unlearned model and for a reference model
    (retrained without the records, or a shadow LM that never saw them, or the same model on
    held-out records of the same format: what it produces for a record it never saw), same
    records, same fact probes; tolerances in the metrics' units. Out:
    :class:`LMMemorisationResult`: FAIL when a record's extraction strength or exact
    memorisation exceeds the reference's by more than the tolerance, or a fact is completed that
    the reference does not complete; NOT_APPLICABLE without records; PASS otherwise (reproduces
    no more than a model that never saw them).
    """
    by_id = {r.record_id: r for r in reference}
    if len(by_id) != len(reference) or {u.record_id for u in unlearned} != set(by_id):
        raise ValueError("unlearned and reference must cover the same, distinct records")
    rule = (
        "Per forgotten record: FAIL if extraction strength exceeds the reference model's by more "
        f"than {fmt(es_tolerance)}, exact memorisation by more than {fmt(em_tolerance)}, or a "
        "fact probe is completed (fuzzy match) that the reference does not complete; PASS "
        "otherwise; NOT_APPLICABLE without records."
    )
    problems: list[str] = []
    flagged: list[str] = []
    for u in unlearned:
        ref = by_id[u.record_id]
        if len(u.facts) != len(ref.facts):
            raise ValueError(f"record {u.record_id}: different fact probes on the two models")
        found = []
        if u.extraction_strength > ref.extraction_strength + es_tolerance:
            found.append(
                f"extraction strength {fmt(u.extraction_strength)} vs {fmt(ref.extraction_strength)}"
            )
        if u.exact_memorisation > ref.exact_memorisation + em_tolerance:
            found.append(
                f"exact memorisation {fmt(u.exact_memorisation)} vs {fmt(ref.exact_memorisation)}"
            )
        leaked = [
            i
            for i, (f, r) in enumerate(zip(u.facts, ref.facts, strict=True))
            if f.completed and not r.completed
        ]
        if leaked:
            found.append(f"fact probe(s) {', '.join(map(str, leaked))} completed")
        if found:
            flagged.append(u.record_id)
            problems.append(f"{u.record_id}: " + ", ".join(found))
    if not unlearned:
        verdict, reason = Verdict.NOT_APPLICABLE, "No records to measure."
    elif flagged:
        verdict, reason = Verdict.FAIL, "; ".join(problems[:10])
    else:
        verdict = Verdict.PASS
        reason = f"None of {len(unlearned)} records is reproduced beyond the reference model."
    return LMMemorisationResult(
        check="lm_memorisation",
        verdict=verdict,
        rule=rule,
        reason=reason,
        es_tolerance=es_tolerance,
        em_tolerance=em_tolerance,
        unlearned=tuple(unlearned),
        reference=tuple(reference),
        flagged_ids=tuple(flagged),
    )
