"""Language-model evidence for an audit: what a version still reproduces of the forgotten records.

Worker side (torch and transformers are imported inside the functions). For each forgotten
record, on the original version ("before") and on the new one ("after"):

* extraction strength and exact memorisation from one teacher-forced pass, and fact completion
  (does greedy decoding, prompted with the record up to an identifier, produce the identifier?),
  through the pure functions of :mod:`audits.checks.lm_memorisation`;
* verbatim completion: greedy continuation from 25, 50 and 75 per cent of the record's tokens,
  the fraction of the next (up to :data:`VERBATIM_TOKENS`) tokens reproduced;
* the token NLL of the forgotten texts, and perplexity on a sample of the kept training records
  and of held-out records (utility).

The reference ("a model that never saw the record") is the same version on held-out records of
the same format (same first word, same number of identifiers), never trained on by any version:
how much of such a record the model reproduces is what it knows of the format, not of the person.
A forgotten record counts as still memorised when it is reproduced beyond that (the
``lm_memorisation`` check); the same comparison on the original version shows whether the check
could see the memorisation in the first place.

For a guarded (``suppressed``) version the "after" figures are measured through the guard: an
answer is the model's greedy continuation, withheld (nothing reproduced) when the verifier flags
it, as the guard would; a teacher-forced prediction counts only if the answer that starts with it
(up to the guard's answer length) is served. The weights are the original's by design, so the
reference is the weights' own behaviour on held-out records, unguarded: the served answers must
reveal no more than a model that never saw the record.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from audits.checks.evidence import DEFAULT_MIN_UTILITY_RATIO
from audits.checks.lm_memorisation import (
    FactCompletion,
    LMRecordMemorisation,
    exact_memorisation,
    extraction_strength,
    fact_completion,
    lm_memorisation,
    suffix_match,
    teacher_forced_predictions,
)

TWINS_PER_RECORD = 4
UTILITY_SAMPLE = 64
GUARD_UTILITY_SAMPLE = 32
PREFIX_FRACTIONS = (0.25, 0.5, 0.75)
VERBATIM_TOKENS = 32
FACT_EXTRA_TOKENS = 4
GENERATION_BATCH = 16
WITHHELD = -1


class LMProbe:
    """Greedy decoding and scoring of one causal LM (eval mode, no gradients) on ``device``.

    With ``guard=(verifier, threshold)`` the answers pass through the guard: an answer whose
    verifier score reaches the threshold is withheld. ``answer_tokens`` caps the length of a
    guarded answer (the guard's ``max_new_tokens``). Greedy continuations are computed in
    left-padded batches with a key/value cache; generation never stops early at an end-of-text
    token (the metrics compare fixed numbers of positions).
    """

    def __init__(self, model: Any, tokenizer: Any, *, device: str, max_length: int,
                 guard: tuple[Any, float] | None = None, answer_tokens: int = 48) -> None:
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.device = device
        self.max_length = max_length
        self.guard = guard
        self.answer_tokens = answer_tokens
        self.eos_id = tokenizer.eos_token_id
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (self.eos_id or 0)
        config = model.config
        self.max_positions = int(getattr(config, "n_positions", None)
                                 or getattr(config, "max_position_embeddings", None) or 1 << 30)

    def ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, truncation=True, max_length=self.max_length)["input_ids"])

    def sequence_logits(self, ids: Sequence[int]) -> np.ndarray:
        import torch

        with torch.no_grad():
            x = torch.tensor([list(ids)], device=self.device)
            return self.model(input_ids=x).logits[0].float().cpu().numpy()

    def continuations(self, requests: Sequence[tuple[Sequence[int], int, Sequence[int]]]) -> list[list[int]]:
        """Greedy continuations of ``(prefix, steps, known)`` requests. ``known``: tokens already
        known to start the continuation (from teacher-forced predictions), used as they are; only
        the rest is generated, :data:`GENERATION_BATCH` sequences at a time."""
        results: list[list[int]] = [[] for _ in requests]
        todo = []
        for index, (prefix, steps, known) in enumerate(requests):
            steps = max(0, min(steps, self.max_positions - len(prefix)))
            head = [int(t) for t in known[:steps]]
            results[index] = head
            if len(head) < steps:
                todo.append((index, [int(t) for t in prefix] + head, steps - len(head)))
        todo.sort(key=lambda item: len(item[1]))  # similar lengths batch with little padding
        for start in range(0, len(todo), GENERATION_BATCH):
            chunk = todo[start : start + GENERATION_BATCH]
            generated = self._greedy_batch([context for _, context, _ in chunk], max(n for _, _, n in chunk))
            for (index, _, n), tokens in zip(chunk, generated, strict=True):
                results[index] = results[index] + tokens[:n]
        return results

    def continuation(self, prefix: Sequence[int], steps: int, *, known: Sequence[int] = ()) -> list[int]:
        """One greedy continuation (see :meth:`continuations`)."""
        return self.continuations([(prefix, steps, known)])[0]

    def _greedy_batch(self, contexts: Sequence[list[int]], steps: int) -> list[list[int]]:
        import torch

        width = max(len(c) for c in contexts)
        ids = torch.full((len(contexts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(contexts), width), dtype=torch.long)
        for row, context in enumerate(contexts):
            ids[row, width - len(context):] = torch.tensor(context, dtype=torch.long)
            mask[row, width - len(context):] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out_tokens = []
        cache = None
        with torch.no_grad():
            for _ in range(steps):
                out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache,
                                 use_cache=True, logits_to_keep=1)
                cache = out.cache
                ids = out.logits[:, -1].argmax(-1, keepdim=True)
                out_tokens.append(ids)
                mask = torch.cat([mask, torch.ones_like(ids)], dim=1)
                # A row needing fewer steps than the batch runs on; its extra tokens are dropped,
                # so clamping their positions to the model's range changes none that are kept.
                positions = (positions[:, -1:] + 1).clamp(max=self.max_positions - 1)
        return torch.cat(out_tokens, dim=1).cpu().tolist()

    def withheld(self, tokens: Sequence[int]) -> bool:
        """Would the guard withhold this answer? (Always False without a guard.)"""
        if self.guard is None or not tokens:
            return False
        verifier, threshold = self.guard
        text = self.tokenizer.decode(list(tokens), skip_special_tokens=True)
        return verifier.score(text).score >= threshold

    def served_text(self, tokens: Sequence[int]) -> str:
        """The answer as served: cut at end-of-text; empty when the guard withholds it."""
        tokens = list(tokens)
        if self.eos_id in tokens:
            tokens = tokens[: tokens.index(self.eos_id)]
        if self.withheld(tokens):
            return ""
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    def token_nll(self, records: Sequence[tuple[str, str]]) -> float:
        """Token-weighted mean NLL (nats) over the texts (teacher forcing, no guard involved)."""
        from workers.unlearning.lm.data import lm_batches
        from workers.unlearning.lm.losses import average_token_nll

        batches = lm_batches(self.tokenizer, list(records), max_length=self.max_length, batch_size=8)
        return average_token_nll(self.model, batches, self.device)


@dataclass(frozen=True)
class TextMeasurement:
    """One text on one model: the memorisation figures and the verbatim completion."""

    memorisation: LMRecordMemorisation
    verbatim: float


def _followed(predictions: np.ndarray, ids: Sequence[int], start: int) -> list[int]:
    """The true tokens after position ``start`` for as long as the teacher-forced predictions
    get them right, then the first wrong prediction: the known head of greedy generation."""
    known: list[int] = []
    for t in range(start, len(predictions)):
        known.append(int(predictions[t]))
        if predictions[t] != ids[t + 1]:
            break
    return known


@dataclass
class _Plan:
    """What one text needs measured, with the indices of its generation requests."""

    key: str
    ids: list[int]
    raw: np.ndarray
    facts: list[tuple[str, str, int]]
    verbatim: list[tuple[int, list[int], int]]
    served: list[tuple[int, int]]


def measure_text(probe: LMProbe, record_id: str, text: str) -> TextMeasurement:
    """:func:`measure_texts` for one text."""
    return measure_texts(probe, [(record_id, text)])[0]


def measure_texts(probe: LMProbe, items: Sequence[tuple[str, str]]) -> list[TextMeasurement]:
    """Memorisation (through the probe's guard, if any) and verbatim completion of each
    ``(record_id, text)``; all greedy generation of all texts is batched together."""
    from workers.unlearning.lm.probes import fact_probes

    requests: list[tuple[Sequence[int], int, Sequence[int]]] = []

    def ask(prefix: Sequence[int], steps: int, known: Sequence[int] = ()) -> int:
        requests.append((prefix, steps, known))
        return len(requests) - 1

    plans = []
    for record_id, text in items:
        ids = probe.ids(text)
        raw = teacher_forced_predictions(ids, sequence_logits=probe.sequence_logits)
        plan = _Plan(str(record_id), ids, raw, [], [], [])
        for prompt, fact in fact_probes(text):
            steps = len(probe.ids(" " + fact)) + FACT_EXTRA_TOKENS
            prompt_ids = probe.ids(prompt)
            if len(prompt_ids) + steps > probe.max_length:
                continue  # beyond what the model reads of a record: it was never trained on it
            plan.facts.append((prompt, fact, ask(prompt_ids, steps)))
        for fraction in PREFIX_FRACTIONS:
            p = min(max(1, round(fraction * len(ids))), len(ids) - 1)
            window = ids[: p + VERBATIM_TOKENS]
            plan.verbatim.append((p, window, ask(ids[:p], len(window) - p, _followed(raw, ids, p - 1))))
        if probe.guard is not None:
            # Position t's prediction is the first token of the answer to ids[:t + 1]; a wrong one
            # is wrong whether served or withheld, so only the right ones need their answer.
            for t in range(len(raw)):
                if raw[t] == ids[t + 1]:
                    steps = min(probe.answer_tokens, len(ids) - 1 - t)
                    plan.served.append((t, ask(ids[: t + 1], steps, _followed(raw, ids, t))))
        plans.append(plan)
    answers = probe.continuations(requests)

    results = []
    for plan in plans:
        predictions = plan.raw.copy()
        for t, index in plan.served:
            if probe.withheld(answers[index]):
                predictions[t] = WITHHELD
        facts = tuple(fact_completion(prompt, fact, lambda _prompt, a=answers[index]: probe.served_text(a))
                      for prompt, fact, index in plan.facts)
        verbatim = [0.0 if probe.withheld(answers[index]) else suffix_match(answers[index], window, p)
                    for p, window, index in plan.verbatim]
        memorisation = LMRecordMemorisation(
            record_id=plan.key,
            extraction_strength=extraction_strength(predictions, plan.ids),
            exact_memorisation=exact_memorisation(predictions, plan.ids),
            facts=facts,
        )
        results.append(TextMeasurement(memorisation, float(np.mean(verbatim))))
    return results


def reference_measurement(record_id: str, twins: Sequence[TextMeasurement], facts: int) -> TextMeasurement:
    """A forgotten record's reference from held-out records of its format: mean extraction
    strength, exact memorisation and verbatim completion; fact probe i completed when it was
    completed on any of them (a format-guessable fact then does not count against the record)."""
    if not twins:
        raise ValueError(f"no held-out record of the same format as {record_id}")
    probes = []
    for i in range(facts):
        found = [t.memorisation.facts[i] for t in twins if len(t.memorisation.facts) > i]
        best = max((f.similarity for f in found), default=0.0)
        probes.append(FactCompletion(best, any(f.completed for f in found)))
    return TextMeasurement(
        LMRecordMemorisation(
            record_id=str(record_id),
            extraction_strength=float(np.mean([t.memorisation.extraction_strength for t in twins])),
            exact_memorisation=float(np.mean([t.memorisation.exact_memorisation for t in twins])),
            facts=tuple(probes),
        ),
        float(np.mean([t.verbatim for t in twins])),
    )


def held_out_twins(forgotten: Sequence[tuple[str, str]], held_out: Sequence[tuple[str, str]], *,
                   per_record: int, seed: int) -> dict[str, list[tuple[str, str]]]:
    """Per forgotten record, up to ``per_record`` held-out records of the same shape (seeded)."""
    from workers.unlearning.lm.probes import text_shape

    by_shape: dict[tuple[str, int], list[tuple[str, str]]] = {}
    for key, text in sorted(held_out):
        by_shape.setdefault(text_shape(text), []).append((key, text))
    rng = np.random.default_rng(seed)
    twins = {}
    for key, text in forgotten:
        pool = by_shape.get(text_shape(text), [])
        chosen = sorted(rng.choice(len(pool), size=min(per_record, len(pool)), replace=False).tolist()) if pool else []
        twins[key] = [pool[i] for i in chosen]
    return twins


def _sample(records: Sequence[tuple[str, str]], n: int, seed: int) -> list[tuple[str, str]]:
    records = sorted(records)
    if len(records) <= n:
        return records
    chosen = np.random.default_rng(seed).choice(len(records), size=n, replace=False)
    return [records[i] for i in sorted(chosen.tolist())]


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def _fact_rate(measurements: Sequence[TextMeasurement]) -> float | None:
    probes = [f.completed for m in measurements for f in m.memorisation.facts]
    return float(np.mean(probes)) if probes else None


def _summary(measurements: Sequence[TextMeasurement]) -> dict[str, float | None]:
    return {
        "extraction_strength": _mean([m.memorisation.extraction_strength for m in measurements]),
        "exact_memorisation": _mean([m.memorisation.exact_memorisation for m in measurements]),
        "verbatim_completion": _mean([m.verbatim for m in measurements]),
        "facts_completed": _fact_rate(measurements),
    }


def language_model_evidence(*, original: Any, unlearned: Any, train_records: Sequence[tuple[str, str]],
                            held_out: Sequence[tuple[str, str]], forget_keys: Sequence[str],
                            guard_key: bytes | None, seed: int, device: str, progress: Any,
                            min_references: int = TWINS_PER_RECORD,
                            min_utility_ratio: float = DEFAULT_MIN_UTILITY_RATIO) -> dict[str, Any]:
    """Measure an LM unlearning outcome. In: the original and new runs (``load_run``), the
    dataset's training and held-out records as ``(key, text)``, the forgotten keys, the guard's
    hashing key (for a guarded new version), a seed for the samples, the device and a progress
    callback (``(stage, fraction)``, fractions 0..1). Out: ``{"checks": [CheckResult...],
    "suppression": SuppressionBound | None, "section": {...}}`` (the section is the audit's
    ``language_model`` entry: JSON data, no text of any record). The checks are every registered
    check that applies to a language model, run on the measurements. ``min_references``: the fewest
    held-out records of its format a forgotten record must be compared with (the LM audit's own
    minimum, setting ``AUDIT_LM_MIN_REFERENCES``); as many are drawn, and at least
    :data:`TWINS_PER_RECORD`. ``min_utility_ratio``: the perplexity bar the plan declared."""
    from audits.checks.evidence import LanguageModelEvidence, UtilityFigures
    from audits.checks.registry import run_checks
    from audits.checks.verdict import SuppressionBound

    texts = dict(train_records)
    forgotten = [(key, texts[key]) for key in sorted(forget_keys) if key in texts]
    members = [row.record_key for row in unlearned.membership]
    retain = _sample([(k, texts[k]) for k in members if k in texts], UTILITY_SAMPLE, seed)
    test = _sample(held_out, UTILITY_SAMPLE, seed + 1)
    per_record = max(TWINS_PER_RECORD, int(min_references))
    twins = held_out_twins(forgotten, held_out, per_record=per_record, seed=seed)
    max_length = int(original.config.get("max_length", 256))
    guarded = unlearned.guard is not None
    if guarded and guard_key is None:
        raise ValueError("a guarded version needs its guard's key to be audited")

    before = LMProbe(original.model, original.tokenizer, device=device, max_length=max_length)
    progress("measuring the original version", 0.05)
    forget_before, twins_before = _measure_with_twins(before, forgotten, twins)
    nll_before = before.token_nll(forgotten) if forgotten else None
    ppl_before = {"retain": math.exp(before.token_nll(retain)), "test": math.exp(before.token_nll(test))}

    progress("measuring the new version", 0.4)
    if guarded:
        stored = unlearned.guard
        after = LMProbe(unlearned.model, unlearned.tokenizer, device=device, max_length=max_length,
                        guard=(stored.verifier(guard_key), stored.threshold),
                        answer_tokens=int(stored.generation.get("max_new_tokens", 48)))
        forget_after = measure_texts(after, forgotten)
        twins_after = twins_before  # same weights: the unguarded reference is the same
        ppl_after = dict(ppl_before)
        nll_after = nll_before
    else:
        after = LMProbe(unlearned.model, unlearned.tokenizer, device=device, max_length=max_length)
        forget_after, twins_after = _measure_with_twins(after, forgotten, twins)
        nll_after = after.token_nll(forgotten) if forgotten else None
        ppl_after = {"retain": math.exp(after.token_nll(retain)), "test": math.exp(after.token_nll(test))}
    progress("comparing with held-out records", 0.8)

    measured = [(key, i) for i, (key, _) in enumerate(forgotten) if twins[key]]
    unmeasured = [key for key, _ in forgotten if not twins[key]]
    ref_before = {key: reference_measurement(key, twins_before[key], len(forget_before[i].memorisation.facts))
                  for key, i in measured}
    ref_after = {key: reference_measurement(key, twins_after[key], len(forget_after[i].memorisation.facts))
                 for key, i in measured}
    checks = run_checks(LanguageModelEvidence(
        memorisation=tuple(forget_after[i].memorisation for _, i in measured),
        reference_memorisation=tuple(ref_after[key].memorisation for key, _ in measured),
        utility=UtilityFigures(metric="perplexity", retain=ppl_after["retain"], test=ppl_after["test"],
                               original_retain=ppl_before["retain"], original_test=ppl_before["test"],
                               min_ratio=min_utility_ratio),
        reference_record_ids=tuple(key for key, _ in forgotten),
        references_per_record=tuple(len(twins[key]) for key, _ in forgotten), min_references=int(min_references),
    ))
    # Whether the memorisation check could see anything at all: the same comparison on the
    # original version, a figure of the section (not a check of the audit).
    detectable = lm_memorisation(unlearned=[forget_before[i].memorisation for _, i in measured],
                                 reference=[ref_before[key].memorisation for key, _ in measured])

    summary_before = _summary(forget_before)
    summary_after = _summary(forget_after)
    summary_ref = _summary(list(ref_after.values()))
    figures = {name: {"before": summary_before[name], "after": summary_after[name], "reference": summary_ref[name]}
               for name in summary_before}
    figures["forget_token_nll"] = {"before": nll_before, "after": nll_after, "reference": None}
    figures["perplexity_retain"] = {"before": ppl_before["retain"], "after": ppl_after["retain"], "reference": None}
    figures["perplexity_test"] = {"before": ppl_before["test"], "after": ppl_after["test"], "reference": None}

    section: dict[str, Any] = {
        "records": len(forgotten),
        "records_without_reference": len(unmeasured),
        "held_out_per_record": per_record,
        "references": {"minimum": int(min_references), "shadow_models": 0,
                       "per_record": {key: len(twins[key]) for key, _ in forgotten}},
        "retain_sample": len(retain), "test_sample": len(test),
        "measured_through_guard": guarded,
        "figures": figures,
        "detectable_on_original": {"verdict": detectable.verdict.value, "flagged": len(detectable.flagged_ids),
                                   "of": len(measured)},
    }
    suppression = None
    if guarded:
        calibration = stored.calibration
        withheld = _guard_withholding_rate(after, _sample(held_out, GUARD_UTILITY_SAMPLE, seed + 2))
        section["guard"] = {
            "alpha": calibration["alpha"], "delta": calibration["delta"], "n": calibration["n"],
            "certified": bool(calibration["certified"]), "threshold": calibration.get("threshold"),
            "leaks": calibration.get("leaks"), "upper_bound": calibration.get("clopper_pearson_upper"),
            "redaction_rate": calibration.get("redaction_rate"), "statement": calibration["statement"],
            "held_out_withheld_rate": withheld, "held_out_sample": GUARD_UTILITY_SAMPLE,
        }
        if calibration["certified"] and calibration.get("clopper_pearson_upper") is not None:
            suppression = SuppressionBound(alpha=calibration["alpha"], delta=calibration["delta"],
                                           n=calibration["n"], upper_bound=calibration["clopper_pearson_upper"])
    if forgotten and not measured:
        section["note"] = "no forgotten record had a held-out record of the same format to compare with"
    return {"checks": checks, "suppression": suppression, "section": section}


def _measure_with_twins(probe: LMProbe, forgotten, twins) -> tuple[list[TextMeasurement], dict]:
    """The forgotten records and their held-out twins on one model, in one batched pass."""
    items = list(forgotten) + [twin for key, _ in forgotten for twin in twins[key]]
    measured = measure_texts(probe, items)
    own, rest = measured[: len(forgotten)], iter(measured[len(forgotten):])
    return own, {key: [next(rest) for _ in twins[key]] for key, _ in forgotten}


def _guard_withholding_rate(probe: LMProbe, records: Sequence[tuple[str, str]]) -> float | None:
    """Share of held-out records (other people, never trained on) whose answer to their first
    half the guard withholds: what the guard costs people it does not protect."""
    if not records:
        return None
    requests = []
    for _key, text in records:
        ids = probe.ids(text)
        half = max(1, len(ids) // 2)
        requests.append((ids[:half], min(probe.answer_tokens, len(ids) - half), ()))
    return sum(probe.withheld(answer) for answer in probe.continuations(requests)) / len(records)
