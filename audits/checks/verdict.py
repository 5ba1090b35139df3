"""The verdict for one model version under one guarantee class: PASS, FAIL or INCONCLUSIVE.

Never a silent pass: PASS needs positive evidence of the class's own kind, every missing piece
makes the verdict INCONCLUSIVE and is named, and every FAIL names the check that caused it.
The rule for the class is printed in the result.

What counts, by class (see :mod:`audits.checks.guarantees` for the plain-words promises):

* ``approximate``: statistics decide. What can FAIL it (the checks registered with the
  ``forget`` role, on the member side): the per-record membership tests (LiRA, RMIA, U-LiRA) on
  records where they have power, the representation check, the relearning check, the population
  attack, equivalence (TOST) beyond the member margin, and LM memorisation. PASS only when the
  shadow policy holds, the per-record test ran on every record, every record is powered, none is
  detected, every aggregate metric is TOST-equivalent to the reference, and U-LiRA, where it runs,
  tested every record (an INCONCLUSIVE U-LiRA, its runs cut by the time budget say, blocks a PASS).
* ``exact``: the lineage proof decides (new version trained on none of the records, every older
  copy purged); the statistics are sanity checks, and a member-side FAIL among them makes the
  verdict INCONCLUSIVE (a proof that the data contradict usually means a duplicate of the record
  was missed, or the test erred).
* ``dp_bounded``: the subject's group-privacy bound within the policy's limits decides; the
  statistics are sanity checks as for ``exact``.
* ``suppressed``: the weights hold the data by design, so statistics on the weights do not
  count; the guard's calibrated leak bound decides, and LM memorisation measured through the
  guard FAILs it when the guard lets a record through.
* ``exact_attested``: the company's own pipeline retrained the model and declared its membership;
  the platform's check of that declaration (the lineage proof: the registered membership holds
  none of the records) and the purge decide a FAIL, and so does a statistical check that finds a
  record on the member side (the data contradict the declaration). PASS needs the statistical
  audit to have run: the per-record test against reference models from the company's own
  pipeline (for a language model, the memorisation test against held-out records); without
  them the declaration was not tested and the verdict is INCONCLUSIVE.

What only warns, whatever the class: utility, retain-set privacy (other people's data), and the
``diagnostic`` forget-side figures (the platform's forgetting-quality score; the challenge's F and
KLoM are computed where several unlearned runs exist and reported, never decide): their FAIL or
INCONCLUSIVE is a warning beside the verdict.

How power enters, both ways: the per-record test runs at the same corrected level on the
original model, which trained on the records. A record it does not detect there has no power: a
detection of it on the unlearned model is reported, not counted (it cannot FAIL the verdict), and
its non-detection shows nothing (it cannot PASS it either: the approximate verdict is INCONCLUSIVE
and names how many records lack power). Canaries planted in training show the pipeline can detect
memorisation in this model (``canary_power``); they are reported beside the records' own power and
never stand in for it.

The false-FAIL rate, family-wise over checks and records, held at :data:`FAMILY_WISE_LEVEL`
(0.05): the checks that can FAIL the verdict at a stated level (``CheckSpec.false_fail ==
"level"``: LiRA, RMIA, U-LiRA, the population attack, the equivalence test) and that the audit's
evidence supports split it between them (:func:`with_family_alpha`, :func:`family_alpha_shares`:
Bonferroni over the checks, the equivalence test keeping the alpha the plan declared, which the
plan sets to its share, :func:`planned_alpha_share`); each holds its share over its own records
(Holm) or figures. The verdict states the level held, the sum of the levels of the checks that ran
(:meth:`~audits.checks.result.CheckResult.false_fail_level`). Checks whose rule is a margin from
the reference models' spread (representation, relearning) or a tolerance (LM memorisation) have
no nominal level: they are outside it and named as such.

Which check is which comes from its registration (:class:`~audits.checks.registry.CheckSpec`):
its ``role`` (forget, power, dp_bound, retain, utility), whether it reads its evidence off the
weights (``on_weights``), and whether the approximate class needs it for a PASS.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from audits.checks.evidence import ClassifierEvidence, ModelKind
from audits.checks.registry import (
    CHECKS,
    WARNING_ROLES,
    check_spec,
    checks_at_a_level,
    checks_for_kind,
)
from audits.checks.result import CheckResult, Verdict, fmt
from workers.unlearning.base import GUARANTEE_CLASSES

RULES: dict[str, str] = {
    "approximate": (
        "approximate: FAIL if a forget-set check finds the data on the member side: a per-record "
        "membership test (LiRA, RMIA, U-LiRA; Holm over the records) still detects a record it can "
        "detect on the original model, or the representation check, the relearning check, the "
        "population attack, equivalence beyond the member margin or LM memorisation does. Power "
        "counts both ways: a record the per-record test cannot detect on the original model (which "
        "trained on it) can neither FAIL nor PASS the verdict; its flag is reported, not counted. "
        "PASS only if there are enough shadow models per record, the per-record test ran on every "
        "record, detects every record on the original model and none after unlearning, every "
        "declared aggregate metric is equivalent to the reference within its margins (TOST), and "
        "U-LiRA, where it runs (the method re-run on shadow models that held the records), tested "
        "every record. "
        "INCONCLUSIVE otherwise, naming how many records lack power. Utility, retain-set privacy "
        "and the forgetting-quality score only warn. Canaries show the pipeline's sensitivity and "
        "never stand in for the records' own power. The chance of a false FAIL is held at 0.05 "
        "family-wise over the statistical checks and the records (the checks that run split it, each "
        "holding its share over its records); the representation, relearning and LM memorisation "
        "checks FAIL on margins from reference models, which give no error rate, and are outside it "
        "(stated with the result)."
    ),
    "exact": (
        "exact: FAIL if the lineage proof fails (the new version trained on a forgotten record, "
        "or an older copy is not purged) or the independent replay rebuilds different weights. "
        "INCONCLUSIVE if the lineage proof is missing, if the replay cannot reproduce the "
        "recorded environment, or if no replay ran and a statistical sanity check finds a "
        "forgotten record on the member side (a near-duplicate may remain in the kept data, or "
        "the test erred: investigated). PASS if the lineage proof holds and the replay rebuilt "
        "identical weights (a sanity-check flag is then reported with its investigation, not "
        "counted), or, where no replay ran, no sanity check fails: exactness then rests on the "
        "platform's execution record."
    ),
    "dp_bounded": (
        "dp_bounded: FAIL if the subject's group-privacy bound exceeds the declared limits or is "
        "vacuous, or a statistical sanity check finds a forgotten record on the member side. "
        "PASS if the bound is within the limits and no sanity check fails. INCONCLUSIVE if the "
        "bound is missing."
    ),
    "suppressed": (
        "suppressed: statistics on the weights do not count (the weights hold the data). FAIL "
        "if the guard's calibrated upper bound on the leak rate exceeds its target alpha, or a "
        "forgotten record is reproduced through the guard (LM memorisation). PASS if the bound "
        "is at most alpha. INCONCLUSIVE if the bound is missing, inconsistent, or the "
        "calibration set is too small for any bound to reach alpha."
    ),
    "exact_attested": (
        "exact_attested (the company's pipeline retrained the model and declared the records it was "
        "trained on; the platform checked that declaration but did not compute the model): FAIL if the "
        "declared membership, as registered, holds a forgotten record, an older copy is not purged, or "
        "a statistical check finds a forgotten record on the member side (the data contradict the "
        "declaration). INCONCLUSIVE if the audit had no reference models from the company's pipeline "
        "(then the declaration was not tested and rests on the company's word alone), if the per-record "
        "test could not test every record, or if the older copies are not purged yet. PASS if the "
        "membership check holds, every older copy is purged, and the per-record test against reference "
        "models from the same pipeline (for a language model, the memorisation test against held-out "
        "records) detected none of the records; the test's demonstrated power is stated beside it."
    ),
    "concept_erased": (
        "concept_erased (an attribute, never a person's data): PASS if the concept probe ran and the probes "
        "the method's guarantee names read the attribute at chance within their tolerance (the linear probe "
        "always; the non-linear probe too for a method that holds beyond linear probes, such as the PEF-style "
        "coupling); FAIL if one FAILed; INCONCLUSIVE if it did not run or could not show anything. For LEACE "
        "the guarantee holds against linear probes only and the non-linear probe's figure is reported, not "
        "counted. Checks about records do not count."
    ),
}


@dataclass(frozen=True)
class LineageProof:
    """The two facts an exact deletion rests on, established by the lineage and purge records.
    ``older_copies_purged`` is None while the purge waits for the DPO's decision on a result that
    did not pass (it is then neither proof nor counter-proof)."""

    new_version_holds_none: bool
    older_copies_purged: bool | None


@dataclass(frozen=True)
class SuppressionBound:
    """The verifier guard's calibrated claim: leak rate <= ``alpha`` except with prob. ``delta``.

    ``n`` calibration probes gave ``upper_bound``, an upper confidence bound on the leak rate at
    confidence ``1 - delta``.
    """

    alpha: float
    delta: float
    n: int
    upper_bound: float

    def smallest_possible_bound(self) -> float:
        """The exact (Clopper-Pearson) upper bound with zero leaks in ``n`` probes."""
        return 1.0 - self.delta ** (1.0 / self.n)


@dataclass(frozen=True, kw_only=True)
class FinalVerdict(CheckResult):
    """The verdict of one model version under one guarantee class, with what decided it."""

    guarantee_class: str
    reasons: tuple[str, ...]
    warnings: tuple[str, ...]
    notes: tuple[str, ...]
    checks: tuple[tuple[str, str], ...]
    lineage: LineageProof | None
    suppression: SuppressionBound | None
    # The audit's power in words: the forget records' own (on the original model) and the pipeline's
    # (planted canaries), each on its own line; empty where no per-record test ran.
    power: tuple[str, ...] = ()
    # The union bound on a false FAIL over the checks that could FAIL the verdict, and it in words.
    false_fail_bound: float | None = None
    false_fail: str = ""


def _member_side_fail(result: CheckResult) -> bool:
    """A forget-role check FAILed, and not on the over-forgetting side (its ``side`` field)."""
    if result.verdict != Verdict.FAIL or check_spec(result.check).role != "forget":
        return False
    return getattr(result, "side", "member") != "non_member"


def _over_forgetting_fail(result: CheckResult) -> bool:
    return (result.verdict == Verdict.FAIL and check_spec(result.check).role == "forget"
            and getattr(result, "side", None) == "non_member")


def _describe(result: CheckResult) -> str:
    return f"{result.check} {result.verdict.value}: {result.reason}"


def final_verdict(
    *,
    guarantee_class: str,
    checks: Sequence[CheckResult],
    lineage: LineageProof | None = None,
    suppression: SuppressionBound | None = None,
) -> FinalVerdict:
    """Combine the check results of one model version into its verdict under ``guarantee_class``.

    In: the class; every check result for the version (any order, each from a registered
    check: an unknown name raises ``ValueError``; the ``dp_bound`` check's result is how the DP
    bound comes in); for ``exact`` the lineage proof, for ``suppressed`` the guard's bound. Out:
    :class:`FinalVerdict` with the class's rule, the reasons that decided, warnings (the retain
    and utility checks) and notes (checks that did not count).
    """
    if guarantee_class not in GUARANTEE_CLASSES:
        raise ValueError(
            f"unknown guarantee class {guarantee_class!r}; known: {', '.join(GUARANTEE_CLASSES)}"
        )
    by_name: dict[str, list[CheckResult]] = {}
    for result in checks:
        if result.check == "final_verdict":
            raise ValueError("a final verdict cannot be an input of another")
        by_name.setdefault(result.check, []).append(result)

    notes: list[str] = [
        f"{r.check} NOT_APPLICABLE: {r.reason}"
        for r in checks
        if r.verdict == Verdict.NOT_APPLICABLE
    ]
    warnings = [
        _describe(r)
        for r in checks
        if check_spec(r.check).role in WARNING_ROLES
        and r.verdict in (Verdict.FAIL, Verdict.INCONCLUSIVE)
    ]
    counted = list(checks)
    if guarantee_class == "suppressed":
        # The weights hold the data by design; only checks run through the guard (LM
        # memorisation of guarded outputs) say anything about what leaves the system.
        counted = [r for r in checks if not check_spec(r.check).on_weights]
        notes += [
            f"{r.check} {r.verdict.value} not counted: the weights of a suppressed model hold "
            "the data by design."
            for r in checks
            if check_spec(r.check).on_weights
        ]
    member_fails = [_describe(r) for r in counted if _member_side_fail(r)]

    if guarantee_class == "approximate":
        verdict, reasons = _approximate(by_name, member_fails, counted)
    elif guarantee_class == "exact":
        replays = [r for r in checks if check_spec(r.check).role == "replay"]
        verdict, reasons = _exact(lineage, member_fails, replays)
        if replays and all(r.verdict == Verdict.PASS for r in replays):
            notes += [f"Sanity check flag not counted (the replay rebuilt identical weights without the "
                      f"records): {m}" for m in member_fails]
    elif guarantee_class == "dp_bounded":
        dp_results = [r for r in checks if check_spec(r.check).role == "dp_bound"]
        verdict, reasons = _dp_bounded(dp_results, member_fails)
    elif guarantee_class == "exact_attested":
        verdict, reasons = _exact_attested(by_name, lineage, member_fails)
    elif guarantee_class == "concept_erased":
        verdict, reasons = _concept_erased(by_name)
    else:
        verdict, reasons = _suppressed(suppression, member_fails)

    bound, false_fail = _false_fail_statement(counted)
    return FinalVerdict(
        check="final_verdict",
        verdict=verdict,
        rule=RULES[guarantee_class],
        reason=" ".join(reasons),
        guarantee_class=guarantee_class,
        reasons=tuple(reasons),
        warnings=tuple(warnings),
        notes=tuple(notes),
        checks=tuple((r.check, r.verdict.value) for r in checks),
        lineage=lineage,
        suppression=suppression,
        power=_power_statements(by_name),
        false_fail_bound=bound,
        false_fail=false_fail,
    )


def _concept_erased(by_name: dict[str, list[CheckResult]]) -> tuple[Verdict, list[str]]:
    """The concept probe alone decides: the class promises nothing about records."""
    probes = by_name.get("concept_probe", [])
    if not probes:
        return Verdict.INCONCLUSIVE, ["The concept probe did not run: nothing shows the attribute was erased."]
    failed = [r for r in probes if r.verdict == Verdict.FAIL]
    if failed:
        return Verdict.FAIL, [_describe(r) for r in failed]
    if all(r.verdict == Verdict.PASS for r in probes):
        return Verdict.PASS, [_describe(r) for r in probes]
    return Verdict.INCONCLUSIVE, [_describe(r) for r in probes if r.verdict != Verdict.PASS]


# The chance that an audit FAILs a model that did forget the records, family-wise over every check
# that can FAIL it at a stated level and over their records.
FAMILY_WISE_LEVEL = 0.05


def family_alpha_shares(*, level: float, checks: Sequence[str],
                        declared: Mapping[str, float] | None = None) -> dict[str, float]:
    """Split the family-wise ``level`` between ``checks`` (Bonferroni: if each FAILs a model that
    forgot with chance at most its share, any of them does with chance at most the sum).

    Equal shares, ``level / len(checks)``, except that a check with a ``declared`` alpha (fixed
    before the audit: the equivalence test's, by the plan) keeps it where it is no larger than the
    equal share and is cut to the equal share where it is larger; the other checks split what is
    left equally. Out: name -> share, in ``checks`` order, summing to ``level`` (to less only when
    every check declared a smaller alpha); empty for no checks. Raises ``ValueError`` for a level
    outside (0, 1), a repeated name, or a declared alpha outside (0, 1) or for a check not listed."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"the family-wise level must lie in (0, 1), got {level}")
    names = list(checks)
    if len(set(names)) != len(names):
        raise ValueError(f"each check takes one share; repeated: {sorted({n for n in names if names.count(n) > 1})}")
    declared = dict(declared or {})
    unknown = sorted(set(declared) - set(names))
    if unknown:
        raise ValueError(f"declared alpha for check(s) not in the family: {unknown}")
    bad = {name: a for name, a in declared.items() if not 0.0 < float(a) < 1.0}
    if bad:
        raise ValueError(f"a declared alpha must lie in (0, 1): {bad}")
    if not names:
        return {}
    equal = level / len(names)
    fixed = {name: min(float(declared[name]), equal) for name in names if name in declared}
    free = [name for name in names if name not in fixed]
    rest = (level - sum(fixed.values())) / len(free) if free else 0.0
    return {name: fixed.get(name, rest) for name in names}


def planned_alpha_share(model_kind: ModelKind, *, level: float = FAMILY_WISE_LEVEL) -> float:
    """The equal share of the family-wise ``level`` of each check that can FAIL an audit of a
    ``model_kind`` model at a stated level, counting every such check the runner may run on it
    (what the plan can know before any score): the alpha the plan declares for the equivalence test.
    At the audit, the checks that run split what is left (:func:`family_alpha_shares`)."""
    names = checks_for_kind(model_kind, "level")
    if not names:
        raise ValueError(f"no check can FAIL a {model_kind} audit at a stated level")
    return level / len(names)


def with_family_alpha(evidence: ClassifierEvidence, *, level: float = FAMILY_WISE_LEVEL) -> ClassifierEvidence:
    """``evidence`` with each statistical check's share of the family-wise ``level``
    (``check_alpha``): the checks that can FAIL at a stated level and that the evidence supports
    (:func:`audits.checks.registry.checks_at_a_level`) split it, the equivalence test keeping the
    alpha its declared margins carry (or its equal share, if that is smaller)."""
    names = checks_at_a_level(evidence)
    margins = evidence.equivalence_margins
    declared = ({"equivalence_tost": margins.alpha}
                if margins is not None and "equivalence_tost" in names else None)
    return dataclasses.replace(evidence, check_alpha=family_alpha_shares(level=level, checks=names,
                                                                         declared=declared))


def _false_fail_statement(counted: Sequence[CheckResult]) -> tuple[float | None, str]:
    """The level at which a false FAIL is held over the checks that could FAIL this verdict (role
    ``forget``, run and applicable): the sum of the levels of those that state one, and it in plain
    words with the margin-based checks named as outside it; (None, "") when none ran."""
    can_fail = [r for r in counted if check_spec(r.check).role == "forget" and r.verdict != Verdict.NOT_APPLICABLE]
    if not can_fail:
        return None, ""
    levels = [(r.check, r.false_fail_level()) for r in can_fail]
    stated = [(name, level) for name, level in levels if level is not None]
    unstated = sorted({name for name, level in levels if level is None})
    bound = min(1.0, sum(level for _, level in stated)) if stated else None
    text = ""
    if stated:
        shares = ", ".join(f"{name} {fmt(level)}" for name, level in stated)
        if bound <= FAMILY_WISE_LEVEL * (1 + 1e-9):
            text = (f"The chance that this audit's statistical checks find a forgotten record on the member side of "
                    f"a model that did forget it is held at {fmt(bound)}, family-wise over the checks and the "
                    f"records: the checks that ran split the platform's level of {fmt(FAMILY_WISE_LEVEL)} between "
                    f"them ({shares}), and each holds its share over all the records by Holm's correction (the "
                    "population attack over its figures).")
        else:
            text = (f"The chance that the checks which can FAIL this verdict find a forgotten record on the member "
                    f"side of a model that did forget it is at most {fmt(bound)}, the sum of their levels ({shares}),"
                    f" which is above the platform's family-wise level of {fmt(FAMILY_WISE_LEVEL)}: these levels "
                    "were not split between the checks.")
    if unstated:
        text += ((" " if text else "") + f"Outside that level: {', '.join(unstated)}. They FAIL only when the model "
                 "keeps more of the forgotten data than every reference model by a margin set from the references' "
                 "spread, or beyond a tolerance, which is not a test at a stated level: no error rate can be "
                 "attached to their FAIL" + (" (no check here states one)." if not stated else "."))
    return bound, text


def _power_statements(by_name: dict[str, list[CheckResult]]) -> tuple[str, ...]:
    """The audit's power in words: the forget records' own, then the pipeline's (canaries)."""
    own: list[str] = []
    for result in by_name.get("membership_lira", []):
        powered = getattr(result, "powered_ids", None)
        if powered is not None:
            own.append(f"LiRA detects {len(powered)} of {len(result.record_ids)} record(s) on the original model")
    for result in by_name.get("membership_rmia", []):
        powered = getattr(result, "powered", None)
        if powered is not None:
            own.append(f"RMIA detects {len(powered)} of {len(result.record_ids)}")
    own += [f"membership_power {r.verdict.value}: {r.reason}" for r in by_name.get("membership_power", [])]
    canaries = by_name.get("canary_power", [])
    if not (own or canaries):
        return ()
    lines = [
        "The forget records' own power (the per-record test on the original model, which trained on them; a "
        "record it cannot detect there can neither FAIL nor PASS the verdict): "
        + ("; ".join(own) if own else "not measured") + "."
    ]
    if canaries:
        lines += [f"Pipeline power (canaries planted in training; they show the pipeline detects memorisation in "
                  f"this model and never stand in for the records' own power): {r.verdict.value}: {r.reason}"
                  for r in canaries]
    else:
        lines.append("Pipeline power (canaries): no canaries were planted in this model's training, so the "
                     "pipeline's sensitivity is shown only by the forget records' own power.")
    return tuple(lines)


def _approximate(
    by_name: dict[str, list[CheckResult]], member_fails: list[str], counted: list[CheckResult]
) -> tuple[Verdict, list[str]]:
    if member_fails:
        return Verdict.FAIL, member_fails
    missing: list[str] = []
    needed = [name for name in CHECKS if check_spec(name).needed_for_approximate_pass]
    for name in needed:
        results = by_name.get(name, [])
        if not results:
            missing.append(check_spec(name).needed_for_approximate_pass)
        missing += [_describe(r) for r in results if r.verdict != Verdict.PASS]
    # Over-forgetting makes the deletion detectable: not a member-side FAIL, but no PASS either.
    # (A needed check's over-forgetting FAIL is already a missing PASS above.)
    missing += [_describe(r) for r in counted if _over_forgetting_fail(r) and r.check not in needed]
    missing += [_unfinished_when_it_applies(r) for r in counted
                if r.check in _NEEDED_WHEN_IT_RUNS and r.verdict == Verdict.INCONCLUSIVE]
    if missing:
        return Verdict.INCONCLUSIVE, missing
    return Verdict.PASS, [
        "No forgotten record is detected, the per-record test detects every one of them on the original "
        "model (its power, record by record), and every aggregate metric is equivalent to the reference "
        "within its declared margins."
    ]


# Checks that an approximate PASS needs whenever they run, though not every audit can run them:
# U-LiRA runs the result's own method on the shadows, which needs a platform job that made the
# version (a result made elsewhere has no method to run: then it does not run, and says why).
# Where it runs and cannot test every record (its time budget cut the method's runs, too few
# shadows held a record), whether the method leaves a trace a retrain does not is not shown.
_NEEDED_WHEN_IT_RUNS = ("unlearning_lira",)


def _unfinished_when_it_applies(result: CheckResult) -> str:
    return (f"{result.check} INCONCLUSIVE: the test of the method itself (U-LiRA: the same method run on shadow "
            "models that trained on the records, against shadow models that never saw them) applies to this "
            "result but could not test every record, so it is not shown that the method leaves no trace a "
            f"retrain would not; an approximate result cannot PASS without it. {result.reason}")


def _exact(lineage: LineageProof | None, member_fails: list[str],
           replays: Sequence[CheckResult] = ()) -> tuple[Verdict, list[str]]:
    reasons: list[str] = []
    if lineage is not None and not lineage.new_version_holds_none:
        reasons.append("The lineage shows the new version trained on a forgotten record.")
    if lineage is not None and lineage.older_copies_purged is False:
        reasons.append("An older copy that holds the records is not purged.")
    reasons += [f"Replay: {r.reason}" for r in replays if r.verdict == Verdict.FAIL]
    if reasons:
        return Verdict.FAIL, reasons
    unreproduced = [f"Replay: {r.reason}" for r in replays if r.verdict == Verdict.INCONCLUSIVE]
    if unreproduced:
        return Verdict.INCONCLUSIVE, unreproduced
    replayed = bool(replays) and all(r.verdict == Verdict.PASS for r in replays)
    if member_fails and not replayed:
        # The weights provably never saw the record; member-like behaviour then means a
        # near-duplicate in the kept data or a false positive. Neither supports a PASS, and a
        # FAIL would send a provably clean model back to retraining for ever.
        return Verdict.INCONCLUSIVE, [
            f"Sanity check contradicts the lineage proof: {m} (a near-duplicate of the record may "
            "remain in the kept training data, or the test erred; investigate)" for m in member_fails
        ]
    if lineage is None:
        return Verdict.INCONCLUSIVE, ["No lineage proof was given for an exact deletion."]
    if lineage.older_copies_purged is None:
        return Verdict.INCONCLUSIVE, ["The older copies that hold the records are not purged yet."]
    if replayed:
        return Verdict.PASS, [
            "The new version was trained only on data without the records, every older copy is "
            "purged, and an independent replay rebuilt identical weights from the registry's records."
        ]
    return Verdict.PASS, [
        "The new version was trained only on data without the records, every older copy is "
        "purged, and no statistical sanity check contradicts it; no replay ran, so this rests on "
        "the platform's execution record."
    ]


# The statistical audit of an attested declaration: the per-record test (classifiers, against
# reference models) or the memorisation test (language models, against held-out records).
_ATTESTATION_TESTS = ("membership_lira", "lm_memorisation")


def _exact_attested(by_name: dict[str, list[CheckResult]], lineage: LineageProof | None,
                    member_fails: list[str]) -> tuple[Verdict, list[str]]:
    reasons: list[str] = []
    if lineage is not None and not lineage.new_version_holds_none:
        reasons.append("The membership the company's pipeline declared, as registered, holds a forgotten record.")
    if lineage is not None and lineage.older_copies_purged is False:
        reasons.append("An older copy that holds the records is not purged.")
    reasons += [f"The statistics contradict the company's declaration: {m}" for m in member_fails]
    if reasons:
        return Verdict.FAIL, reasons
    missing: list[str] = []
    procedure = by_name.get("shadow_procedure", [])
    missing += [f"The reference models are not from the company's pipeline, so they cannot test its "
                f"declaration: {r.reason}" for r in procedure if r.verdict != Verdict.PASS]
    tests = [r for name in _ATTESTATION_TESTS for r in by_name.get(name, [])]
    if not tests:
        missing.append("No reference models from the company's pipeline were given, so the per-record test did "
                       "not run: the company's declaration was checked against the registry but not tested on "
                       "the model, and erasure would rest on the company's word alone.")
    # The attested class states the test's power beside its PASS (the declaration and the registry check
    # decide it); a test that ran on every record but lacks power for some is stated, not a gap.
    missing += [_describe(r) for r in tests if r.verdict != Verdict.PASS and not _unpowered_only(r)]
    if lineage is None:
        missing.append("No lineage proof was given for the attested deletion.")
    elif lineage.older_copies_purged is None:
        missing.append("The older copies that hold the records are not purged yet.")
    if missing:
        return Verdict.INCONCLUSIVE, missing
    power = by_name.get("membership_power", [])
    if power and all(r.verdict == Verdict.PASS for r in power):
        strength = f"The test's power was demonstrated on the old model: {power[0].reason}"
    elif power:
        strength = (f"The test's power was not demonstrated ({power[0].reason}), so not detecting the records "
                    "adds little to the declaration.")
    else:
        strength = "No power check ran beside the test."
    return Verdict.PASS, [
        "The company's pipeline declared a retrain without the records; the platform checked its declared "
        "membership and found none of them in it; every older copy is purged; and the statistical test of the "
        "new model detected none of them. " + strength
    ]


def _unpowered_only(result: CheckResult) -> bool:
    """The per-record test ran on every record and detected none it has power for; some it has none for."""
    return (result.verdict == Verdict.INCONCLUSIVE and bool(getattr(result, "unpowered_ids", ()))
            and not getattr(result, "untestable_ids", ()) and not getattr(result, "detected_ids", ()))


def _dp_bounded(
    dp_results: list[CheckResult], member_fails: list[str]
) -> tuple[Verdict, list[str]]:
    reasons = [_describe(r) for r in dp_results if r.verdict == Verdict.FAIL]
    reasons += [f"Sanity check: {m}" for m in member_fails]
    if reasons:
        return Verdict.FAIL, reasons
    if not dp_results:
        return Verdict.INCONCLUSIVE, ["No group-privacy bound was given for a dp_bounded model."]
    if any(r.verdict != Verdict.PASS for r in dp_results):
        return Verdict.INCONCLUSIVE, [_describe(r) for r in dp_results]
    return Verdict.PASS, [_describe(r) for r in dp_results]


def _suppressed(
    bound: SuppressionBound | None, member_fails: list[str]
) -> tuple[Verdict, list[str]]:
    reasons = [f"Through the guard: {m}" for m in member_fails]
    if bound is not None:
        if not (0 < bound.alpha < 1 and 0 < bound.delta < 1 and bound.n >= 1):
            raise ValueError("suppression bound needs 0 < alpha, delta < 1 and n >= 1")
        stated = (
            f"guard bound: leak rate <= {fmt(bound.upper_bound)} with confidence "
            f"{fmt(1 - bound.delta)} from {bound.n} probes, target alpha {fmt(bound.alpha)}"
        )
        floor = bound.smallest_possible_bound()
        if bound.upper_bound < floor - 1e-12 or not math.isfinite(bound.upper_bound):
            return Verdict.INCONCLUSIVE, reasons + [
                f"Inconsistent {stated}: {bound.n} probes cannot give a bound below {fmt(floor)}."
            ]
        if floor > bound.alpha and not reasons:
            return Verdict.INCONCLUSIVE, [
                f"{stated}: {bound.n} probes cannot show a rate below alpha even with no leak "
                f"(smallest possible bound {fmt(floor)})."
            ]
        if bound.upper_bound > bound.alpha:
            reasons.append(f"{stated}: the bound exceeds the target.")
        if reasons:
            return Verdict.FAIL, reasons
        return Verdict.PASS, [f"{stated}: within the target."]
    if reasons:
        return Verdict.FAIL, reasons
    return Verdict.INCONCLUSIVE, ["No calibrated guard bound was given for a suppressed model."]
