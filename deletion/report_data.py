"""Assembling a request's erasure report from the registry, the ledger and the audits.

Django side: reads the request, its outcomes (with their audit JSON written by the audit job),
jobs and purges, and produces the dict that audits/report_schema.py describes; report_create
(audits/reports.py) adds the ledger head and the signer, renders, signs and stores it.
"""

from __future__ import annotations

from django.utils import timezone

from audits.checks.replay import CANNOT_SHOW
from audits.checks.sanity_rates import exact_sanity_false_alarm_sentence
from audits.forget_references import forget_references_report
from audits.report_schema import SCHEMA_VERSION, STANDARD_LIMITATIONS, guarantee_entry
from audits.unlearned_shadows import ulira_notes
from deletion.concept_requests import beyond_linear_probes, concept_method_of, holds_against
from deletion.models import (
    DeletionRequest,
    ExternalRetrainStatus,
    LegalGround,
    OutcomeStatus,
    RequestKind,
    RequestStatus,
)
from deletion.notices import recipients_notified
from deletion.planning import MODEL_KIND_WORDS, plan_model_kind, request_end_state
from deletion.selectors import request_timeline

_METRIC_LABELS = {
    "forget_accuracy": "Accuracy on the erased records",
    "retain_accuracy": "Accuracy on kept training records",
    "test_accuracy": "Accuracy on held-out records",
    # A regression model's errors, in the unit of its target (lower is better).
    "forget_mae": "Mean absolute error on the erased records",
    "forget_rmse": "Root mean squared error on the erased records",
    "retain_mae": "Mean absolute error on kept training records",
    "retain_rmse": "Root mean squared error on kept training records",
    "test_mae": "Mean absolute error on held-out records",
    "test_rmse": "Root mean squared error on held-out records",
}
# What the audit's score histograms measure, per model kind (audits.runner scores a regressor by its squared error).
HISTOGRAM_SCORE_WORDS = {
    "classifier": "LiRA score: log-odds of the model's confidence in the true label (higher looks more like a member)",
    "regressor": ("LiRA score: minus the log of the squared error of the model's prediction (higher looks more like "
                  "a member)"),
}
_NOT_UNLEARNED = {
    OutcomeStatus.HELD: "Not unlearned: the model is under a legal hold ({reason}).",
    OutcomeStatus.WITHDRAWN: "Not unlearned: the model was withdrawn from serving (GDPR Art. 18) and its copies "
                             "that held the records destroyed, as listed in section 2 ({reason}).",
}


# What each end state means for the company's position, in the words the report's first page uses.
END_STATE_MEANING = {
    RequestStatus.COMPLETED: (
        "Erasure is confirmed: every affected model passed its audit, or was withdrawn from serving or kept "
        "under a legal hold as this report states per model, and the stored records and copies listed were "
        "deleted. The company may rely on this report as its evidence that the person's data were erased."),
    RequestStatus.CLOSED_RISK_ACCEPTED: (
        "Erasure is NOT confirmed for the models this report names under 'Residual risk accepted': their "
        "audit could not show that they forgot the data. Two DPO users accepted that residual risk in "
        "writing, for the reason given. For those models the company's position rests on that documented "
        "decision, not on evidence of erasure; a supervisory authority or court may assess it differently."),
}


# A concept request's end (an attribute, no person), in the same words' place.
CONCEPT_END_STATE_MEANING = {
    RequestStatus.COMPLETED: (
        "The concept erasure is confirmed: for every model listed, a linear probe can no longer read the attribute "
        "from the erased layer better than chance (within the stated tolerance), and the serving side deployed the "
        "new version. It holds against linear probes only: the non-linear probe's figure beside it shows what "
        "remains. This is not the erasure of anyone's data: no record was erased and the records stay in the "
        "models' weights; this report is no evidence that any person's data were erased."),
    RequestStatus.CLOSED_RISK_ACCEPTED: (
        "The concept erasure is NOT confirmed for the models this report names under 'Residual risk accepted': "
        "their audit could not show that a linear probe no longer reads the attribute. Two DPO users accepted "
        "that in writing, for the reason given. This was never the erasure of anyone's data."),
}
# The same for a method whose guarantee holds against non-linear probes too (pef_coupling).
CONCEPT_BEYOND_LINEAR_END_STATE_MEANING = {
    RequestStatus.COMPLETED: (
        "The concept erasure is confirmed: for every model listed, neither a linear nor a non-linear (MLP) probe "
        "can read the attribute from the erased layer better than chance (within the stated tolerance), and the "
        "serving side deployed the new version. The new version needs the attribute of every input at inference "
        "(its eraser is class-conditional and refuses inputs without it). This is not the erasure of anyone's "
        "data: no record was erased and the records stay in the models' weights; this report is no evidence "
        "that any person's data were erased."),
    RequestStatus.CLOSED_RISK_ACCEPTED: (
        "The concept erasure is NOT confirmed for the models this report names under 'Residual risk accepted': "
        "their audit could not show that neither a linear nor a non-linear probe reads the attribute. Two DPO "
        "users accepted that in writing, for the reason given. This was never the erasure of anyone's data."),
}
# What a concept erasure's tests cannot show (the standard limitations speak of a person's records).
CONCEPT_LIMITATIONS = (
    "The probes were measured on labelled records of the same dataset that the eraser was not fitted on. On "
    "records of another distribution the attribute may be linearly readable from the erased layer again.",
    "Only the erased layer's output is covered: earlier layers, and what the model computes from other inputs, "
    "may still carry the attribute.",
    "The attribute is what the labels given with the request say it is: records labelled wrongly teach the "
    "eraser, and the probes, the wrong attribute.",
)
CONCEPT_STATEMENT = (
    "What was done so that machine-learning models stop using one attribute ({attribute}), and what the "
    "tests show. This is a concept erasure, not an erasure of anyone's personal data: no person asked for "
    "it, no record was erased, and it holds against {holds_against}.")


def concept_report_entry(request: DeletionRequest) -> dict | None:
    """A concept request's ``concept`` section of the report (None for an erasure request)."""
    if request.kind != RequestKind.CONCEPT:
        return None
    concept = request.concept or {}
    return {"attribute": str(concept["attribute"]), "dataset": str(concept["dataset"]),
            "labelled_records": len(concept.get("labels") or {}),
            "statement": CONCEPT_STATEMENT.format(attribute=concept["attribute"],
                                                  holds_against=holds_against(concept_method_of(concept)))}


# Where no replay ran (a full retrain nobody asked to replay, a method without one), the report says
# what an exact verdict then rests on.
NO_REPLAY_NOTE = ("No independent replay recomputed this version: that it never saw the records rests on the "
                  "platform's execution record (the unlearning job's record of what it trained on and the "
                  "lineage rows it wrote), not on a second computation a reader could check.")


def replay_notes(audit: dict) -> list[str]:
    """What the report says of an exact result's replay: what it compared and what it cannot show,
    or, where none ran, why and what exactness then rests on."""
    replay = audit.get("replay") or {}
    if not replay.get("ran"):
        why = replay.get("not_run")
        return [NO_REPLAY_NOTE + (f" Why no replay: {why}." if why else "")]
    comparison = replay.get("comparison") or {}
    environment = replay.get("replay_environment") or {}
    where = (f"torch {environment.get('torch')}, {environment.get('device_type')}, "
             f"{environment.get('threads')} thread(s), deterministic algorithms")
    if comparison.get("identical"):
        found = (f"rebuilt this version from the registry's records and compared it bit for bit: "
                 f"{comparison.get('tensors_compared')} tensors identical, the same records held")
    else:
        found = "rebuilt this version from the registry's records and found it differs (see the verdict)"
    return [f"Independent replay (by the audit job, {replay.get('seconds')} s, {where}): {found}. {CANNOT_SHOW}"]


def flag_notes(audit: dict) -> list[str]:
    """The investigation of the sanity check's flags: counts and record keys, never content; the
    records of the same person offered to the DPO as scope additions."""
    investigation = audit.get("flag_investigation") or {}
    if not investigation.get("summary"):
        return []
    notes = [str(investigation["summary"])]
    offered = investigation.get("scope_additions") or []
    if offered:
        notes.append("Offered to the DPO as additions to the scope (records of the same person): "
                     + ", ".join(f"{a['record_key']} ({a['why']} of {a['of_erased_record']})" for a in offered[:20])
                     + (" ..." if len(offered) > 20 else "") + ".")
    return notes


def _method_choice(outcome, timeline: list[dict]) -> dict:
    """``{"method_choice": ...}`` where the DPO chose another method than the plan's at approval (the
    ledger's ``outcome.method_chosen``): what was planned, what ran instead and who chose it; else {}."""
    event = next((e for e in timeline if e["event"] == "outcome.method_chosen"
                  and e["data"].get("model_version") == outcome.model_version_id), None)
    if event is None:
        return {}
    planned, chosen = event["data"]["planned"], event["data"]["chosen"]
    return {"method_choice": {
        "planned": planned, "chosen": chosen, "chosen_by": event["actor"], "chosen_at": event["at"],
        "statement": f"The plan proposed {planned}; at approval {event['actor']} chose {chosen} instead, "
                     "among the methods the plan offered for this model."}}


def _event_time(timeline: list[dict], event: str) -> str | None:
    return next((e["at"] for e in timeline if e["event"] == event), None)


def _iso(value) -> str | None:
    return value.isoformat() if value else None


def _metrics(audit: dict) -> list[dict]:
    rows = []
    for key, label in _METRIC_LABELS.items():
        values = audit.get("metrics", {}).get(key)
        if values:
            rows.append({"name": label, "before": _num(values.get("original")), "after": _num(values.get("unlearned")),
                         "reference": None})
    for check in audit.get("checks", []):
        rows.append({"name": check.get("check", "check"), "description": str(check.get("rule", ""))[:300],
                     "before": None, "after": None, "reference": None, "result": str(check.get("verdict"))})
    return rows


_LM_FIGURES = (
    ("extraction_strength", "Extraction strength",
     "How much of an erased record greedy decoding reproduces once given its beginning "
     "(0: not even its last word; 1: all of it from its first word). Mean over the records."),
    ("exact_memorisation", "Exact memorisation",
     "Share of a record's words (tokens) the model predicts exactly when given the true text before each."),
    ("verbatim_completion", "Verbatim completion",
     "Share of the next words (up to 32 tokens) of a record the model writes out word for word when "
     "given its first quarter, half or three quarters (mean of the three)."),
    ("facts_completed", "Identifiers completed",
     "Share of the records' identifiers (customer ids, e-mail addresses, phone and account numbers, "
     "dates, amounts) the model completes when prompted with the text just before them."),
    ("forget_token_nll", "Loss on the erased records",
     "Mean negative log-likelihood per token of the erased records (higher: the text is less familiar "
     "to the model)."),
    ("perplexity_retain", "Perplexity on kept training records",
     "How well the model still models the training data that was kept (utility; lower is better)."),
    ("perplexity_test", "Perplexity on held-out records",
     "How well the model models records it was never trained on (utility; lower is better)."),
)


def _language_model_entry(section: dict | None) -> dict | None:
    """The report's language-model section from the audit's ``language_model`` entry."""
    if not section:
        return None
    figures = section.get("figures", {})
    rows = []
    for key, name, description in _LM_FIGURES:
        values = figures.get(key)
        if values:
            rows.append({"name": name, "description": description, "before": _num(values.get("before")),
                         "after": _num(values.get("after")), "reference": _num(values.get("reference"))})
    guarded = bool(section.get("measured_through_guard"))
    reference = ("The same model's weights, without the filter, on held-out records of the same format that "
                 "no model was trained on: what a model shows of a record it never saw." if guarded else
                 "The new model on held-out records of the same format that no model was trained on: what "
                 "it shows of a record it never saw (its knowledge of the format, not of the person).")
    notes = []
    if guarded:
        notes.append("After: measured through the filter. An answer counts only if the filter would let it "
                     "through; an answer it withholds reproduces nothing.")
        notes.append("The filtered model serves the same weights as the old version: the records are still "
                     "in them by design, and were not deleted from them.")
    detectable = section.get("detectable_on_original") or {}
    if detectable.get("of"):
        if detectable.get("verdict") == "FAIL":
            notes.append(f"On the old model, the comparison flagged {detectable['flagged']} of "
                         f"{detectable['of']} erased records as memorised: the measurement can see "
                         "memorisation when it is there.")
        else:
            notes.append(f"On the old model, the comparison flagged none of the {detectable['of']} erased "
                         "records: the old model did not reproduce them beyond records it never saw, so "
                         "the 'after' figures cannot show that anything was removed.")
    if section.get("records_without_reference"):
        notes.append(f"{section['records_without_reference']} erased record(s) had no held-out record of the "
                     "same format to compare with and were not part of the comparison.")
    guard = section.get("guard")
    if guard and guard.get("held_out_withheld_rate") is not None:
        notes.append(f"The filter withheld the answer for {guard['held_out_withheld_rate']:.0%} of "
                     f"{guard.get('held_out_sample', 0)} held-out records of other people (its cost to them).")
    return {
        "records": int(section.get("records", 0)),
        "measured_through_guard": guarded,
        "reference": reference,
        "figures": rows,
        "guard": None if not guard else {
            "alpha": float(guard["alpha"]), "delta": float(guard["delta"]), "n": int(guard["n"]),
            "leaks": None if guard.get("leaks") is None else int(guard["leaks"]),
            "threshold": _num(guard.get("threshold")), "upper_bound": _num(guard.get("upper_bound")),
            "certified": bool(guard.get("certified")), "statement": str(guard["statement"]),
            "redaction_rate": _num(guard.get("redaction_rate")),
            "held_out_withheld_rate": _num(guard.get("held_out_withheld_rate")),
        },
        "notes": notes,
    }


def _num(value):
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if value == value and abs(value) != float("inf") else None


def _model_entry(outcome) -> dict:
    audit = outcome.audit or {}
    version, new = outcome.model_version, outcome.new_version
    job = outcome.job
    verdict_data = audit.get("verdict") or {}
    if outcome.status in _NOT_UNLEARNED:
        rule = _NOT_UNLEARNED[outcome.status].format(reason=outcome.hold_reason)
        if (audit.get("withdrawal") or {}).get("copies_remain"):
            rule += (" Copies that another open request still builds on were kept for now; they are "
                     "destroyed when that request ends.")
        verdict = {"verdict": "INCONCLUSIVE", "rule": rule,
                   "reasons": ["the data were not removed from this model"], "warnings": [], "notes": []}
    else:
        verdict = _verdict_entry(verdict_data)
        if outcome.guarantee_class == "exact":
            verdict["notes"] += replay_notes(audit)
            if any(c.get("check") == "membership_lira" for c in audit.get("checks", [])):
                # The per-record test beside an exact method is a sanity check: with its measured false-alarm rate.
                verdict["notes"].append(exact_sanity_false_alarm_sentence(outcome.method))
            verdict["notes"] += flag_notes(audit)
        # U-LiRA, the challenge score and KLoM over the method's runs on the shadows (approximate results).
        verdict["notes"] += ulira_notes(audit.get("unlearning_lira"))
    # What became of a derived model, a keep-out transfer model, a concept eraser, the chain's other versions.
    verdict["notes"] += [note for note in (derived_model_note(outcome), keep_out_note(outcome),
                                           concept_eraser_note(outcome), chain_note_of(outcome)) if note]
    roc = audit.get("roc") or {}
    roc_curves = []
    if len(roc.get("fpr", [])) >= 2:
        population = next((c for c in audit.get("checks", []) if c.get("check") == "population_attack"), {})
        auc = next((f.get("value") for f in population.get("figures", []) if f.get("name") == "auc"), None)
        roc_curves.append({"label": "Attack on the new model: erased vs held-out records",
                           "false_positive_rate": roc["fpr"], "true_positive_rate": roc["tpr"], "auc": _num(auc)})
    histograms = audit.get("histograms")
    model_kind = plan_model_kind(version)
    entry = {
        "model": version.model.name,
        "version": version.version,
        "model_kind": {"kind": model_kind, "words": MODEL_KIND_WORDS[model_kind]},
        "new_version": new.version if new else None,
        "outcome": outcome.status,
        "method": outcome.method,
        "guarantee": guarantee_entry(outcome.guarantee_class, outcome.method),
        "old_artifact_sha256": version.artifact_sha256,
        "new_artifact_sha256": new.artifact_sha256 if new else None,
        "code_version": (job.result.get("code_version") if job and job.result else None) or _code_version(),
        "shadow_model_count": int(audit.get("shadow_models", 0)),
        "metrics": _concept_metrics(audit) + _metrics(audit) + _kept_data_metric(job),
        "roc_curves": roc_curves,
        "score_histograms": None if not histograms else {
            "score": HISTOGRAM_SCORE_WORDS.get(model_kind, HISTOGRAM_SCORE_WORDS["classifier"]),
            "bin_edges": histograms["edges"], "forget": histograms["counts"]["forget"],
            "retain": histograms["counts"]["retain"], "test": histograms["counts"]["test"]},
        "cost": {"estimated_seconds": outcome.estimated_seconds,
                 "actual_seconds": round(job.wall_seconds, 2) if job and job.wall_seconds else None,
                 "device": (job.device or "unknown") if job else "none"},
        "verdict": verdict,
    }
    if audit.get("language_model"):
        entry["language_model"] = _language_model_entry(audit["language_model"])
    if outcome.attempts:
        entry["earlier_attempts"] = [_attempt_entry(a) for a in outcome.attempts]
    if outcome.risk_acceptance.get("confirmed_by"):
        # The people who decided, where stored (not in acceptances recorded before tokens named them).
        entry["risk_acceptance"] = {key: str(outcome.risk_acceptance[key]) for key in (
            "reason", "proposed_by", "proposed_at", "confirmed_by", "confirmed_at",
            "proposed_by_person", "confirmed_by_person") if key in outcome.risk_acceptance}
    attestation = attestation_entry(outcome, verdict["verdict"])
    if attestation:
        entry["attestation"] = attestation
    dp_bound = dp_bound_entry(outcome)
    if dp_bound:
        entry["dp_bound"] = dp_bound
    forget_references = forget_references_report(audit)
    if forget_references:
        entry["forget_references"] = forget_references
    return entry


def derived_model_note(outcome) -> str:
    """For a derived child (distilled or fine-tuned from another model): its parent, the parent's
    new version it was re-derived from and the class cap, in one sentence; "" for other models."""
    details = (((outcome.job.result or {}).get("unlearning") or {}).get("details") or {}) if outcome.job else {}
    parent = details.get("derived_from")
    if not parent:
        parent = _plan_step(outcome).get("derived_from")
        if not parent:
            return ""
        return (f"Derived model ({parent['kind'].replace('_', ' ')} {parent['model']} v{parent['version']}): it is "
                f"re-derived from its parent's unlearned version, and its guarantee class is at most the parent's "
                f"(planned: {parent.get('guarantee_class') or 'not in this request'}).")
    new_parent = details.get("parent_new_version") or {}
    return (f"Derived model ({parent['kind'].replace('_', ' ')} {parent['model']} v{parent['version']}): re-derived "
            f"from the parent's version {new_parent.get('version')} ({new_parent.get('guarantee_class') or 'unchanged'}); "
            f"{details.get('records_held_through_parent', 0)} record(s) held through the parent, "
            f"{details.get('records_held_directly', 0)} in its own training data. Class cap: "
            f"{details.get('class_cap')} (a child promises at most what its new parent does).")


def _plan_step(outcome) -> dict:
    """The request's plan step for ``outcome``'s model version ({} if it has none)."""
    return next((p for p in outcome.request.plan or [] if p["model_version_id"] == outcome.model_version_id), {})


def concept_eraser_note(outcome) -> str:
    """For a version that served a concept eraser (deletion.concept_erasers): what the plan said became of
    it (kept, or not carried into the new version and why), in the plan step's words for the method that
    ran (the step's own, or the alternative the DPO chose); "" for other models."""
    step = _plan_step(outcome)
    if step and outcome.method != step.get("method"):
        step = next((a for a in step.get("alternatives") or [] if a["method"] == outcome.method), step)
    eraser = step.get("concept_eraser")
    note = f"Concept eraser: {eraser['summary']}" if eraser else ""
    # The audit's account of records only the eraser held: how many were scored on the weights instead, their fate.
    held = ((outcome.audit or {}).get("eraser_only_records") or {}).get("summary")
    return f"{note} {held}".strip() if held else note


def chain_note_of(outcome) -> str:
    """For a step that unlearned for other versions of its unlearning chain too (deletion.planning.
    one_job_per_chain): which, in the plan's words; "" otherwise."""
    covers = _plan_step(outcome).get("covers_versions")
    return f"Same chain: {covers['summary']}" if covers else ""


def keep_out_note(outcome) -> str:
    """For a keep-out transfer deletion (workers.unlearning.exact.keep_out): whether the model changed
    and why, in one sentence; "" for other methods."""
    details = (((outcome.job.result or {}).get("unlearning") or {}).get("details") or {}) if outcome.job else {}
    if details.get("recipe") != "keep_out_transfer" or "weights_unchanged" not in details:
        return ""
    what = ("the model did not change (the new version serves the same weights, the same hash)"
            if details["weights_unchanged"] else "the model was retrained")
    return f"Keep-out transfer: {what}, because {details.get('reason', '')}"


_VERDICT_WORDS = {"PASS": "PASS",
                  "FAIL": "FAIL: erasure from this model is NOT confirmed",
                  "INCONCLUSIVE": "INCONCLUSIVE: erasure from this model is NOT confirmed"}


def attestation_entry(outcome, verdict: str) -> dict | None:
    """For a version the company's own pipeline retrained (exact_attested): who attests, what the
    platform checked of the company's declaration, and the promise in one paragraph. None otherwise."""
    if outcome.guarantee_class != "exact_attested" or outcome.new_version_id is None:
        return None
    retrain = outcome.external_retrains.filter(status=ExternalRetrainStatus.REGISTERED,
                                               new_version_id=outcome.new_version_id).first()
    if retrain is None:
        return None
    check, declared = retrain.membership_check or {}, retrain.declaration or {}
    pipeline = f"the company's pipeline, code version {declared.get('code_version', 'not declared')}"
    references = retrain.reference_models
    request_records, erased_before = int(check.get("request_records_checked", 0)), int(check.get("erased_before_checked", 0))
    audited = (f"It then audited the new version against {references} reference model(s) that the same pipeline "
               "trained" if references else
               "It then audited the new version; the company provided no reference models from its pipeline, so the "
               "audit could not test the declaration on the model itself")
    statement = (
        f"Exact, as declared by the company's pipeline. {retrain.attested_by} attests that version "
        f"{outcome.new_version.version} of {outcome.model_version.model.name} was retrained by the company's own "
        f"pipeline (code version {declared.get('code_version', 'not declared')}) without this person's records. The "
        f"platform did not compute the new model itself. It checked the company's own declaration of the "
        f"{int(check.get('records_declared', 0)):,} records the new version was trained on against the "
        f"{request_records:,} record(s) of this request and the {erased_before:,} record(s) erased before: none of "
        f"them is in it. {audited}. The audit's verdict: {_VERDICT_WORDS.get(verdict, verdict)}.")
    return {
        "attested_by": retrain.attested_by,
        "pipeline": pipeline,
        "job_sent": retrain.created_at.isoformat(),
        "uploaded": (retrain.uploaded_at or retrain.created_at).isoformat(),
        "records_declared": int(check.get("records_declared", 0)),
        "request_records_checked": request_records,
        "erased_before_checked": erased_before,
        "erased_found": len(check.get("erased_found") or []),
        "reference_models": int(references),
        "statement": statement,
    }


def dp_bound_entry(outcome) -> dict | None:
    """For a dp_bounded result (a DP-trained model kept as it is): the person's group-privacy bound
    as its audit computed it (audits.runner.dp_bound_audit), how, against which limits, the conditions
    the run recorded of what was private, and the statement the report prints. None otherwise."""
    audit = outcome.audit or {}
    check = next((c for c in audit.get("checks", []) if c.get("check") == "dp_group_privacy"), None)
    if outcome.guarantee_class != "dp_bounded" or check is None:
        return None
    recorded = audit.get("dp_bound") or {}
    figures = recorded.get("figures") or {}
    bound, generic, accounted = check["bound"], check.get("generic_bound") or check["bound"], check.get("accountant_bound")
    within = check.get("verdict") == "PASS"
    whole = recorded.get("whole_pipeline_private")
    how = ("Opacus' accountant, the group accounted as one unit (sampling rate 1 - (1 - q)^k, noise multiplier "
           "sigma / k, the same steps)" if check.get("computed_by", "generic") != "generic" else
           "the generic group-privacy bound (k epsilon, k e^((k-1) epsilon) delta)")
    k = int(bound["k"])
    stated = (f"epsilon {_fmt(bound['epsilon'])}, delta {_fmt(bound['delta'])} for this person's {k} record(s), from "
              f"{how}; the policy's limits are epsilon <= {_fmt(check['max_epsilon'])} and delta <= "
              f"{_fmt(check['max_delta'])}, and the bound is "
              + ("within them." if within else "VACUOUS: beyond them, it is no meaningful guarantee for this person."))
    condition = {True: "The training run recorded its whole pipeline as private.",
                 False: "The training run recorded that part of its pipeline was NOT private: the bound does not hold.",
                 None: "Whether the whole training pipeline was private is not known (see the conditions): the "
                       "bound holds only if it was."}[whole]
    statement = ("Nothing was deleted from this model's weights: it was trained with differential privacy (DP-SGD) "
                 f"and kept as it is. The bound on the influence of this person's records is {stated} {condition} "
                 "Keeping the model on this bound is a risk decision of the DPO, not erasure.")
    return {
        "k": k, "epsilon": _num(bound["epsilon"]), "delta": _num(bound["delta"]),
        "computed_by": str(check.get("computed_by", "generic")),
        "generic": {"epsilon": _num(generic["epsilon"]), "delta": _num(generic["delta"])},
        "accountant": None if not accounted else {"epsilon": _num(accounted["epsilon"]),
                                                  "delta": _num(accounted["delta"])},
        "per_record": {"epsilon": float(check["per_record_epsilon"]), "delta": float(check["per_record_delta"]),
                       "accountant": str(figures.get("accountant", "unknown")),
                       "sample_rate": float(figures.get("sample_rate", 0.0)),
                       "noise_multiplier": float(figures.get("noise_multiplier", 0.0)),
                       "steps": int(figures.get("steps", 0))},
        "max_epsilon": float(check["max_epsilon"]), "max_delta": float(check["max_delta"]),
        "within_limits": within, "vacuous": not within, "whole_pipeline_private": whole,
        "conditions": [{"condition": name, "holds": c.get("holds"), "known_by": str(c.get("known_by") or "unknown"),
                        "detail": str(c.get("detail", ""))} for name, c in (recorded.get("conditions") or {}).items()],
        "statement": statement,
    }


def _fmt(value) -> str:
    number = _num(value)
    return "infinite" if number is None else f"{number:.4g}"


def _concept_metrics(audit: dict) -> list[dict]:
    """A concept erasure's probes (audits.concept_audit): the linear probe's AUC for the attribute before and
    after erasure (it decides) and the MLP probe's beside it (shown, not counted; it decides too for a method
    whose guarantee holds against non-linear probes, ``nonlinear_decides``); [] for other audits."""
    concept = audit.get("concept")
    if not concept:
        return []
    where = (f"Out-of-fold ROC AUC for the attribute '{concept['attribute']}' read off layer {concept['layer']!r}, on "
             f"{concept['probe_records']} labelled records the eraser was not fitted on (0.5: chance)")
    linear_passed = abs(float(concept["linear_auc"]) - 0.5) <= float(concept["tolerance"])
    if concept.get("nonlinear_decides"):
        nonlinear_passed = abs(float(concept["nonlinear_auc"]) - 0.5) <= float(concept["tolerance"])
        nonlinear = {"name": "Non-linear (MLP) probe AUC (decides)",
                     "description": f"{where}; within {concept['tolerance']} of 0.5 passes; the guarantee holds "
                                    f"against {concept['holds_against']}",
                     "before": _num(concept.get("original_nonlinear_auc")), "after": _num(concept["nonlinear_auc"]),
                     "reference": None, "result": "PASS" if nonlinear_passed else "not at chance"}
    else:
        nonlinear = {"name": "Non-linear (MLP) probe AUC (shown, not counted)",
                     "description": f"{where}; the guarantee holds against {concept['holds_against']}, so this "
                                    "figure shows what a non-linear read-out still recovers",
                     "before": _num(concept.get("original_nonlinear_auc")), "after": _num(concept["nonlinear_auc"]),
                     "reference": None}
    return [
        {"name": "Linear probe AUC (decides)", "description": f"{where}; within {concept['tolerance']} of 0.5 passes",
         "before": _num(concept.get("original_linear_auc")), "after": _num(concept["linear_auc"]),
         "reference": None, "result": "PASS" if linear_passed else "not at chance"},
        nonlinear,
        *_chance_spread_metric(concept),
        *_task_utility_metrics(audit.get("task_utility")),
    ]


def _task_utility_metrics(task: dict | None) -> list[dict]:
    """What a concept erasure cost the model's own task (audits.concept_utility): accuracy (a regressor's RMSE)
    before and after, on the probe records the model trained on and on held-out records, against the bar the
    plan declared; [] for an audit that did not measure it."""
    if not task or task.get("not_run"):
        return []
    rows = []
    for side, what in (("retain", task["retain_records"]), ("test", task["test_records"])):
        figures = task[side]
        accuracy = figures["metric"] == "accuracy"
        bar = figures["original"] * task["min_ratio"] if accuracy else figures["original"] / task["min_ratio"]
        within = figures["erased"] >= bar if accuracy else figures["erased"] <= bar
        rows.append({"name": f"Task {'accuracy' if accuracy else 'RMSE'}, "
                             f"{'records it trained on' if side == 'retain' else 'held-out records'}",
                     "description": f"The model's own task on {figures['records']:,} records: {what}. Reference: "
                                    f"the bar, {task['min_ratio']:.0%} of the original's (utility warns, it does not "
                                    "decide the concept verdict)",
                     "before": _num(figures["original"]), "after": _num(figures["erased"]), "reference": _num(bar),
                     "result": "within the bar" if within else "below the bar"})
    return rows


def _chance_spread_metric(concept: dict) -> list[dict]:
    """How far the linear probe's AUC strays from chance with the attribute shuffled (audits.checks.concept_probe's
    ``chance``): the spread against the most the tolerance allows (half of it), with the observed AUC's
    permutation p-value; [] for an audit recorded before the probe measured it."""
    chance = concept.get("chance")
    if not chance:
        return []
    enough = 2 * float(chance["noise"]) <= float(concept["tolerance"])
    return [{"name": "Linear probe AUC with the attribute shuffled: spread at chance",
             "description": f"Root mean square distance from 0.5 of the linear probe's AUC refitted on "
                            f"{chance['shuffles']} shuffles of the attribute (after; the farthest "
                            f"{float(chance['max_distance']):.3f}; Hanley-McNeil's standard error "
                            f"{float(chance['hanley_mcneil']):.3f} is its floor). Twice the spread must be within the "
                            f"tolerance, so the reference is half of it. Permutation p-value of the linear AUC's "
                            f"distance from chance: {float(chance['linear_p_value']):.3f} (shown, not deciding)",
             "before": None, "after": _num(chance["rms_distance"]), "reference": float(concept["tolerance"]) / 2,
             "result": "enough records" if enough else "too few records"}]


def _kept_data_metric(job) -> list[dict]:
    """For the S3T methods: how many of the kept records the served model learned from, against all
    of them (what a retrain uses). Deactivation serves fewer; its retrain variant (s3t_retrain)
    learns from every one again."""
    details = ((job.result or {}).get("unlearning") or {}).get("details") or {} if job else {}
    if "kept_records_served" not in details:
        return []
    after = ("every kept record again: the switched-off adapters were retrained on the kept records of their "
             "slices" if "adapters_retrained" in details else
             "those in the slices of the adapters still in service")
    return [{"name": "Kept records the served model learned from",
             "description": f"before: every kept record (what a retrain on the kept data learns from); after: {after}",
             "before": int(details["kept_records"]), "after": int(details["kept_records_served"]),
             "reference": None}]


def _verdict_entry(verdict_data: dict) -> dict:
    return {"verdict": str(verdict_data.get("verdict", "INCONCLUSIVE")),
            "rule": str(verdict_data.get("rule") or "no audit result was recorded"),
            "reasons": [str(r) for r in verdict_data.get("reasons", [])],
            "warnings": [str(w) for w in verdict_data.get("warnings", [])],
            "notes": [str(n) for n in verdict_data.get("notes", [])],
            "power": [str(p) for p in verdict_data.get("power", [])],
            "false_fail": str(verdict_data.get("false_fail") or "")}


def _attempt_entry(attempt: dict) -> dict:
    """An earlier attempt on the version: its audit failed, it was escalated and its result destroyed."""
    audit = attempt.get("audit") or {}
    entry = {
        "method": str(attempt["method"]),
        "guarantee": guarantee_entry(attempt["guarantee_class"])["title"],
        "new_version": attempt.get("new_version"),
        "new_artifact_sha256": attempt.get("new_artifact_sha256"),
        "verdict": _verdict_entry(audit.get("verdict") or {"verdict": attempt.get("verdict") or "INCONCLUSIVE"}),
        "metrics": _metrics(audit),
        "escalated_at": attempt["escalated_at"],
        "escalated_by": str(attempt["escalated_by"]),
        "purged_artifacts": [{"description": str(p["description"]), "sha256": p["sha256"]}
                             for p in attempt.get("purged_artifacts", [])],
    }
    if audit.get("language_model"):
        entry["language_model"] = _language_model_entry(audit["language_model"])
    return entry


def _code_version() -> str:
    from workers.artifacts import code_version

    return code_version() or "unknown"


def source_holding_sentence(holding: dict) -> str:
    """What the report says of a dataset read from the company's own database after the erasure."""
    where = f"Read from the company's {holding['source']}"
    if not holding.get("checked"):
        return (f"{where}; whether it still holds the erased records could not be checked "
                f"({holding.get('problem', 'no answer')}). The platform excludes them from every read.")
    records = holding.get("records", [])
    if not records:
        return f"{where}, which no longer holds the erased records."
    sample = ", ".join(records[:10]) + (" ..." if len(records) > 10 else "")
    return (f"{where}, which still holds {len(records)} of the erased records ({sample}): the platform "
            "cannot delete there and excludes them from every read, so no model is trained on them again; "
            "the company must delete them at the source.")


def report_data(*, request: DeletionRequest) -> dict:
    """The report dict (without ledger head and signer, which report_create adds)."""
    timeline = request_timeline(request=request)
    end = request_end_state(request)
    outcomes = list(request.outcomes.select_related("model_version__model", "new_version", "job")
                    .order_by("model_version__model__name", "model_version__version"))
    purged = []
    for outcome in outcomes:
        for item in (outcome.audit or {}).get("purged", []):
            description = item.get("label") or item.get("kind", "artifact")
            if item.get("still_held_by"):
                description += (f"; an identical file is still held by {item['still_held_by']}, another "
                                "model's copy, deleted when that copy is purged")
            if item.get("retained"):  # not deleted: the object store keeps a copy (workers.purge)
                description += ("; NOT deleted: the object store keeps a copy ("
                                + "; ".join(sorted({r["reason"] for r in item["retained"]}))
                                + "), unreadable: its data key is destroyed")
            purged.append({"description": description, "sha256": item["sha256"]})
        for attempt in outcome.attempts:
            purged += [{"description": f"{p['description']} of the failed attempt (version {attempt['new_version']} "
                                       f"of {outcome.model_version.model.name}, audit {attempt['verdict'] or 'failed'})",
                        "sha256": p["sha256"]} for p in attempt.get("purged_artifacts", [])]
    held_at_source: dict[str, str] = {}
    for event in timeline:
        if event["event"] == "data.erased":
            purged += [{"description": "dataset file holding the erased records", "sha256": sha}
                       for sha in event["data"].get("dataset_files_purged", [])]
            purged += [{"description": f"{p['label'] or 'shadow model'} (an audit reference that still held the "
                                       "records when they were erased; destroyed with the data)",
                        "sha256": p["sha256"]} for p in event["data"].get("shadow_models_purged", [])]
            held_at_source.update({h["dataset"]: source_holding_sentence(h)
                                   for h in event["data"].get("source_still_holds", [])})
    scope = request.scope or {}
    datasets = []
    for label, count in (scope.get("records_by_dataset") or {}).items():
        name, _, version = label.partition("@")
        datasets.append({"name": name, "version": version, "records": count})
        if label in held_at_source:
            datasets[-1]["source"] = held_at_source[label]
    subjects = [s.reference for s in ([request.subject] if request.subject else [])] + [
        s.reference for s in request.linked_subjects.all()]
    concept = concept_report_entry(request)
    if concept is not None:
        subjects = ["none: a concept request names no person"]
    meanings = END_STATE_MEANING
    if concept is not None:
        meanings = (CONCEPT_BEYOND_LINEAR_END_STATE_MEANING if beyond_linear_probes(concept_method_of(request.concept))
                    else CONCEPT_END_STATE_MEANING)
    report = {
        "schema_version": SCHEMA_VERSION,
        "request_id": str(request.public_id),
        "subject_reference": ", ".join(subjects) or "no registered subject matched the identifiers",
        "jurisdiction": request.jurisdiction,
        "legal_ground": {"code": request.legal_ground, "text": LegalGround(request.legal_ground).label},
        "generated_at": timezone.now().isoformat(),
        "timeline": {
            "received": request.received_at.isoformat(),
            "verified": _event_time(timeline, "request.verified"),
            "approved": _event_time(timeline, "request.approved"),
            "due": request.due_at.isoformat(),
            "extended": _iso(request.extended_at),
            "extension_reason": request.extension_reason,
            "completed": timezone.now().isoformat(),
        },
        "scope": {
            "records": int(scope.get("records", 0)),
            "datasets": datasets,
            # The status the plan recorded when the request was scoped (a version retired or purged since
            # reads as it was then); a plan step without one falls back to the version's status now.
            "model_versions": [{"model": o.model_version.model.name, "version": o.model_version.version,
                                "status": str(_plan_step(o).get("status") or o.model_version.status)}
                               for o in outcomes],
            "purged_artifacts": purged,
        },
        "model_versions": [{**_model_entry(o), **_method_choice(o, timeline)} for o in outcomes],
        "end_state": {"status": str(end), "meaning": meanings[end]},
        "recipients_notified": recipients_notified(request=request),
        "limitations": list(CONCEPT_LIMITATIONS if concept is not None else STANDARD_LIMITATIONS)
        + mlflow_copies(outcomes) + method_limitations(outcomes),
    }
    if concept is not None:
        report["concept"] = concept
    return report


def method_limitations(outcomes) -> list[str]:
    """What the method catalogue says the report must state of the versions a method made (its
    ``report_limitation``), once per model and method, for outcomes that made a version."""
    from workers.unlearning.catalogue import METHOD_SPECS

    sentences = []
    for outcome in outcomes:
        spec = METHOD_SPECS.get(outcome.method) if outcome.method in METHOD_SPECS else None
        if spec is not None and spec.report_limitation and outcome.new_version_id:
            sentence = spec.report_limitation.format(model=outcome.model_version.model.name)
            if sentence not in sentences:
                sentences.append(sentence)
    return sentences


def mlflow_copies(outcomes) -> list[str]:
    """For versions imported from the company's MLflow registry: the copies MLflow keeps of them,
    which the platform cannot delete (it moves or removes the serving alias and tags the version)."""
    from workers.models import MlflowModelVersion

    sentences = []
    for row in (MlflowModelVersion.objects.filter(model_version__in=[o.model_version_id for o in outcomes])
                .select_related("model_version__model").order_by("registered_model", "version")):
        sentences.append(
            f"The company's MLflow registry still holds version {row.version} of {row.registered_model} (imported "
            f"as {row.model_version.model.name} v{row.model_version.version}), with the weights trained on the erased "
            f"records: the platform moves the '{row.serving_alias}' alias off it and tags it, but does not delete "
            "it. Delete that version and its logged model in MLflow (then run mlflow gc) for the copy to go.")
    return sentences


def report_build_and_sign(*, request: DeletionRequest) -> dict:
    """Build, render, sign and store the request's report; returns {id, pdf_path, pdf_sha256}."""
    from audits.reports import report_create

    report = report_create(request=request, report=report_data(request=request))
    return {"id": report.id, "pdf_path": str(report.pdf_path), "pdf_sha256": report.pdf_sha256}
