"""Audit jobs (audit queue): evidence that a new version forgot what it should.

For one outcome of a request: the unlearned model, the original and the shadow models score the
forgotten records, a retain sample and held-out test records; the pure checks in audits/checks
turn the scores into numbers and verdicts. Then, with the evidence taken, every older copy of the
model that still holds the records is purged (parent weights, superseded checkpoints, shadow
models that saw them), which is what the exact class's lineage proof rests on. The request
workflow (deletion) reads the audit from the job's result and writes it on its outcome.
"""

from __future__ import annotations

import logging
import re
import time
from functools import partial

import numpy as np
from django.db import transaction

from audits.checks.rmia import MIN_POPULATION as RMIA_MIN_POPULATION
from audits.checks.verdict import FAMILY_WISE_LEVEL
from audits.forget_references import forget_reference_figures
from audits.investigation import flagged_record_keys
from foundation.strict_json import jsonable
from models_registry import selectors
from models_registry.keystore import keystore
from models_registry.models import (
    ArtifactKind,
    ArtifactStatus,
    ConceptFitRecord,
    DataRecord,
    ModelVersion,
    StoredArtifact,
)
from workers.jobs import job_create, versions_audited, versions_held
from workers.models import Job, JobKind
from workers.purge import lineage_copies_purge
from workers.runners.shadow import SHADOW_COUNT_DEFAULT
from workers.runners.storage import artifact_store
from workers.unlearning.catalogue import counts_as_erasure

logger = logging.getLogger(__name__)

# The chance of a false FAIL, family-wise over the statistical checks that can FAIL an audit and their
# records (audits.checks.verdict.with_family_alpha splits it between the checks that run).
FAMILY_ALPHA = FAMILY_WISE_LEVEL
RETAIN_SAMPLE = 500
TEST_SAMPLE = 1000
HISTOGRAM_BINS = 30
ROC_POINTS = 60


def _scores_and_accuracy(model, dataset, device: str) -> tuple[np.ndarray, np.ndarray, float]:
    """LiRA scores (logit-scaled confidence of the true class) and the accuracy of ``model``. For a
    regression model (real targets): the log-scaled squared error (signals.squared_error_signal)
    and, in the accuracy's place, its root mean squared error."""
    import torch
    from torch.utils.data import DataLoader

    from audits.checks.signals import logit_scaled_confidence
    from workers.training.membership import collate_records

    model = model.to(device).eval()
    logits, labels = [], []
    with torch.no_grad():
        for _keys, inputs, targets in DataLoader(dataset, batch_size=256, collate_fn=collate_records):
            logits.append(model(inputs.to(device)).float().cpu().numpy())
            labels.append(targets.numpy())
    if not logits:
        return np.zeros(0), np.zeros(0), float("nan")
    z, y = np.concatenate(logits), np.concatenate(labels)
    figure, metric = task_figure(z, y)
    if metric == "rmse":  # a regression model: one real output per record
        from audits.checks.signals import squared_error_signal

        return squared_error_signal(z.reshape(len(y), -1)[:, 0], y), y, figure
    return logit_scaled_confidence(z, y), y, figure


def task_figure(outputs: np.ndarray, targets: np.ndarray) -> tuple[float, str]:
    """``(figure, metric)`` of a model's ``outputs`` against ``targets``: a classifier's accuracy, or for
    real targets (a regression model, one output per record) its root mean squared error."""
    if np.issubdtype(targets.dtype, np.floating):
        predicted = outputs.reshape(len(targets), -1)[:, 0]
        return float(np.sqrt(np.mean((predicted - targets) ** 2))), "rmse"
    return float((outputs.argmax(-1) == targets).mean()), "accuracy"


# What a regression model's audit cannot run, and why (in its JSON and, for the references, its report).
REGRESSION_NOT_APPLICABLE = {
    "membership_rmia": ("RMIA compares the probabilities a model gives a record's true class; a regression model "
                        "gives a real number, not probabilities, so RMIA does not run. The per-record LiRA test, "
                        "U-LiRA and the population attack run on the log-scaled squared error instead."),
    "forget_references": ("A regression model: the representation and relearning checks compare the accuracy on, and "
                          "features of, a forgotten class or sub-population against retrained references; a real-valued "
                          "target has no class, so neither check applies."),
}


def _regression_errors(model, datasets: dict, device: str) -> dict[str, float]:
    """``{"<set>_mae", "<set>_rmse"}`` of a regression model on each named record set."""
    from workers.training.evaluate import regression_errors

    figures = {}
    for name, records in datasets.items():
        for metric, value in regression_errors(model.to(device), records, device=device).items():
            figures[f"{name}_{metric}"] = value
    return figures


def _no_forget_references_for_regression(**_: object):
    from audits.checks.evidence import ForgetReferenceFigures

    why = REGRESSION_NOT_APPLICABLE["forget_references"]
    return ForgetReferenceFigures(not_applicable=why), {
        "population": {"statement": "records of a regression model"}, "applies": False, "why_not": why}


def _histogram(groups: dict[str, np.ndarray]) -> dict:
    finite = np.concatenate([g[np.isfinite(g)] for g in groups.values() if len(g)])
    low, high = (float(np.percentile(finite, 1)), float(np.percentile(finite, 99))) if len(finite) else (0.0, 1.0)
    edges = np.linspace(low, high if high > low else low + 1, HISTOGRAM_BINS + 1)
    return {"edges": edges.round(4).tolist(),
            "counts": {name: np.histogram(np.clip(g, low, high), bins=edges)[0].tolist() for name, g in groups.items()}}


def _attack_scores(forget_scores, test_scores, shadow_forget, shadow_in, shadow_test):
    """What the population attack on the unlearned model compares: each record's score calibrated
    against the shadow models that never trained on it (offline LiRA), since a raw threshold
    confuses records every model finds easy with memorised ones (on the breast-cancer canaries its
    TPR at 1% FPR ranged 0.00-0.95 with the seed, the calibrated one 0.90-1.00;
    tests/audits/test_canaries.py). With fewer than two shadow models, the raw scores. Returns the
    forget-set scores, the held-out scores and the signal's name."""
    from audits.checks.population_attack import DEFAULT_SIGNAL, shadow_calibrated_scores

    if len(shadow_test) < 2 or not len(forget_scores):
        return forget_scores, test_scores, DEFAULT_SIGNAL
    forget_out = np.where(np.array(shadow_in, dtype=bool), np.nan, np.asarray(shadow_forget, dtype=np.float64))
    forget = shadow_calibrated_scores(forget_scores, forget_out)
    test = shadow_calibrated_scores(test_scores, np.array(shadow_test))
    return (forget[np.isfinite(forget)], test[np.isfinite(test)],
            "logit-scaled confidence, calibrated per record against OUT shadow models")


def _roc(forget: np.ndarray, test: np.ndarray) -> dict:
    from sklearn.metrics import roc_curve

    if len(forget) == 0 or len(test) == 0:
        return {"fpr": [], "tpr": []}
    labels = np.r_[np.ones(len(forget)), np.zeros(len(test))]
    fpr, tpr, _ = roc_curve(labels, np.r_[forget, test])
    pick = np.unique(np.linspace(0, len(fpr) - 1, min(ROC_POINTS, len(fpr))).astype(int))
    return {"fpr": fpr[pick].round(4).tolist(), "tpr": tpr[pick].round(4).tolist()}


def _sample(keys: list[str], n: int, seed: int) -> list[str]:
    if len(keys) <= n:
        return sorted(keys)
    return sorted(np.random.default_rng(seed).choice(sorted(keys), size=n, replace=False).tolist())


class StageClock:
    """The job's progress callback, noting when each stage began, for the audit's ``stage_seconds``
    (where an audit's time goes). Stages that differ only in their numbers ("scoring shadow model
    3 of 32") count as one; a phase reporter (``scaled``) notes into the same clock."""

    def __init__(self, progress, marks: list | None = None) -> None:
        self._progress = progress
        self._marks: list[tuple[str, float]] = [] if marks is None else marks

    def __call__(self, stage: str, fraction: float) -> None:
        if not self._marks or self._marks[-1][0] != stage:
            self._marks.append((stage, time.perf_counter()))
        self._progress(stage, fraction)

    def scaled(self, base: float, span: float) -> StageClock:
        inner = self._progress.scaled(base, span) if hasattr(self._progress, "scaled") else self._progress
        return StageClock(inner, self._marks)

    def seconds(self) -> dict[str, float]:
        """Seconds per stage (numbers in a stage's name replaced by #), up to now."""
        totals: dict[str, float] = {}
        ends = [t for _, t in self._marks[1:]] + [time.perf_counter()]
        for (stage, begun), ended in zip(self._marks, ends, strict=True):
            key = re.sub(r"\d+", "#", stage)
            totals[key] = totals.get(key, 0.0) + ended - begun
        return {stage: round(seconds, 2) for stage, seconds in totals.items()}


def run_audit_job(job: Job, progress) -> dict:
    """Audit the version ``job.config["audited_version"]`` for the records ``job.forget_record_ids``
    under ``job.guarantee_class``; purge the older copies unless it failed. Returns the audit
    (``result["audit"]``, with its verdict) for the job's result; whoever created the job (the
    request workflow) reads it from there."""
    from workers.runners.training import load_recipes
    from workers.training.device import select_device
    from workers.training.storage import load_run

    own_audit = CLASS_AUDITS.get(job.guarantee_class)
    if own_audit is not None:
        return own_audit(job)
    started = time.perf_counter()
    progress = StageClock(progress)
    load_recipes()
    new = ModelVersion.objects.select_related("model", "parent").get(pk=job.config["audited_version"])
    # The version actually unlearned from (a later request may build on an earlier one's result).
    source = new.parent
    dataset = source.training_run.datasets.get()
    records = list(DataRecord.objects.filter(id__in=job.forget_record_ids, dataset=dataset).order_by("id"))
    # The per-record statistics score the records the weights were trained on; those the planned version held
    # only through its concept eraser (a labelled test record that fitted it) are covered by the eraser's fate
    # and the lineage (``eraser_only_records``), and, like every record of the request, used as nothing else.
    eraser_only = eraser_only_record_ids(job, records)
    forget_keys = [r.external_key for r in records if r.id not in eraser_only]
    erased_keys = frozenset(r.external_key for r in records)
    store = artifact_store()
    device = str(select_device())
    progress("loading models", 0.02)
    original = load_run(store, source.artifact_sha256)
    # A class-conditional concept eraser (pef_coupling) needs each input's attribute, which the audit does not
    # have: the original is scored on its weights, the eraser taken off (the audit's JSON says so).
    original_erasers_detached = _class_conditional_erasers_detached(original.model)
    unlearned = load_run(store, new.artifact_sha256)
    if unlearned.tokenizer is not None:
        checks, audit, suppression = _language_model_evidence(original, unlearned, dataset, forget_keys,
                                                              seed=new.id, device=device, progress=progress,
                                                              min_utility_ratio=min_utility_ratio(job),
                                                              erased_keys=erased_keys)
    else:
        shadows, procedure = reference_models_for(job, source=source, new=new)
        checks, audit = _classifier_evidence(original, unlearned, source, dataset, forget_keys, seed=new.id,
                                             device=device, progress=progress,
                                             equivalence=(job.config or {}).get("equivalence"),
                                             min_utility_ratio=min_utility_ratio(job),
                                             shadows=shadows, procedure=procedure,
                                             unlearning=_ulira_method(job, new),
                                             measure_forget_references=_no_forget_references_for_regression
                                             if source.model.task == "regression" and job.guarantee_class == "approximate"
                                             else partial(forget_reference_figures, job, source=source, new=new),
                                             erased_keys=erased_keys)
        suppression = None
    if eraser_only:
        audit = {**audit, "eraser_only_records": eraser_only_section(
            job, new=new, unlearned=unlearned, record_ids=eraser_only, scored=len(forget_keys),
            total=len(records))}
    if original_erasers_detached:
        audit = {**audit, "original_erasers_detached": {
            "layers": original_erasers_detached,
            "why": (f"{source} serves a class-conditional concept eraser, which needs each input's attribute at "
                    "inference; its before-figures are of its weights with the eraser taken off")}}
    if job.guarantee_class == "exact":
        progress("replaying the exact deletion", 0.75)
        replay = exact_replay_outcome(job=job, source=source, new=new, original=original, unlearned=unlearned,
                                      dataset=dataset, forget_keys=sorted(erased_keys), store=store, device=device)
        checks = [*checks, replay_check(replay)]
        audit = {**audit, "replay": replay}
        flagged = flagged_record_keys(checks)
        if flagged and unlearned.tokenizer is None:
            progress("investigating the sanity check's flags", 0.78)
            audit["flag_investigation"] = _investigate(flagged, unlearned, dataset, device, erased_keys)
    if derived_version(source):
        # A derived child may hold records of its parent's dataset through the lineage: its lineage
        # proof and purge cover every record of the request, not only those of its own dataset.
        records = list(DataRecord.objects.filter(id__in=job.forget_record_ids).order_by("id"))
        audit["derived"] = {"reference": "none: the shadow models of a derived model would learn from the same "
                                         "parent, which held the records, so no reference that never saw them exists",
                            "records_scored": len(forget_keys), "records": len(records)}
    return _conclude(job, source, new, records, checks, audit, suppression, store=store, device=device,
                     started=started, progress=progress)


def min_utility_ratio(job: Job) -> float:
    """The utility check's bar the plan declared for this audit (the audit job's config
    ``utility.min_ratio``, deletion.workflow), or the platform default for a job planned without one."""
    from audits.checks.evidence import DEFAULT_MIN_UTILITY_RATIO

    return float(((job.config or {}).get("utility") or {}).get("min_ratio", DEFAULT_MIN_UTILITY_RATIO))


def dp_bound_audit(job: Job) -> dict:
    """The audit of a dp_bounded outcome: nothing was unlearned and no version made, so the weights
    are not tested; the dp_group_privacy check recomputes the person's group-privacy bound for their
    k = ``len(job.forget_record_ids)`` records from the accountant figures the DP-SGD run recorded on
    the version (the accountant's group bound or the generic one, the smaller), against the limits the
    plan declared (``job.config["dp_limits"]``), and states what of the pipeline the run recorded as
    private. No copy is purged: the model that holds the records keeps serving, by the DPO's decision."""
    from audits.checks.dp_group import DPTrainingFigures, dp_group_privacy
    from audits.checks.result import CheckResult
    from audits.checks.verdict import final_verdict

    started = time.perf_counter()
    version = ModelVersion.objects.select_related("model").get(pk=job.config["audited_version"])
    limits = (job.config or {}).get("dp_limits") or {}
    metrics = version.metrics or {}
    figures = DPTrainingFigures.from_metrics(metrics)
    k = len(job.forget_record_ids)
    checks: list[CheckResult] = []
    if figures is not None and k >= 1 and limits.get("max_epsilon") is not None:
        checks.append(dp_group_privacy(epsilon=figures.epsilon, delta=figures.delta, k=k,
                                       max_epsilon=float(limits["max_epsilon"]),
                                       max_delta=float(limits["max_delta"]), figures=figures))
    verdict = final_verdict(guarantee_class="dp_bounded", checks=checks)
    notes = list(verdict.notes)
    pipeline = metrics.get("dp_pipeline") or {}
    whole = pipeline.get("whole_pipeline_private") if pipeline else None
    if whole is not True:
        notes.append("The bound holds only if the whole training pipeline was private; the run recorded "
                     + ("that part of it was NOT." if whole is False else "not all of it as private (see the conditions)."))
    notes.append("Nothing was deleted from the model's weights: the bound is what the risk decision rests on. No "
                 "statistical test ran: the weights tested would be those of the version that holds the records.")
    audit = {
        "records": k, "shadow_models": 0, "nothing_deleted": True,
        "checks": [c.to_dict() for c in checks],
        "verdict": {**verdict.to_dict(), "notes": notes},
        "dp_bound": {"figures": None if figures is None else {
            "accountant": figures.accountant, "sample_rate": figures.sample_rate,
            "noise_multiplier": figures.noise_multiplier, "steps": figures.steps, "delta": figures.delta,
            "epsilon": figures.epsilon},
            "whole_pipeline_private": whole, "conditions": pipeline.get("conditions") or {},
            "conditions_recorded": bool(pipeline)},
        "purged": [], "purge_deferred": [], "older_copies_purged": None, "purge_waits_for_decision": True,
        "audit_seconds": round(time.perf_counter() - started, 3),
    }
    audit = jsonable(audit)
    return {"device": "cpu", "verdict": audit["verdict"]["verdict"], "purged": 0, "audit": audit}


def _class_conditional_erasers_detached(model) -> list[str]:
    """Take the concept erasers off ``model`` (in place) when one of them is class-conditional; the layers."""
    from workers.unlearning.concept_coupling import coupling_erasers
    from workers.unlearning.concept_erasure import erasers_detach

    return erasers_detach(model) if model is not None and coupling_erasers(model) else []


def _concept_audit(job: Job) -> dict:
    """An attribute's erasure (class ``concept_erased``): probes, no records, no purge."""
    from audits.concept_audit import concept_audit
    from workers.training.device import select_device

    return concept_audit(job, device=str(select_device()))


# Guarantee classes whose audit is not the per-record one: the class's own audit, job -> result.
CLASS_AUDITS = {"dp_bounded": dp_bound_audit, "concept_erased": _concept_audit}


def exact_replay_outcome(*, job: Job, source: ModelVersion, new: ModelVersion, original, unlearned, dataset,
                         forget_keys: list[str], store, device: str) -> dict:
    """Rebuild ``new`` from the registry and compare it bit for bit (see
    :mod:`workers.unlearning.exact.replay`). The retain set is the registry's membership of the run
    without the records any version of the chain up to ``source`` excluded and without this
    request's; the method and the environment are those recorded by the job that made ``new``.
    A full retrain is replayed when the audit job or the model's policy asks (``replay``)."""
    from workers.canaries import with_canaries
    from workers.data_sources import dataset_split
    from workers.training.membership import MembershipRow
    from workers.unlearning.exact.replay import ReplayInputs, replay_exact, retain_keys

    producer = Job.objects.filter(result_version=new).first()
    method = producer.method if producer is not None else ""
    # Requests batched into one job share its new version, and each has an audit of its own: the
    # version was rebuilt without every record of the job, not only this request's (whose batch-mates
    # may be erased from the dataset files by now, when their requests ended first).
    removed = set(forget_keys)
    if producer is not None and producer.forget_record_ids:
        removed |= set(DataRecord.objects.filter(id__in=producer.forget_record_ids).values_list("external_key", flat=True))
    forget_keys = sorted(removed)
    recorded = (store.manifest(new.artifact_sha256).extra.get("unlearning") or {}).get("details", {}).get("environment")
    rows = [MembershipRow(*row) for row in selectors.version_membership(version=source)]
    retain = with_canaries(dataset_split(dataset, "train"), dataset).subset(retain_keys(rows, forget_keys))
    requested = bool((job.config or {}).get("replay") or new.model.unlearning_policy.get("replay_retrain"))
    outcome = replay_exact(method=method, inputs=ReplayInputs(source=original, registry_membership=tuple(rows),
                                                              forget_keys=frozenset(forget_keys), retain=retain),
                           stored=unlearned, recorded_environment=recorded, device=device, requested=requested)
    return jsonable(outcome.to_dict())


def _investigate(flagged: list[str], unlearned, dataset, device: str, erased_keys: frozenset[str]) -> dict:
    from audits.investigation import investigate_flags
    from workers.canaries import with_canaries
    from workers.data_sources import dataset_split

    return jsonable(investigate_flags(
        flagged_keys=flagged, dataset=dataset, kept_keys=[row.record_key for row in unlearned.membership],
        model=unlearned.model, train=with_canaries(dataset_split(dataset, "train"), dataset),
        test=held_out_split(dataset_split(dataset, "test"), erased_keys), device=device))


def held_out_split(test, erased_keys: frozenset[str]):
    """The test split ``test`` as the audit's held-out (non-member) records: without the request's own records
    (``erased_keys``), which a concept eraser may have been fitted on while outside the training data; a record a
    person asked to erase is not used as anything."""
    return test.without(erased_keys) if erased_keys & set(test.record_keys) else test


def eraser_only_record_ids(job: Job, records: list[DataRecord]) -> set[int]:
    """The ids of those of ``records`` that the version the plan unlearned (the audit job's ``source_version``)
    held only through its concept eraser's fitting records (scoping's ``concept_eraser`` lineage,
    models_registry.models.ConceptFitRecord), as the plan found them (deletion.concept_erasers): its weights were
    never trained on them, so no per-record statistic can score them on the weights."""
    ids = [r.id for r in records]
    fitted = set(ConceptFitRecord.objects.filter(version_id=job.source_version_id, record_id__in=ids)
                 .values_list("record_id", flat=True)) if job.source_version_id else set()
    if not fitted:
        return set()
    held_otherwise = {p.record_id for v in selectors.records_scope(record_ids=fitted).all_versions
                      if v.version_id == job.source_version_id for p in v.placements if p.via != "concept_eraser"}
    return fitted - held_otherwise


def eraser_only_section(job: Job, *, new: ModelVersion, unlearned, record_ids: set[int], scored: int,
                        total: int) -> dict:
    """The audit's account of the records held only by a concept eraser (:func:`eraser_only_record_ids`): how
    many, how many of the request's records were scored on the weights instead, and what became of them: whether
    ``new`` still serves an eraser fitted on them (its lineage rows; a method that keeps the eraser passes them
    on) and the eraser layers its model serves."""
    import torch

    from workers.unlearning.concept_erasure import erased_layers

    producer = Job.objects.filter(result_version=new, kind=JobKind.UNLEARN).only("method").first()
    method = producer.method if producer is not None else None
    kept = ConceptFitRecord.objects.filter(version=new, record_id__in=record_ids).exists()
    layers = sorted(erased_layers(unlearned.model)) if isinstance(unlearned.model, torch.nn.Module) else []
    planned = job.source_version
    what = (f"{len(record_ids)} of the {total} erased records were held by {planned} only through its concept "
            "eraser, which was fitted on them, never by its weights: the per-record statistics score only the records the "
            f"weights were trained on ({f'{scored} scored on the weights' if scored else 'none scored on the weights'}),"
            " and none of the request's records was used as a held-out record.")
    if kept:
        fate = (f" {new} still serves an eraser fitted on them ({method or 'its method'} kept it): it is still "
                "derived from their data, and the lineage says so.")
    else:
        fate = (f" {new} serves no eraser fitted on them ({method or 'its method'} did not carry it over), so "
                "nothing of it holds their data; the lineage proof covers them.")
    return {"records": len(record_ids), "scored_on_weights": scored, "eraser_of": str(planned),
            "method": method, "new_version_eraser_fitted_on_them": kept, "new_version_eraser_layers": layers,
            "summary": what + fate}


def shadow_procedure_of(version: ModelVersion):
    """How the version's shadow models were trained against how the model was: the same procedure
    for a model the platform trained; for one uploaded from outside, the family's recipe with the
    run's recorded configuration against the company's own pipeline (its recorded code version)."""
    from audits.checks.evidence import ShadowProcedure

    root = selectors.lineage_root(version)
    run = root.training_run
    uploaded = (root.metrics or {}).get("uploaded_recipe")
    if not uploaded:
        recipe = f"the platform's {run.recipe} recipe with the run's configuration" if run else "the platform"
        return ShadowProcedure(same_as_model=True, shadows=recipe, model=recipe)
    return ShadowProcedure(
        same_as_model=False,
        shadows=(f"the platform's {uploaded['name']} recipe ({uploaded.get('family', 'uploaded')} family) with the "
                 "configuration the training run recorded"),
        model=f"trained outside the platform ({run.recipe}, code {run.code_version})" if run else "trained outside",
    )


def reference_models_for(job: Job, *, source: ModelVersion, new: ModelVersion) -> tuple[list, object]:
    """The shadow models an audit calibrates against, and how they were trained against how the
    model was (:func:`shadow_procedure_of`). The lineage's shadow models (workers.runners.shadow),
    except for a version the company's own pipeline retrained (``exact_attested``): the reference
    models that pipeline uploaded with it, where it did; else the lineage's, which another procedure
    trained (the shadow_procedure check names both and the verdict cannot PASS on them); with none
    at all, no procedure (None: the verdict says the declaration was not tested)."""
    from workers.runners.shadow import shadow_runs

    if derived_version(source):
        # Shadow models of a derived model would be derived from the same parent, which held the
        # records (workers.services.shadow_models_train refuses them): no reference exists, so the
        # per-record test does not run; an exact result rests on its lineage, another is INCONCLUSIVE.
        return [], None
    if job.guarantee_class == "exact_attested":
        from audits.checks.evidence import ShadowProcedure
        from workers.pipeline_references import pipeline_reference_runs

        references = pipeline_reference_runs(version=new)
        if references:
            pipeline = new.training_run.code_version if new.training_run else "unknown"
            theirs = sorted({run.code_version for run in references})
            return references, ShadowProcedure(
                same_as_model=theirs == [pipeline],
                shadows=(f"{len(references)} reference model(s) the company's pipeline trained and uploaded with "
                         f"version {new.version} (code {', '.join(theirs)})"),
                model=f"version {new.version}, retrained by the company's pipeline (code {pipeline})")
        platform = shadow_runs(version=source)
        # None at all: no procedure to judge; the verdict says the declaration was not tested.
        return platform, shadow_procedure_of(source) if platform else None
    return shadows_not_read_by_the_method(shadow_runs(version=source), new), shadow_procedure_of(source)


def method_shadow_indices(new: ModelVersion) -> set[int]:
    """The shadow indices the unlearning method that made ``new`` read itself, as its result states
    (``details.shadow_split.method_shadow_indices``, workers.unlearning.references); empty for a
    method that read none, or a version no unlearning job made."""
    producer = Job.objects.filter(result_version=new, kind=JobKind.UNLEARN).first()
    details = (((producer.result or {}).get("unlearning") or {}).get("details") or {}) if producer else {}
    return set((details.get("shadow_split") or {}).get("method_shadow_indices") or [])


def shadows_not_read_by_the_method(runs: list, new: ModelVersion) -> list:
    """``runs`` without the shadow models the unlearning method read (:func:`method_shadow_indices`):
    a method that learned from a shadow model's outputs (oracle matching, DMM) would otherwise be
    judged against its own oracle."""
    read = method_shadow_indices(new)
    return [run for run in runs if int(run.config.get("shadow_index", -1)) not in read] if read else runs


def min_out_shadows(version: ModelVersion) -> int:
    """The shadow policy's minimum of OUT shadow models per forgotten record: the platform's
    ``AUDIT_MIN_OUT_SHADOWS``, or more where the model's policy asks (never fewer)."""
    from django.conf import settings

    asked = (version.model.unlearning_policy or {}).get("min_out_shadows")
    return max(settings.AUDIT_MIN_OUT_SHADOWS, int(asked)) if asked else settings.AUDIT_MIN_OUT_SHADOWS


def derived_version(version: ModelVersion) -> bool:
    """Whether ``version`` (or the trained version at the top of its unlearning chain) was derived
    from another model's version (distilled, fine-tuned)."""
    return version.upstream_edges.exists() or selectors.lineage_root(version).upstream_edges.exists()


def replay_check(outcome: dict):
    from audits.checks.replay import exact_replay

    return exact_replay(outcome=outcome)


def _ulira_method(job: Job, new: ModelVersion) -> dict | None:
    """What U-LiRA runs on the shadows for an approximate result (audits.unlearned_shadows), None
    for the other classes: nothing approximate to test."""
    from audits.unlearned_shadows import audited_method

    return audited_method(job, new) if job.guarantee_class == "approximate" else None


def _classifier_evidence(original, unlearned, source, dataset, forget_keys, *, seed, device, progress,
                         equivalence: dict | None = None, min_utility_ratio: float | None = None, shadows=None,
                         procedure=None, unlearning: dict | None = None,
                         measure_forget_references=None, erased_keys: frozenset[str] = frozenset()):
    """Score the unlearned, original and shadow models on the forgotten records, a retain sample
    and held-out records; run every registered check that applies to a classifier on the scores,
    the equivalence test within the margins the plan declared (the audit job's config), utility
    against the bar it declared (``min_utility_ratio``; None: the platform default); with
    ``unlearning`` (an approximate result's method), U-LiRA on the shadows that held the records;
    with ``measure_forget_references`` (audits.forget_references.forget_reference_figures, the
    audit job bound), the references and controls of the representation and relearning checks. ``erased_keys``:
    every record of the request (``forget_keys`` are those of them scored on the weights), none of which is
    sampled as a kept or held-out record."""
    from audits.checks.equivalence import DeclaredMargins
    from audits.checks.evidence import ClassifierEvidence, UtilityFigures
    from audits.checks.membership import fit_shadow_reference
    from audits.checks.registry import run_checks
    from audits.checks.signals import standardise_on_held_out as standardise
    from audits.checks.verdict import with_family_alpha
    from workers.canaries import with_canaries
    from workers.data_sources import dataset_split
    from workers.runners.shadow import shadow_runs
    from workers.training.storage import load_run

    if shadows is None:
        shadows, procedure = shadow_runs(version=source), shadow_procedure_of(source)
    store = artifact_store()
    # The run's planted canaries are records of its membership (and of its shadows'): read with the split.
    train = with_canaries(dataset_split(dataset, "train"), dataset)
    test = held_out_split(dataset_split(dataset, "test"), erased_keys)
    # Canaries planted in training (never forget records): the pipeline's power, beside the records' own;
    # never in the retain sample, whose figures are of the company's records.
    canary_keys = canary_record_keys(source)
    planted = set(canary_keys)
    member_keys = [row.record_key for row in unlearned.membership
                   if row.record_key not in planted and row.record_key not in erased_keys]
    retain_keys = _sample(member_keys, RETAIN_SAMPLE, seed=seed)
    test_keys = _sample(list(test.record_keys), TEST_SAMPLE, seed=seed)
    forget_ds, retain_ds, test_ds = train.subset(forget_keys), train.subset(retain_keys), test.subset(test_keys)
    if canary_keys:
        trained, forgotten = set(train.record_keys), set(forget_keys)
        canary_keys = [k for k in canary_keys if k in trained and k not in forgotten]
    canary_ds = train.subset(canary_keys) if canary_keys else None

    progress("scoring the unlearned and original models", 0.1)
    f_after, _, forget_acc_after = _scores_and_accuracy(unlearned.model, forget_ds, device)
    r_after, _, retain_acc_after = _scores_and_accuracy(unlearned.model, retain_ds, device)
    t_after, _, test_acc_after = _scores_and_accuracy(unlearned.model, test_ds, device)
    f_before, _, forget_acc_before = _scores_and_accuracy(original.model, forget_ds, device)
    r_before, _, retain_acc_before = _scores_and_accuracy(original.model, retain_ds, device)
    t_before, _, test_acc_before = _scores_and_accuracy(original.model, test_ds, device)
    # A regression model: "accuracy" above is its RMSE; the audit reports MAE and RMSE (the target's unit).
    regression = source.model.task == "regression"

    shadow_scores, shadow_in, shadow_test, canary_shadow, canary_in = [], [], [], [], []
    for i, run in enumerate(shadows):
        progress(f"scoring shadow model {i + 1} of {len(shadows)}", 0.2 + 0.5 * i / max(1, len(shadows)))
        artifact = StoredArtifact.objects.get(training_run=run, kind=ArtifactKind.SHADOW_MODEL, status=ArtifactStatus.PRESENT)
        shadow = load_run(store, artifact.sha256)
        members = {row.record_key for row in shadow.membership}
        scores, _, _ = _scores_and_accuracy(shadow.model, forget_ds, device)
        shadow_scores.append(scores)
        shadow_in.append([key in members for key in forget_keys])
        shadow_test.append(_scores_and_accuracy(shadow.model, test_ds, device)[0])
        if canary_keys:
            canary_shadow.append(_scores_and_accuracy(shadow.model, canary_ds, device)[0])
            canary_in.append([key in members for key in canary_keys])

    # Each model's scores on the scale of its own held-out records (signals.standardise_on_held_out).
    # The held-out records, no model's members, are also the per-record test's empirical null: the
    # unlearned (original) model's and the shadow models' scores of them calibrate its p-values,
    # since the shadow models alone describe a model trained on half the data.
    calibration = {}
    raw_shadow_scores = np.array(shadow_scores)
    shadow_test_z = t_after_z = t_before_z = None
    if shadow_test:
        shadow_scores = [standardise(sc, te)[0] for sc, te in zip(shadow_scores, shadow_test, strict=True)]
        shadow_test_z = np.array([standardise(te, te)[0] for te in shadow_test])
        f_after_z, calibration["unlearned"] = standardise(f_after, t_after)
        f_before_z, calibration["original"] = standardise(f_before, t_before)
        t_after_z, t_before_z = standardise(t_after, t_after)[0], standardise(t_before, t_before)[0]
    else:
        f_after_z, f_before_z = f_after, f_before

    ulira = ulira_section = None
    if unlearning is not None:
        from audits.unlearned_shadows import unlearned_shadow_runs

        ulira, ulira_section = unlearned_shadow_runs(
            unlearning=unlearning, shadows=shadows, shadow_in=np.array(shadow_in, dtype=bool),
            shadow_forget=raw_shadow_scores, shadow_test=shadow_test, target_scores=f_after_z, forget_keys=forget_keys,
            train=train, forget_ds=forget_ds, test_ds=test_ds, device=device, progress=progress,
            score=lambda model, records: _scores_and_accuracy(model, records, device)[0], retain_ds=retain_ds)
    # The method's runs on the shadows also measure what it does to the kept records (retain_privacy_ulira).
    ulira_retain = ulira.pop("retain", None) if ulira is not None else None
    reference = None
    if len(shadows) >= 2 and forget_keys:
        reference = fit_shadow_reference(np.array(shadow_scores), np.array(shadow_in),
                                         nonmember_shadow_scores=shadow_test_z if len(test_keys) else None)
    attacked_forget, attacked_test, signal = _attack_scores(f_after, t_after, raw_shadow_scores, shadow_in,
                                                            shadow_test)
    # The raw confidences for RMIA (probabilities, not the standardised scale), when it can run.
    raw_confidences = None
    if reference is not None and len(test_keys) >= RMIA_MIN_POPULATION and not regression:
        raw_confidences = {"unlearned_conf": f_after, "original_conf": f_before, "reference_conf": raw_shadow_scores,
                           "population_unlearned_conf": t_after, "population_original_conf": t_before,
                           "population_reference_conf": np.array(shadow_test)}
    # Declared before any score was seen (the audit job's config); a job without them (planned
    # before they existed) runs no equivalence test.
    margins = DeclaredMargins.from_config(equivalence)
    references, references_section = (None, None) if measure_forget_references is None else measure_forget_references(
        original=original, unlearned=unlearned, train=train, test=test, forget_keys=forget_keys, device=device,
        progress=progress)
    progress("running the checks", 0.76)
    # The statistical checks the evidence supports (LiRA, RMIA, U-LiRA, the population attack, the
    # equivalence test) split the family-wise level, each holding its share over its own records.
    checks = run_checks(with_family_alpha(ClassifierEvidence(
        record_ids=tuple(str(k) for k in forget_keys), forget_scores=f_after_z, original_forget_scores=f_before_z,
        shadow_reference=reference, equivalence_margins=margins, attack_forget_scores=attacked_forget,
        attack_nonmember_scores=attacked_test, attack_signal=signal, retain_scores=r_after,
        original_retain_scores=r_before, nonmember_scores=t_after, original_nonmember_scores=t_before,
        utility=UtilityFigures(metric="rmse" if regression else "accuracy", retain=retain_acc_after, test=test_acc_after,
                               original_retain=retain_acc_before, original_test=test_acc_before,
                               **({} if min_utility_ratio is None else {"min_ratio": min_utility_ratio})),
        nonmember_null_scores=t_after_z, original_nonmember_null_scores=t_before_z,
        shadow_procedure=procedure, raw_confidences=raw_confidences,
        out_shadow_counts=(~np.array(shadow_in, dtype=bool)).sum(axis=0) if shadow_in else None,
        shadow_models=len(shadows), min_out_shadows=min_out_shadows(source), ulira=ulira,
        ulira_retain=ulira_retain,
        forget_references=references,
        canaries=_canary_evidence(original, canary_keys, canary_ds, canary_shadow, canary_in, shadow_test,
                                  t_before, shadow_test_z, t_before_z, device),
    ), level=FAMILY_ALPHA))
    audit = {
        "shadow_models": len(shadows),
        "shadow_procedure": None if procedure is None else {
            "same_as_model": procedure.same_as_model, "shadows": procedure.shadows, "model": procedure.model},
        "records": len(forget_keys),
        "metrics": {
            **(_regression_metrics(original, unlearned, forget_ds, retain_ds, test_ds, device) if regression else {
                # None when no record of the request was scored on the weights (all held only by an eraser).
                "forget_accuracy": {"original": forget_acc_before, "unlearned": forget_acc_after} if forget_keys else None,
                "retain_accuracy": {"original": retain_acc_before, "unlearned": retain_acc_after},
                "test_accuracy": {"original": test_acc_before, "unlearned": test_acc_after}}),
            "retain_sample": len(retain_keys), "test_sample": len(test_keys),
        },
        "roc": _roc(attacked_forget, attacked_test),  # the scores the population attack used
        "histograms": _histogram({"forget": f_after, "retain": r_after, "test": t_after}),
        "score_standardisation": calibration,
    }
    if regression:
        audit["regression"] = {"signal": "log-scaled squared error, -log(max(e^2, 1e-6)) in the target's unit",
                               "not_applicable": {"membership_rmia": REGRESSION_NOT_APPLICABLE["membership_rmia"]}}
    if ulira_section is not None:
        audit["unlearning_lira"] = ulira_section
    if references_section is not None:
        audit["forget_references"] = references_section
    return checks, audit


def _regression_metrics(original, unlearned, forget_ds, retain_ds, test_ds, device: str) -> dict:
    """A regression model's MAE and RMSE on the forgotten, kept and held-out records, before and after."""
    sets = {name: records for name, records in (("forget", forget_ds), ("retain", retain_ds), ("test", test_ds))
            if len(records)}
    before, after = _regression_errors(original.model, sets, device), _regression_errors(unlearned.model, sets, device)
    return {key: {"original": before[key], "unlearned": after[key]} for key in before}


def canary_record_keys(version: ModelVersion) -> list[str]:
    """The keys of the canaries planted in the training of ``version``'s lineage root, as the
    registry recorded them (workers.canaries); none when none were planted."""
    return selectors.canary_keys_of_run(run_id=selectors.lineage_root(version).training_run_id)


def _canary_evidence(original, keys, canary_ds, shadow_scores, shadow_in, shadow_test, t_before, shadow_test_z,
                     t_before_z, device):
    """The planted canaries scored like the forget records (on the original model, on the scale of its
    held-out records, against the shadow models' fit for them); None without canaries or shadows."""
    from audits.checks.evidence import CanaryEvidence
    from audits.checks.membership import fit_shadow_reference
    from audits.checks.signals import standardise_on_held_out as standardise

    if not keys or len(shadow_scores) < 2:
        return None
    seen = _scores_and_accuracy(original.model, canary_ds, device)[0]
    shadow = np.array([standardise(sc, te)[0] for sc, te in zip(shadow_scores, shadow_test, strict=True)])
    return CanaryEvidence(record_ids=tuple(keys), original_scores=standardise(seen, t_before)[0],
                          reference=fit_shadow_reference(shadow, np.array(shadow_in, dtype=bool),
                                                         nonmember_shadow_scores=shadow_test_z),
                          original_nonmember_null_scores=t_before_z)


def _language_model_evidence(original, unlearned, dataset, forget_keys, *, seed, device, progress,
                             min_utility_ratio: float, erased_keys: frozenset[str] = frozenset()):
    """Memorisation of the forgotten records before and after (through the guard for a guarded
    version) against held-out records of the same format, perplexity against the declared bar,
    the guard's bound."""
    from audits.lm_evidence import language_model_evidence
    from workers.data_sources import dataset_split
    from workers.training.lm import record_texts

    guard_key = None
    if unlearned.guard is not None:
        from workers.runners.unlearning import GUARD_KEY_BYTES

        guard_key = keystore().data_key(unlearned.guard.key_ref)[:GUARD_KEY_BYTES]
    train = record_texts(dataset_split(dataset, "train"))
    held_out = record_texts(held_out_split(dataset_split(dataset, "test"), erased_keys))
    from django.conf import settings

    evidence = language_model_evidence(original=original, unlearned=unlearned, train_records=train,
                                       held_out=held_out, forget_keys=forget_keys, guard_key=guard_key,
                                       seed=seed, device=device, progress=progress.scaled(5, 75),
                                       min_references=settings.AUDIT_LM_MIN_REFERENCES,
                                       min_utility_ratio=min_utility_ratio)
    audit = {"shadow_models": 0, "records": len(forget_keys), "language_model": evidence["section"]}
    return evidence["checks"], audit, evidence["suppression"]


def _conclude(job, source, new, records, checks, audit, suppression, *, store, device, started, progress):
    """Verdict, then, if it is PASS, purge every older copy that holds the records. A result that
    did not pass keeps them until the DPO decides (an escalation retrains from the parent; accepting
    the residual risk purges them then, see :func:`older_copies_purge`). Returns the job's result,
    the audit in it."""
    from audits.checks.verdict import LineageProof, final_verdict

    progress("the verdict", 0.79)
    record_ids = [r.id for r in records]
    holds_none = not {v.version_id for v in selectors.versions_trained_on(
        record_ids=record_ids, statuses=("serving", "retained", "retired", "withdrawn"))} & {new.id}
    preliminary = final_verdict(guarantee_class=job.guarantee_class, checks=checks, suppression=suppression,
                                lineage=LineageProof(new_version_holds_none=holds_none, older_copies_purged=True))
    # A guard's PASS is a PASS of the guard, not of erasure (counts_as_erasure): its copies wait for the DPO's
    # decision too.
    if str(getattr(preliminary.verdict, "value", preliminary.verdict)) == "PASS" and counts_as_erasure(job.guarantee_class):
        progress("purging older copies", 0.8)
        purge = older_copies_purge(source=source, record_ids=record_ids, keep_versions=versions_held(job),
                                   audited=versions_audited(job),
                                   store=store)
    else:
        purge = {"purged": [], "purge_deferred": [], "shadow_replenish_job": None, "older_copies_purged": None,
                 "copies_remaining": None, "purge_waits_for_decision": True}
    lineage = LineageProof(new_version_holds_none=holds_none, older_copies_purged=purge["older_copies_purged"])
    verdict = final_verdict(guarantee_class=job.guarantee_class, checks=checks, lineage=lineage,
                            suppression=suppression)
    audit = {
        **audit,
        "checks": [c.to_dict() for c in checks],
        "verdict": verdict.to_dict(),
        "lineage": {"new_version_holds_none": lineage.new_version_holds_none,
                    "older_copies_purged": lineage.older_copies_purged},
        **purge,
        "audit_seconds": round(time.perf_counter() - started, 2),
    }
    if isinstance(progress, StageClock):
        audit["stage_seconds"] = progress.seconds()
    audit = jsonable(audit)
    return {"device": device, "verdict": audit["verdict"].get("verdict"), "purged": len(purge["purged"]),
            "audit": audit}


def older_copies_purge(*, source: ModelVersion, record_ids: list[int], keep_versions: set[int],
                       store=None, audited: set[int] = frozenset()) -> dict:
    """Destroy every older copy of ``source``'s model that still holds ``record_ids`` (parent
    weights, superseded checkpoints, shadow models that saw them), except what a version in
    ``keep_versions`` still needs (those wait: ``purge_deferred``); queue new shadow models for the
    ones removed. Returns ``{purged, purge_deferred, shadow_replenish_job, older_copies_purged,
    copies_remaining}``: ``older_copies_purged`` is True when copies were destroyed and nothing of
    the model holds the records any more; ``copies_remaining`` counts the artifacts that still do."""
    store = store or artifact_store()
    with transaction.atomic():
        purged, deferred = lineage_copies_purge(store=store, source=source, record_ids=record_ids,
                                                keep_versions=keep_versions, audited=audited)
    replenish = None
    if any(p["kind"] == ArtifactKind.SHADOW_MODEL for p in purged):
        replenish = shadow_models_replenish(version=source)
    remaining = [a for a in selectors.artifacts_holding(record_ids=record_ids)
                 if a.kind != ArtifactKind.DATASET_CACHE and _same_model(a, source)]
    return {"purged": purged, "purge_deferred": deferred, "shadow_replenish_job": replenish,
            "older_copies_purged": bool(purged) and not remaining, "copies_remaining": len(remaining)}


def shadow_models_replenish(*, version) -> int:
    """Queue the retraining of the shadow models a purge removed (they saw forgotten records);
    the new ones train on halves of the lineage's current membership. Returns the job id."""
    root = selectors.lineage_root(version)
    count = root.model.training_runs.filter(config__shadow_of=root.id).values(
        "config__shadow_index").distinct().count() or SHADOW_COUNT_DEFAULT
    return job_create(kind="shadow", registered_model=root.model, source_version=root, method=root.model.training_recipe,
                      config={"count": count}).id


def _same_model(artifact, source) -> bool:
    row = StoredArtifact.objects.select_related("training_run", "model_version").get(pk=artifact.id)
    model_of = row.training_run.model_id if row.training_run_id else (
        row.model_version.model_id if row.model_version_id else None)
    return model_of == source.model_id
