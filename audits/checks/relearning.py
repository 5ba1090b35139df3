"""Relearning check: does a little fine-tuning on forget-like data bring the forgotten data back?

Why: gradient-ascent methods can hide what a model knows instead of removing it; a few steps on a
handful of examples like the forgotten ones restore it (measured on scikit-learn digits, issue 23:
5 examples of a forgotten class, 10 steps at lr 1e-3: a retrained model recovers 0.0 of the class,
NegGrad+ 0.207). A model that never learned the data must learn it from those few examples; a
model that only hid it recovers more, and faster.

The same budget grid (steps x learning rate on the same forget-like examples, never the forgotten
records themselves) is run on the unlearned model and on references retrained without the forget
set. Recovery at a budget: accuracy on the forgotten records after the fine-tuning (or any score
where higher means "knows the records again"). FAIL when, at some budget, the unlearned model
recovers more than every reference by more than the margin ``max(min_margin, k x the references'
standard deviation at that budget)`` (k = 3; min_margin 0.05 of accuracy, since with few records
accuracy moves in steps of 1/n). PASS otherwise; NOT_APPLICABLE with fewer than 2 references, and
where the audit says why it does not apply (``not_applicable``: random records, no held-out
forget-like examples).

The runner does the fine-tuning (audits/forget_references.py); this module only compares
recoveries (pure NumPy).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from audits.checks.evidence import ClassifierEvidence
from audits.checks.registry import CheckSpec, register_check
from audits.checks.result import CheckResult, Verdict, fmt

DEFAULT_K_SPREAD = 3.0
DEFAULT_MIN_MARGIN = 0.05
MIN_REFERENCES = 2


@dataclass(frozen=True, kw_only=True)
class RelearningResult(CheckResult):
    """Recovery per budget of the unlearned model and of the references, and the worst excess."""

    budgets: tuple[str, ...]
    unlearned: dict[str, float]
    references: dict[str, tuple[float, ...]]
    margins: dict[str, float]
    worst_budget: str | None
    worst_excess: float | None


def _classifier_inputs(evidence: ClassifierEvidence) -> dict[str, Any] | None:
    """The recoveries the runner measured, or why the check does not apply; None where the runner
    measured nothing (not an approximate result)."""
    figures = evidence.forget_references
    if figures is None:
        return None
    why = figures.not_applicable or figures.relearning_not_applicable
    if why or figures.unlearned_recovery is None:
        return {"unlearned": {}, "references": [], "not_applicable": why or "no recovery was measured"}
    return {"unlearned": figures.unlearned_recovery, "references": list(figures.reference_recovery)}


@register_check(CheckSpec(name="relearning", role="forget", on_weights=True, applies_to=("classifier",),
                          inputs=_classifier_inputs, false_fail="margin"))
def relearning(*, unlearned: Mapping[str, float], references: Sequence[Mapping[str, float]],
               k_spread: float = DEFAULT_K_SPREAD, min_margin: float = DEFAULT_MIN_MARGIN,
               not_applicable: str | None = None) -> RelearningResult:
    """Compare how much the unlearned model and each retrained reference recover at each budget.

    In: ``unlearned`` budget name -> recovery; ``references`` one such mapping per reference, with
    the same budgets; ``not_applicable``: why the audit did not measure them (the result is
    NOT_APPLICABLE with that reason). Out: :class:`RelearningResult`."""
    budgets = tuple(unlearned)
    if any(set(r) != set(budgets) for r in references):
        raise ValueError("every reference must be measured at the unlearned model's budgets")
    refs = {b: tuple(float(r[b]) for r in references) for b in budgets}
    rule = (f"Fine-tune on forget-like examples at each budget; FAIL if the unlearned model recovers more than every "
            f"retrained reference by more than max({fmt(min_margin)}, {fmt(k_spread)} x the references' standard "
            f"deviation) at some budget; PASS otherwise; NOT_APPLICABLE with fewer than {MIN_REFERENCES} references, or "
            "where the forget set is not a class or sub-population (random records).")
    common = dict(check="relearning", rule=rule, budgets=budgets, unlearned={b: float(unlearned[b]) for b in budgets},
                  references=refs)
    if not_applicable:
        return RelearningResult(verdict=Verdict.NOT_APPLICABLE, margins={}, worst_budget=None, worst_excess=None,
                                reason=not_applicable, **common)
    if len(references) < MIN_REFERENCES or not budgets:
        return RelearningResult(verdict=Verdict.NOT_APPLICABLE, margins={}, worst_budget=None, worst_excess=None,
                                reason=f"{len(references)} reference(s): too few to tell recovery from noise.", **common)
    margins = {b: max(min_margin, k_spread * float(np.std(refs[b], ddof=1))) for b in budgets}
    excess = {b: float(unlearned[b]) - max(refs[b]) - margins[b] for b in budgets}
    worst = max(budgets, key=lambda b: excess[b])
    over = excess[worst] > 0
    figures = (f"at {worst}: unlearned {fmt(float(unlearned[worst]))}, references {fmt(min(refs[worst]))}-"
               f"{fmt(max(refs[worst]))} (margin {fmt(margins[worst])})")
    reason = (f"The forgotten data comes back with a little fine-tuning, more than a model that never learned it: "
              f"{figures}." if over else f"No budget brings back more than it teaches a retrained model ({figures}).")
    return RelearningResult(verdict=Verdict.FAIL if over else Verdict.PASS, reason=reason, margins=margins,
                            worst_budget=worst, worst_excess=excess[worst], **common)
