"""Representation check: does the unlearned model still represent a forgotten class (or
sub-population) as the original did, where models that never learned it do not?

Why: an "unlearning" that re-initialises and fine-tunes only the last layer changes every output
and leaves the representation intact; checks on outputs cannot see it (Kim et al., "Are we truly
forgetting? A critical re-examination of machine unlearning evaluation protocols",
arXiv:2503.06991). Measured on scikit-learn digits (issue 23): a hidden-layer probe scores a
retrained model and a head-only edit alike (AUC 0.996 and 0.998), while the representation's
similarity to the original's on the forget inputs separates them (CKA 0.966 and 1.000).

The statistic, forget-specific: how much a model's representation of the forget inputs moved away
from the original's, ``change = 1 - CKA`` (linear CKA, Kornblith et al., ICML 2019, on the
forget inputs only). Similarity to the original alone flags every derived model, sound ones
included (a model fine-tuned from the original stays close to it), so it is never the rule by
itself. The change is held against two kinds of reference:

* retrained references: models trained without the forget set;
* derived controls: the original fine-tuned on the retain set with the unlearning method's
  budget (its epochs and learning rate, all layers), which is what "derived from the original,
  without special forgetting" does to the representation.

FAIL when the unlearned model's representation moved materially less than every reference's and
every control's: ``log change < log(min change of the references and controls) - margin``, the
margin ``max(log 2, k x the larger standard deviation of log change among the references or among
the controls)`` (k = 3 by default). Measured on scikit-learn digits (an MLP, class 3 forgotten,
hidden layer; tests/audits/checks/test_representation.py): retrained references change 0.20-0.23,
controls at the edit's budget 0.014-0.029 (seeds differ by a factor of 2, hence the log 2 floor),
a head-only edit exactly 0. PASS otherwise; NOT_APPLICABLE without 2 references, a control, or
``MIN_INPUTS`` forget inputs, and where the audit says why it does not apply (``not_applicable``:
random records rather than a class or sub-population, no retrained reference possible). The audit
runner measures the representations (audits/forget_references.py). A k-NN probe of the forgotten class on each representation is
reported beside it, not counted (the measurement above shows it cannot separate the cases).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from audits.checks.evidence import ClassifierEvidence
from audits.checks.registry import CheckSpec, register_check
from audits.checks.result import CheckResult, Verdict, fmt

DEFAULT_K_SPREAD = 3.0
MIN_INPUTS = 10
MIN_REFERENCES = 2


def linear_cka(a: ArrayLike, b: ArrayLike) -> float:
    """Linear CKA of two representations of the same n inputs, (n, d1) and (n, d2): 1 when one is
    a rotation and scaling of the other, near 0 when unrelated."""
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[0] < 2:
        raise ValueError(f"representations must be (n, d) of the same n >= 2 inputs: got {x.shape} and {y.shape}")
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    cross = np.linalg.norm(y.T @ x, "fro") ** 2
    norm = np.linalg.norm(x.T @ x, "fro") * np.linalg.norm(y.T @ y, "fro")
    return float(cross / norm) if norm > 0 else 0.0


def knn_probe_accuracy(features: ArrayLike, is_forget: ArrayLike, *, k: int = 5) -> float:
    """Leave-one-out k-NN accuracy at telling forget-class inputs from others on ``features``."""
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(is_forget, dtype=bool)
    x = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-12)
    squared = (x ** 2).sum(axis=1)
    distances = squared[:, None] + squared[None, :] - 2 * x @ x.T
    np.fill_diagonal(distances, np.inf)
    neighbours = np.argsort(distances, axis=1)[:, :k]
    votes = y[neighbours].mean(axis=1) > 0.5
    return float(np.mean(votes == y))


@dataclass(frozen=True, kw_only=True)
class RepresentationResult(CheckResult):
    """How far each model's representation of the forget inputs moved from the original's (1 - CKA)."""

    inputs: int
    unlearned_change: float
    reference_changes: tuple[float, ...]
    control_changes: tuple[float, ...]
    margin: float
    probe_accuracy: dict[str, float]


def _log_change(similarity: float) -> float:
    return float(np.log(max(1.0 - similarity, 1e-12)))


def _classifier_inputs(evidence: ClassifierEvidence) -> dict[str, Any] | None:
    """The representations the runner measured on the forget inputs, or why the check does not
    apply; None where the runner measured nothing (not an approximate result)."""
    figures = evidence.forget_references
    if figures is None:
        return None
    if figures.not_applicable or figures.original_representation is None:
        return {"original": np.zeros((0, 1)), "unlearned": np.zeros((0, 1)), "references": (), "controls": (),
                "not_applicable": figures.not_applicable or "no representation was measured"}
    return {"original": figures.original_representation, "unlearned": figures.unlearned_representation,
            "references": figures.reference_representations, "controls": figures.control_representations,
            "is_forget": figures.is_forget}


@register_check(CheckSpec(name="representation_retention", role="forget", on_weights=True,
                          applies_to=("classifier",), inputs=_classifier_inputs, false_fail="margin"))
def representation_retention(*, original: ArrayLike, unlearned: ArrayLike, references: Sequence[ArrayLike],
                             controls: Sequence[ArrayLike], is_forget: ArrayLike | None = None,
                             k_spread: float = DEFAULT_K_SPREAD,
                             not_applicable: str | None = None) -> RepresentationResult:
    """Hold the unlearned model's representation of the forget inputs against references and controls.

    In: each model's representation (inputs, features) of the same inputs: the original's, the
    unlearned model's, each retrained reference's, each derived control's. ``is_forget``: when the
    inputs mix forget-class and other inputs, which are which (the probe uses both; the change is
    computed on the forget rows). ``not_applicable``: why the audit did not measure them (the
    result is NOT_APPLICABLE with that reason). Out: :class:`RepresentationResult`."""
    mask = None if is_forget is None else np.asarray(is_forget, dtype=bool)

    def rows(x):
        x = np.asarray(x, dtype=np.float64)
        return x if mask is None else x[mask]

    base = rows(original)
    n = base.shape[0]
    rule = (f"Representation change on the forget inputs, 1 - linear CKA to the original: FAIL if the unlearned "
            f"model's is below every retrained reference's and every derived control's by more than a factor "
            f"e^margin, margin = max(log 2, {fmt(k_spread)} x the larger standard deviation of log change among "
            f"the references or the controls); PASS otherwise; NOT_APPLICABLE with fewer than {MIN_REFERENCES} "
            f"references, no control or fewer than {MIN_INPUTS} inputs, or where the forget set is not a class or "
            "sub-population (random records). Similarity to the original alone is never the rule.")
    if not_applicable:
        return RepresentationResult(check="representation_retention", rule=rule, verdict=Verdict.NOT_APPLICABLE,
                                    reason=not_applicable, inputs=0, unlearned_change=float("nan"),
                                    reference_changes=(), control_changes=(), margin=float("nan"), probe_accuracy={})
    refs = tuple(1.0 - linear_cka(rows(r), base) for r in references)
    ctrl = tuple(1.0 - linear_cka(rows(c), base) for c in controls)
    common = dict(check="representation_retention", rule=rule, inputs=n, reference_changes=refs, control_changes=ctrl)
    if len(refs) < MIN_REFERENCES or not ctrl or n < MIN_INPUTS:
        return RepresentationResult(verdict=Verdict.NOT_APPLICABLE, unlearned_change=float("nan"), margin=float("nan"),
                                    probe_accuracy={}, **common,
                                    reason=f"{len(refs)} reference(s), {len(ctrl)} control(s) and {n} forget input(s): "
                                           "too few to set a margin.")
    after = 1.0 - linear_cka(rows(unlearned), base)
    spreads = [float(np.std([_log_change(1 - c) for c in group], ddof=1)) for group in (refs, ctrl) if len(group) >= 2]
    margin = max(float(np.log(2.0)), k_spread * max(spreads, default=0.0))
    floor = min(refs + ctrl)
    probes = {}
    if mask is not None and 0 < mask.sum() < mask.size:
        probes = {"unlearned": knn_probe_accuracy(unlearned, mask), "original": knn_probe_accuracy(original, mask),
                  "controls (mean)": float(np.mean([knn_probe_accuracy(c, mask) for c in controls])),
                  "references (mean)": float(np.mean([knn_probe_accuracy(r, mask) for r in references]))}
    figures = (f"change of the forget inputs' representation (1 - CKA to the original): unlearned {fmt(after)}, "
               f"derived controls {fmt(min(ctrl))}-{fmt(max(ctrl))}, retrained references {fmt(min(refs))}-"
               f"{fmt(max(refs))}; FAIL below {fmt(floor * np.exp(-margin))}")
    if _log_change(1 - after) < _log_change(1 - floor) - margin:
        verdict = Verdict.FAIL
        reason = (f"{figures}: the unlearned model keeps the original's representation of the forget inputs beyond "
                  "what fine-tuning without them or retraining leaves (an edit of the outputs only?).")
    else:
        verdict = Verdict.PASS
        reason = f"{figures}: it moved as much as a derived model or a retrain does."
    return RepresentationResult(verdict=verdict, reason=reason, unlearned_change=after, margin=margin,
                                probe_accuracy=probes, **common)
