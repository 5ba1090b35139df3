"""The audit of a concept erasure (class ``concept_erased``): can a probe still read the attribute?

The version audited was made by a concept job (workers.runners.concept) from its parent. The erased
layer's outputs of both, on the labelled records the eraser was NOT fitted on (the probe share of
workers.concept_layers.fitting_split), go to the concept probe (audits/checks/concept_probe.py): a
linear probe's out-of-fold AUC decides (within the tolerance of chance: PASS), an MLP probe's is shown
beside it, and the parent's figures give the check its power. A method whose guarantee holds against
more than linear probes (the catalogue's ``holds_against``: ``pef_coupling``) is held to it: its MLP probe
decides too, and its class-conditional eraser is given each probe record's attribute, as its serving
side must give it. No copy is purged: no one's records
were erased, and the parent stays what it was (the serving side replaces it with the new version).
"""

from __future__ import annotations

import time

from foundation.strict_json import jsonable
from models_registry.models import Dataset, ModelVersion
from workers.models import Job, JobKind


def concept_audit(job: Job, *, device: str = "cpu") -> dict:
    """Audit ``job.config["audited_version"]`` for the attribute its concept job erased; returns the
    audit job's result (``{"device", "verdict", "purged": 0, "audit"}``)."""
    import numpy as np

    from audits.checks.concept_probe import concept_probe
    from audits.checks.verdict import final_verdict
    from audits.concept_utility import concept_task_utility
    from audits.runner import min_utility_ratio
    from workers.concept_layers import fitting_split
    from workers.runners.concept import concept_of, labelled_batches
    from workers.runners.storage import artifact_store
    from workers.training.storage import load_run
    from workers.unlearning.catalogue import METHOD_SPECS
    from workers.unlearning.concept_erasure import layer_outputs

    started = time.perf_counter()
    new = ModelVersion.objects.select_related("model", "parent").get(pk=job.config["audited_version"])
    producer = Job.objects.filter(result_version=new, kind=JobKind.UNLEARN).first()
    if producer is None:
        raise ValueError(f"{new} was made by no unlearning job of the platform: there is no attribute to probe for")
    concept = concept_of(producer)
    layer = producer.config["layer"]
    spec = METHOD_SPECS.get(producer.method)
    holds_against, beyond_linear = spec.holds_against, spec.beyond_linear_probes
    labels = {str(k): int(v) for k, v in concept["labels"].items()}
    _fit, probe = fitting_split(labels, seed=concept["seed"], fit_share=concept["fit_share"])
    batches, missing = labelled_batches(Dataset.objects.get(pk=concept["dataset_id"]), labels, probe)
    store = artifact_store()
    original, erased = load_run(store, new.parent.artifact_sha256), load_run(store, new.artifact_sha256)
    before, attribute = layer_outputs(original.model, layer, batches, device=device)
    after, _ = layer_outputs(erased.model, layer, batches, device=device, attribute_at_inference=True)
    check = concept_probe(representations=after.numpy(), attribute=attribute.numpy(),
                          original_representations=before.numpy(), seed=int(concept["seed"]),
                          nonlinear_decides=beyond_linear, holds_against=holds_against)
    # What the erasure costs the model's own task (warns beside the verdict, never decides it).
    task_check, task_utility = concept_task_utility(
        original=original.model, erased=erased.model, dataset=Dataset.objects.get(pk=concept["dataset_id"]),
        labels=labels, probe=probe, needs_attribute=beyond_linear, min_ratio=min_utility_ratio(job), device=device)
    checks = [check, *([task_check] if task_check is not None else [])]
    verdict = final_verdict(guarantee_class="concept_erased", checks=checks)
    notes = [*verdict.notes,
             f"Concept erasure of the attribute {concept['attribute']!r} from layer {layer!r}: a linear probe's AUC "
             f"{check.linear_auc:.3f} after erasure (before {check.original_linear_auc:.3f}), an MLP probe's "
             f"{check.nonlinear_auc:.3f} (before {check.original_nonlinear_auc:.3f}), on {check.records} labelled "
             f"records the eraser was not fitted on. The guarantee holds against {holds_against}; the MLP "
             + ("probe's figure counts too (both must be at chance). The eraser needs each input's attribute at "
                "inference: the served model refuses inputs without it." if beyond_linear else
                "probe's figure is shown, not counted."),
             "This is a concept erasure, not the erasure of anyone's data: no record was erased and no copy was "
             "purged; the records stay in the model's weights.",
             _task_note(task_utility, task_check)]
    values, counts = np.unique(attribute.numpy(), return_counts=True)
    audit = {
        "records": 0, "shadow_models": 0, "nothing_erased": True,
        "concept": {"attribute": concept["attribute"], "layer": layer, "probe_records": int(len(attribute)),
                    "probe_records_missing": len(missing),
                    "values": {str(int(v)): int(n) for v, n in zip(values, counts, strict=True)},
                    "linear_auc": check.linear_auc, "nonlinear_auc": check.nonlinear_auc,
                    "original_linear_auc": check.original_linear_auc,
                    "original_nonlinear_auc": check.original_nonlinear_auc, "tolerance": check.tolerance,
                    "holds_against": check.holds_against, "method": producer.method,
                    "nonlinear_decides": beyond_linear, "chance": check.to_dict()["chance"]},
        "task_utility": task_utility,
        "checks": [c.to_dict() for c in checks],
        "verdict": {**verdict.to_dict(), "notes": notes},
        "purged": [], "purge_deferred": [], "shadow_replenish_job": None, "older_copies_purged": None,
        "copies_remaining": None, "purge_waits_for_decision": False,
        "audit_seconds": round(time.perf_counter() - started, 2),
    }
    audit = jsonable(audit)
    return {"device": device, "verdict": audit["verdict"]["verdict"], "purged": 0, "audit": audit}


def _task_note(section: dict, check) -> str:
    """The report's note on what the erasure cost the model's own task (audits.concept_utility)."""
    if check is None:
        return f"The model's own task was not measured: {section['not_run']}."
    unit = "accuracy" if check.metric == "accuracy" else "root mean squared error"
    figures = "; ".join(f"{section[side]['original']:.3f} -> {section[side]['erased']:.3f} on "
                        f"{section[side]['records']:,} {what}" for side, what in (
                            ("retain", "labelled probe records the model trained on"),
                            ("test", "held-out records")))
    return (f"The model's own task, {unit} before -> after the erasure: {figures}. Utility check "
            f"{check.verdict.value} against the bar of {check.min_ratio:.0%} of the original (it warns, it does not "
            "decide the concept verdict).")
