"""How long an approximate result's audit takes with every check on, on the demo's MNIST model
(SISA, deletion_platform.demo.MNIST_SISA) once its shadow models exist (``--shadows``, 32 in
complementary pairs as the demo trains them), and how long U-LiRA's runs of the method on the shadows
need to give every forgotten record ``--min-runs`` runs a side.

Forget set: ``--records`` training records drawn at random (a person's records, as in the demo), and,
with ``--class-forget``, also a whole class (3), for which the representation and relearning checks
apply and retrain their references. Each is unlearned by the fine-tune method (approximate, its
defaults) and audited through the audit job, as a request's audit runs: once with the platform's
U-LiRA budget (settings ``AUDIT_ULIRA_SECONDS``) and once with ``--ulira-seconds`` (large: every
planned run), from which the seconds until every record has ``--min-runs`` unlearned shadows follow.
Prints the audit's time with and without U-LiRA's runs, where the time goes (the audit's
``stage_seconds``), the machine's load; the last stdout line is one JSON object.

    nice -n 10 python benchmarks/audit_time.py --shadows 32 --records 8 --reuse
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

FORGET_CLASS = 3
MODEL_NAME = "audit-time-mnist-sisa"


def _loadavg() -> str:
    return Path("/proc/loadavg").read_text().strip() if Path("/proc/loadavg").exists() else "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shadows", type=int, default=32)
    parser.add_argument("--records", type=int, default=8)
    parser.add_argument("--class-forget", action="store_true", help="also audit a forgotten class (3)")
    parser.add_argument("--class-only", action="store_true", help="audit only the forgotten class")
    parser.add_argument("--no-full-budget", action="store_true",
                        help="skip the second audit with --ulira-seconds (the seconds per run still come out)")
    parser.add_argument("--ulira-seconds", type=float, default=600.0,
                        help="U-LiRA's budget for the second audit (large: every planned run)")
    parser.add_argument("--min-runs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reuse", action="store_true",
                        help="keep the database of an earlier run (its trained model and shadows)")
    parser.add_argument("--data-dir", type=Path, default=REPO / ".data" / "bench")
    args = parser.parse_args()
    django_setup(data_dir=args.data_dir, fresh_database="bench_audit_time", reuse=args.reuse)
    import numpy as np
    import torch
    from django.conf import settings

    from deletion_platform.demo import MNIST_SISA
    from models_registry.models import DataRecord, RegisteredModel
    from models_registry.services import model_version_create, registered_model_create
    from workers.datasets.reference import reference_records
    from workers.jobs import job_create, job_execute
    from workers.models import Job, JobKind, JobStatus
    from workers.reference_data import reference_dataset_register
    from workers.runners.shadow import shadow_runs
    from workers.services import model_train, shadow_models_train

    def run(job: Job) -> Job:
        if job_execute(job_id=job.id) != "succeeded":
            raise SystemExit(f"job {job.id} ({job.kind}) failed: {Job.objects.get(pk=job.id).error}")
        job.refresh_from_db()
        return job

    dataset = reference_dataset_register(name="mnist")
    model = RegisteredModel.objects.filter(name=MODEL_NAME).first() if args.reuse else None
    original = model.versions.order_by("id").first() if model is not None else None
    train_seconds = shadow_seconds = None
    if original is None:
        model = registered_model_create(name=MODEL_NAME, task="classification", training_recipe="sisa",
                                        architecture=MNIST_SISA["architecture"],
                                        unlearning_policy={"approximate_method": "finetune"})
        started = time.perf_counter()
        original = run(model_train(model=model, dataset=dataset, enqueue=False,
                                   recipe_config=MNIST_SISA)).result_version
        train_seconds = round(time.perf_counter() - started, 2)
    if len(shadow_runs(version=original)) < args.shadows:
        # A shadow job trains the indices it does not have yet (an earlier, interrupted run's stay).
        Job.objects.filter(registered_model=model, kind=JobKind.SHADOW, status="running").update(status="failed")
        started = time.perf_counter()
        run(shadow_models_train(version=original, count=args.shadows, enqueue=False))
        shadow_seconds = round(time.perf_counter() - started, 2)
    if len(shadow_runs(version=original)) != args.shadows:
        raise SystemExit(f"{len(shadow_runs(version=original))} shadow models exist; --shadows {args.shadows} asks for "
                         "another count: start afresh (without --reuse)")
    rows = [r for r in reference_records(dataset.storage_location) if r["split"] == "train"]
    rng = np.random.default_rng(args.seed)
    picked = sorted(rng.choice(sorted(r["record_key"] for r in rows), size=args.records, replace=False).tolist())
    forget_sets = {} if args.class_only else {"records": picked}
    if args.class_forget or args.class_only:
        forget_sets["class"] = [r["record_key"] for r in rows if r["label"] == FORGET_CLASS]

    def audit(ids: list[int], unlearned_id: int, ulira_seconds: float | None) -> dict:
        before = settings.AUDIT_ULIRA_SECONDS
        if ulira_seconds is not None:
            settings.AUDIT_ULIRA_SECONDS = ulira_seconds
        try:
            loads = _loadavg()
            job = run(job_create(kind=JobKind.AUDIT, registered_model=model, source_version=original,
                                 forget_record_ids=ids, guarantee_class="approximate", enqueue=False,
                                 config={"audited_version": unlearned_id}))
        finally:
            settings.AUDIT_ULIRA_SECONDS = before
        result = job.result["audit"]
        if result["verdict"]["verdict"] == "PASS":
            raise SystemExit("the audit PASSed and purged the original's copies: rerun without --reuse")
        return {**result, "_load_before": loads, "_load_after": _loadavg()}

    results: dict[str, dict] = {}
    for name, keys in forget_sets.items():
        ids = list(DataRecord.objects.filter(dataset=dataset, external_key__in=keys).values_list("id", flat=True))
        # The platform refuses an approximate method on a SISA model (its store would lose the change),
        # so the version audited is the original's weights, recorded as made by a fine-tune job: the
        # audit then runs every check an approximate result gets, U-LiRA re-running the fine-tune
        # (its defaults) on the shadows in memory. What each check costs does not depend on whether
        # the version forgot (its verdict here is FAIL: the original's weights, no purge).
        version = model_version_create(model=model, artifact_sha256=original.artifact_sha256, training_run=None,
                                       parent=original)
        unlearn = job_create(kind=JobKind.UNLEARN, registered_model=model, source_version=original, method="finetune",
                             guarantee_class="approximate", forget_record_ids=ids, enqueue=False,
                             status=JobStatus.SUCCEEDED, result_version=version, config={})
        default = audit(ids, unlearn.result_version_id, None)
        # For a class the references dominate and do not depend on the budget: one audit only.
        full = (audit(ids, unlearn.result_version_id, args.ulira_seconds)
                if name == "records" and not args.no_full_budget else default)
        entry = {"records": len(ids), "audited": "the original's weights as a fine-tune's result (see above)"}
        for label, measured in (("default_budget", default), ("full_budget", full)):
            section = measured.get("unlearning_lira") or {}
            ulira_seconds = float(section.get("seconds") or 0.0)
            entry[label] = {
                "audit_seconds": measured["audit_seconds"],
                "ulira_runs_seconds": ulira_seconds,
                "audit_seconds_without_ulira_runs": round(measured["audit_seconds"] - ulira_seconds, 2),
                "ulira_runs": section.get("unlearned_shadows"), "ulira_budget_seconds": section.get("budget_seconds"),
                "unlearned_per_record": section.get("unlearned_per_record"),
                "out_per_record": section.get("out_per_record"), "stopped": section.get("stopped"),
                "stage_seconds": measured.get("stage_seconds"),
                "verdict": measured["verdict"]["verdict"],
                "checks": {c["check"]: c["verdict"] for c in measured["checks"]},
                "loadavg_before": measured["_load_before"], "loadavg_after": measured["_load_after"],
            }
        section = full.get("unlearning_lira") or {}
        coverage, run_seconds = section.get("min_runs_per_record") or [], section.get("run_seconds") or []
        reached = next((i for i, c in enumerate(coverage) if c >= args.min_runs), None)
        entry["seconds_until_every_record_has_min_runs"] = (
            None if reached is None else round(sum(run_seconds[: reached + 1]), 2))
        entry["runs_until_every_record_has_min_runs"] = None if reached is None else reached + 1
        entry["seconds_per_run"] = round(float(np.mean(run_seconds)), 2) if run_seconds else None
        results[name] = entry
        print(f"{name} ({len(ids)} records): audit {entry['default_budget']['audit_seconds']} s with the default "
              f"U-LiRA budget ({entry['default_budget']['ulira_runs_seconds']} s of it U-LiRA's "
              f"{entry['default_budget']['ulira_runs']} runs; without them "
              f"{entry['default_budget']['audit_seconds_without_ulira_runs']} s), verdict "
              f"{entry['default_budget']['verdict']}; every record has {args.min_runs} runs after "
              f"{entry['runs_until_every_record_has_min_runs']} runs, "
              f"{entry['seconds_until_every_record_has_min_runs']} s; stages "
              f"{entry['default_budget']['stage_seconds']}", flush=True)
    result = {
        "benchmark": "audit_time", "model": "demo MNIST SISA (small_cnn, 5 shards x 4 slices)",
        "method": "finetune (its defaults)", "shadows": args.shadows, "min_runs": args.min_runs,
        "ulira_default_budget_seconds": settings.AUDIT_ULIRA_SECONDS,
        "ulira_max_shadows": settings.AUDIT_ULIRA_MAX_SHADOWS,
        "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
        "training_seconds": train_seconds, "shadow_training_seconds": shadow_seconds,
        "forget_sets": results, "loadavg_end": _loadavg(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
