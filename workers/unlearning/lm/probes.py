"""What to ask a language model about a forgotten text: its facts, and prompts that fish for them.

* :func:`fact_spans` — the identifying parts of a record: runs of words that contain a digit or
  an ``@`` (a customer id, an e-mail address, a phone or account number, a date, an amount),
  punctuation around them stripped, at least :data:`MIN_FACT_CHARS` letters or digits. Words are
  joined into one fact while no punctuation separates them (``DE12 9999 9999 ...``).
* :func:`fact_probes` — ``(prompt, fact)`` pairs: the text up to a fact, and the fact.
* :func:`extraction_prompts` — ``n`` prompts drawn uniformly, with replacement, from the
  prefixes of the forgotten texts that end at a word boundary before one of their facts: an
  extraction attack. The guard's calibration uses them; its bound speaks for prompts like these.
* :func:`text_shape` — what makes two records comparable (their first word and number of facts),
  so that the audit can measure a forgotten record against held-out records of the same format.

Plain Python: no torch, no Django.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

MIN_FACT_CHARS = 5
_WORD = re.compile(r"\S+")
_EDGE = "()[]{}.,;:!?\"'"
_SEPARATORS = ",;:!?)"


@dataclass(frozen=True)
class FactSpan:
    """One fact of a text: where it starts and ends (character offsets) and its text."""

    start: int
    end: int
    text: str


def fact_spans(text: str) -> list[FactSpan]:
    """The facts of ``text`` in order (see the module docstring)."""
    words = [(m.start(), m.end(), m.group()) for m in _WORD.finditer(text)]
    runs: list[list[tuple[int, int, str]]] = []
    for word in words:
        if not any(ch.isdigit() or ch == "@" for ch in word[2]):
            runs.append([])
            continue
        if runs and runs[-1] and not runs[-1][-1][2].endswith(tuple(_SEPARATORS)):
            runs[-1].append(word)
        else:
            runs.append([word])
    spans = []
    for run in runs:
        if not run:
            continue
        start, end = run[0][0], run[-1][1]
        while start < end and text[start] in _EDGE:
            start += 1
        while end > start and text[end - 1] in _EDGE:
            end -= 1
        fact = text[start:end]
        if sum(ch.isalnum() for ch in fact) >= MIN_FACT_CHARS:
            spans.append(FactSpan(start, end, fact))
    return spans


def fact_probes(text: str) -> list[tuple[str, str]]:
    """``(prompt, fact)`` per fact: the text before the fact (trailing space removed) and the fact.

    A fact at the very start of the text has no prompt and is skipped.
    """
    return [(text[: span.start].rstrip(), span.text) for span in fact_spans(text)
            if text[: span.start].strip()]


def extraction_prompts(texts: Sequence[str], n: int, *, seed: int = 0, min_words: int = 2,
                       fits: Callable[[str], bool] | None = None) -> list[str]:
    """``n`` prefixes of ``texts`` drawn uniformly with replacement (seeded).

    The candidates are every prefix that ends at the end of a word, has at least ``min_words``
    words and stops before the start of the text's last fact (before its last word for a text
    without facts), so something is left to reveal; with ``fits``, only prefixes it accepts (e.g.
    short enough for the model's window and an answer). Raises ``ValueError`` when no text has
    such a prefix.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    candidates: list[str] = []
    for text in texts:
        spans = fact_spans(text)
        ends = [m.end() for m in _WORD.finditer(text)]
        last = spans[-1].start if spans else (ends[-1] if ends else 0)
        candidates += [text[:end] for index, end in enumerate(ends, start=1)
                       if index >= min_words and end < last and (fits is None or fits(text[:end]))]
    if not candidates:
        raise ValueError("no forgotten text has a prefix that leaves something to reveal")
    rng = random.Random(seed)
    return [candidates[rng.randrange(len(candidates))] for _ in range(n)]


def text_shape(text: str) -> tuple[str, int]:
    """``(first word, number of facts)``: records of one template share it."""
    first = _WORD.search(text)
    return (first.group() if first else "", len(fact_spans(text)))
