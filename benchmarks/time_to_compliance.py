"""Time to compliance: one SISA deletion on MNIST from receipt to signed report, N times.

Sets up once (reference data, a SISA model, its shadow models — their training time is printed
too), then for each run submits a request for a new subject over HTTP, verifies and approves it as
the DPO, confirms the new version as the serving side, and waits for the signed report. Prints p50
and p95 seconds from receipt to completion, split by stage (scope, queue wait, unlearning, audit,
signing); the last stdout line is one JSON object.

    python benchmarks/time_to_compliance.py --runs 5 --shadows 16
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _setup import REPO, django_setup  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))], 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--shadows", type=int, default=16)
    parser.add_argument("--data-dir", type=Path, default=REPO / ".data" / "bench")
    args = parser.parse_args()
    django_setup(data_dir=args.data_dir, fresh_database="bench_ttc")
    import requests
    from django.core.management import call_command

    from deletion.models import DeletionRequest, ModelOutcome
    from deletion.selectors import request_timeline
    from deletion_platform.demo import (
        MNIST_SISA,
        _free_port,
        _wait_http,
        start_stack,
        stop_stack,
        wait_jobs,
    )
    from foundation.access.authentication import api_token_create
    from models_registry.services import registered_model_create
    from workers.datasets.reference import reference_records
    from workers.models import Job
    from workers.reference_data import reference_dataset_register
    from workers.services import model_train, shadow_models_train

    call_command("migrate", verbosity=0)
    from audits.signing import ensure_dev_signing_identity

    ensure_dev_signing_identity()
    port = _free_port(8100)
    web, worker = start_stack(port, name="ttc", single_worker=True)
    try:
        _wait_http(f"http://127.0.0.1:{port}")
        dataset = reference_dataset_register(name="mnist")
        model = registered_model_create(name=f"mnist-ttc-{int(time.time())}", task="classification",
                                        training_recipe="sisa", architecture=MNIST_SISA["architecture"])
        t0 = time.perf_counter()
        train = model_train(model=model, dataset=dataset, recipe_config=MNIST_SISA)
        wait_jobs([train], lambda job: "train SISA on MNIST")
        train_seconds = time.perf_counter() - t0
        train.refresh_from_db()
        t0 = time.perf_counter()
        shadows = shadow_models_train(version=train.result_version, count=args.shadows)
        wait_jobs([shadows], lambda job: f"{args.shadows} shadow models")
        shadow_seconds = time.perf_counter() - t0

        _, dpo_token = api_token_create(name="ttc-dpo", role="dpo")
        _, serving_token = api_token_create(name="ttc-serving", role="ml_engineer")
        dpo, serving = requests.Session(), requests.Session()
        dpo.headers["Authorization"] = f"Bearer {dpo_token}"
        serving.headers["Authorization"] = f"Bearer {serving_token}"
        base = f"http://127.0.0.1:{port}/api/v1/deletion-requests/"
        writers = []
        for row in reference_records(dataset.storage_location):
            if row["split"] == "train" and row["subject"] and row["subject"]["email"] not in writers:
                writers.append(row["subject"]["email"])
        results = []
        for run in range(args.runs):
            email = writers[10 + 7 * run]
            created = dpo.post(base, json={"identifiers": {"email": email}, "jurisdiction": "GDPR",
                                           "legal_ground": "art17_1_b", "channel": "benchmark"},
                               headers={"Idempotency-Key": f"ttc-{model.id}-{run}"}, timeout=30).json()
            request_id = created["id"]
            dpo.post(f"{base}{request_id}/verify/", json={"method": "benchmark", "verified_at": "2026-11-25T00:00:00Z",
                                                          "verifier": "benchmark"}, timeout=60).raise_for_status()
            dpo.post(f"{base}{request_id}/approve/", json={}, timeout=60).raise_for_status()
            while True:
                state = dpo.get(f"{base}{request_id}/", timeout=30).json()
                for outcome in state["outcomes"]:
                    if outcome["status"] == "awaiting_deployment":
                        serving.post(f"{base}{request_id}/confirm-deployment/",
                                     json={"new_version_id": outcome["new_version_id"]}, timeout=30)
                if state["status"] in ("COMPLETED", "FAILED"):
                    break
                time.sleep(0.5)
            request = DeletionRequest.objects.get(public_id=request_id)
            if request.status != "COMPLETED":
                raise SystemExit(f"run {run}: request {request_id} {request.status}: {request.failure}")
            from datetime import datetime

            at = {e["event"]: datetime.fromisoformat(e["at"]) for e in request_timeline(request=request)}.__getitem__

            outcome = ModelOutcome.objects.get(request=request)
            unlearn, audit = outcome.job, outcome.audit_job
            report = Job.objects.get(kind="report", deletion_request=request)
            stages = {
                "scope": (at("request.scoped") - at("request.received")).total_seconds(),
                "queue_wait": (unlearn.started_at - at("request.approved")).total_seconds(),
                "unlearning": unlearn.wall_seconds,
                "audit": (audit.finished_at - unlearn.finished_at).total_seconds(),
                "confirmation": (report.created_at - audit.finished_at).total_seconds(),
                "signing": (report.finished_at - report.created_at).total_seconds(),
            }
            total = (request.completed_at - request.received_at).total_seconds()
            results.append({"total": total, **stages, "verdict": outcome.verdict})
            print(f"run {run + 1}: {total:.1f} s (" + ", ".join(f"{k} {v:.1f}" for k, v in stages.items())
                  + f"), verdict {outcome.verdict}", file=sys.stderr)
    finally:
        stop_stack(web, worker)
    keys = ["total", "scope", "queue_wait", "unlearning", "audit", "confirmation", "signing"]
    figures = {"benchmark": "time_to_compliance", "runs": len(results), "shadow_models": args.shadows,
               "training_seconds": round(train_seconds, 1), "shadow_training_seconds": round(shadow_seconds, 1),
               **{f"{k}_p50_s": percentile([r[k] for r in results], 0.5) for k in keys},
               **{f"{k}_p95_s": percentile([r[k] for r in results], 0.95) for k in keys},
               "verdicts": sorted({r["verdict"] for r in results})}
    print("| stage | p50 s | p95 s |\n|---|---|---|")
    for k in keys:
        print(f"| {k} | {figures[k + '_p50_s']} | {figures[k + '_p95_s']} |")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
