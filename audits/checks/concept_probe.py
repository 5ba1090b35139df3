"""Concept probe: after a concept erasure, can a probe still read the attribute off the representations?

A concept erasure (LEACE, the ``concept_erased`` class) promises that no *linear* classifier can
predict the attribute from the erased layer's output better than chance, on the distribution the
eraser was fitted to. This check measures a linear probe (logistic regression) by its out-of-fold ROC
AUC for the attribute on records the eraser was not fitted on: PASS when the AUC is within the
declared ``tolerance`` of chance (0.5), FAIL when it is farther. A non-linear probe (a one-hidden-layer
MLP) is measured the same way and printed beside it, and never decides the verdict: LEACE makes no
promise against it, and the report says so with its figure (a high MLP AUC means the attribute is
still there, non-linearly). The default tolerance (0.1) leaves room for the eraser's own estimation
error on fresh records (measured on digits, 1,200 fitting records, 64 features, 5 seeds: AUC 0.505
to 0.591, mean 0.552; benchmarks/leace_concept_probe.py).

A method that promises more (the PEF-style coupling, ``pef_coupling``: the attribute independent of the
representations) is held to it: with ``nonlinear_decides`` the MLP probe must be within the tolerance of
chance too, and the result says what the guarantee holds against as the method declares it.

Power: where the representations before erasure are given, the same linear probe is measured on
them; if it was already within the tolerance of chance, the check could show nothing (INCONCLUSIVE).
So it is when the records are too few for an AUC at chance to be told from the tolerance.

Plain NumPy; scikit-learn's probes are imported only when the check runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from audits.checks.registry import CheckSpec, register_check
from audits.checks.result import CheckResult, Verdict, fmt

HOLDS_AGAINST = "linear probes only"


@dataclass(frozen=True, kw_only=True)
class ConceptProbeResult(CheckResult):
    """The linear probe's AUC (decides), the MLP probe's AUC (shown beside it), before and after."""

    linear_auc: float
    nonlinear_auc: float
    original_linear_auc: float | None
    original_nonlinear_auc: float | None
    tolerance: float
    records: int
    folds: int
    holds_against: str = HOLDS_AGAINST


def out_of_fold_auc(x: np.ndarray, y: np.ndarray, *, kind: str, folds: int = 5, seed: int = 0) -> float:
    """ROC AUC of a probe's out-of-fold predictions: the probe is trained on ``folds - 1`` parts and
    predicts the held-out part, for every part (one-vs-rest, macro-averaged, for an attribute of more
    than two values). ``kind``: ``"linear"`` (logistic regression on standardised features) or
    ``"mlp"`` (one hidden layer of 64 units)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "linear":
        probe = LogisticRegression(max_iter=2000)
    elif kind == "mlp":
        probe = MLPClassifier(hidden_layer_sizes=(64,), max_iter=1000, random_state=seed)
    else:
        raise ValueError(f"unknown probe kind {kind!r}; known: linear, mlp")
    split = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = cross_val_predict(make_pipeline(StandardScaler(), probe), x, y, cv=split, method="predict_proba")
    if scores.shape[1] == 2:
        return float(roc_auc_score(y, scores[:, 1]))
    return float(roc_auc_score(y, scores, multi_class="ovr"))


def chance_auc_standard_error(positives: int, negatives: int) -> float:
    """The standard error of an AUC at chance (no signal) over ``positives`` and ``negatives``
    (Hanley & McNeil 1982 at AUC 0.5: ``sqrt((n1 + n0 + 1) / (12 n1 n0))``)."""
    if positives < 1 or negatives < 1:
        raise ValueError("an AUC needs at least one record of each value")
    return float(np.sqrt((positives + negatives + 1) / (12.0 * positives * negatives)))


def distance_from_chance(auc: float) -> float:
    """How far an AUC is from chance (0.5), either way: 0.3 is as telling as 0.7."""
    return abs(auc - 0.5)


@register_check(CheckSpec(name="concept_probe", role="forget", on_weights=True))
def concept_probe(*, representations: np.ndarray, attribute: np.ndarray,
                  original_representations: np.ndarray | None = None, tolerance: float = 0.1,
                  folds: int = 5, seed: int = 0, nonlinear_decides: bool = False,
                  holds_against: str = HOLDS_AGAINST) -> ConceptProbeResult:
    """Probe the erased ``representations`` (``[n, d]``) for ``attribute`` (``[n]`` labels).

    In: the erased layer's outputs on records the eraser was NOT fitted on (on its own fitting records
    a probe's held-out folds anti-correlate with its training folds and read below chance), the
    attribute's labels, optionally the same layer's outputs before erasure (for power), the declared
    ``tolerance`` around chance (0.5), whether the MLP probe decides too (``nonlinear_decides``, for a
    method whose guarantee holds against non-linear probes) and the guarantee's ``holds_against`` words.
    Out: :class:`ConceptProbeResult`: PASS / FAIL on the linear probe's out-of-fold AUC (and the MLP
    probe's); INCONCLUSIVE when twice the AUC's standard error at chance exceeds the tolerance (too few
    records to tell) or the deciding probes could not read the attribute before erasure either."""
    x = np.asarray(representations, dtype=np.float64)
    y = np.asarray(attribute)
    if x.ndim != 2 or y.ndim != 1 or len(x) != len(y):
        raise ValueError(f"representations {x.shape} and attribute {y.shape} must be [n, d] and [n]")
    if not 0.0 < tolerance < 0.5:
        raise ValueError(f"tolerance must be in (0, 0.5), got {tolerance}")
    values, counts = np.unique(y, return_counts=True)
    if len(values) < 2:
        raise ValueError("the attribute takes a single value: there is nothing to probe for")
    if counts.min() < folds:
        raise ValueError(f"every attribute value needs at least {folds} records (folds), one has {counts.min()}")
    original = None if original_representations is None else np.asarray(original_representations, np.float64)
    if original is not None and original.shape != x.shape:
        raise ValueError(f"original_representations {original.shape} must match representations {x.shape}")

    linear = out_of_fold_auc(x, y, kind="linear", folds=folds, seed=seed)
    nonlinear = out_of_fold_auc(x, y, kind="mlp", folds=folds, seed=seed)
    original_linear = original_nonlinear = None
    if original is not None:
        original_linear = out_of_fold_auc(original, y, kind="linear", folds=folds, seed=seed)
        original_nonlinear = out_of_fold_auc(original, y, kind="mlp", folds=folds, seed=seed)
    noise = max(chance_auc_standard_error(int(c), int(len(y) - c)) for c in counts)

    deciders = "a linear and an MLP probe's" if nonlinear_decides else "a linear probe's"
    rule = (f"PASS if {deciders} out-of-fold AUC for the attribute is within {fmt(tolerance)} of chance "
            f"(0.5), FAIL if farther; INCONCLUSIVE if twice the AUC's standard error at chance "
            f"({fmt(2 * noise, 3)}) exceeds the tolerance or the attribute was not decodable by those probes "
            f"before erasure. Linear AUC {fmt(linear, 3)}"
            + ("" if original_linear is None else f" (before erasure {fmt(original_linear, 3)})")
            + f"; the guarantee holds against {holds_against}. Non-linear (MLP) probe AUC {fmt(nonlinear, 3)}"
            + ("" if original_nonlinear is None else f" (before {fmt(original_nonlinear, 3)})")
            + (", counted." if nonlinear_decides else ", shown, not counted."))
    before = [] if original_linear is None else [original_linear]
    if nonlinear_decides and original_nonlinear is not None:
        before.append(original_nonlinear)
    after = {"linear": linear, **({"MLP": nonlinear} if nonlinear_decides else {})}
    readable = {name: auc for name, auc in after.items() if distance_from_chance(auc) > tolerance}
    if 2 * noise > tolerance:
        verdict, reason = Verdict.INCONCLUSIVE, (f"too few records: an AUC at chance varies by {fmt(noise, 3)} "
                                                 f"here, too much to tell within {fmt(tolerance)}")
    elif before and max(distance_from_chance(auc) for auc in before) <= tolerance:
        verdict, reason = Verdict.INCONCLUSIVE, (f"{'no deciding probe could' if nonlinear_decides else 'a linear probe could not'} "
                                                 "read the attribute before erasure either: this check cannot show "
                                                 "the erasure did anything")
    elif not readable and nonlinear_decides:
        verdict, reason = Verdict.PASS, (f"a linear and an MLP probe read the attribute at chance (AUC "
                                         f"{fmt(linear, 3)} and {fmt(nonlinear, 3)}). The guarantee holds against "
                                         f"{holds_against}.")
    elif not readable:
        verdict, reason = Verdict.PASS, (f"a linear probe reads the attribute at chance (AUC {fmt(linear, 3)}). "
                                         f"The guarantee holds against {holds_against}: a non-linear probe "
                                         f"reached AUC {fmt(nonlinear, 3)}.")
    else:
        verdict, reason = Verdict.FAIL, ("; ".join(f"a{'n' if name == 'MLP' else ''} {name} probe still reads the "
                                                   f"attribute (AUC {fmt(auc, 3)}, more than {fmt(tolerance)} from "
                                                   "chance)" for name, auc in readable.items()))
    return ConceptProbeResult(check="concept_probe", verdict=verdict, rule=rule, reason=reason,
                              linear_auc=linear, nonlinear_auc=nonlinear, original_linear_auc=original_linear,
                              original_nonlinear_auc=original_nonlinear, tolerance=tolerance, records=int(len(y)),
                              folds=folds, holds_against=holds_against)
