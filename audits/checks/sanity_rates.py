"""How often the sanity check beside an exact deletion raises a false alarm: measured figures.

An exact deletion rests on its lineage proof; the per-record membership test
(``membership_lira``) still runs on the forgotten records as a sanity check. Those records are
provably absent from the new model, so every record it flags is a false alarm.
``benchmarks/exact_sanity_false_alarm.py`` measured how often that happens, computing the test as
the audit does (shadow models of the production count, scores standardised on held-out records,
``fit_shadow_reference`` with the shadow models' held-out scores, ``membership_test`` calibrated on
the new model's held-out scores, one request per data subject). The counts of that run are kept
here as data, with where they came from, so that the report can print the measured rate beside the
check (:func:`exact_sanity_false_alarm_sentence`). A new run replaces the rows and the provenance
together; so does a change to the test (the rows of 2026-12-06 before the calibration, from a
Student-t fit of the shadow scores alone, are in the README's history of this figure).

A false alarm of the check is a record detected after Holm's correction (it makes the request's
test FAIL); ``false_alarms`` counts the uncorrected per-record rejections (raw p <= alpha), the
test's calibration at its nominal level. Bounds are one-sided 95% Clopper-Pearson bounds; they
treat the tests as independent, which holds only given the target and shadow models they shared
(the run repeated everything with three targets per row).
"""

from __future__ import annotations

from dataclasses import dataclass

from audits.checks.membership import DEFAULT_ALPHA
from audits.checks.stats import clopper_pearson

# Two-sided 90% Clopper-Pearson ends are the one-sided 95% bounds.
_ONE_SIDED_95 = 0.90


def one_sided_bounds(successes: int, trials: int) -> tuple[float, float]:
    """One-sided 95% Clopper-Pearson lower and upper bounds of ``successes / trials``."""
    return clopper_pearson(successes, trials, level=_ONE_SIDED_95)


@dataclass(frozen=True)
class SanityFalseAlarms:
    """Counts of one measured cell (or several added up) on records absent from the model.

    ``tests``: per-record tests; ``false_alarms``: raw p <= ``alpha``; ``holm_detections``:
    records detected after Holm's correction within their request; ``requests``: audited
    requests (one data subject each), ``requests_failed`` those with a detection.
    """

    dataset: str
    method: str
    deletions: int
    requests: int
    tests: int
    false_alarms: int
    holm_detections: int
    requests_failed: int
    alpha: float = DEFAULT_ALPHA

    @property
    def rate(self) -> float:
        return self.false_alarms / self.tests

    @property
    def bounds(self) -> tuple[float, float]:
        return one_sided_bounds(self.false_alarms, self.tests)

    @property
    def holm_rate(self) -> float:
        return self.holm_detections / self.tests

    @property
    def holm_bounds(self) -> tuple[float, float]:
        return one_sided_bounds(self.holm_detections, self.tests)

    @property
    def request_fail_rate(self) -> float:
        return self.requests_failed / self.requests

    @property
    def request_fail_bounds(self) -> tuple[float, float]:
        return one_sided_bounds(self.requests_failed, self.requests)

    @property
    def within_stated_level(self) -> bool:
        """The issue's condition: the lower bound of the uncorrected rate is at most alpha."""
        return self.bounds[0] <= self.alpha


@dataclass(frozen=True)
class Provenance:
    """Where the measured figures come from."""

    script: str
    command: str
    date: str
    machine: str
    seconds: float
    design: str


EXACT_SANITY_PROVENANCE = Provenance(
    script="benchmarks/exact_sanity_false_alarm.py",
    command="python benchmarks/exact_sanity_false_alarm.py",
    date="2026-12-06",
    machine="2-core CPU, no GPU",
    seconds=735.4,
    design=(
        "per dataset x method 3 targets, each with 16 shadow models and 10 deletions of >= 25 "
        "records (whole data subjects); the test calibrated on each model's held-out records "
        "(113 breast-cancer, 976 MNIST); alpha 0.05; other jobs used the CPU meanwhile"
    ),
)

EXACT_SANITY_MEASURED: tuple[SanityFalseAlarms, ...] = (
    SanityFalseAlarms("breast_cancer", "sisa", deletions=30, requests=750, tests=749, false_alarms=14,
                      holm_detections=14, requests_failed=14),
    SanityFalseAlarms("breast_cancer", "retrain", deletions=30, requests=750, tests=750, false_alarms=20,
                      holm_detections=20, requests_failed=20),
    SanityFalseAlarms("mnist", "sisa", deletions=30, requests=159, tests=819, false_alarms=54,
                      holm_detections=6, requests_failed=6),
    SanityFalseAlarms("mnist", "retrain", deletions=30, requests=164, tests=812, false_alarms=30,
                      holm_detections=9, requests_failed=9),
)


def combined(rows: tuple[SanityFalseAlarms, ...], *, dataset: str, method: str) -> SanityFalseAlarms:
    """``rows`` added up into one (the same alpha throughout)."""
    if not rows:
        raise ValueError("no measured rows to combine")
    alphas = {row.alpha for row in rows}
    if len(alphas) != 1:
        raise ValueError(f"rows measured at different alphas: {sorted(alphas)}")
    return SanityFalseAlarms(
        dataset, method, alpha=alphas.pop(),
        **{name: sum(getattr(row, name) for row in rows)
           for name in ("deletions", "requests", "tests", "false_alarms", "holm_detections",
                        "requests_failed")},
    )


def exact_sanity_false_alarms(method: str | None = None) -> tuple[SanityFalseAlarms, ...]:
    """The measured rows of ``method`` (``sisa``, ``retrain``); every row for a method that was
    not measured (or None)."""
    rows = tuple(row for row in EXACT_SANITY_MEASURED if row.method == method)
    return rows or EXACT_SANITY_MEASURED


def _methods_text(methods: list[str]) -> str:
    names = {"sisa": "SISA", "retrain": "full-retrain"}
    return " and ".join(names.get(m, m) for m in methods)


def exact_sanity_false_alarm_sentence(method: str | None = None) -> str:
    """The sentence the report prints beside the sanity check of an exact deletion by ``method``.

    In: the exact method's name (``sisa``, ``retrain``, ``s3t``...; None for any). The figures are
    those measured for that method, added up over the datasets, or all of them when the method
    was not measured (the sentence then says so). The dataset with the highest rate of failed
    requests is named when it fails more often than the total. Out: one sentence, with its
    provenance.
    """
    rows = exact_sanity_false_alarms(method)
    methods = list(dict.fromkeys(row.method for row in rows))
    datasets = list(dict.fromkeys(row.dataset for row in rows))
    total = combined(rows, dataset="+".join(datasets), method="+".join(methods))
    scope = f"{_methods_text(methods)} deletions on the {' and '.join(datasets)} reference sets"
    if method is not None and method not in methods:
        scope += f"; not measured for {method}"
    holm_upper = total.holm_bounds[1]
    fail_upper = total.request_fail_bounds[1]
    sentence = (
        f"Sanity check, not proof: on records provably absent from the model ({scope}) it raised "
        f"a false alarm in {total.holm_detections:,} of {total.tests:,} per-record tests (rate "
        f"{total.holm_rate:.3f}, one-sided 95% upper bound {holm_upper:.3f}) and failed "
        f"{total.requests_failed:,} of {total.requests:,} deletion requests (rate "
        f"{total.request_fail_rate:.3f}, upper bound {fail_upper:.3f})"
    )
    worst = max(rows, key=lambda row: row.request_fail_rate)
    if len(rows) > 1 and worst.request_fail_rate > total.request_fail_rate:
        where = worst.dataset if len(methods) == 1 else f"{worst.dataset} ({worst.method})"
        sentence += (
            f", most often on {where}: {worst.requests_failed:,} of "
            f"{worst.requests:,} requests (rate {worst.request_fail_rate:.3f}, upper bound "
            f"{worst.request_fail_bounds[1]:.3f})"
        )
    low, high = total.bounds
    source = EXACT_SANITY_PROVENANCE
    return (
        f"{sentence}; before Holm's correction its per-record test rejected "
        f"{total.false_alarms:,} of {total.tests:,} at the nominal {total.alpha:g} (rate "
        f"{total.rate:.3f}, one-sided 95% bounds {low:.3f}-{high:.3f}). "
        f"{source.script}, {source.date}, {source.machine}."
    )
