"""U-LiRA: does the unlearning method leave a trace that a model which never saw the record lacks?

Source: Hayes, Shumailov, Triantafillou, Khalifa, Papernot, "Inexact Unlearning Needs More Careful
Evaluations to Avoid a False Sense of Privacy", SaTML 2025. LiRA against shadow models trained from
scratch asks "is this record a member?"; for an approximate method the question is whether a model
that TRAINED on the record and was then UNLEARNED by the method is distinguishable from one that
never saw it. So the method itself is run on shadow models that held the records ("unlearned
shadows"), and per record the two populations of its score are compared: the unlearned shadows'
and the OUT shadows' (trained without it).

Per record (the logit-scaled confidence, higher = more member-like, on the shadows' scale):

* a Welch t-test of the unlearned shadows' scores against the OUT shadows', one-sided toward the
  member side (the method leaves the record more member-like than a retrain does), Holm-corrected
  over the forget set: a detection FAILs the method for this request; a significant difference on
  the other side (the method pushed the record below where a retrain leaves it, which is itself
  detectable: the "Streisand effect") FAILs on the non-member side;
* the audited model's own likelihood ratio ``log N(x; unlearned) - log N(x; OUT)`` is reported
  beside it (one model is one draw; the populations are the evidence);
* the attack advantage the difference gives, ``2 Phi(|d| / 2) - 1`` with d the standardised
  difference of means (the balanced accuracy of the best threshold between two equal-variance
  Gaussians, minus chance), per record.

How the unlearned shadows were made is stated with the result (``design``): "per-request IN
shadows" (shadows trained on data that includes every forget record, then unlearned: every shadow
holds every record) or "per record" (the platform's random-half shadows, each unlearned of the
forget records it held: with m records, all are together in only 2^-m of them, so each record is
tested on the shadows that held it). A record with fewer than ``MIN_SHADOWS_PER_SIDE`` scores on
either side cannot be tested: INCONCLUSIVE names the shortfall.

The audit runner feeds it for approximate results, "per record" (:mod:`audits.unlearned_shadows`
runs the method on the shadows).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from audits.checks.evidence import ClassifierEvidence
from audits.checks.registry import CheckSpec, register_check
from audits.checks.result import CheckResult, Verdict, fmt, record_id_tuple
from audits.checks.stats import holm_adjust

DEFAULT_ALPHA = 0.05
MIN_SHADOWS_PER_SIDE = 4
DESIGNS = ("per-request IN shadows", "per record")


def _masked(values: NDArray[np.float64], mask: NDArray[np.bool_]) -> list[NDArray[np.float64]]:
    return [values[mask[:, j], j] for j in range(values.shape[1])]


def _log_normal_pdf(x: float, sample: NDArray[np.float64]) -> float:
    sd = max(float(np.std(sample, ddof=1)), 1e-9)
    return float(stats.norm.logpdf(x, float(np.mean(sample)), sd))


@dataclass(frozen=True, kw_only=True, eq=False)
class ULiRAResult(CheckResult):
    """Per record: the unlearned shadows against the OUT shadows, and the audited model's ratio."""

    design: str
    record_ids: tuple[str, ...]
    alpha: float
    unlearned_shadows: tuple[int, ...]
    out_shadows: tuple[int, ...]
    p_member_side: NDArray[np.float64]
    p_nonmember_side: NDArray[np.float64]
    advantage: NDArray[np.float64]
    target_log_ratio: NDArray[np.float64]
    detected: tuple[str, ...]
    over_forgotten: tuple[str, ...]
    untested: tuple[str, ...]
    side: str | None


def _inputs(evidence: ClassifierEvidence) -> dict | None:
    """The runner's U-LiRA runs (``evidence.ulira``) at the per-record tests' level, or None when
    none ran (not an approximate result, no method to run, no shadow models)."""
    if evidence.ulira is None:
        return None
    return {"record_ids": evidence.record_ids, **evidence.ulira, "alpha": evidence.alpha_share("unlearning_lira")}


@register_check(CheckSpec(name="unlearning_lira", role="forget", on_weights=True, applies_to=("classifier",),
                          inputs=_inputs, false_fail="level"))
def unlearning_lira(*, record_ids: Sequence[str], design: str, target_scores: ArrayLike,
                    unlearned_shadow_scores: ArrayLike, unlearned_shadow_held: ArrayLike,
                    out_shadow_scores: ArrayLike, out_shadow_mask: ArrayLike,
                    alpha: float = DEFAULT_ALPHA) -> ULiRAResult:
    """U-LiRA over the forget set.

    In: the audited model's scores (k,); the unlearned shadows' scores (S_u, k) and which of them
    held (and so were unlearned of) which record; the OUT shadows' scores (S_o, k) and which did not
    train on which record; the design (:data:`DESIGNS`). Out: :class:`ULiRAResult`: FAIL (member
    side) when some record's unlearned shadows are significantly more member-like than its OUT
    shadows after Holm; FAIL (non-member side) when significantly less; INCONCLUSIVE when a record
    has too few shadows on a side; PASS otherwise."""
    if design not in DESIGNS:
        raise ValueError(f"design must be one of {DESIGNS}, got {design!r}")
    target = np.asarray(target_scores, dtype=np.float64)
    ids = record_id_tuple(record_ids, target.shape[0])
    u, o = np.asarray(unlearned_shadow_scores, dtype=np.float64), np.asarray(out_shadow_scores, dtype=np.float64)
    u_mask, o_mask = np.asarray(unlearned_shadow_held, dtype=bool), np.asarray(out_shadow_mask, dtype=bool)
    if u.shape != u_mask.shape or o.shape != o_mask.shape or u.shape[1:] != target.shape or o.shape[1:] != target.shape:
        raise ValueError(f"U-LiRA inputs disagree in shape: target {target.shape}, unlearned {u.shape}/{u_mask.shape}, "
                         f"OUT {o.shape}/{o_mask.shape}")
    us, os_ = _masked(u, u_mask), _masked(o, o_mask)
    n_u, n_o = tuple(len(s) for s in us), tuple(len(s) for s in os_)
    testable = np.array([a >= MIN_SHADOWS_PER_SIDE and b >= MIN_SHADOWS_PER_SIDE for a, b in zip(n_u, n_o, strict=True)])
    p_up, p_down = np.full(len(ids), np.nan), np.full(len(ids), np.nan)
    advantage, ratio = np.full(len(ids), np.nan), np.full(len(ids), np.nan)
    for j in np.flatnonzero(testable):
        test = stats.ttest_ind(us[j], os_[j], equal_var=False)
        t, df = float(test.statistic), float(test.df)
        if not np.isfinite(t):  # both samples constant: equal means -> no evidence of a difference
            t, df = 0.0, max(df, 1.0) if np.isfinite(df) else 1.0
        p_up[j], p_down[j] = stats.t.sf(t, df), stats.t.cdf(t, df)
        pooled = np.sqrt((np.var(us[j], ddof=1) + np.var(os_[j], ddof=1)) / 2)
        d = (np.mean(us[j]) - np.mean(os_[j])) / pooled if pooled > 0 else 0.0
        advantage[j] = 2 * stats.norm.cdf(abs(d) / 2) - 1
        ratio[j] = _log_normal_pdf(target[j], us[j]) - _log_normal_pdf(target[j], os_[j])
    # One family over records and both sides (2k tests): the false-FAIL rate stays at alpha.
    family = 2 * int(testable.sum())
    adj_up, adj_down = np.full(len(ids), np.nan), np.full(len(ids), np.nan)
    if family:
        adjusted = holm_adjust(np.concatenate([p_up[testable], p_down[testable]]), n_tests=family)
        adj_up[testable], adj_down[testable] = np.split(adjusted, 2)
    detected = tuple(i for i, a in zip(ids, adj_up, strict=True) if np.isfinite(a) and a <= alpha)
    over = tuple(i for i, a in zip(ids, adj_down, strict=True) if np.isfinite(a) and a <= alpha)
    untested = tuple(i for i, t in zip(ids, testable, strict=True) if not t)
    rule = (f"U-LiRA ({design}): per record, Welch t-test of the scores of shadows trained on it then unlearned by the "
            f"method against shadows that never saw it, both sides, Holm over records and sides at {fmt(alpha)}. "
            f"FAIL if a record is significantly more member-like after unlearning than never seen (or significantly "
            f"less: over-forgetting is detectable too); INCONCLUSIVE if a record has fewer than {MIN_SHADOWS_PER_SIDE} "
            "shadows on a side; PASS otherwise.")
    worst = float(np.nanmax(advantage)) if np.isfinite(advantage).any() else float("nan")
    counts = (f"unlearned shadows per record {min(n_u)}-{max(n_u)}, OUT shadows {min(n_o)}-{max(n_o)}, "
              f"largest attack advantage {fmt(worst)}")
    if detected:
        verdict, side = Verdict.FAIL, "member"
        reason = (f"{len(detected)} of {len(ids)} record(s) stay more member-like after the method than in models that "
                  f"never saw them ({counts}).")
    elif over:
        verdict, side = Verdict.FAIL, "non_member"
        reason = (f"{len(over)} record(s) end up less member-like than in models that never saw them: the unlearning "
                  f"itself is detectable ({counts}).")
    elif untested:
        verdict, side = Verdict.INCONCLUSIVE, None
        reason = (f"{len(untested)} record(s) have fewer than {MIN_SHADOWS_PER_SIDE} unlearned or OUT shadows and were "
                  f"not tested ({counts}).")
    else:
        verdict, side = Verdict.PASS, None
        reason = f"No record tells the method's result from a model that never saw it ({counts})."
    return ULiRAResult(check="unlearning_lira", verdict=verdict, rule=rule, reason=reason, design=design,
                       record_ids=ids, alpha=alpha, unlearned_shadows=n_u, out_shadows=n_o, p_member_side=adj_up,
                       p_nonmember_side=adj_down, advantage=advantage, target_log_ratio=ratio, detected=detected,
                       over_forgotten=over, untested=untested, side=side)
