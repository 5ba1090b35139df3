"""Unlearning jobs on derived models (distilled or fine-tuned children): the child is re-derived,
with its own recipe and configuration, from its parent's unlearned version (redistill, refinetune).

The forget set comes from the lineage: the request's records the child trained on itself (a
transfer set or fine-tuning data that held them) and those it holds through its parent. The first
are left out of its records; the second are gone once the parent's new version is the one it is
derived from. The job waits (a start gate the request workflow registers) until the parent's
outcome has its new version and that version's audit passed or the DPO decided; here it takes the
parent's newest unlearned version (``current_source``) and checks that it holds none of the
records. A parent that still holds them (withdrawn, on legal hold, not unlearned) leaves nothing
to re-derive from: the job ends GuaranteeNotMet, and the DPO withdraws the child or accepts the
risk (an escalation to a retrain cannot help: the child's recipe needs a parent).

The class is the method's (exact) capped at the new parent's where the child held some records
through it: a child of an approximately unlearned parent is approximate at most.
"""

from __future__ import annotations

import dataclasses

from django.db import transaction

from foundation.strict_json import jsonable
from models_registry import selectors
from models_registry import services as registry
from models_registry.models import DataRecord, ModelVersion, VersionStatus
from workers.jobs import GuaranteeNotMet
from workers.models import Job
from workers.runners.storage import artifact_store, stored_artifacts_register
from workers.unlearning.catalogue import METHOD_SPECS, weakest_guarantee


def derived_parent_edge(version: ModelVersion, kind: str):
    """The lineage edge of ``kind`` from which ``version`` (or the trained version at the top of
    its unlearning chain) was derived; None when it has none."""
    for candidate in (version, selectors.lineage_root(version)):
        edge = candidate.upstream_edges.filter(kind=kind).select_related("parent").order_by("id").first()
        if edge is not None:
            return edge
    return None


def run_rederive_job(job: Job, source: ModelVersion, progress) -> dict:
    """Re-derive ``source`` (the child's version to unlearn from) from its parent's unlearned
    version; returns the job's result like run_unlearning_job (the new version is recorded with a
    lineage edge to that parent version)."""
    from workers.data_sources import dataset_split
    from workers.training.device import select_device
    from workers.training.membership import MembershipRow
    from workers.training.storage import load_run, save_run
    from workers.unlearning.base import METHODS

    spec = METHOD_SPECS.get(job.method)
    edge = derived_parent_edge(source, spec.rederives)
    if edge is None:
        raise ValueError(f"{source} has no {spec.rederives} lineage edge: {spec.name!r} re-derives a child from its "
                         "parent")
    teacher = selectors.current_source(edge.parent)
    through_parent = _records_held_by(edge.parent, job.forget_record_ids)
    refusal = _parent_refusal(edge.parent, teacher, job.forget_record_ids)
    if refusal:
        raise GuaranteeNotMet(refusal, details={"parent_version": edge.parent_id, "teacher_version": teacher.id})
    guarantee = spec.guarantee_class
    if through_parent:  # the child held these through its parent: it forgets them as well as the parent did
        guarantee = weakest_guarantee(spec.guarantee_class, teacher.guarantee_class or spec.guarantee_class)
    store = artifact_store()
    progress("loading the child and its parent's new version", 0.02)
    trained = load_run(store, source.artifact_sha256)
    parent_run = load_run(store, teacher.artifact_sha256)
    registry_membership = [MembershipRow(*row) for row in selectors.version_membership(version=source)]
    member_keys = {row.record_key for row in registry_membership}
    dataset = source.training_run.datasets.get()
    forget_keys = set(DataRecord.objects.filter(id__in=job.forget_record_ids, dataset=dataset)
                      .values_list("external_key", flat=True))
    # The split the child was trained on (a transfer set need not be the parent's training split).
    split = (DataRecord.objects.filter(dataset=dataset, external_key__in=sorted(member_keys)[:1])
             .values_list("split", flat=True).first() or "train")
    data = dataset_split(dataset, split)
    forget = data.subset(sorted(forget_keys & member_keys))
    retain = data.subset(sorted(member_keys - forget_keys))
    device = str(select_device())
    method = METHODS.get(job.method)(job.config or None)
    parent_ref = {"version_id": teacher.id, "artifact_sha256": teacher.artifact_sha256}
    new_run, result = method.unlearn(trained, forget, retain, device=device, progress=progress.scaled(5, 80),
                                     parent_model=parent_run.model, parent=parent_ref, membership=registry_membership)
    result = dataclasses.replace(result, guarantee_class=guarantee, details={
        **result.details, "derived_from": {"kind": edge.kind, "version_id": edge.parent_id, "model": edge.parent.model.name,
                                           "version": edge.parent.version},
        "parent_new_version": {"version_id": teacher.id, "version": teacher.version,
                               "guarantee_class": teacher.guarantee_class},
        "records_held_through_parent": len(through_parent), "records_held_directly": len(forget),
        "class_cap": guarantee})
    progress("storing the new version", 0.9)
    ref = save_run(store, new_run, parent=source.artifact_sha256, extra={"unlearning": jsonable(result.to_dict())})
    with transaction.atomic():
        locked = Job.objects.select_for_update().get(pk=job.pk)
        if locked.result_version_id:
            return {"skipped": "result already recorded", "version": locked.result_version_id}
        version = registry.model_version_create(
            model=source.model, artifact_sha256=ref.artifact_id, training_run=source.training_run, parent=source,
            status=VersionStatus.RETAINED, guarantee_class=guarantee, excluded_record_ids=job.forget_record_ids)
        stored_artifacts_register(store=store, top_id=ref.artifact_id, run=source.training_run, version=version)
        registry.model_lineage_edge_add(parent=teacher, child=version, kind=edge.kind)
        Job.objects.filter(pk=job.pk).update(result_version=version)
    return {"device": device, "artifact": ref.artifact_id, "version": version.id, "guarantee_class": guarantee,
            "unlearning": jsonable(result.to_dict())}


def _records_held_by(version: ModelVersion, record_ids: list[int]) -> list[int]:
    """Which of ``record_ids`` ``version`` held (trained on, or through its own parents), whatever
    its status now (the parent's old version is purged once its audit passed)."""
    for held in selectors.records_scope(record_ids=record_ids).all_versions:
        if held.version_id == version.id:
            return held.record_ids
    return []


def _parent_refusal(parent: ModelVersion, teacher: ModelVersion, record_ids: list[int]) -> str:
    """Why ``teacher`` (the parent's newest unlearned version) cannot be re-derived from, or ""."""
    if teacher.status in (VersionStatus.PURGED, VersionStatus.WITHDRAWN):
        return (f"the parent {parent.model.name} v{parent.version} was {teacher.status}: there is no unlearned parent "
                "to re-derive the child from; withdraw the child (or accept the risk)")
    if teacher.guarantee_class == "suppressed":
        return (f"the parent's new version {teacher.model.name} v{teacher.version} is suppressed (its weights still "
                "hold the records): a child derived from it would learn them again")
    still = _records_held_by(teacher, record_ids)
    if still:
        return (f"the parent {teacher.model.name} v{teacher.version} still holds {len(still)} of the records (not "
                "unlearned, or on legal hold): a child re-derived from it would learn them again; withdraw the child "
                "or accept the risk")
    return ""
