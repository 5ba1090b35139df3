"""The guarded model: each response is checked by the verifier, regenerated or redacted.

A response whose verifier score reaches the threshold is thrown away and generated again with the
next sampling seed, up to ``max_regenerations`` times; when every attempt is flagged the answer is
the redaction text. Calibration (:mod:`workers.unlearning.guard.calibration`) replays exactly
this procedure through :func:`first_passing_attempt` and :func:`attempt_seeds`, which is what lets
its bound speak for the deployed guard.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from workers.unlearning.guard.generators import Generator, as_generator
from workers.unlearning.guard.verifier import LeakVerifier

REDACTION = "[withheld: this answer could reveal data that was deleted at a data subject's request]"


def attempt_seeds(base_seed: int, max_regenerations: int) -> list[int]:
    """The sampling seeds of one prompt's attempts: the first answer and each regeneration."""
    return [base_seed + attempt for attempt in range(max_regenerations + 1)]


def first_passing_attempt(scores: Sequence[float], threshold: float) -> int | None:
    """Index of the first attempt whose score is below ``threshold``; None means redact."""
    for index, score in enumerate(scores):
        if score < threshold:
            return index
    return None


@dataclass(frozen=True)
class GuardedResponse:
    """One guarded answer: the text served, the verifier scores of every attempt made."""

    text: str
    attempts: int
    redacted: bool
    scores: tuple[float, ...]


class GuardedGenerator:
    """A generative model behind the verifier guard (guarantee class ``suppressed``).

    In: a generator (``(prompt, seed) -> text`` or ``prompt -> text``), a :class:`LeakVerifier`,
    the flag threshold, how many regenerations to try, the redaction text, a seed for the
    per-call sampling seeds and, once calibrated, the :class:`GuardCalibration` that certifies the
    threshold. Calling it with a prompt returns the text to serve. The wrapped model's
    parameters are never touched.
    """

    guarantee_class = "suppressed"

    def __init__(
        self,
        generate: Callable[..., str],
        verifier: LeakVerifier,
        threshold: float,
        *,
        max_regenerations: int = 3,
        redaction: str = REDACTION,
        seed: int | None = None,
        calibration: Any = None,
    ) -> None:
        if max_regenerations < 0:
            raise ValueError(f"max_regenerations must be >= 0, got {max_regenerations}")
        self.generate: Generator = as_generator(generate)
        self.verifier = verifier
        self.threshold = threshold
        self.max_regenerations = max_regenerations
        self.redaction = redaction
        self.calibration = calibration
        self._seeds = random.Random(seed)

    def respond(self, prompt: str, *, base_seed: int | None = None) -> GuardedResponse:
        """Generate, verify, regenerate or redact; returns the served text and how it came about."""
        if base_seed is None:
            base_seed = self._seeds.randrange(2**31)
        scores: list[float] = []
        for seed in attempt_seeds(base_seed, self.max_regenerations):
            text = self.generate(prompt, seed)
            scores.append(self.verifier.score(text).score)
            if first_passing_attempt(scores[-1:], self.threshold) is not None:
                return GuardedResponse(text, len(scores), False, tuple(scores))
        return GuardedResponse(self.redaction, len(scores), True, tuple(scores))

    def __call__(self, prompt: str) -> str:
        return self.respond(prompt).text
