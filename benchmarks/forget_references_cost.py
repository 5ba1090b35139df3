"""What the representation and relearning checks add to an audit: the demo's MNIST architecture
(deletion_platform.demo.MNIST_SISA's small_cnn, its lr, batch size and seed) trained by the plain
recipe for ``--epochs`` epochs (an approximate method on the SISA ensemble itself is refused: the
SISA recipe rebuilds the ensemble from its shard checkpoints, so the change would be lost), class 3
forgotten by the approximate fine-tune method (its defaults), audited twice on the same version:
once with the retrained references turned off (the checks NOT_APPLICABLE, nothing trained) and once
with ``--references`` models retrained from the model's own recipe and configuration (each a full
training) and ``--controls`` derived
controls (the original fine-tuned on the retain set at the method's budget). Prints both audit
times, the added seconds split into references and controls, and the two checks' verdicts; the
last stdout line is one JSON object. Shadow models are optional (``--shadows``): the added time
does not depend on them.

    python benchmarks/forget_references_cost.py --references 2 --controls 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _setup import REPO, django_setup  # noqa: E402

FORGET = 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--references", type=int, default=2)
    parser.add_argument("--controls", type=int, default=2)
    parser.add_argument("--shadows", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=8, help="the plain recipe's training epochs")
    parser.add_argument("--method-epochs", type=int, default=0,
                        help="the fine-tune's epochs (0: the method's default, 5); the controls use the same")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--data-dir", type=Path, default=REPO / ".data" / "bench")
    args = parser.parse_args()
    django_setup(data_dir=args.data_dir, fresh_database="bench_forget_references")
    import torch

    from deletion_platform.demo import MNIST_SISA
    from models_registry.models import DataRecord
    from models_registry.services import registered_model_create
    from workers.datasets.reference import reference_records
    from workers.jobs import job_create, job_execute
    from workers.models import Job, JobKind
    from workers.reference_data import reference_dataset_register
    from workers.services import model_train, shadow_models_train

    if args.threads:
        torch.set_num_threads(args.threads)

    def run(job: Job) -> Job:
        if job_execute(job_id=job.id) != "succeeded":
            raise SystemExit(f"job {job.id} ({job.kind}) failed: {Job.objects.get(pk=job.id).error}")
        job.refresh_from_db()
        return job

    dataset = reference_dataset_register(name="mnist")
    model = registered_model_create(name=f"mnist-forget-refs-{int(time.time())}", task="classification",
                                    training_recipe="plain", architecture=MNIST_SISA["architecture"],
                                    unlearning_policy={"approximate_method": "finetune"})
    plain = {"architecture": MNIST_SISA["architecture"], "epochs": args.epochs,
             **{key: MNIST_SISA[key] for key in ("lr", "batch_size", "seed")}}
    started = time.perf_counter()
    original = run(model_train(model=model, dataset=dataset, enqueue=False, recipe_config=plain)).result_version
    train_seconds = time.perf_counter() - started
    if args.shadows:
        run(shadow_models_train(version=original, count=args.shadows, enqueue=False))
    keys = [r["record_key"] for r in reference_records(dataset.storage_location)
            if r["split"] == "train" and r["label"] == FORGET]
    ids = list(DataRecord.objects.filter(dataset=dataset, external_key__in=keys).values_list("id", flat=True))
    unlearn = run(job_create(kind=JobKind.UNLEARN, registered_model=model, source_version=original, method="finetune",
                             config={"epochs": args.method_epochs} if args.method_epochs else {},
                             guarantee_class="approximate", forget_record_ids=ids, enqueue=False))

    def audit(references: dict) -> dict:
        job = run(job_create(kind=JobKind.AUDIT, registered_model=model, source_version=original,
                             forget_record_ids=ids, guarantee_class="approximate", enqueue=False,
                             config={"audited_version": unlearn.result_version_id, "forget_references": references}))
        return job.result["audit"]

    # With the references first: an audit that PASSes purges the original's weights, and this one
    # (a fine-tune of a whole class) does not.
    measured = audit({"references": args.references, "controls": args.controls})
    baseline = audit({"references": 0})
    verdicts = {c["check"]: c["verdict"] for c in measured["checks"]
                if c["check"] in ("representation_retention", "relearning")}
    section = measured["forget_references"]
    result = {
        "benchmark": "forget_references_cost", "model": f"demo MNIST small_cnn, plain recipe, {args.epochs} epochs",
        "forgotten": f"class {FORGET}, {len(ids)} records", "method": f"finetune ({args.method_epochs or 'the default 5'} epochs)",
        "references": args.references, "controls": args.controls, "shadows": args.shadows,
        "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "training_seconds": round(train_seconds, 2), "unlearning_seconds": round(unlearn.wall_seconds or 0, 2),
        "audit_seconds_without": baseline["audit_seconds"], "audit_seconds_with": measured["audit_seconds"],
        "added_seconds": round(measured["audit_seconds"] - baseline["audit_seconds"], 2),
        "split_seconds": section.get("seconds"), "verdicts": verdicts,
        "verdict": measured["verdict"]["verdict"],
    }
    print(f"audit without the references: {baseline['audit_seconds']} s; with {args.references} references and "
          f"{args.controls} controls: {measured['audit_seconds']} s (added {result['added_seconds']} s: "
          f"{section.get('seconds')}); checks: {verdicts}; load average {result['load_average_1min']} on "
          f"{result['cpus']} CPUs")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
