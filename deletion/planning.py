"""Reads that plan a request: its subjects, its merged scope (subjects and named records), the
method and guarantee class the model's policy allows for each affected version, and the cost
expected from past jobs. Nothing here writes."""

from __future__ import annotations

from django.db.models import Avg

from audits.checks.equivalence import DEFAULT_MARGIN, DeclaredMargins, equivalence_plan
from audits.checks.evidence import evidence_kind_of
from audits.checks.registry import check_spec
from audits.checks.verdict import planned_alpha_share
from deletion.concept_erasers import carried_eraser, eraser_refusal
from deletion.models import (
    DeletionRequest,
    ModelOutcome,
    OutcomeStatus,
    RequestStatus,
)
from models_registry import selectors
from models_registry.models import ModelVersion, Task, VersionStatus
from workers.artifact_manifests import ArtifactError
from workers.model_families.base import approximate_method_refusal
from workers.models import Job, JobKind, JobStatus
from workers.runners.storage import artifact_manifest
from workers.training_catalogue import changed_weights_refusal
from workers.unlearning.catalogue import (
    CLASSIFIER,
    LANGUAGE_MODEL,
    METHOD_SPECS,
    REGRESSOR,
    approximate_methods_for,
    exact_method_for,
    weakest_guarantee,
)
from workers.unlearning.exact.s3t_plan import s3t_deactivation_plan, s3t_stored_state

# Offered in place of s3t when switching adapters off would leave the served model below the
# kept-data floor the model's ML engineer set (or without any adapter).
S3T_RETRAIN = "s3t_retrain"
# Offered for a version trained with DP-SGD: no unlearning, the subject's group-privacy bound as a risk
# decision of the DPO (deletion.decisions runs its audit job; the outcome always waits for the DPO).
DP_BOUNDED = "dp_bounded"
# The kind of model a plan step names, from its task, in the unlearning catalogue's words (what a
# method works on), and as the plan, the DPO's page and the report say it.
MODEL_KIND_OF_TASK = {Task.CLASSIFICATION: CLASSIFIER, Task.LANGUAGE_MODELING: LANGUAGE_MODEL, Task.REGRESSION: REGRESSOR}
MODEL_KIND_WORDS = {CLASSIFIER: "classifier (one class per record)", LANGUAGE_MODEL: "language model",
                    REGRESSOR: "regression model (one real number per record, MSE-trained)"}


def plan_model_kind(version: ModelVersion) -> str:
    """``"classifier"``, ``"regressor"`` or ``"language_model"``: the kind of the version's model, from
    its registered task (``ValueError`` for a task no kind is known for). The audit's evidence kind is
    :func:`audits.checks.evidence.evidence_kind_of` of it (a regressor is audited as a classifier is,
    on its squared error)."""
    task = version.model.task
    if task not in MODEL_KIND_OF_TASK:
        raise ValueError(f"model {version.model.name!r}: no model kind is known for its task {task!r}")
    return MODEL_KIND_OF_TASK[task]


def request_subjects(request: DeletionRequest) -> list:
    """The request's subject and every subject its verified identifiers linked to it."""
    return ([request.subject] if request.subject else []) + list(request.linked_subjects.all())


def request_scope(request: DeletionRequest):
    """The merged scope of every subject of the request and the records it named."""
    scope = selectors.subject_scope(subject=None)
    for subject in request_subjects(request):
        scope = _merge_scopes(scope, selectors.subject_scope(subject=subject))
    if request.record_ids:
        scope = _merge_scopes(scope, selectors.records_scope(record_ids=request.record_ids))
    return scope


def _merge_scopes(a, b):
    versions = {v.version_id: v for v in a.all_versions}
    for v in b.all_versions:
        if v.version_id in versions:
            versions[v.version_id].placements += [p for p in v.placements if p.record_id not in versions[v.version_id].record_ids]
        else:
            versions[v.version_id] = v
    by_dataset = dict(a.records_by_dataset)
    for name, count in b.records_by_dataset.items():
        by_dataset[name] = by_dataset.get(name, 0) + count
    artifacts = {x.id: x for x in a.artifacts + b.artifacts}
    return selectors.Scope(sorted(set(a.record_ids) | set(b.record_ids)), by_dataset, list(versions.values()),
                           sorted(artifacts.values(), key=lambda x: x.id), a.subject_id)


def one_job_per_chain(versions: list[ModelVersion]) -> dict[int, list[ModelVersion]]:
    """Scoped versions on one unlearning chain (one an earlier unlearning result of another: e.g. a
    version and its new version still awaiting audit, deployment or the DPO's decision, or a concept
    eraser's version not yet deployed) share their current source, so one job on it unlearns for all of
    them; a job per version would each start from that newest version, and the second would find the
    records already gone ("the forget set is empty"). Returns: the id of the version each group keeps a
    step for (the one nearest the current source) -> the other versions of its group (none: ``[]``).
    The others' copies are purged with the kept outcome's older copies (audits.runner.older_copies_purge)."""
    paths = {version.id: selectors.unlearning_path(version) for version in versions}
    groups: dict[int, list[ModelVersion]] = {}
    for version in versions:
        groups.setdefault(paths[version.id][-1].id, []).append(version)
    kept = {}
    for group in groups.values():
        nearest = min(group, key=lambda v: (len(paths[v.id]), -v.id))
        kept[nearest.id] = sorted((v for v in group if v.id != nearest.id), key=lambda v: v.version)
    return kept


def chain_note(kept: ModelVersion, covered: list[ModelVersion], records: dict[int, int]) -> dict | None:
    """What the plan step of ``kept`` says of the versions of its chain it unlearns for (``records``:
    version id -> how many of the request's records it holds); None when it covers none."""
    if not covered:
        return None
    named = ", ".join(f"v{v.version} ({v.status}, {records.get(v.id, 0)} record(s))" for v in covered)
    summary = (f"This step also covers {named}: v{kept.version} descends from {'them' if len(covered) > 1 else 'it'} "
               "by unlearning (an earlier request's or a concept erasure's), so the one job of this step, which starts "
               "from the chain's newest version, unlearns the records for all of them; their copies are destroyed "
               "with the older copies once this step's audit passes or the DPO accepts its risk.")
    return {"versions": [{"model_version_id": v.id, "version": v.version, "status": v.status,
                          "records": records.get(v.id, 0)} for v in covered], "summary": summary}


def method_card(name: str) -> dict | None:
    """What the plan shows of catalogue method ``name`` beside its class: where it applies, what one
    run costs (as declared in workers.unlearning.catalogue), whether it forgets whole classes only
    and what the job hands it. None for a name the catalogue does not declare (dp_bounded,
    external_retrain: the plan says what those are)."""
    if name not in METHOD_SPECS:
        return None
    spec = METHOD_SPECS.get(name)
    applies_to = spec.applies_to
    if not applies_to:
        applies_to = (f"every {spec.task.replace('_', ' ')} model" if spec.task is not None else
                      f"models trained with the {spec.recipe} recipe" if spec.recipe else
                      "every model the platform trained or holds a training run for")
    return {"method": name, "guarantee_class": spec.guarantee_class, "applies_to": applies_to,
            "cost": spec.cost or spec.replay_cost or "not declared", "whole_class_only": spec.whole_class_only,
            "needs": list(spec.needs)}


def _recipe_of(version: ModelVersion) -> str:
    """The recipe the version's weights are stored by (an uploaded version: the one its family used)."""
    uploaded = selectors.lineage_root(version).metrics.get("uploaded_recipe") or {}
    return uploaded.get("name") or version.model.training_recipe


_LOOK_UP = object()  # method_refusal's ``eraser`` when the caller has not looked it up


def method_refusal(*, version: ModelVersion, method: str, record_ids: list[int] | None = None,
                   eraser=_LOOK_UP) -> str | None:
    """Why the approximate ``method`` cannot unlearn ``record_ids`` from ``version``, in words for
    the plan and the DPO, or None when it can: it is no method for models of this task, the model's
    family refuses approximate methods, the recipe's storage would lose the weights it changes
    (workers.training_catalogue.changed_weights_refusal), the version serves a concept eraser the method
    cannot keep (deletion.concept_erasers.eraser_refusal), or it forgets whole classes only and the
    records are not every training record of one class (read from the dataset's labels, only for
    such a method and only with ``record_ids``)."""
    model = version.model
    spec = METHOD_SPECS.get(method) if method in METHOD_SPECS else None
    if spec is None or spec.task is None:
        return None  # exact methods and the plan's own (dp_bounded, external_retrain) are planned, not refused
    if spec.task != model.task:
        fitting = ", ".join(approximate_methods_for(model.task)) or "none"
        return (f"{method!r} unlearns {spec.task.replace('_', ' ')} models, not {model.task.replace('_', ' ')}; "
                f"for this model: {fitting}")
    if eraser is _LOOK_UP:  # a concept eraser (deletion.concept_erasers); a caller asking for many methods passes it
        eraser = carried_eraser(version)
    refused = approximate_method_refusal(method, model.architecture) or changed_weights_refusal(
        method=method, recipe=_recipe_of(version)) or eraser_refusal(eraser, method=method, record_ids=record_ids)
    if refused:
        return refused
    if spec.whole_class_only and record_ids is not None:
        from workers.forget_classes import whole_class_problem

        problem = whole_class_problem(version=version, record_ids=record_ids)
        if problem:
            return (f"{method!r} forgets whole classes only (every training record of one class), and {problem}; "
                    f"choose another method or retrain")
    return None


def shadow_evidence_shortfall(*, version: ModelVersion, method: str) -> str | None:
    """Why the audit of an approximate ``method``'s result cannot PASS with the shadow models
    ``version``'s lineage has now, in words for the plan, or None. An approximate classifier (or
    regressor: its evidence is a classifier's) PASSes only when every forgotten record is absent from
    at least the shadow policy's minimum of shadow models (audits.runner.min_out_shadows); the shadows
    come in complementary pairs, so each record is absent from one of each pair: it takes twice the
    minimum. A method that reads the lineage's shadow models (oracle matching, DMM: ``needs`` holds
    ``shadow_references``) reads the lowest half of the pair numbers (workers.unlearning.references.
    shadow_split, the configs' default share) and the audit judges with the other pairs only: such a
    method needs about four times the minimum. None for an exact method (its verdict rests on the
    lineage and the replay), a guard's class and a language model (audit_cannot_confirm says why those
    cannot PASS), and a method the catalogue does not know."""
    spec = METHOD_SPECS.get(method) if method in METHOD_SPECS else None
    if spec is None or spec.guarantee_class != "approximate":
        return None
    reads_shadows = "shadow_references" in spec.needs
    if not reads_shadows and evidence_kind_of(plan_model_kind(version)) != "classifier":
        return None
    from audits.runner import min_out_shadows
    from workers.runners.shadow import shadow_runs

    shadows = len(shadow_runs(version=version))
    pairs, minimum = shadows // 2, min_out_shadows(version)
    if not reads_shadows:
        if pairs >= minimum:
            return None
        has = ("this model has no shadow models" if shadows == 0 else
               f"this model's {shadows} shadow model(s) (complementary pairs, each record absent from one of each "
               f"pair) give each record {pairs}")
        return (f"this audit cannot confirm erasure here: its per-record test needs {minimum} shadow models without "
                f"each forgotten record, and {has}; expect INCONCLUSIVE and a decision by the DPO, unless the model "
                f"is given at least {2 * minimum} shadow models first")
    if pairs < 2:
        return (f"this model has {shadows} shadow model(s): {method} needs at least 2 complementary pairs (its job "
                f"refuses fewer), and for its audit to PASS at least {2 * (2 * minimum - 1)}; train them first")
    read = max(1, pairs // 2)
    if pairs - read >= minimum:
        return None
    return (f"this audit cannot confirm erasure here: {method} reads the shadow models of {read} of this model's "
            f"{pairs} shadow pairs and the audit judges with the other {pairs - read}, which give {pairs - read} shadow "
            f"model(s) without each record where an approximate PASS needs {minimum}; expect INCONCLUSIVE and a "
            f"decision by the DPO, unless the model is given at least {2 * (2 * minimum - 1)} shadow models first")


def approximate_alternatives(*, version: ModelVersion, planned: str, record_ids: list[int]) -> tuple[list[dict], dict]:
    """For a step whose planned method is approximate: the other approximate methods of the model's
    task that can unlearn ``record_ids`` from ``version`` (the DPO may choose one instead), each with
    where it applies and what it costs, and ``not_offered``: method -> why not, for the rest (a
    whole-class-only method on a forget set that is not one class, a recipe that would lose the
    change). Methods that need shadow models are offered; the job says if the lineage has too few. Each
    offered method's ``audit_cannot_confirm`` says when the lineage's shadow models leave its audit
    short of a PASS (:func:`shadow_evidence_shortfall`)."""
    offered, not_offered = [], {}
    eraser = carried_eraser(version)  # looked up once for every method
    for name in approximate_methods_for(version.model.task):
        if name == planned:
            continue
        refusal = method_refusal(version=version, method=name, record_ids=record_ids, eraser=eraser)
        if refusal:
            not_offered[name] = refusal
            continue
        card = method_card(name)
        shortfall = shadow_evidence_shortfall(version=version, method=name)
        offered.append({**card, "estimated_seconds": estimated_cost(model_id=version.model_id, method=name),
                        "audit_cannot_confirm": shortfall,
                        "why": f"Another approximate method for this model. Applies to: {card['applies_to']}. "
                               f"Cost: {card['cost']}." + (f" Note: {shortfall}." if shortfall else "")})
    return offered, not_offered


# The classes of a plan's step that get the exact method offered beside them at approval.
OFFERS_EXACT_INSTEAD = ("approximate", "dp_bounded", "suppressed")


def exact_alternative(*, version: ModelVersion, method: str, guarantee_class: str) -> list[dict]:
    """For a step whose plan is not exact: the exact method an escalation would run, offered at
    approval (the DPO who reads "expect INCONCLUSIVE" need not run the method, wait for its audit and
    then escalate): the company's own pipeline where the model's policy declares an external retrain
    that can serve now, else the platform's retrain. Nothing for a step that is exact or attested
    already (or a concept erasure: no record to retrain without), a derived model (its method
    re-derives it from its parent; it is not retrained on its own) or a purged version."""
    spec = METHOD_SPECS.get(method) if method in METHOD_SPECS else None
    if (guarantee_class not in OFFERS_EXACT_INSTEAD or (spec is not None and spec.rederives)
            or version.status == VersionStatus.PURGED):
        return []
    from deletion.external_retrain import (
        EXTERNAL_RETRAIN,
        GUARANTEE_CLASS,
        external_retrain_policy,
        external_retrain_problem,
    )

    section = external_retrain_policy(version.model)
    if method != EXTERNAL_RETRAIN and section and not external_retrain_problem(section, version.model.architecture or {}):
        attested = section.get("attested_by") or "the company's ML team"
        return [{"method": EXTERNAL_RETRAIN, "guarantee_class": GUARANTEE_CLASS, "audit_cannot_confirm": None,
                 "estimated_seconds": None,
                 "why": (f"Exact instead: the company's own pipeline retrains the model without the records (a signed "
                         f"job goes to its webhook; {attested} attests the retrain) and uploads the new version, "
                         f"which is audited like any result; what an escalation after a failed audit would run.")}]
    if method == "retrain":
        return []
    card = method_card("retrain")
    return [{**card, "audit_cannot_confirm": None,
             "estimated_seconds": estimated_cost(model_id=version.model_id, method="retrain"),
             "why": (f"Exact instead: retrain the model from scratch without the records; its audit rests on the "
                     f"lineage and a replay, not on shadow models, so it confirms erasure where an approximate "
                     f"method's audit may not. Cost: {card['cost']}; what an escalation after a failed audit "
                     f"would run.")}]


def policy_method_refused(*, version: ModelVersion, record_ids: list[int]) -> str | None:
    """Why the approximate method the model's policy names cannot unlearn ``record_ids`` from
    ``version`` (the plan then falls back to a retrain and says why), None when it can or the
    policy names none."""
    method = (version.model.unlearning_policy or {}).get("approximate_method")
    if not method or exact_method_for(_recipe_of(version)) is not None:
        return None
    refusal = method_refusal(version=version, method=method, record_ids=record_ids)
    return None if refusal is None else f"the model's policy names {method!r}, refused here: {refusal}"


def plan_method(*, version: ModelVersion, record_ids: list[int] | None = None) -> tuple[str, str]:
    """What the model's unlearning policy allows for this version: the exact method the method
    catalogue declares for the model's recipe (sisa, s3t), else the configured approximate method
    (an exact retrain after ``exact_after`` approximate deletions), else a full retrain. Returns
    ``(method, guarantee_class)``, the guarantee class as the catalogue declares it.

    A version uploaded from outside is unlearned by the recipe its family stored it with (a list of
    scikit-learn estimators is a sklearn_sisa ensemble whatever the model row says); a family whose
    models take no approximate method (scikit-learn) has such a policy refused when it is saved,
    and the planner never picks one for it; nor one the recipe's storage would lose, nor (given
    ``record_ids``) a whole-class-only method for records that are not one whole class
    (:func:`method_refusal`). A model whose policy makes the company's own pipeline its
    method for every deletion (``external_retrain.use: every_deletion``) gets that (``exact_attested``)."""
    # Imported here: deletion.external_retrain reaches this module through the workflow.
    from deletion.external_retrain import (
        EXTERNAL_RETRAIN,
        GUARANTEE_CLASS,
        external_retrain_planned,
    )

    model = version.model
    policy = model.unlearning_policy or {}
    if external_retrain_planned(model):  # the company's own pipeline, for every deletion (its policy says so)
        return EXTERNAL_RETRAIN, GUARANTEE_CLASS
    exact = exact_method_for(_recipe_of(version))
    if exact is not None:
        return exact.name, exact.guarantee_class
    method = policy.get("approximate_method")
    if method and not policy.get("prefer_exact") and not method_refusal(version=version, method=method,
                                                                       record_ids=record_ids):
        limit = policy.get("exact_after")
        done = ModelOutcome.objects.filter(model_version__model=model, guarantee_class="approximate",
                                           status__in=[OutcomeStatus.CONFIRMED, OutcomeStatus.AWAITING_DEPLOYMENT]).count()
        if limit is None or done < limit:
            # The policy was checked against the same catalogue when it was saved.
            return method, METHOD_SPECS.get(method).guarantee_class
    return "retrain", "exact"


def derived_steps_planned(plan: list[dict]) -> list[dict]:
    """The plan's steps with those of derived children (a distilled or fine-tuned model whose
    method re-derives it, workers.unlearning.catalogue ``rederives``) told where they come from:
    ``derived_from`` (the parent version, the edge's kind and the parent step's class) and the job's
    ``method_config`` (the parent), and the class capped at the parent step's (a child promises at
    most what its new parent does; the job caps it again at the class the parent's new version
    actually got, which an escalation may raise). A child of a parent outside the plan (its records
    came only through the child's own training data) keeps its method's class. Chains of children
    are capped down the chain."""
    from workers.runners.derived import derived_parent_edge

    steps = {step["model_version_id"]: step for step in plan}
    for step in plan:  # a version on a step's unlearning chain is unlearned by that step (one_job_per_chain)
        for covered in (step.get("covers_versions") or {}).get("versions", []):
            steps[covered["model_version_id"]] = step
    for step in plan:
        spec = METHOD_SPECS.get(step["method"]) if step["method"] in METHOD_SPECS else None
        if spec is None or not spec.rederives:
            continue
        edge = derived_parent_edge(ModelVersion.objects.get(pk=step["model_version_id"]), spec.rederives)
        if edge is None:
            continue
        parent = {"version_id": edge.parent_id, "model": edge.parent.model.name, "version": edge.parent.version,
                  "kind": edge.kind}
        step["derived_from"] = {**parent, "guarantee_class": None}
        step["method_config"] = {"parent": parent}
    for _ in plan:  # parents before children, however the plan is ordered
        for step in plan:
            parent_step = steps.get((step.get("derived_from") or {}).get("version_id"))
            if parent_step is None:
                continue
            step["derived_from"]["guarantee_class"] = parent_step["guarantee_class"]
            step["guarantee_class"] = weakest_guarantee(METHOD_SPECS.get(step["method"]).guarantee_class,
                                                        parent_step["guarantee_class"])
            if step["guarantee_class"] != "exact":
                step["audit_cannot_confirm"] = (
                    f"this audit cannot confirm erasure here: a derived model has no shadow models (they would "
                    f"learn from the same parent), so only an exact re-derivation passes on its lineage, and the "
                    f"parent's plan is {parent_step['guarantee_class']}; expect a decision by the DPO unless the "
                    f"parent's result is exact")
    return plan


def s3t_kept_data(*, version: ModelVersion, record_ids: list[int]) -> tuple[dict | None, list[dict]]:
    """For an S3T model, before anything runs: how many of the kept records the served model would
    still have learned from once the adapters whose slices hold ``record_ids`` are switched off,
    worked out (no training, no weights read) from the stored version's manifest (its adapters and
    what each shard serves) and the registry's membership counts, by the rule the s3t method applies
    (workers.unlearning.exact.s3t_plan). The version is the one the job will unlearn from
    (``current_source``). Returns ``(kept_data, alternatives)``: ``kept_data`` None for other
    recipes; ``alternatives`` offers s3t_retrain when the share would fall below the model's
    ``s3t_kept_data_floor`` or no shard would keep an adapter."""
    model = version.model
    if model.training_recipe != "s3t":
        return None, []
    source = selectors.current_source(version)
    floor = model.s3t_kept_data_floor
    try:
        manifest = artifact_manifest(source.artifact_sha256)
        stored = s3t_stored_state(recipe_config=(manifest.recipe or {})["config"], parts=manifest.parts,
                                  state=manifest.state)
    except (ArtifactError, KeyError, TypeError, ValueError) as exc:
        return {"known": False, "floor": floor, "below_floor": None,
                "summary": f"Not worked out: the stored {source} could not be read ({exc})."}, []
    kept, affected = selectors.membership_by_slice(version=source, record_ids=record_ids)
    plan = s3t_deactivation_plan(orderings=stored.orderings, shards=stored.shards, adapters=stored.adapters,
                                 active=stored.active, affected=affected, kept_by_slice=kept)
    fraction = plan.kept_fraction
    none_left = len(plan.shards_out) == stored.shards
    below = floor is not None and fraction is not None and fraction < floor
    to_retrain = plan.missing(shards=stored.shards, orderings=len(stored.orderings), slices=stored.slices)
    share = f" ({fraction:.1%})" if fraction is not None else ""
    summary = (f"After this deletion the served model would still have learned from {plan.kept_records_served:,} "
               f"of the {plan.kept_records:,} kept records{share}; a retrain on the kept data learns from all of "
               f"them. {len(plan.deactivated)} adapter(s) would be switched off; learning from fewer records can "
               f"cost accuracy, which the audit measures.")
    if none_left:
        summary += " No shard would keep an adapter: s3t cannot serve a model after this deletion."
    elif below:
        summary += f" That is below the floor of {floor:.0%} the model's ML engineer set."
    kept_data = {
        "known": True, "source_version": source.version, "kept_records": plan.kept_records,
        "kept_records_served": plan.kept_records_served,
        "fraction": round(fraction, 4) if fraction is not None else None,
        "adapters_deactivated": len(plan.deactivated), "floor": floor, "below_floor": below or none_left,
        "summary": summary,
    }
    if not (below or none_left):
        return kept_data, []
    spec = METHOD_SPECS.get(S3T_RETRAIN)
    return kept_data, [{
        "method": spec.name, "guarantee_class": spec.guarantee_class, "adapters_to_retrain": len(to_retrain),
        "kept_records_served": plan.kept_records,
        "estimated_seconds": estimated_cost(model_id=model.id, method=spec.name),
        "why": (f"Retrain the {len(to_retrain)} switched-off adapter(s) on the kept records of their slices, "
                f"from the last clean adapter of each ordering, so that the served model learns from all "
                f"{plan.kept_records:,} kept records again; it costs training those adapters."),
    }]


def dp_limits(version: ModelVersion) -> tuple[float, float]:
    """The (max_epsilon, max_delta) a subject's DP bound must meet: the model's policy
    (``dp_max_epsilon``, ``dp_max_delta``) or the platform's (settings.DP_MAX_EPSILON, DP_MAX_DELTA)."""
    from django.conf import settings

    policy = version.model.unlearning_policy or {}
    return (float(policy.get("dp_max_epsilon", settings.DP_MAX_EPSILON)),
            float(policy.get("dp_max_delta", settings.DP_MAX_DELTA)))


def dp_bound_plan(*, version: ModelVersion, records: int) -> tuple[dict | None, list[dict]]:
    """For a version trained with DP-SGD (its metrics record the accountant's figures,
    workers.training.dp), before anything runs: the subject's group-privacy bound for their
    ``records`` (k) records in it, computed by :func:`audits.checks.dp_group.subject_bound` (the
    accountant's group bound or the generic one, the smaller), held against the policy's limits,
    with the conditions the run recorded of what was private. Returns ``(dp_bound, alternatives)``:
    None and no alternative for a version without DP figures; else the bound and ``dp_bounded``
    offered as a method the DPO may approve instead: no new version, nothing deleted from the
    weights, a risk decision the DPO accepts in writing (the outcome always waits for it).

    ``k`` counts the request's records in the version's membership; the DP recipe's membership holds
    the records Poisson sampling put in a batch at least once (one never sampled never reached the
    model)."""
    from audits.checks.dp_group import DPTrainingFigures, subject_bound

    metrics = version.metrics or {}
    figures = DPTrainingFigures.from_metrics(metrics) if records >= 1 else None
    if figures is None:
        return None, []
    max_epsilon, max_delta = dp_limits(version)
    subject = subject_bound(figures=figures, k=records, max_epsilon=max_epsilon, max_delta=max_delta)
    pipeline = metrics.get("dp_pipeline") or {}
    conditions = pipeline.get("conditions") or {}
    whole = pipeline.get("whole_pipeline_private") if pipeline else None
    bound, generic, accounted = subject.bound, subject.generic, subject.accountant
    how = ("the accountant, the group accounted as one unit" if subject.computed_by != "generic"
           else "the generic group-privacy bound (k epsilon, k e^((k-1) epsilon) delta)")
    verdict = ("within the limits" if subject.within_limits else
               "VACUOUS: its delta is 1 or more, so it guarantees nothing" if bound.delta >= 1 else
               "VACUOUS: beyond the limits, so it is no meaningful guarantee for this person")
    private = {True: "The run recorded the whole pipeline as private.",
               False: "The run recorded that part of the pipeline was NOT private: the bound does not hold.",
               None: "Whether the whole pipeline was private is not known: the bound holds only if it was."}[whole]
    summary = (f"Differential-privacy bound for this person's {records} record(s) (k = {records}): epsilon "
               f"{bound.epsilon:.4g}, delta {bound.delta:.3g}, from {how}; limits epsilon <= {max_epsilon:g}, "
               f"delta <= {max_delta:g}: {verdict}. Per record the run's {figures.accountant} accountant gives "
               f"epsilon {figures.epsilon:.4g} at delta {figures.delta:.3g} (sampling rate {figures.sample_rate:.4g}, "
               f"noise multiplier {figures.noise_multiplier:.4g}, {figures.steps} steps). {private} "
               "Choosing dp_bounded deletes nothing from the weights: it is a risk decision.")
    dp_bound = {
        "k": records, "epsilon": bound.epsilon, "delta": bound.delta, "computed_by": subject.computed_by,
        "generic": {"epsilon": generic.epsilon, "delta": generic.delta},
        "accountant": None if accounted is None else {"epsilon": accounted.epsilon, "delta": accounted.delta},
        "accountant_problem": subject.accountant_problem,
        "per_record": {"epsilon": figures.epsilon, "delta": figures.delta, "accountant": figures.accountant,
                       "sample_rate": figures.sample_rate, "noise_multiplier": figures.noise_multiplier,
                       "steps": figures.steps},
        "max_epsilon": max_epsilon, "max_delta": max_delta, "within_limits": subject.within_limits,
        "vacuous": subject.vacuous, "whole_pipeline_private": whole, "conditions": conditions,
        "conditions_recorded": bool(pipeline), "summary": summary,
    }
    return dp_bound, [{
        "method": DP_BOUNDED, "guarantee_class": DP_BOUNDED, "estimated_seconds": None,
        "why": (f"Keep the model as trained and rely on its differential-privacy bound for this person's records "
                f"(epsilon {bound.epsilon:.4g}, delta {bound.delta:.3g}"
                f"{'' if subject.within_limits else ', VACUOUS'}): nothing is deleted from the weights; an audit "
                "job checks the bound and the DPO accepts the residual risk in writing (two DPO users)."),
    }]


def estimated_cost(*, model_id: int, method: str) -> float | None:
    """Mean wall seconds of past successful jobs of this model and method; for a method that trains
    afresh from the recipe (``from_scratch``: retrain, ...) without such history, of the model's
    training jobs (it is one more training); None without either."""
    done = Job.objects.filter(registered_model_id=model_id, status=JobStatus.SUCCEEDED, wall_seconds__isnull=False)
    mean = done.filter(method=method).aggregate(mean=Avg("wall_seconds"))["mean"]
    spec = METHOD_SPECS.get(method) if method in METHOD_SPECS else None
    if mean is None and spec is not None and spec.from_scratch:
        mean = done.filter(kind=JobKind.TRAIN).aggregate(mean=Avg("wall_seconds"))["mean"]
    return round(mean, 1) if mean is not None else None


def request_end_state(request: DeletionRequest) -> str:
    """How a request whose every outcome is settled ends: COMPLETED when erasure is confirmed for
    every affected model (PASS, a withdrawn model, a legal hold that the report names), and
    CLOSED_RISK_ACCEPTED when two DPO users accepted the residual risk of a result that did not pass."""
    if any(o.risk_acceptance.get("confirmed_by") for o in request.outcomes.all()):
        return RequestStatus.CLOSED_RISK_ACCEPTED
    return RequestStatus.COMPLETED


def equivalence_test_plan(*, version: ModelVersion, model_kind: str, records: int) -> dict | None:
    """The equivalence test's margins, declared here, before the method runs and before any score
    is seen: the model's ``unlearning_policy.equivalence_margin`` or the platform default, with
    the power they leave ``records`` forgotten records (audits.checks.equivalence.equivalence_plan).
    None where the test does not apply to the model's kind. The audit job carries ``declared``
    into its config (deletion.workflow)."""
    if model_kind not in check_spec("equivalence_tost").applies_to:
        return None
    margin = (version.model.unlearning_policy or {}).get("equivalence_margin")
    declared_by = (f"the policy of model {version.model.name}" if margin is not None
                   else "the platform default")
    # Its alpha is its share of the audit's family-wise level (audits.checks.verdict), so that the
    # audit's checks together FAIL a model that forgot with chance at most that level.
    margins = DeclaredMargins.symmetric(DEFAULT_MARGIN if margin is None else margin, declared_by=declared_by,
                                        alpha=planned_alpha_share(model_kind))
    return equivalence_plan(margins, records=records)


# The utility metric each kind of model is audited on, as the plan and the report name it.
UTILITY_METRIC_WORDS = {"classifier": "accuracy", "regressor": "root mean squared error (inverted)",
                        "language_model": "perplexity (inverted)"}


def utility_bar_plan(*, version: ModelVersion, model_kind: str) -> dict:
    """The utility check's bar, declared here, before the method runs: the model's
    ``unlearning_policy.min_utility_ratio`` or the platform default, the retain and test utility
    of the new version as a share of the original's. The audit job carries ``min_ratio`` into its
    config (deletion.workflow); the check warns below it (it never decides erasure), and the
    serving side's deployment list shows its figures before anyone deploys."""
    from audits.checks.evidence import DEFAULT_MIN_UTILITY_RATIO

    ratio = (version.model.unlearning_policy or {}).get("min_utility_ratio")
    declared_by = (f"the policy of model {version.model.name}" if ratio is not None else "the platform default")
    ratio = float(DEFAULT_MIN_UTILITY_RATIO if ratio is None else ratio)
    metric = UTILITY_METRIC_WORDS.get(model_kind, "utility")
    return {"min_ratio": ratio, "declared_by": declared_by, "metric": metric,
            "statement": (f"Utility bar ({declared_by}): the new version's {metric} on kept and held-out records "
                          f"at least {ratio:.0%} of the original's; below it the audit warns beside its verdict "
                          "(utility does not decide erasure) and the serving side sees the figures before "
                          "deploying.")}


def replay_plan(*, version: ModelVersion, method: str) -> dict | None:
    """When the audit replays ``method``'s result bit for bit and what that costs (declared with the
    method in the catalogue), or None for a method without a replay. A replay on request runs
    when the model's policy asks for it (``unlearning_policy.replay_retrain``)."""
    from workers.unlearning.catalogue import METHOD_SPECS

    spec = METHOD_SPECS.get(method) if method in METHOD_SPECS else None
    if spec is None or not spec.replay:
        return None
    asked = spec.replay == "on request" and bool(version.model.unlearning_policy.get("replay_retrain"))
    runs = "every audit" if spec.replay == "every audit" or asked else "on request"
    if runs == "every audit":
        summary = (f"The audit replays this deletion independently and compares the weights bit for bit "
                   f"({spec.replay_cost}).")
    else:
        summary = (f"No replay unless asked (unlearning_policy.replay_retrain): it costs {spec.replay_cost}; "
                   "without it, exactness rests on the platform's execution record.")
    return {"runs": runs, "cost": spec.replay_cost, "summary": summary}
