"""The registry of audit checks: name -> the check function with the facts the audit needs about it.

A check registers once, with a :class:`CheckSpec`::

    @register_check(CheckSpec(name="membership_lira", role="forget", on_weights=True, ...))
    def membership_test(*, record_ids, unlearned_scores, reference, ...) -> MembershipTestResult:

The audit runner runs what the registry says applies to the model (:func:`run_checks`), and the
verdict rule (:mod:`audits.checks.verdict`) reads each result's role from here: neither names a
check. ``import audits.checks`` imports every module of the package, so ``CHECKS``
then holds them all. An unknown name raises ``ValueError`` listing the registered names;
registering a name twice raises too (the shared strict :class:`foundation.registry.Registry`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, get_args

from audits.checks.evidence import MODEL_KINDS, Evidence, ModelKind
from audits.checks.result import CheckResult
from foundation.registry import Registry
from workers.unlearning.catalogue import NOT_A_PERSONS_ERASURE

# What a check is evidence of, which decides how the verdict treats it:
#   forget:   a FAIL means a forgotten record (or the forget set) still looks like a member (a
#             result's ``side == "non_member"`` marks over-forgetting instead);
#   power:    whether the per-record test could detect members at all; never FAILs a verdict;
#   dp_bound: the subject's differential-privacy bound, which decides the dp_bounded class;
#   retain, utility: the records that stay, the model's job; a FAIL is a warning beside the verdict;
#   diagnostic: a forget-side figure reported beside the verdict whose FAIL only warns (the platform's
#             variant of the challenge's forgetting quality: a score, not a test at a stated level);
#   replay:   a second computation of an exact deletion's weights; decides the exact class with the
#             lineage proof (a difference FAILs it, an environment it cannot reproduce leaves it open).
Role = Literal["forget", "power", "dp_bound", "retain", "utility", "diagnostic", "replay"]
ROLES: tuple[Role, ...] = get_args(Role)
WARNING_ROLES: tuple[Role, ...] = ("retain", "utility", "diagnostic")
# How a forget-role check holds its false FAILs (CheckSpec.false_fail).
FalseFail = Literal["level", "margin"]
FALSE_FAILS: tuple[FalseFail, ...] = get_args(FalseFail)

Inputs = Callable[[Any], Mapping[str, Any] | None]
CheckFunction = TypeVar("CheckFunction", bound=Callable[..., CheckResult])


@dataclass(frozen=True)
class CheckSpec:
    """The facts about one check, given once where it registers.

    ``on_weights``: its evidence is read off the weights (not through an inference-time guard),
    so it does not count for a ``suppressed`` model, whose weights hold the data by design.
    ``needed_for_approximate_pass``: None, or the words the approximate verdict gives when the
    check did not run; such a check must PASS for an approximate PASS.
    ``applies_to`` and ``inputs``: the model kinds the audit runner runs it on, and the adapter
    that maps the runner's evidence (:mod:`audits.checks.evidence`) to the check's keyword
    arguments, or to None when the evidence cannot support it (too few shadow models, say).
    A check with neither is run by whoever holds its inputs (a policy, a benchmark, a test).
    ``min_records``: the fewest forgotten records it can run on (the plan says so beforehand).
    ``false_fail`` (``forget`` role only): how its chance of FAILing a model that forgot is held. ``"level"``: a test at a stated level that takes its share of the
    audit's family-wise level as its ``alpha`` (:func:`audits.checks.verdict.family_alpha_shares`);
    ``"margin"``: it FAILs beyond a margin from reference models' spread or a tolerance, which
    gives no error rate, so it stays outside that level (the verdict names it); a forget-role check
    that says neither is treated so too.
    """

    name: str
    role: Role
    on_weights: bool = False
    needed_for_approximate_pass: str | None = None
    applies_to: tuple[ModelKind, ...] = ()
    inputs: Inputs | None = None
    min_records: int = 1
    false_fail: FalseFail | None = None

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"check {self.name!r}: role {self.role!r} is not one of {ROLES}")
        if self.false_fail is not None and (self.role != "forget" or self.false_fail not in FALSE_FAILS):
            raise ValueError(f"check {self.name!r}: false_fail {self.false_fail!r} needs the forget role and one of "
                             f"{FALSE_FAILS}")
        unknown = set(self.applies_to) - set(MODEL_KINDS)
        if unknown:
            raise ValueError(f"check {self.name!r}: unknown model kind(s) {sorted(unknown)}")
        if bool(self.applies_to) != (self.inputs is not None):
            raise ValueError(f"check {self.name!r}: applies_to and inputs go together")


@dataclass(frozen=True)
class AuditCheck:
    """A registered check: its facts and the function that computes its result."""

    spec: CheckSpec
    run: Callable[..., CheckResult]


CHECKS: Registry[AuditCheck] = Registry("audit check")


def register_check(spec: CheckSpec) -> Callable[[CheckFunction], CheckFunction]:
    """Decorator: register the check function under ``spec.name``; the function is unchanged."""

    def decorate(function: CheckFunction) -> CheckFunction:
        CHECKS.register(spec.name)(AuditCheck(spec=spec, run=function))
        return function

    return decorate


def check_spec(name: str) -> CheckSpec:
    """The facts registered for check ``name``; ``ValueError`` for an unknown name."""
    return CHECKS.get(name).spec


def run_checks(evidence: Evidence) -> list[CheckResult]:
    """Every registered check that applies to the evidence's model kind and that the evidence can
    support, run on it. Out: the results in registry order (names sorted)."""
    results = []
    for name in CHECKS:
        check = CHECKS.get(name)
        if evidence.model_kind not in check.spec.applies_to:
            continue
        arguments = check.spec.inputs(evidence)
        if arguments is not None:
            results.append(check.run(**arguments))
    return results


def checks_at_a_level(evidence: Evidence) -> list[str]:
    """The checks that can FAIL a verdict at a stated level (``false_fail == "level"``) and that the
    evidence supports (their adapter gives arguments): those that share the family-wise level, in
    registry order. A check supported but not applicable at this size (too few records) keeps its
    share: whether it applies is its own decision, made on the scores."""
    return [name for name in CHECKS
            if CHECKS.get(name).spec.false_fail == "level" and evidence.model_kind in CHECKS.get(name).spec.applies_to
            and CHECKS.get(name).spec.inputs(evidence) is not None]


def checks_for_kind(model_kind: ModelKind, false_fail: FalseFail) -> list[str]:
    """The registered checks the audit runner runs on ``model_kind`` whose false FAILs are held as
    ``false_fail`` says (all of them, before any evidence: what a plan can count on)."""
    return [name for name in CHECKS
            if CHECKS.get(name).spec.false_fail == false_fail and model_kind in CHECKS.get(name).spec.applies_to]


def audit_cannot_confirm(*, guarantee_class: str, model_kind: ModelKind, records: int | None = None) -> str | None:
    """Why an audit of a ``guarantee_class`` result on a ``model_kind`` model cannot end PASS and so
    cannot confirm erasure, in plain words for the plan (shown before the method runs), or None
    when it can. Read off the registry: an approximate PASS needs every check whose spec says so,
    and a check the audit runner never runs on this kind of model, or on as few forgotten records
    as ``records`` (when given), can never be there."""
    if guarantee_class in NOT_A_PERSONS_ERASURE:
        return NOT_A_PERSONS_ERASURE[guarantee_class]
    if guarantee_class != "approximate":
        return None
    needed = [CHECKS.get(name).spec for name in CHECKS if CHECKS.get(name).spec.needed_for_approximate_pass]
    missing = [spec.needed_for_approximate_pass for spec in needed if model_kind not in spec.applies_to]
    missing += [f"{spec.needed_for_approximate_pass}: {spec.name} needs at least {spec.min_records} forgotten "
                f"records and this request has {records}" for spec in needed
                if model_kind in spec.applies_to and records is not None and records < spec.min_records]
    if not missing:
        return None
    return ("this audit cannot confirm erasure here (" + "; ".join(missing) + "): choose an exact method "
            "or expect a decision by the DPO")
