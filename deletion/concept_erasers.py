"""Concept erasers in a person's request: what the plan does with a version that carries one.

A concept request (deletion.concept_requests) stores an eraser with a new version (workers.runners.concept).
The eraser is derived from records: LEACE's means and whitening, the PEF coupling's centroids and cell shares
are computed from the representations of the labelled fitting records, whose lineage rows
(models_registry.models.ConceptFitRecord) let scoping find the eraser as a copy of their data. So, for a
version whose unlearning source carries an eraser:

- an approximate method is refused when it would keep an eraser fitted on the erased records (it changes
  the weights around the eraser, which stays derived from them), and always for a class-conditional
  (pef_coupling) eraser, which needs each input's attribute at inference: the method, its shadow models
  and the membership audit would run the model without it and fail (AttributeNeeded). The plan falls back
  to the exact path (retrain, or the recipe's exact method), which computes a new model from the kept
  records and does not carry the eraser over; records the version holds only through its eraser (never
  trained on, e.g. a labelled test record) get ``eraser_drop``, which takes the eraser off and keeps the weights;
- the plan step says so (``concept_eraser``): the new version no longer erases the attribute. The platform
  does not refit the eraser inside a person's request, because a refit is a concept erasure of its own (class
  ``concept_erased``, audited by the concept probe, reported as no one's erasure): the DPO files a concept
  request on the new version with the same labels less the erased records (the fitting split is per key,
  workers.concept_layers.fitting_split, so the other records keep their side of it).
"""

from __future__ import annotations

from dataclasses import dataclass

from models_registry.models import ConceptFitRecord, DataRecord, ModelVersion
from models_registry.selectors import AffectedVersion, current_source
from workers.concept_layers import fitting_split
from workers.models import Job
from workers.unlearning.catalogue import CONCEPT, METHOD_SPECS

# The exact method for records a version holds only through its eraser (workers.unlearning.exact.eraser_drop).
ERASER_DROP = "eraser_drop"


@dataclass(frozen=True)
class CarriedEraser:
    """The concept eraser a version serves: the version the concept job made (``made_by``), its method and
    attribute, whether it needs the attribute at inference, and the ids of the records it was fitted on."""

    made_by: ModelVersion
    method: str
    attribute: str
    class_conditional: bool
    fit_record_ids: frozenset[int]

    def describe(self) -> str:
        """``"the pef_coupling eraser of 'digit parity' (made by digits-mlp v2)"``."""
        return f"the {self.method} eraser of {self.attribute!r} (made by {self.made_by})"


def carried_eraser(version: ModelVersion) -> CarriedEraser | None:
    """The concept eraser that the version an unlearning job of ``version`` starts from
    (models_registry.selectors.current_source) serves, or None (:func:`eraser_served_by`)."""
    return eraser_served_by(current_source(version))


def eraser_served_by(version: ModelVersion) -> CarriedEraser | None:
    """The concept eraser ``version`` itself serves, or None: walks up its unlearning chain to the
    concept job that made the eraser; a version computed from scratch or re-derived on the way
    (retrain, redistill, ...) carries none."""
    current = version
    while current is not None:
        job = Job.objects.filter(result_version=current).only("method", "config").first()
        spec = METHOD_SPECS.get(job.method) if job is not None and job.method in METHOD_SPECS else None
        if spec is not None and spec.kind == CONCEPT:
            return CarriedEraser(made_by=current, method=job.method,
                                 attribute=str((job.config.get("concept") or {}).get("attribute", "")),
                                 class_conditional=spec.beyond_linear_probes,
                                 fit_record_ids=_fit_record_ids(current, job))
        if spec is not None and (spec.from_scratch or spec.rederives or job.method == ERASER_DROP):
            return None
        current = current.parent
    return None


def _fit_record_ids(version: ModelVersion, job: Job) -> frozenset[int]:
    """The records ``version``'s eraser was fitted on: its lineage rows, or (a version made before they were
    recorded) the fitting share of its concept job's labels."""
    recorded = frozenset(ConceptFitRecord.objects.filter(version=version).values_list("record_id", flat=True))
    if recorded:
        return recorded
    concept = job.config.get("concept") or {}
    fit, _ = fitting_split(concept.get("labels") or {}, seed=concept.get("seed", 0),
                           fit_share=concept.get("fit_share", 0.5))
    return frozenset(DataRecord.objects.filter(dataset_id=concept.get("dataset_id"), external_key__in=fit)
                     .values_list("id", flat=True))


def held_only_by_eraser(affected: AffectedVersion) -> bool:
    """Whether scoping found every record of ``affected`` only through its concept eraser's lineage (the
    weights were never trained on them): its plan is :data:`ERASER_DROP`, not a retrain with nothing to forget."""
    return bool(affected.placements) and all(p.via == "concept_eraser" for p in affected.placements)


def eraser_refusal(eraser: CarriedEraser | None, *, method: str, record_ids: list[int] | None) -> str | None:
    """Why the approximate ``method`` may not unlearn ``record_ids`` from a version serving ``eraser``, or
    None: a class-conditional eraser needs the attribute the method would run the model without; any
    other eraser fitted on some of the records would stay derived from them."""
    if eraser is None:
        return None
    if eraser.class_conditional:
        return (f"the model serves {eraser.describe()}, which needs each input's attribute at inference: "
                f"{method!r}, its shadow models and the membership audit would run it without the attribute "
                "and fail; an exact method computes a new model instead (without the eraser)")
    fitted = len(eraser.fit_record_ids & set(record_ids or ()))
    if fitted:
        return (f"the model serves {eraser.describe()}, fitted on {fitted} of these records; {method!r} changes "
                "the weights and keeps the eraser, which would stay derived from them")
    return None


def eraser_lost_on_the_chain(versions: list[ModelVersion], *, record_ids: list[int]) -> dict | None:
    """The plan step's note where the version its job starts from (``current_source`` of ``versions[0]``, the
    step's version; the others are those the step covers) carries no eraser (the caller found
    :func:`carried_eraser` None) but one of ``versions`` serves one: an earlier unlearning job computed the
    newer version of the chain without it (a retrain, not yet audited or deployed), so whatever method runs,
    the new version will not erase the attribute either. None where no version of the step serves one."""
    source = current_source(versions[0])
    served = next(filter(None, (eraser_served_by(v) for v in versions if v.id != source.id)), None)
    if served is None:
        return None
    made = Job.objects.filter(result_version=source).only("method").first()
    by = f"an earlier {made.method} computed without it" if made is not None else "it was computed without it"
    fitted = len(served.fit_record_ids & set(record_ids))
    summary = (f"{served.made_by} serves {served.describe()}, fitted on {fitted} of the erased records, but this "
               f"step's job starts from {source}, the chain's newest version ({by}, not yet deployed): whichever "
               f"method runs, the new version will not erase {served.attribute!r}. It is not refitted here: a refit "
               "is a concept erasure of its own; to erase the attribute again, file a concept request on the new "
               "version with the same labels less the erased records.")
    return {**_eraser_note(served, fitted=fitted, kept=False, summary=summary), "lost_before": str(source)}


def _eraser_note(eraser: CarriedEraser, *, fitted: int, kept: bool, summary: str) -> dict:
    """A plan step's ``concept_eraser`` entry: the eraser, how many erased records it was fitted on, its fate."""
    return {"made_by_version_id": eraser.made_by.id, "made_by": str(eraser.made_by), "method": eraser.method,
            "attribute": eraser.attribute, "needs_attribute_at_inference": eraser.class_conditional,
            "fitted_on_erased_records": fitted, "kept": kept, "summary": summary}


def concept_eraser_plan(eraser: CarriedEraser | None, *, method: str, record_ids: list[int]) -> dict | None:
    """What a person's plan step says of ``eraser``, the concept eraser its version's unlearning source
    serves (:func:`carried_eraser`; None when it serves none): the eraser, how many of the erased records it
    was fitted on, and what ``method`` does with it (``kept`` True only for a method that changes the
    weights around it)."""
    if eraser is None:
        return None
    spec = METHOD_SPECS.get(method) if method in METHOD_SPECS else None
    # Approximate methods change the weights around the eraser; dp_bounded changes nothing.
    kept = method == "dp_bounded" or (spec is not None and spec.task is not None)
    fitted = len(eraser.fit_record_ids & set(record_ids))
    what = f"The {eraser.method} eraser of {eraser.attribute!r} (made by {eraser.made_by}) was fitted on {fitted} of " \
           "the erased records"
    if kept:
        summary = f"{what} and stays in the version{'; it is still derived from them' if fitted else ''}."
    else:
        summary = (f"{what}. {method} computes the new version without it, so the new version no longer erases "
                   f"{eraser.attribute!r}. It is not refitted here: a refit is a concept erasure of its own, "
                   "audited by the concept probe and reported as no one's erasure; to erase the attribute again, "
                   "file a concept request on the new version with the same labels less the erased records.")
    return _eraser_note(eraser, fitted=fitted, kept=kept, summary=summary)
