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
So it is when the records are too few for an AUC at chance to be told from the tolerance. How far an
AUC at chance strays is measured, not taken from a formula: the linear probe is refitted, same folds
procedure, on ``chance_shuffles`` shuffles of the attribute, and the root mean square of its
out-of-fold AUC's distance from 0.5 is the spread (Hanley & McNeil's standard error, which holds for
one fixed scorer and misses what refitting a probe per fold adds, is only its floor). The RMS, not
a quantile: it stands where a standard error stood in the gate's "twice", and of 20 shuffles it uses
all, where a 95% quantile would be one of them. Measured on
LEACE's output on digits (10 draws of 20 shuffles): at 597 probe records Hanley-McNeil 0.024, the
shuffled linear probe's RMS distance 0.034 (0.025 to 0.039 a draw), the farthest of 200 shuffles
0.0996; at 250 records 0.037 and 0.049 (0.040 to 0.065), 10 of 200 shuffles beyond 0.1 (the farthest
0.122), where the gate by Hanley-McNeil (twice 0.037) called the records enough. The MLP probe's spread
is taken as the linear one's: on the same shuffles they measured alike (RMS, linear and MLP: LEACE at 597
records 0.031 and 0.031 over 18 shuffles, at 250 records 0.052 and 0.052 over 12; the PEF coupling's
output at 597 records 0.039 and 0.036 over 10), and refitting the MLP costs 1 to 40 s a shuffle. The
same shuffles give the linear AUC a permutation p-value (the share of shuffles at least as far from
chance, +1 corrected), reported, not deciding: the tolerance decides.

Plain NumPy; scikit-learn's probes are imported only when the check runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from audits.checks.registry import CheckSpec, register_check
from audits.checks.result import CheckResult, Verdict, fmt

HOLDS_AGAINST = "linear probes only"
# Shuffles of the attribute the chance spread is measured on: the RMS of 20 distances has a relative
# error of about 16% (1 / sqrt(2 K); measured 0.040 to 0.065 a draw around 0.049 at 250 records), the
# smallest p-value is 1/21 < 0.05, and at 597 probe records they cost about 1 s (0.05 s a shuffle, 2
# shared cores under load), less than one MLP probe.
CHANCE_SHUFFLES = 20
# A linear probe solved by Newton steps on a Cholesky factor of the Hessian up to this many
# coefficients (features, times values beyond two), by L-BFGS above it: the same L2-penalised logistic
# regression either way. Measured (5-fold, one thread, ~600 records): on LEACE's ill-conditioned
# output (597 x 64) Newton 0.09 s, L-BFGS 0.26 s; on well-conditioned features alike up to 96, and
# Newton 2x slower at 128, 6x at 512 (its steps cost the cube of the coefficients).
NEWTON_MAX_COEFFICIENTS = 96


@dataclass(frozen=True, kw_only=True)
class ChanceSpread:
    """How far the linear probe's out-of-fold AUC strays from chance (0.5) with the attribute shuffled.

    ``shuffled_linear_aucs``: the AUC on each of the ``shuffles``; ``rms_distance`` and ``max_distance``
    their root mean square and largest distance from 0.5; ``hanley_mcneil``: the standard error of an
    AUC at chance by formula; ``noise``: the larger of ``rms_distance`` and ``hanley_mcneil``, what the
    too-few-records gate compares; ``linear_p_value``: ``(1 + shuffles at least as far from chance as the
    observed linear AUC) / (shuffles + 1)``."""

    shuffles: int
    rms_distance: float
    max_distance: float
    hanley_mcneil: float
    noise: float
    linear_p_value: float
    shuffled_linear_aucs: tuple[float, ...]


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
    chance: ChanceSpread
    holds_against: str = HOLDS_AGAINST


def out_of_fold_auc(x: np.ndarray, y: np.ndarray, *, kind: str, folds: int = 5, seed: int = 0) -> float:
    """ROC AUC of a probe's out-of-fold predictions: the probe is trained on ``folds - 1`` parts and
    predicts the held-out part, for every part (one-vs-rest, macro-averaged, for an attribute of more
    than two values). ``kind``: ``"linear"`` (logistic regression on standardised features) or
    ``"mlp"`` (one hidden layer of 64 units). Runs on one BLAS/OpenMP thread: on matrices this small more
    threads cost more in waiting than they gain (L-BFGS on 597 x 64 took 3.6 s with two on a shared 2-core
    machine, 0.42 s with one; the MLP 20.4 s and 4.9 s, the same AUC), and the AUC then does not depend on
    the machine's threads. With one thread and Newton-Cholesky steps (up to :data:`NEWTON_MAX_COEFFICIENTS`),
    which reach the optimum L-BFGS approaches (AUCs within 0.0003 of L-BFGS's at its tol 1e-4), a linear
    probe on LEACE's output there took 0.12 s instead of 2.9 s (medians of 10 shuffles)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    if kind == "linear":
        values = len(np.unique(y))
        coefficients = x.shape[1] * (values if values > 2 else 1)
        probe = (LogisticRegression(solver="newton-cholesky") if coefficients <= NEWTON_MAX_COEFFICIENTS
                 else LogisticRegression(max_iter=2000))
    elif kind == "mlp":
        probe = MLPClassifier(hidden_layer_sizes=(64,), max_iter=1000, random_state=seed)
    else:
        raise ValueError(f"unknown probe kind {kind!r}; known: linear, mlp")
    split = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    with threadpool_limits(limits=1):
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


def shuffled_aucs(x: np.ndarray, y: np.ndarray, *, kind: str, shuffles: int, folds: int = 5,
                  seed: int = 0) -> np.ndarray:
    """The out-of-fold AUC (:func:`out_of_fold_auc`, same folds procedure and seed) of a ``kind`` probe on
    each of ``shuffles`` shuffles of the labels ``y``: what the AUC reads when the representations hold
    nothing of the attribute, on these records. Shuffling keeps each value's count, so the folds stay
    stratified; the shuffles are drawn from ``seed``, so the same call gives the same AUCs."""
    rng = np.random.default_rng(seed)
    return np.array([out_of_fold_auc(x, rng.permutation(y), kind=kind, folds=folds, seed=seed)
                     for _ in range(shuffles)])


def permutation_p_value(observed_distance: float, shuffled_distances: np.ndarray) -> float:
    """The share of shuffles at least as far from chance as the observed AUC, counting the observed one
    among them (``(1 + k) / (K + 1)``: never 0, and at most the chance of a false reading under shuffling)."""
    distances = np.asarray(shuffled_distances, dtype=np.float64)
    if distances.ndim != 1 or len(distances) == 0:
        raise ValueError("a permutation p-value needs at least one shuffled distance")
    return float((1 + np.sum(distances >= observed_distance)) / (len(distances) + 1))


@register_check(CheckSpec(name="concept_probe", role="forget", on_weights=True))
def concept_probe(*, representations: np.ndarray, attribute: np.ndarray,
                  original_representations: np.ndarray | None = None, tolerance: float = 0.1,
                  folds: int = 5, seed: int = 0, nonlinear_decides: bool = False,
                  holds_against: str = HOLDS_AGAINST, chance_shuffles: int = CHANCE_SHUFFLES) -> ConceptProbeResult:
    """Probe the erased ``representations`` (``[n, d]``) for ``attribute`` (``[n]`` labels).

    In: the erased layer's outputs on records the eraser was NOT fitted on (on its own fitting records
    a probe's held-out folds anti-correlate with its training folds and read below chance), the
    attribute's labels, optionally the same layer's outputs before erasure (for power), the declared
    ``tolerance`` around chance (0.5), whether the MLP probe decides too (``nonlinear_decides``, for a
    method whose guarantee holds against non-linear probes), the guarantee's ``holds_against`` words and
    how many shuffles of the attribute measure the AUC's spread at chance (``chance_shuffles``).
    Out: :class:`ConceptProbeResult`: PASS / FAIL on the linear probe's out-of-fold AUC (and the MLP
    probe's); INCONCLUSIVE when twice the AUC's spread at chance (:class:`ChanceSpread`) exceeds the
    tolerance (too few records to tell) or the deciding probes could not read the attribute before
    erasure either."""
    x = np.asarray(representations, dtype=np.float64)
    y = np.asarray(attribute)
    if x.ndim != 2 or y.ndim != 1 or len(x) != len(y):
        raise ValueError(f"representations {x.shape} and attribute {y.shape} must be [n, d] and [n]")
    if not 0.0 < tolerance < 0.5:
        raise ValueError(f"tolerance must be in (0, 0.5), got {tolerance}")
    if chance_shuffles < 1:
        raise ValueError(f"chance_shuffles must be at least 1, got {chance_shuffles}")
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
    hanley_mcneil = max(chance_auc_standard_error(int(c), int(len(y) - c)) for c in counts)
    shuffled = shuffled_aucs(x, y, kind="linear", shuffles=chance_shuffles, folds=folds, seed=seed)
    distances = np.abs(shuffled - 0.5)
    rms = float(np.sqrt(np.mean(distances ** 2)))
    chance = ChanceSpread(shuffles=chance_shuffles, rms_distance=rms, max_distance=float(distances.max()),
                          hanley_mcneil=hanley_mcneil, noise=max(rms, hanley_mcneil),
                          linear_p_value=permutation_p_value(distance_from_chance(linear), distances),
                          shuffled_linear_aucs=tuple(float(a) for a in shuffled))
    noise = chance.noise

    deciders = "a linear and an MLP probe's" if nonlinear_decides else "a linear probe's"
    rule = (f"PASS if {deciders} out-of-fold AUC for the attribute is within {fmt(tolerance)} of chance "
            f"(0.5), FAIL if farther; INCONCLUSIVE if twice the AUC's spread at chance ({fmt(2 * noise, 3)}) "
            f"exceeds the tolerance or the attribute was not decodable by those probes before erasure. The "
            f"spread: the root mean square distance from 0.5 of the linear probe's out-of-fold AUC refitted on "
            f"{chance_shuffles} shuffles of the attribute ({fmt(rms, 3)}; at most {fmt(chance.max_distance, 3)}), "
            f"or Hanley-McNeil's standard error at chance ({fmt(hanley_mcneil, 3)}) where larger"
            + ("; the MLP probe's spread taken as the linear one's (measured alike on digits)"
               if nonlinear_decides else "")
            + f". Linear AUC {fmt(linear, 3)}"
            + ("" if original_linear is None else f" (before erasure {fmt(original_linear, 3)})")
            + f"; the guarantee holds against {holds_against}. Non-linear (MLP) probe AUC {fmt(nonlinear, 3)}"
            + ("" if original_nonlinear is None else f" (before {fmt(original_nonlinear, 3)})")
            + (", counted." if nonlinear_decides else ", shown, not counted.")
            + f" Permutation p-value of the linear AUC's distance from chance: {fmt(chance.linear_p_value, 3)} "
            f"(reported, not deciding).")
    before = [] if original_linear is None else [original_linear]
    if nonlinear_decides and original_nonlinear is not None:
        before.append(original_nonlinear)
    after = {"linear": linear, **({"MLP": nonlinear} if nonlinear_decides else {})}
    readable = {name: auc for name, auc in after.items() if distance_from_chance(auc) > tolerance}
    spread_by = (f"the RMS distance from 0.5 over {chance_shuffles} shuffles of the attribute" if rms >= hanley_mcneil
                 else "Hanley-McNeil's standard error, above the RMS distance over the shuffles")
    if 2 * noise > tolerance:
        verdict, reason = Verdict.INCONCLUSIVE, (f"too few records: an AUC at chance varies by {fmt(noise, 3)} "
                                                 f"here ({spread_by}; the farthest shuffle "
                                                 f"{fmt(chance.max_distance, 3)} from 0.5), too much to tell within "
                                                 f"{fmt(tolerance)}")
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
    far = int(np.sum(distances >= distance_from_chance(linear)))
    reason = (f"{reason.rstrip('.')}. With the attribute shuffled {chance_shuffles} times, the linear probe's AUC "
              f"was as far from chance as {fmt(linear, 3)} in {far} of them (permutation p = "
              f"{fmt(chance.linear_p_value, 3)}).")
    return ConceptProbeResult(check="concept_probe", verdict=verdict, rule=rule, reason=reason,
                              linear_auc=linear, nonlinear_auc=nonlinear, original_linear_auc=original_linear,
                              original_nonlinear_auc=original_nonlinear, tolerance=tolerance, records=int(len(y)),
                              folds=folds, chance=chance, holds_against=holds_against)
