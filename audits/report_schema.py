"""The erasure report as data: its schema (TypedDicts), ``validate_report`` and small builders.

A report is a plain JSON-serialisable dict. It is stored on the ``Report`` row, embedded in the
signed PDF as ``erasure-report.json`` and rendered into the PDF's text and charts, so the PDF says
nothing the data do not. Field by field (``?`` marks a key that may be left out):

* ``schema_version``: 1.
* ``request_id``: the deletion request's public UUID.
* ``subject_reference``: the pseudonymous subject reference (``subj_...``), never a name or an
  e-mail address.
* ``jurisdiction``: ``GDPR``, ``UK_GDPR`` or ``CCPA``.
* ``legal_ground``: ``{code, text}``, e.g. ``{"code": "art17_1_b", "text": "Art. 17(1)(b): consent
  withdrawn"}``.
* ``generated_at``: when the report data were assembled (ISO 8601 with time zone).
* ``timeline``: ``received``, ``verified``, ``approved``, ``due``, ``extended``,
  ``extension_reason``, ``completed`` (ISO 8601 with time zone; all but ``received`` and ``due``
  may be null; ``extension_reason`` is text, empty when there was no extension).
* ``scope``: ``records`` (how many of the subject's records), ``datasets`` (``[{name, version,
  records}]``), ``model_versions`` (``[{model, version, status}]``: the affected versions as
  scoped) and ``purged_artifacts`` (``[{description, sha256}]``: every copy deleted, e.g. the
  parent's weights, checkpoints, adapters, shadow models, cached datasets).
* ``model_versions``: one entry per affected model version:

  - ``model``, ``version``, ``new_version`` (null when no new version was made), ``outcome``
    (the ModelOutcome status: ``confirmed``, ``withdrawn``, ``held``, ...);
  - ``model_kind?``: ``{kind, words}``: ``classifier``, ``regressor`` or ``language_model``, and
    the words the report prints for it;
  - ``method`` (the unlearning method's registered name) and ``guarantee``: ``{guarantee_class,
    title, promises, does_not_promise, evidence}`` (see :func:`guarantee_entry`);
  - ``old_artifact_sha256``, ``new_artifact_sha256`` (null with no new version),
    ``code_version`` (the code's commit), ``shadow_model_count`` (reference models the tests
    compared with);
  - ``metrics``: ``[{name, description?, before, after, reference, result?}]`` (numbers or null;
    ``result`` is the check's verdict or a short word);
  - ``roc_curves``: ``[{label, false_positive_rate, true_positive_rate, auc}]`` (rates in
    [0, 1], same length, at least two points; ``auc`` may be null);
  - ``score_histograms``: null or ``{score, bin_edges, forget, retain, test}`` (counts per bin:
    ``len(bin_edges) == len(counts) + 1``; ``score`` says in words what was measured);
  - ``cost``: ``{estimated_seconds, actual_seconds, device?}`` (null when unknown);
  - ``verdict``: ``{verdict, rule, reasons, warnings, notes}`` (PASS, FAIL or INCONCLUSIVE and the
    rule that produced it; see :func:`verdict_entry`);
  - ``language_model`` (only for language models, may be null): ``{records, measured_through_guard,
    reference, figures, guard, notes}``: ``figures`` are ``[{name, description, before, after,
    reference}]`` (what the old and the new model reproduce of the erased records, perplexity),
    ``reference`` says in words what the reference column is, ``guard`` is null or the verifier
    guard's calibrated bound ``{alpha, delta, n, leaks, threshold, upper_bound, certified,
    statement, redaction_rate, held_out_withheld_rate}``, ``notes`` are short sentences;
  - ``method_choice`` (only where the DPO chose another method than the plan's at approval):
    ``{planned, chosen, chosen_by, chosen_at, statement}``;
  - ``earlier_attempts`` (only when there were any): ``[{method, guarantee, new_version,
    new_artifact_sha256, verdict, metrics, escalated_at, escalated_by, purged_artifacts}]``: an
    attempt whose audit failed, which was escalated (to an exact retrain) and whose result was
    destroyed; ``guarantee`` is the class's title, ``verdict``, ``metrics`` and
    ``language_model`` as above, ``purged_artifacts`` as in ``scope``.

  - ``risk_acceptance`` (only when erasure was not confirmed and the residual risk accepted):
    ``{reason, proposed_by, proposed_at, confirmed_by, confirmed_at, proposed_by_person?,
    confirmed_by_person?}``: two DPO users. ``*_by`` is the path each took (``user:alice``, or
    ``user:alice via api:console(dpo)`` for a token bound to its user); ``*_by_person`` the person
    (``user:alice``), two different ones; reports made before tokens named people have no persons.
  - ``attestation`` (only for a version the company's own pipeline retrained, class
    ``exact_attested``): ``{attested_by, pipeline, job_sent, uploaded, records_declared,
    request_records_checked, erased_before_checked, erased_found, reference_models, statement}``:
    who attests, the pipeline as it declared itself, when the signed job went out and the upload
    came in, how many records the declared membership lists, how many erased records (this
    request's and those erased before) the platform checked it against and how many of them it
    found there, the reference models from the same pipeline the audit used, and the promise in
    one paragraph as the report prints it.
  - ``dp_bound`` (only for a ``dp_bounded`` result: a model trained with DP-SGD kept as it is, by the
    DPO's decision): ``{k, epsilon, delta, computed_by, generic, accountant, per_record, max_epsilon,
    max_delta, within_limits, vacuous, whole_pipeline_private, conditions, statement}``: the
    person's group-privacy bound for their k records (epsilon and delta; null when infinite), how it
    was computed (``accountant (...)``: the group accounted as one unit by Opacus' accountant, or
    ``generic``: (k epsilon, k e^((k-1) epsilon) delta)), both bounds (``{epsilon, delta}``; the
    accountant's null where it could not compute one), the run's per-record figures ``{epsilon, delta,
    accountant, sample_rate, noise_multiplier, steps}``, the policy's limits, whether the bound is
    within them or vacuous, whether the whole pipeline was private (null: not known) with the
    ``conditions`` ``[{condition, holds, known_by, detail}]`` the run recorded, and the statement the
    report prints (nothing was deleted from the weights; the bound is a risk decision).

* ``end_state`` (reports since 2026-12-06): ``{status, meaning}``: ``COMPLETED`` (erasure
  confirmed for every affected model, or the model withdrawn or held as the report says) or
  ``CLOSED_RISK_ACCEPTED`` (erasure not confirmed for at least one model; the residual risk
  accepted by two DPO users), and what that means for the company's position, in plain words.
* ``recipients_notified`` (optional): ``[{name, endpoint_id, model, version_held, new_version,
  action}]``: the recipients of model copies told of the erasure by a signed webhook (GDPR
  Art. 19), and whether they were asked to replace their copy or delete it; never a secret or URL.
* ``concept`` (only for a concept request: "stop using attribute X", which names no person):
  ``{attribute, dataset, labelled_records, statement}``: the attribute in words, the dataset whose
  records were labelled with it, how many, and the sentence the first page prints (a concept
  erasure, not an erasure of anyone's data). ``subject_reference`` then says that no person is named.
* ``limitations``: what these tests cannot show, in short sentences (at least one; see
  :data:`STANDARD_LIMITATIONS`).
* ``ledger_head``: ``{seq, hash}``: the ledger's head when the report was signed (hash as 64 hex
  characters). Filled in by ``report_create``.
* ``signer``: ``{name, organisation, certificate_sha256}``: who signed. Filled in by
  ``report_create`` from the signing certificate.

Unknown keys are refused: a misspelt field fails validation instead of vanishing from the PDF.
"""

from __future__ import annotations

import json
import math
import re
import types
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import (
    Annotated,
    Any,
    Literal,
    NotRequired,
    Required,
    TypedDict,
    Union,
    get_args,
    get_origin,
    get_type_hints,
    is_typeddict,
)

from workers.unlearning.base import GUARANTEE_CLASSES

SCHEMA_VERSION = 1
REPORT_ATTACHMENT = "erasure-report.json"


class _Constraint:
    """A check beyond the type, named in the error; used inside ``Annotated``."""

    def __init__(self, description: str, test: Callable[[Any], bool]) -> None:
        self.description = description
        self.test = test

    def __call__(self, value: Any, path: str) -> None:
        if not self.test(value):
            raise ValueError(f"{path} must be {self.description}, got {value!r:.80}")


def _is_timestamp(value: str) -> bool:
    try:
        return datetime.fromisoformat(value).tzinfo is not None
    except ValueError:
        return False


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


_SHA256 = _Constraint("64 lowercase hex characters (a sha256)",
                      lambda v: re.fullmatch(r"[0-9a-f]{64}", v) is not None)
_NON_EMPTY = _Constraint("non-empty", lambda v: len(v) > 0)
_NON_NEGATIVE = _Constraint("zero or more", lambda v: v >= 0)
_RATE = _Constraint("a list of rates between 0 and 1", lambda v: all(0.0 <= x <= 1.0 for x in v))

Sha256 = Annotated[str, _SHA256]
Timestamp = Annotated[str, _Constraint("an ISO 8601 date-time with a time zone", _is_timestamp)]
Text = Annotated[str, _NON_EMPTY]
Count = Annotated[int, _NON_NEGATIVE]
Seconds = Annotated[float, _NON_NEGATIVE]
GuaranteeClass = Literal["exact", "dp_bounded", "approximate", "suppressed", "exact_attested", "concept_erased"]
VerdictValue = Literal["PASS", "FAIL", "INCONCLUSIVE"]

if set(get_args(GuaranteeClass)) != set(GUARANTEE_CLASSES):  # pragma: no cover - a programming error
    raise RuntimeError("report_schema.GuaranteeClass is out of step with GUARANTEE_CLASSES")


class LegalGroundEntry(TypedDict):
    code: Text
    text: Text  # the ground in words, as the request's choices label it


class Timeline(TypedDict):
    received: Timestamp
    verified: Timestamp | None
    approved: Timestamp | None
    due: Timestamp
    extended: Timestamp | None
    extension_reason: str
    completed: Timestamp | None


class DatasetScope(TypedDict):
    name: Text
    version: str
    records: Count
    source: NotRequired[Text]  # a dataset read from the company's database: does it still hold them


class ModelVersionScope(TypedDict):
    model: Text
    version: Count
    status: str


class PurgedArtifact(TypedDict):
    description: Text  # what the copy was, e.g. "weights of credit-risk v3"
    sha256: Sha256


class Scope(TypedDict):
    records: Count
    datasets: list[DatasetScope]
    model_versions: list[ModelVersionScope]
    purged_artifacts: list[PurgedArtifact]


class GuaranteeEntry(TypedDict):
    guarantee_class: GuaranteeClass
    title: Text
    action: NotRequired[Text]  # removal (exact / approximate) or suppression; reports since 2026-12-06
    promises: Text
    does_not_promise: Text
    evidence: Text


class Metric(TypedDict):
    name: Text
    description: NotRequired[str]
    before: float | None  # on the old model
    after: float | None  # on the new model
    reference: float | None  # on the reference (models that never saw the records)
    result: NotRequired[str]


class RocCurve(TypedDict):
    label: Text
    false_positive_rate: Annotated[list[float], _RATE]
    true_positive_rate: Annotated[list[float], _RATE]
    auc: float | None


class ScoreHistograms(TypedDict):
    score: Text  # what the score is, in words
    bin_edges: list[float]
    forget: list[Count]  # the records erased
    retain: list[Count]  # training records kept
    test: list[Count]  # records no model was trained on


class ModelKindEntry(TypedDict):
    kind: Literal["classifier", "regressor", "language_model"]
    words: Text


class Cost(TypedDict):
    estimated_seconds: Seconds | None
    actual_seconds: Seconds | None
    device: NotRequired[str]


class VerdictEntry(TypedDict):
    verdict: VerdictValue
    rule: Text
    reasons: list[str]
    warnings: list[str]
    notes: list[str]
    # The audit's power in words (the erased records' own, then the pipeline's on planted canaries)
    # and the stated bound on a false FAIL over the checks that could FAIL the verdict.
    power: NotRequired[list[str]]
    false_fail: NotRequired[str]


class LMFigure(TypedDict):
    name: Text
    description: str
    before: float | None  # the old model
    after: float | None  # the new model (through the guard for a suppressed one)
    reference: float | None  # what a model shows for records it never saw


class GuardBound(TypedDict):
    alpha: float
    delta: float
    n: Count  # calibration prompts
    leaks: Count | None  # leaks at the chosen threshold
    threshold: float | None
    upper_bound: float | None  # one-sided Clopper-Pearson bound on the leak rate
    certified: bool
    statement: Text
    redaction_rate: float | None
    held_out_withheld_rate: float | None  # answers withheld for records of other people


class LanguageModelSection(TypedDict):
    records: Count
    measured_through_guard: bool
    reference: Text
    figures: list[LMFigure]
    guard: GuardBound | None
    notes: list[str]


class EarlierAttempt(TypedDict):
    method: Text
    guarantee: Text
    new_version: Count | None
    new_artifact_sha256: Sha256 | None
    verdict: VerdictEntry
    metrics: list[Metric]
    escalated_at: Timestamp
    escalated_by: Text
    purged_artifacts: list[PurgedArtifact]
    language_model: NotRequired[LanguageModelSection | None]


class RiskAcceptance(TypedDict):
    """Erasure not confirmed for the model; two DPO users accepted the residual risk in writing."""

    reason: Text
    proposed_by: Text
    proposed_at: Timestamp
    confirmed_by: Text
    confirmed_at: Timestamp
    proposed_by_person: NotRequired[Text]  # reports since 2026-12-07 (two people, not two API tokens)
    confirmed_by_person: NotRequired[Text]


class Attestation(TypedDict):
    """A version the company's own pipeline retrained (exact_attested): who attests, what was checked."""

    attested_by: Text
    pipeline: Text
    job_sent: Timestamp
    uploaded: Timestamp
    records_declared: Count
    request_records_checked: Count
    erased_before_checked: Count
    erased_found: Count
    reference_models: Count
    statement: Text


class DPFigures(TypedDict):
    epsilon: float | None  # null when infinite
    delta: float | None


class DPPerRecord(TypedDict):
    epsilon: float
    delta: float
    accountant: Text
    sample_rate: float
    noise_multiplier: float
    steps: Count


class DPCondition(TypedDict):
    condition: Text
    holds: bool | None  # null: not known
    known_by: Text  # the recipe, the ML engineer's declaration, or unknown
    detail: str


class ForgetReferences(TypedDict):
    """The representation and relearning checks of an approximate result (a forgotten class or
    sub-population): what the audit retrained and fine-tuned, or why the checks did not apply, and
    their figures in plain words (audits.forget_references.forget_references_report)."""

    statement: Text
    findings: list[Text]


class DPBound(TypedDict):
    """A dp_bounded result: the person's group-privacy bound, how it was computed, and its conditions."""

    k: Count
    epsilon: float | None
    delta: float | None
    computed_by: Text
    generic: DPFigures
    accountant: DPFigures | None
    per_record: DPPerRecord
    max_epsilon: float
    max_delta: float
    within_limits: bool
    vacuous: bool
    whole_pipeline_private: bool | None
    conditions: list[DPCondition]
    statement: Text


class ModelVersionReport(TypedDict):
    model: Text
    version: Count
    model_kind: NotRequired[ModelKindEntry]
    new_version: Count | None
    outcome: str
    method: Text
    guarantee: GuaranteeEntry
    old_artifact_sha256: Sha256
    new_artifact_sha256: Sha256 | None
    code_version: Text
    shadow_model_count: Count
    metrics: list[Metric]
    roc_curves: list[RocCurve]
    score_histograms: ScoreHistograms | None
    cost: Cost
    verdict: VerdictEntry
    language_model: NotRequired[LanguageModelSection | None]
    earlier_attempts: NotRequired[list[EarlierAttempt]]
    risk_acceptance: NotRequired[RiskAcceptance]
    attestation: NotRequired[Attestation]
    dp_bound: NotRequired[DPBound]
    forget_references: NotRequired[ForgetReferences]
    method_choice: NotRequired[MethodChoice]


class MethodChoice(TypedDict):
    """The DPO chose, at approval, another method than the plan's (one the plan offered)."""

    planned: Text
    chosen: Text
    chosen_by: Text
    chosen_at: Text
    statement: Text


class ConceptEntry(TypedDict):
    """A concept request's attribute, and what the report says it is (never anyone's erasure)."""

    attribute: Text
    dataset: Text
    labelled_records: Count
    statement: Text


class EndState(TypedDict):
    """How the request ended, as its status says, and what that means in plain words."""

    status: Literal["COMPLETED", "CLOSED_RISK_ACCEPTED"]
    meaning: Text


class RecipientNotified(TypedDict):
    """A recipient of a model copy told of the erasure (GDPR Art. 19): who, through which webhook
    endpoint, of which version, and what they were asked to do (replace or delete)."""

    name: Text
    endpoint_id: Count
    model: Text
    version_held: Count
    new_version: int | None
    action: Literal["replace", "delete"]


class LedgerHeadEntry(TypedDict):
    seq: Count
    hash: Sha256


class SignerEntry(TypedDict):
    name: Text
    organisation: str
    certificate_sha256: Sha256


class ReportData(TypedDict):
    """The whole report; see the module docstring for each field."""

    schema_version: Literal[1]
    request_id: Annotated[str, _Constraint("a UUID", _is_uuid)]
    subject_reference: Text
    jurisdiction: Literal["GDPR", "UK_GDPR", "CCPA"]
    legal_ground: LegalGroundEntry
    generated_at: Timestamp
    timeline: Timeline
    scope: Scope
    model_versions: list[ModelVersionReport]
    end_state: NotRequired[EndState]
    recipients_notified: NotRequired[list[RecipientNotified]]
    concept: NotRequired[ConceptEntry]
    limitations: Annotated[list[Text], _NON_EMPTY]
    ledger_head: LedgerHeadEntry
    signer: SignerEntry


# ---------------------------------------------------------------- validation


def validate_report(report: dict[str, Any]) -> None:
    """Check a report dict against :class:`ReportData`; returns None or raises ``ValueError``
    naming the first missing or bad field by its path (e.g. ``model_versions[0].verdict.verdict``).
    """
    _check(report, ReportData, "report")
    for index, entry in enumerate(report["model_versions"]):
        path = f"model_versions[{index}]"
        for number, curve in enumerate(entry["roc_curves"]):
            where = f"{path}.roc_curves[{number}]"
            if len(curve["false_positive_rate"]) != len(curve["true_positive_rate"]):
                raise ValueError(f"{where}: false_positive_rate and true_positive_rate differ in length")
            if len(curve["false_positive_rate"]) < 2:
                raise ValueError(f"{where} needs at least two points")
        histograms = entry["score_histograms"]
        if histograms is not None:
            edges = histograms["bin_edges"]
            if len(edges) < 2 or any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
                raise ValueError(f"{path}.score_histograms.bin_edges must be at least two increasing numbers")
            for group in ("forget", "retain", "test"):
                if len(histograms[group]) != len(edges) - 1:
                    raise ValueError(f"{path}.score_histograms.{group} must have one count per bin "
                                     f"({len(edges) - 1}), got {len(histograms[group])}")
        if (entry["new_version"] is None) != (entry["new_artifact_sha256"] is None):
            raise ValueError(f"{path}: new_version and new_artifact_sha256 must be given together")
        for number, attempt in enumerate(entry.get("earlier_attempts") or []):
            if (attempt["new_version"] is None) != (attempt["new_artifact_sha256"] is None):
                raise ValueError(f"{path}.earlier_attempts[{number}]: new_version and new_artifact_sha256 "
                                 "must be given together")
    try:
        json.dumps(report, allow_nan=False)
    except (TypeError, ValueError) as exc:  # pragma: no cover - the walk above refuses these first
        raise ValueError(f"report is not plain JSON: {exc}") from None


def _check(value: Any, hint: Any, path: str) -> None:
    origin = get_origin(hint)
    if origin in (Required, NotRequired):
        _check(value, get_args(hint)[0], path)
    elif origin is Annotated:
        base, *constraints = get_args(hint)
        _check(value, base, path)
        for constraint in constraints:
            constraint(value, path)
    elif value is None and origin not in (Union, types.UnionType):
        raise ValueError(f"{path} must not be null")
    elif is_typeddict(hint):
        _check_typeddict(value, hint, path)
    elif origin is list:
        if not isinstance(value, list):
            raise ValueError(f"{path} must be a list, got {type(value).__name__}")
        for index, item in enumerate(value):
            _check(item, get_args(hint)[0], f"{path}[{index}]")
    elif origin is Literal:
        allowed = get_args(hint)
        if isinstance(value, bool) or value not in allowed:
            raise ValueError(f"{path} must be one of {', '.join(map(str, allowed))}, got {value!r:.80}")
    elif origin in (Union, types.UnionType):
        options = [option for option in get_args(hint) if option is not type(None)]
        if value is None:
            if len(options) == len(get_args(hint)):
                raise ValueError(f"{path} must not be null")
            return
        if len(options) != 1:  # pragma: no cover - the schema has no such unions
            raise TypeError(f"unsupported union at {path}")
        _check(value, options[0], path)
    elif hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{path} must be true or false, got {value!r:.80}")
    elif hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"{path} must be a finite number, got {value!r:.80}")
    elif hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{path} must be an integer, got {value!r:.80}")
    elif hint is str:
        if not isinstance(value, str):
            raise ValueError(f"{path} must be text, got {type(value).__name__}")
    else:  # pragma: no cover - a programming error in the schema
        raise TypeError(f"unsupported schema type {hint!r} at {path}")


def _check_typeddict(value: Any, hint: Any, path: str) -> None:
    if not isinstance(value, dict):
        raise ValueError(f"{path} must be an object, got {type(value).__name__}")
    fields = get_type_hints(hint, include_extras=True)
    # Requiredness from the resolved hints: with postponed annotations Python 3.11's
    # __required_keys__ does not see NotRequired.
    required = [key for key, field_hint in fields.items() if get_origin(field_hint) is not NotRequired]
    for key in required:
        if key not in value:
            raise ValueError(f"{path}.{key} is missing")
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise ValueError(f"{path}.{unknown[0]} is not a field of the report schema")
    for key, field_hint in fields.items():
        if key in value:
            _check(value[key], field_hint, f"{path}.{key}")


# ---------------------------------------------------------------- builders


STANDARD_LIMITATIONS: tuple[str, ...] = (
    "The tests cover only the records that were identified as this person's. A copy of the same "
    "information stored under another name, or in a dataset not linked to this person, was not "
    "tested.",
    "A statistical test can show that no difference was found at the stated error rates. It "
    "cannot prove that no trace of the data remains.",
    "The comparison uses reference models trained with and without the records. The result is "
    "only as good as these reference models are similar to the model in use.",
    "The tests cover the model versions listed here. They do not cover outputs the old models "
    "produced while they were in use, such as predictions, generated text or logs.",
    "A small number of records gives a test little power. Where the report says the power was "
    "not shown, the result is INCONCLUSIVE rather than PASS.",
)


def guarantee_entry(guarantee_class: str, method: str | None = None) -> GuaranteeEntry:
    """The plain-words text of a guarantee class as the report stores it (``ValueError`` if
    the class is unknown); a ``method`` whose declaration states a narrower promise (S3T) gets that."""
    from audits.checks.guarantees import guarantee_text
    from workers.unlearning.catalogue import METHOD_SPECS

    text = guarantee_text(guarantee_class)
    promise = METHOD_SPECS.get(method).promise if method in METHOD_SPECS else None
    return {"guarantee_class": text.name, "title": text.title, "action": text.action,
            "promises": promise or text.promises,
            "does_not_promise": text.does_not_promise, "evidence": text.evidence}


def verdict_entry(final_verdict: Any) -> VerdictEntry:
    """The report's verdict entry from :func:`audits.checks.verdict.final_verdict`'s result."""
    return {
        "verdict": str(getattr(final_verdict.verdict, "value", final_verdict.verdict)),
        "rule": final_verdict.rule,
        "reasons": list(final_verdict.reasons),
        "warnings": list(final_verdict.warnings),
        "notes": list(final_verdict.notes),
        "power": list(getattr(final_verdict, "power", ())),
        "false_fail": str(getattr(final_verdict, "false_fail", "")),
    }
