"""Concept requests: "stop using attribute X" on named models, filed by a DPO or a client's API.

A concept request names no data subject and no record to erase. It names the models (a version, or
the one serving) and the attribute, given as one integer label per record of the models' training
dataset (``labels``: record key -> value; any split; see workers.concept_layers for why labels come
with the request). It is planned at once: for every model the only methods that apply are the
concept-erasure methods of the catalogue (kind ``concept``), class ``concept_erased``, which never counts
as anyone's erasure: LEACE by default, whose guarantee holds against linear probes only, or, asked for by
``method``, the PEF-style coupling (``pef_coupling``), whose guarantee holds against non-linear probes
too but whose served model needs the attribute of every input at inference. Approved like
any request (deletion.decisions), each model gets an unlearning job that fits the eraser on a share of
the labelled records and stores it with a new version (workers.runners.concept); the audit's concept
probe measures a linear probe on the other records (it decides) and an MLP probe beside it; the
signed report says it is a concept erasure, not the erasure of anyone's data.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from deletion.concept_erasers import carried_eraser
from deletion.deadlines import due_date
from deletion.intake import _body_fingerprint, _same_body_or_conflict
from deletion.models import DeletionRequest, LegalGround, ModelOutcome, RequestKind
from deletion.planning import (
    _recipe_of,
    estimated_cost,
    method_card,
    one_job_per_chain,
    plan_model_kind,
    utility_bar_plan,
)
from deletion.transitions import S, actor_name, transition
from foundation.access.models import ApiToken
from foundation.errors import ValidationFailed
from foundation.ledger.services import ledger_append
from models_registry.models import (
    DataRecord,
    Dataset,
    ModelVersion,
    RecordStatus,
    RegisteredModel,
    VersionStatus,
)
from workers.concept_layers import (
    DEFAULT_FIT_SHARE,
    RECORDED_MODULE_NAMES,
    concept_erasure_refusal,
    default_representation_layer,
    fitting_split,
    label_counts,
    labels_problem,
    layer_problem,
)
from workers.models import Job
from workers.unlearning.catalogue import (
    CONCEPT,
    LINEAR_PROBES_ONLY,
    METHOD_SPECS,
    concept_not_a_persons_erasure,
)

CONCEPT_CLASS = "concept_erased"
DEFAULT_CONCEPT_METHOD = "leace"
# What LEACE's guarantee holds against, as the plan and the API say it (the catalogue's words).
HOLDS_AGAINST = LINEAR_PROBES_ONLY
_UNKNOWN_SHOWN = 10


def concept_methods() -> list[str]:
    """The catalogue's methods of kind ``concept`` (the only ones a concept request plans)."""
    return [name for name in METHOD_SPECS if METHOD_SPECS.get(name).kind == CONCEPT]


def concept_method_of(concept: dict[str, Any]) -> str:
    """The concept method a request asked for (requests filed before the choice existed: LEACE)."""
    return str(concept.get("method") or DEFAULT_CONCEPT_METHOD)


def holds_against(method: str) -> str:
    """What ``method``'s guarantee holds against, as the catalogue declares it."""
    return METHOD_SPECS.get(method).holds_against


def not_a_persons_erasure(method: str) -> str:
    """Why a concept erasure by ``method`` never counts as a person's erasure, naming what its guarantee
    holds against (the catalogue's sentence for the class names LEACE's linear probes)."""
    return concept_not_a_persons_erasure(holds_against(method))


def beyond_linear_probes(method: str) -> bool:
    """Whether ``method`` promises more than LEACE (its non-linear probe decides too; MethodSpec.beyond_linear_probes)."""
    return METHOD_SPECS.get(method).beyond_linear_probes


def _family_name(architecture: dict | None) -> str | None:
    from workers.model_families.base import family_of

    try:
        return family_of(architecture).name if architecture else None
    except ValueError:
        return None


def _dataset(label: str) -> Dataset:
    name, _, version = label.partition("@")
    found = Dataset.objects.filter(name=name, version=version or "1").first()
    if found is None:
        raise ValidationFailed(f"unknown dataset {label!r} (name@version)", field="dataset")
    return found


def _labelled_records(dataset: Dataset, labels: dict[str, int]) -> None:
    """Every labelled key must be an active record of ``dataset`` (not a canary, not erased)."""
    known = set(DataRecord.objects.filter(dataset=dataset, external_key__in=list(labels), canary=False,
                                          status=RecordStatus.ACTIVE).values_list("external_key", flat=True))
    unknown = sorted(set(labels) - known)
    if unknown:
        shown = ", ".join(unknown[:_UNKNOWN_SHOWN]) + (" ..." if len(unknown) > _UNKNOWN_SHOWN else "")
        raise ValidationFailed(f"{len(unknown)} labelled record key(s) are no active record of dataset "
                               f"{dataset.name}@{dataset.version}: {shown}", field="labels", code="unknown_records")


def _version_of(index: int, item: dict[str, Any]) -> ModelVersion:
    """The version a request's ``models[index]`` names: its ``version``, or the one serving, or the newest
    kept one."""
    model = RegisteredModel.objects.filter(name=item["model"]).first()
    if model is None:
        raise ValidationFailed(f"unknown model {item['model']!r}", field=f"models[{index}].model")
    versions = ModelVersion.objects.select_related("model").filter(model=model)
    if item.get("version") is not None:
        version = versions.filter(version=item["version"]).first()
        if version is None:
            raise ValidationFailed(f"model {model.name} has no version {item['version']}",
                                   field=f"models[{index}].version")
    else:
        version = (versions.filter(status=VersionStatus.SERVING).order_by("-version").first()
                   or versions.filter(status=VersionStatus.RETAINED).order_by("-version").first())
        if version is None:
            raise ValidationFailed(f"model {model.name} has no serving or retained version",
                                   field=f"models[{index}].model")
    if version.status in (VersionStatus.PURGED, VersionStatus.WITHDRAWN):
        raise ValidationFailed(f"{version} is {version.status}: there is nothing to erase an attribute from",
                               field=f"models[{index}].version")
    return version


def concept_targets(body: dict[str, Any], dataset: Dataset) -> list[dict[str, Any]]:
    """The model versions a concept request names, each with the layer to erase, checked: a known
    model and version, trained on ``dataset``, with representations the platform can erase and store
    (workers.concept_layers.concept_erasure_refusal; 400 ``no_representations`` otherwise)."""
    targets, seen = [], set()
    for index, item in enumerate(body["models"]):
        version = _version_of(index, item)
        if version.id in seen:
            raise ValidationFailed(f"{version} is named twice", field=f"models[{index}]")
        seen.add(version.id)
        # The job starts from the version's current source; a class-conditional eraser there would run
        # without its attribute while the new eraser is fitted, so the worker refuses it: refuse it here.
        eraser = carried_eraser(version)
        if eraser is not None and eraser.class_conditional:
            raise ValidationFailed(f"{version} already serves {eraser.describe()}, which needs each input's "
                                   "attribute at inference: a model takes no further concept erasure on top of a "
                                   "class-conditional eraser; erase every attribute in one eraser from a version "
                                   "without one", field=f"models[{index}]", code="class_conditional_eraser")
        model, layer = version.model, item.get("layer") or ""
        refusal = concept_erasure_refusal(task=model.task, recipe=_recipe_of(version),
                                          architecture=model.architecture, family=_family_name(model.architecture),
                                          layer=layer)
        if refusal:
            raise ValidationFailed(f"{version} cannot take a concept erasure: {refusal}", field=f"models[{index}]",
                                   code="no_representations")
        # A layer the model does not have, caught here from the stored architecture where the
        # platform knows its modules, or from the names its upload check recorded (a company's
        # module); else the worker's get_submodule refuses it, as it does an output that is not
        # [batch, features] (known only by running the model).
        unknown_layer = layer_problem(model.architecture, layer, _recorded_module_names(version) if layer else None)
        if unknown_layer:
            raise ValidationFailed(f"{version}: {unknown_layer}", field=f"models[{index}].layer", code="unknown_layer")
        if version.training_run is None or not version.training_run.datasets.filter(pk=dataset.pk).exists():
            raise ValidationFailed(f"{version} was not trained on dataset {dataset.name}@{dataset.version}: its "
                                   "representations of the labelled records are not what it serves",
                                   field=f"models[{index}]", code="dataset_mismatch")
        targets.append({"version": version, "layer": layer or default_representation_layer(model.architecture)})
    # Each job starts from its version's current source: two versions on one unlearning chain would both be
    # erased from its newest version, the second on top of the first's eraser.
    for kept, covered in one_job_per_chain([t["version"] for t in targets]).items():
        if covered:
            head = next(t["version"] for t in targets if t["version"].id == kept)
            others = ", ".join(str(v) for v in covered)
            raise ValidationFailed(f"{others} and {head} are on one unlearning chain: a concept job starts from the "
                                   f"chain's newest version, so name only {head}", field="models", code="same_chain")
    return targets


def _recorded_module_names(version: ModelVersion) -> dict[str, Any] | None:
    """The module names the upload check recorded for ``version`` or, for a version made from one
    (an unlearning, a concept erasure, an external retrain), for the nearest version above it that
    has them (the same modules); None when none did (uploaded before checks recorded them)."""
    while version is not None:
        recorded = (version.metrics or {}).get(RECORDED_MODULE_NAMES)
        if recorded:
            return recorded
        version = version.parent
    return None


def concept_plan(*, concept: dict[str, Any], targets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One plan step per model: the concept method the request asked for, its class, what the guarantee
    holds against (and, for a class-conditional method, that serving needs the attribute), the layer,
    how many labelled records fit the eraser and how many the probes use. No alternatives: the method is
    the request's (its report speaks of that method's guarantee). No record is erased: ``records`` 0,
    ``record_ids`` []."""
    method = concept_method_of(concept)
    holds = holds_against(method)
    probes = ("a linear and an MLP probe are measured on the other {probe} (both decide)" if beyond_linear_probes(method)
              else "a linear probe is measured on the other {probe} (it decides; an MLP probe is shown beside it)")
    needs = (" Serving the new version needs the attribute of every input at inference: the eraser is "
             "class-conditional and refuses inputs without it." if beyond_linear_probes(method) else "")
    labels = concept["labels"]
    fit, probe = fitting_split(labels, seed=concept["seed"], fit_share=concept["fit_share"])
    plan = []
    for target in sorted(targets, key=lambda t: (t["version"].model.name, t["version"].version)):
        version = target["version"]
        plan.append({
            "model_version_id": version.id, "model": version.model.name, "version": version.version,
            "status": version.status, "method": method, "guarantee_class": CONCEPT_CLASS,
            "method_info": method_card(method), "holds_against": holds,
            "policy_method_refused": None, "records": 0, "record_ids": [],
            "estimated_seconds": estimated_cost(model_id=version.model_id, method=method),
            "audit_cannot_confirm": not_a_persons_erasure(method),
            "equivalence_test": None, "replay": None, "kept_data": None, "dp_bound": None,
            # What the erasure may cost the model's own task (the concept audit measures it; it only warns).
            "utility_bar": utility_bar_plan(version=version, model_kind=plan_model_kind(version)),
            "alternatives": [], "not_offered": {},
            "method_config": {"layer": target["layer"], "seed": concept["seed"]},
            "concept": {
                "attribute": concept["attribute"], "dataset": concept["dataset"], "layer": target["layer"],
                "labelled_records": len(labels), "values": {str(v): n for v, n in label_counts(labels).items()},
                "fit_records": len(fit), "probe_records": len(probe),
                "needs_attribute_at_inference": beyond_linear_probes(method),
                "summary": (f"Concept erasure of {concept['attribute']!r} from layer {target['layer']!r} of "
                            f"{version}: {method} is fitted on {len(fit)} of the {len(labels)} labelled records and "
                            + probes.format(probe=len(probe)) + f". The guarantee holds against {holds}.{needs} No "
                            "record is erased: this is not the erasure of anyone's data."),
            },
        })
    return plan


def concept_job_config(*, request: DeletionRequest, step: dict[str, Any]) -> dict[str, Any]:
    """The unlearning job's config for a concept step: the method's own config and ``concept`` (the
    attribute's labels, the seed and share that split them), which the runner and the audit read."""
    concept = request.concept
    return {**step["method_config"], "concept": {
        "attribute": concept["attribute"], "dataset_id": concept["dataset_id"], "labels": concept["labels"],
        "seed": concept["seed"], "fit_share": concept["fit_share"]}}


def concept_request_create(*, client, body: dict[str, Any], idempotency_key: str = "") -> tuple[DeletionRequest, bool]:
    """Take in a concept request and plan it: returns ``(request, created)``; the request is SCOPED
    with one step per model (nothing to verify: it names no person). The same Idempotency-Key with
    the same body returns the original, with another body it is a Conflict. Bad input raises
    ValidationFailed naming the field (an unknown dataset, model or record key, an attribute with one
    value or too few records per value, a model without representations the platform can erase)."""
    created_by = client if isinstance(client, ApiToken) else None
    fingerprint = _body_fingerprint(body)
    if idempotency_key:
        existing = DeletionRequest.objects.filter(created_by=created_by, idempotency_key=idempotency_key).first()
        if existing is not None:
            return _same_body_or_conflict(existing, fingerprint), False
    dataset = _dataset(body["dataset"])
    labels = {str(key): int(value) for key, value in body["labels"].items()}
    seed, fit_share = int(body.get("seed", 0)), DEFAULT_FIT_SHARE
    problem = labels_problem(labels, seed=seed, fit_share=fit_share)
    if problem:
        raise ValidationFailed(problem, field="labels", code="attribute_not_erasable")
    _labelled_records(dataset, labels)
    targets = concept_targets(body, dataset)
    method = str(body.get("method") or DEFAULT_CONCEPT_METHOD)
    if method not in concept_methods():
        raise ValidationFailed(f"unknown concept method {method!r}; known: {', '.join(concept_methods())}",
                               field="method")
    concept = {"attribute": body["attribute"], "dataset_id": dataset.id, "dataset": f"{dataset.name}@{dataset.version}",
               "method": method,
               "labels": labels, "seed": seed, "fit_share": fit_share, "reason": body.get("reason", ""),
               "models": [{"model_version_id": t["version"].id, "layer": t["layer"]} for t in targets]}
    now = timezone.now()
    try:
        with transaction.atomic():
            request = DeletionRequest.objects.create(
                public_id=uuid.uuid4(), kind=RequestKind.CONCEPT, concept=concept, jurisdiction=body["jurisdiction"],
                legal_ground=LegalGround.CONCEPT_ERASURE, channel=body["channel"], created_by=created_by,
                idempotency_key=idempotency_key, body_fingerprint=fingerprint, received_at=now,
                due_at=due_date(jurisdiction=body["jurisdiction"], received_at=now))
            ledger_append(
                event_type="request.received", actor=actor_name(client), request=str(request.public_id),
                kind=RequestKind.CONCEPT.value, attribute=concept["attribute"], dataset=concept["dataset"],
                labelled_records=len(labels), models=[str(t["version"]) for t in targets],
                jurisdiction=request.jurisdiction, channel=request.channel, due_at=request.due_at.isoformat())
            plan = concept_plan(concept=concept, targets=targets)
            request = transition(request, (S.RECEIVED,), S.SCOPED, actor=actor_name(client), event="request.scoped",
                                 scope={"records": 0, "records_by_dataset": {},
                                        "model_versions": [{"id": p["model_version_id"], "model": p["model"],
                                                            "version": p["version"]} for p in plan],
                                        "artifacts": [], "empty": False, "concept": True},
                                 plan=plan)
    except IntegrityError:  # the same key, filed at the same moment by a second call
        existing = DeletionRequest.objects.filter(created_by=created_by, idempotency_key=idempotency_key).first()
        if not idempotency_key or existing is None:
            raise
        return _same_body_or_conflict(existing, fingerprint), False
    request._prefetched_objects_cache = {"outcomes": ModelOutcome.objects.none()}
    return request, True


def concept_entry(request: DeletionRequest) -> dict[str, Any] | None:
    """What the API shows of a concept request's attribute (never the labels): None for an erasure request."""
    if request.kind != RequestKind.CONCEPT:
        return None
    concept = request.concept or {}
    return {"attribute": concept.get("attribute"), "dataset": concept.get("dataset"),
            "labelled_records": len(concept.get("labels") or {}),
            "values": {str(v): n for v, n in label_counts(concept.get("labels") or {}).items()},
            "models": concept.get("models", []), "reason": concept.get("reason", ""),
            "method": concept_method_of(concept), "holds_against": holds_against(concept_method_of(concept)),
            "not_a_persons_erasure": not_a_persons_erasure(concept_method_of(concept))}


def concept_labels_drop(keys_by_dataset: dict[int, set[str]]) -> None:
    """Drop erased records' attribute labels from every concept request on their dataset and from its
    jobs' configs (models_registry.services.RECORDS_ERASED): an attribute value is data about the
    person (often a sensitive one) and nothing needs it once the record is erased; the split of the
    others does not move (it hashes each key on its own)."""
    for dataset_id, keys in keys_by_dataset.items():
        for request in DeletionRequest.objects.filter(kind=RequestKind.CONCEPT, concept__dataset_id=dataset_id):
            labels = request.concept.get("labels") or {}
            if keys & labels.keys():
                request.concept = {**request.concept, "labels": {k: v for k, v in labels.items() if k not in keys}}
                request.save(update_fields=["concept"])
        for job in Job.objects.filter(config__concept__dataset_id=dataset_id):
            labels = job.config["concept"].get("labels") or {}
            if keys & labels.keys():
                concept = {**job.config["concept"], "labels": {k: v for k, v in labels.items() if k not in keys}}
                job.config = {**job.config, "concept": concept}
                job.save(update_fields=["config"])
