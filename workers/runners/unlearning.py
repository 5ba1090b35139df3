"""Unlearning jobs: a new model version without the forget set (the audit job then purges every
older copy of that model that still holds it).

A method's kind, declared in workers.unlearning.catalogue, says how it is called: TRAINING_RUN (the
exact methods) takes the stored TrainingRun; CLASSIFIER, the model and loaders over the forget and
retain records; LANGUAGE_MODEL, the model and LM batches of the forget and retain texts; GUARD
wraps the unchanged model, stored as a guarded artifact (see workers.training.lm) with its hashing
key in the keystore; CONCEPT fits an eraser on the attribute's labelled records (workers.runners.concept).
The final transaction records the new version (parent = source, membership = the run's minus the
forgotten records) and its artifacts, and marks the job's result, so a
redelivered job never makes a second version.
"""

from __future__ import annotations

from django.db import transaction

from foundation.strict_json import jsonable
from models_registry import services as registry
from models_registry.keystore import keystore
from models_registry.models import DataRecord, ModelVersion, VersionStatus
from models_registry.selectors import current_source, keep_out_selection_of, version_membership
from workers.jobs import GuaranteeNotMet, JobDeferred, job_gate_reason
from workers.model_families.base import approximate_method_refusal
from workers.models import Job, JobStatus
from workers.runners.storage import artifact_store, stored_artifacts_register
from workers.training_catalogue import changed_weights_refusal
from workers.unlearning.catalogue import (
    CONCEPT,
    GUARD,
    LANGUAGE_MODELING,
    METHOD_SPECS,
    TRAINING_RUN,
    MethodSpec,
    approximate_methods_for,
)

LOADER_BATCH = 64
LM_BATCH = 4
GUARD_KEY_BYTES = 16


def run_unlearning_job(job: Job, progress) -> dict:
    from torch.utils.data import DataLoader

    from workers.canaries import with_canaries
    from workers.data_sources import dataset_split
    from workers.runners.training import load_recipes
    from workers.training.device import select_device
    from workers.training.membership import MembershipRow, collate_records
    from workers.training.storage import load_run, save_run
    from workers.unlearning.base import METHODS
    from workers.unlearning.methods import load_all_methods

    if job.result_version_id:
        return {"skipped": "result already recorded", "version": job.result_version_id}
    blocker = lineage_blocker(job)
    if blocker:
        raise JobDeferred(blocker)
    load_recipes()
    load_all_methods()
    source = current_source(job.source_version)
    if METHOD_SPECS.get(job.method).rederives:  # a derived child: re-derived from its parent's new version
        from workers.runners.derived import run_rederive_job

        return run_rederive_job(job, source, progress)
    refused = approximate_method_refusal(job.method, source.model.architecture)
    if refused:  # a policy edited around its check: say so, not an optimizer's "empty parameter list"
        raise ValueError(refused)
    dataset = source.training_run.datasets.get()
    forget_records = list(DataRecord.objects.filter(id__in=job.forget_record_ids, dataset=dataset))
    forget_keys = {r.external_key for r in forget_records}
    store = artifact_store()
    progress("loading the model", 0.02)
    trained = load_run(store, source.artifact_sha256)
    # The recipe that stores the new version must be able to hold what the method changes.
    unstorable = changed_weights_refusal(method=job.method, recipe=trained.recipe)
    if unstorable:
        raise ValueError(f"{source}: {unstorable}")
    spec = METHOD_SPECS.get(job.method)
    if spec.kind == CONCEPT:  # an attribute, not records: the eraser is fitted on the request's labels
        from workers.runners.concept import run_concept_erasure

        return run_concept_erasure(job, source=source, trained=trained, store=store, progress=progress)
    registry_membership = None
    # A keep-out transfer model's non-static records are in no membership: the registry's selection
    # (which auxiliary examples each selected) is what the model holds of them.
    selection = keep_out_selection_of(version=source) if trained.keep_out_selection is not None else None
    if spec.kind == TRAINING_RUN:
        # An exact method works from the registry's membership (the run's records less every
        # deletion on the chain), not the stored one: an S3T version stops listing the records of
        # the slices it no longer serves, yet they are kept data, which a retrain (or s3t_retrain)
        # learns from again and the kept-data figure counts.
        registry_membership = [MembershipRow(*row) for row in version_membership(version=source)]
        member_keys = {row.record_key for row in registry_membership}
    else:
        member_keys = {row.record_key for row in trained.membership}
    data = with_canaries(dataset_split(dataset, "train"), dataset)  # planted canaries are kept records
    forget = data.subset(sorted(forget_keys & (member_keys | set(selection or ()))))
    retain = data.subset(sorted(member_keys - forget_keys))
    method = METHODS.get(job.method)(job.config or None)
    device = str(select_device())
    phase = progress.scaled(5, 80)
    if trained.guard is not None and not spec.from_scratch:
        # Its weights still hold the records an earlier request suppressed; changing them (or
        # wrapping a second guard whose forgotten texts are gone) would drop that protection.
        raise ValueError(f"{source} is a guarded (suppressed) version: only an exact retrain can "
                         f"unlearn from it, not {spec.name!r}")
    if spec.task is not None and (spec.task == LANGUAGE_MODELING) != (trained.tokenizer is not None):
        kind = "a language model" if trained.tokenizer is not None else "a classifier"
        raise ValueError(f"{spec.name!r} cannot unlearn {kind} ({source}); language models take "
                         f"{', '.join(approximate_methods_for(LANGUAGE_MODELING))} or retrain")
    if spec.task is not None and trained.tokenizer is None and spec.task != source.model.task:
        # A classification method on a regression model (or the reverse): its loss cannot read the targets.
        raise ValueError(f"{spec.name!r} unlearns {spec.task.replace('_', ' ')} models; {source} is a "
                         f"{source.model.task.replace('_', ' ')} model: it takes "
                         f"{', '.join(approximate_methods_for(source.model.task)) or 'no approximate method'} "
                         "or retrain")
    if spec.task == LANGUAGE_MODELING:
        ref, result = _unlearn_language_model(job=job, source=source, trained=trained, spec=spec, method=method,
                                              data=data, forget_keys=forget_keys, store=store, device=device,
                                              progress=progress, phase=phase,
                                              held_out_from=dataset,
                                              erased_people_keys=_keys_of_the_same_people(forget_records))
    else:
        if spec.kind == TRAINING_RUN:
            new_run, result = method.unlearn(trained, forget, retain, device=device, progress=phase,
                                             membership=registry_membership,
                                             **({} if selection is None else {"selection": selection}))
        else:
            from workers.training.base import TrainingRun

            forget_loader = DataLoader(forget, batch_size=LOADER_BATCH, collate_fn=collate_records)
            retain_loader = DataLoader(retain, batch_size=LOADER_BATCH, shuffle=False, collate_fn=collate_records)
            new_model, result = method.unlearn(trained.model, forget_loader, retain_loader, device=device,
                                               progress=phase, **_method_needs(spec, source))
            kept = [row for row in trained.membership if row.record_key not in forget_keys]
            new_run = TrainingRun(trained.recipe, trained.config, new_model.cpu(), kept, trained.metrics)
        progress("storing the new version", 0.9)
        ref = save_run(store, new_run, parent=source.artifact_sha256,
                       extra={"unlearning": jsonable(result.to_dict())})
    # Keep-out transfer: the new version's selection; auxiliary examples no record selects any more
    # left the training set, so the new version excludes them too.
    kept_selection = new_run.keep_out_selection if selection is not None and spec.kind == TRAINING_RUN else None
    # A concept eraser the method kept (its weights changed around it): still derived from its fitting records.
    keeps_eraser = spec.task != LANGUAGE_MODELING and _carries_eraser(getattr(new_run, "model", None))
    dropped = []
    if kept_selection is not None:
        left = member_keys - forget_keys - {row.record_key for row in new_run.membership}
        dropped = list(DataRecord.objects.filter(dataset=dataset, external_key__in=left).values_list("id", flat=True))
    with transaction.atomic():
        locked = Job.objects.select_for_update().get(pk=job.pk)
        if locked.result_version_id:
            return {"skipped": "result already recorded", "version": locked.result_version_id}
        version = registry.model_version_create(
            model=source.model, artifact_sha256=ref.artifact_id, training_run=source.training_run,
            parent=source, status=VersionStatus.RETAINED, guarantee_class=result.guarantee_class,
            dp_epsilon=source.dp_epsilon, dp_delta=source.dp_delta,
            excluded_record_ids=[r.id for r in forget_records] + dropped,
        )
        if kept_selection is not None:
            registry.keep_out_selection_record(version=version, dataset=dataset, selection=kept_selection)
        stored_artifacts_register(store=store, top_id=ref.artifact_id, run=source.training_run, version=version)
        if keeps_eraser:
            registry.concept_fit_records_inherit(version=version, source=source)
        Job.objects.filter(pk=job.pk).update(result_version=version)
    # Older copies are purged by the audit job, once it has taken its evidence from them.
    return {"device": device, "artifact": ref.artifact_id, "version": version.id,
            "unlearning": jsonable(result.to_dict())}


def _carries_eraser(model) -> bool:
    """Whether ``model`` carries a concept eraser (workers.unlearning.concept_erasure)."""
    from workers.unlearning.concept_erasure import erased_layers

    return model is not None and bool(erased_layers(model))


def _method_needs(spec: MethodSpec, source: ModelVersion) -> dict:
    """The context a classifier method declared it needs (MethodSpec.needs), fulfilled here:
    ``shadow_references`` hands over the lineage's shadow models as ``references``."""
    context = {}
    if "shadow_references" in spec.needs:
        from workers.runners.shadow import shadow_references

        context["references"] = shadow_references(version=source)
    return context


def _unlearn_language_model(*, job: Job, source: ModelVersion, trained, spec: MethodSpec, method, data,
                            forget_keys: set[str], store, device: str, progress, phase, held_out_from,
                            erased_people_keys: set[str]):
    """A method for language models on a language model: one of kind LANGUAGE_MODEL (gradient
    ascent, GradDiff, NPO) on LM batches of the forget and retain texts (a new model), or one of
    kind GUARD (the verifier guard: the same weights behind a calibrated guard). Stores the new
    artifact; returns ``(ref, result)``."""
    from workers.training.base import TrainingRun
    from workers.training.lm import record_texts, save_guarded_run
    from workers.training.storage import save_run
    from workers.unlearning.lm.data import lm_batches

    texts = dict(record_texts(data))
    members = [row.record_key for row in trained.membership]
    forget = [(key, texts[key]) for key in sorted(forget_keys & set(members))]
    if not forget:
        raise ValueError(f"none of the {len(forget_keys)} records to forget is in {source}'s training set")
    kept = [row for row in trained.membership if row.record_key not in forget_keys]
    tokenizer = trained.tokenizer
    if spec.kind == GUARD:
        guard, result = _guard_language_model(job=job, trained=trained, method=method, forget=forget,
                                              device=device, phase=phase)
        progress("storing the guarded version", 0.9)
        ref = save_guarded_run(store, parent_id=source.artifact_sha256, membership=kept, guard=guard,
                               extra={"unlearning": jsonable(result.to_dict())})
        return ref, result
    from workers.training.transformers_models import model_positions

    # Never more tokens than the model has positions (a model brought from outside may have few).
    max_length = min(method.config.max_length, model_positions(trained.model.config) or method.config.max_length)
    retain = [(row.record_key, texts[row.record_key]) for row in kept if row.record_key in texts]
    forget_batches = lm_batches(tokenizer, forget, max_length=max_length, batch_size=LM_BATCH)
    retain_batches = lm_batches(tokenizer, retain, max_length=max_length, batch_size=LM_BATCH) if retain else []
    held_out = _held_out_texts(held_out_from, exclude=set(members) | erased_people_keys, seed=method.config.seed)
    new_model, result = method.unlearn(trained.model, forget_batches, retain_batches, device=device, progress=phase,
                                       held_out=lm_batches(tokenizer, held_out, max_length=max_length,
                                                           batch_size=LM_BATCH) if held_out else [])
    new_run = TrainingRun(trained.recipe, trained.config, new_model.cpu(), kept, trained.metrics, tokenizer=tokenizer)
    progress("storing the new version", 0.9)
    ref = save_run(store, new_run, parent=source.artifact_sha256, extra={"unlearning": jsonable(result.to_dict())})
    return ref, result


HELD_OUT_FOR_STOP = 32


def _keys_of_the_same_people(records: list[DataRecord]) -> set[str]:
    """Keys of every record of the people whose records are being forgotten (a held-out record of
    theirs is their data too: it is not used as a reference)."""
    subjects = {r.subject_id for r in records if r.subject_id is not None}
    return set(DataRecord.objects.filter(subject_id__in=subjects, dataset_id__in={r.dataset_id for r in records})
               .values_list("external_key", flat=True))


def _held_out_texts(dataset, *, exclude: set[str], seed: int) -> list[tuple[str, str]]:
    """Up to HELD_OUT_FOR_STOP texts of the dataset's held-out split that the model never saw:
    their NLL is where a model retrained without the forgotten texts would put them, so LM
    methods stop there (see LMUnlearningConfig.stop_at_held_out). None without a held-out split."""
    import random

    from workers.data_sources import dataset_split
    from workers.training.lm import record_texts

    if not DataRecord.objects.filter(dataset=dataset, split="test").exists():
        return []
    texts = sorted((k, t) for k, t in record_texts(dataset_split(dataset, "test")) if k not in exclude)
    return random.Random(seed).sample(texts, min(HELD_OUT_FOR_STOP, len(texts)))


def _guard_language_model(*, job: Job, trained, method, forget: list[tuple[str, str]], device: str, phase):
    """Calibrate the verifier guard on extraction prompts drawn from the forgotten texts, with
    the facts in them (identifiers, numbers) as the oracle's leak labels; the n-gram hashing key
    is kept in the keystore, not in the artifact. Returns ``(StoredGuard, result)``."""
    from workers.unlearning.guard.calibration import minimum_calibration_size
    from workers.unlearning.guard.storage import StoredGuard
    from workers.unlearning.lm.probes import extraction_prompts, fact_spans

    cfg = method.config
    texts = [text for _, text in forget]
    count = cfg.calibration_prompts or 2 * minimum_calibration_size(cfg.alpha, cfg.delta)
    tokenizer = trained.tokenizer
    window = int(trained.config.get("max_length", 256)) - cfg.max_new_tokens
    prompts = extraction_prompts(texts, count, seed=cfg.seed,
                                 fits=lambda prompt: len(tokenizer(prompt)["input_ids"]) <= window)
    facts = [span.text for text in texts for span in fact_spans(text)] or texts
    # One key per job: a redelivered job finds the same key and stores the same guard.
    key_ref = f"guard:job:{job.id}"
    key = keystore().data_key(key_ref, create=True)[:GUARD_KEY_BYTES]
    from workers.unlearning.guard.method import GuardNotCertified

    model = trained.model.to(device)
    try:
        guarded, result = method.unlearn(model, forget, [], device=device, progress=phase,
                                         tokenizer=trained.tokenizer, calibration_prompts=prompts,
                                         forget_facts=facts, verifier_key=key)
    except GuardNotCertified as exc:
        keystore().destroy(key_ref)  # nothing is stored under it
        raise GuaranteeNotMet(f"the verifier guard could not certify a leak rate of at most {cfg.alpha}: {exc}",
                              details={"calibration": exc.calibration.to_dict(), "prompts": count}) from exc
    finally:
        trained.model.to("cpu")
    generation = {name: getattr(cfg, name) for name in ("max_new_tokens", "temperature", "top_p",
                                                          "use_chat_template")}
    stored = StoredGuard.from_guarded(guarded, key_ref=key_ref, generation=generation, seed=cfg.seed)
    result.details["calibration_prompts"] = {
        "count": count, "kind": "prefixes of the forgotten records, cut at a word boundary before a fact and "
                                "short enough for an answer within the model's training window, drawn "
                                "uniformly with replacement"}
    result.details["facts_checked"] = len(facts)
    return stored, result


def lineage_blocker(job: Job) -> str:
    """Why ``job`` must wait, or "" when it may run. Unlearning jobs on one model run one after
    another, each on the result of the one before (see models_registry.selectors.current_source):
    a job waits while an earlier unlearning job on the same model is pending or running. The apps
    above add their own reasons through workers.jobs.JOB_GATES (the request workflow: while the
    version it would build on is being audited or has failed its audit)."""
    earlier = (Job.objects.filter(kind="unlearn", registered_model=job.registered_model, id__lt=job.id,
                                  status__in=[JobStatus.PENDING, JobStatus.RUNNING]).order_by("id").first())
    if earlier is not None:
        return f"unlearning job {earlier.id} on the same model runs first"
    return job_gate_reason(job)
