"""Learn-then-Test calibration of the guard's threshold (Angelopoulos et al. 2021).

On ``n`` held-out calibration prompts the guarded procedure is replayed for every candidate
threshold; an oracle independent of the verifier says whether each served answer leaks a forgotten
fact. For each threshold, H0 "leak rate >= alpha" is tested with the exact binomial p-value.
Thresholds are tested in a fixed sequence from the strictest (lowest: flags most) to the loosest,
stopping at the first that fails, so the family-wise error stays at ``delta`` without a multiplicity
correction. The least restrictive certified threshold is chosen.

Guarantee, when certified: with probability at least ``1 - delta`` over the draw of the
calibration prompts, the guarded model's leak rate on prompts from the same distribution is at most
``alpha``. It says nothing about prompts unlike the calibration set. The candidate thresholds
must be fixed before the calibration prompts are seen.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from workers.unlearning.base import ProgressCallback, no_progress
from workers.unlearning.guard.generators import Generator
from workers.unlearning.guard.guarded import REDACTION, attempt_seeds, first_passing_attempt
from workers.unlearning.guard.stats import (
    binomial_p_value,
    clopper_pearson_upper,
    minimum_calibration_size,
)
from workers.unlearning.guard.verifier import FactOracle, LeakVerifier

# Scores live in [0, 1]; a flag means score >= threshold, so a lower threshold is stricter.
DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 20))


@dataclass(frozen=True)
class ThresholdTest:
    """One candidate threshold's outcome on the calibration prompts."""

    threshold: float
    leaks: int
    redactions: int
    p_value: float
    clopper_pearson_upper: float
    certified: bool


@dataclass(frozen=True)
class GuardCalibration:
    """What the calibration found and what the guard may claim.

    ``certified`` is True only when some threshold passed; then ``threshold`` is the least
    restrictive one that did and ``certified_bound`` equals ``alpha``: the statement is "leak rate
    <= alpha with probability >= 1 - delta". ``clopper_pearson_upper`` is the one-sided
    Clopper-Pearson bound of the chosen threshold's own count (<= alpha; shown for the report, not a
    second claim). When not certified, ``reason`` says why and no bound is stated.
    """

    alpha: float
    delta: float
    n: int
    minimum_n: int
    max_regenerations: int
    certified: bool
    reason: str
    threshold: float | None = None
    leaks: int | None = None
    clopper_pearson_upper: float | None = None
    certified_bound: float | None = None
    redaction_rate: float | None = None
    tests: tuple[ThresholdTest, ...] = field(default_factory=tuple)

    def statement(self) -> str:
        """The claim in one sentence, fit for a report."""
        if not self.certified:
            return f"No leak-rate bound is claimed: {self.reason}"
        return (
            f"With probability at least {1 - self.delta:.0%} over the calibration draw, the guarded "
            f"model's leak rate on prompts like the {self.n} calibration prompts is at most "
            f"{self.alpha:g} (threshold {self.threshold:g}: {self.leaks} leak(s) in {self.n}, "
            f"Clopper-Pearson upper bound {self.clopper_pearson_upper:.4g})."
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["statement"] = self.statement()
        return data


def calibrate_guard(
    generate: Generator,
    verifier: LeakVerifier,
    prompts: Sequence[str],
    oracle: FactOracle,
    *,
    alpha: float = 0.01,
    delta: float = 0.05,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    max_regenerations: int = 3,
    redaction: str = REDACTION,
    seed: int = 0,
    progress: ProgressCallback = no_progress,
) -> GuardCalibration:
    """Choose the guard's threshold by Learn-then-Test with fixed-sequence testing.

    In: the ``(prompt, seed) -> text`` generator, the verifier the guard will use, ``n`` held-out
    calibration prompts, the oracle that labels leaks, the target leak rate ``alpha``, the error
    level ``delta``, candidate thresholds, the guard's regeneration budget, the redaction text and
    a seed for the sampling seeds. Out: a :class:`GuardCalibration`. When ``n`` is below
    :func:`minimum_calibration_size` it refuses at once, generating nothing: not even zero leaks
    could support the bound.
    """
    minimum_n = minimum_calibration_size(alpha, delta)
    candidates = sorted(set(float(t) for t in thresholds))
    if not candidates:
        raise ValueError("no candidate thresholds")
    if max_regenerations < 0:
        raise ValueError(f"max_regenerations must be >= 0, got {max_regenerations}")
    n = len(prompts)
    common = {
        "alpha": alpha,
        "delta": delta,
        "n": n,
        "minimum_n": minimum_n,
        "max_regenerations": max_regenerations,
    }
    if n < minimum_n:
        return GuardCalibration(
            **common,
            certified=False,
            reason=(
                f"{n} calibration prompts cannot certify a leak rate <= {alpha:g} at delta "
                f"{delta:g}: even with zero leaks that needs n >= ln(delta)/ln(1-alpha), "
                f"i.e. {minimum_n} prompts"
            ),
        )

    seeds = random.Random(seed)
    redaction_leaks = oracle.leaks(redaction)
    # Per prompt, the attempts' verifier scores and oracle labels. Attempts stop once one passes
    # the strictest threshold: every looser threshold serves that attempt or an earlier one.
    replays: list[tuple[list[float], list[bool]]] = []
    progress("calibrating", 0.0)
    for index, prompt in enumerate(prompts):
        scores: list[float] = []
        labels: list[bool] = []
        for attempt_seed in attempt_seeds(seeds.randrange(2**31), max_regenerations):
            text = generate(prompt, attempt_seed)
            scores.append(verifier.score(text).score)
            labels.append(oracle.leaks(text))
            if scores[-1] < candidates[0]:
                break
        replays.append((scores, labels))
        progress("calibrating", (index + 1) / n)

    tests: list[ThresholdTest] = []
    still_certifying = True
    for threshold in candidates:
        leaks = redactions = 0
        for scores, labels in replays:
            served = first_passing_attempt(scores, threshold)
            if served is None:
                redactions += 1
                leaks += redaction_leaks
            else:
                leaks += labels[served]
        p_value = binomial_p_value(leaks, n, alpha)
        still_certifying = still_certifying and p_value <= delta
        tests.append(
            ThresholdTest(
                threshold=threshold,
                leaks=leaks,
                redactions=redactions,
                p_value=p_value,
                clopper_pearson_upper=clopper_pearson_upper(leaks, n, delta),
                certified=still_certifying,
            )
        )

    passed = [t for t in tests if t.certified]
    if not passed:
        strictest = tests[0]
        return GuardCalibration(
            **common,
            certified=False,
            reason=(
                f"even the strictest threshold {strictest.threshold:g} leaked {strictest.leaks} "
                f"time(s) in {n} (p = {strictest.p_value:.3g} > delta {delta:g}; "
                f"Clopper-Pearson upper bound {strictest.clopper_pearson_upper:.3g} > {alpha:g})"
            ),
            tests=tuple(tests),
        )
    chosen = passed[-1]
    return GuardCalibration(
        **common,
        certified=True,
        reason=f"{len(passed)} of {len(tests)} thresholds certified in fixed sequence",
        threshold=chosen.threshold,
        leaks=chosen.leaks,
        clopper_pearson_upper=chosen.clopper_pearson_upper,
        certified_bound=alpha,
        redaction_rate=chosen.redactions / n,
        tests=tuple(tests),
    )
