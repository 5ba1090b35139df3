"""Fault injection (`make reliability`): what the platform survives, with figures.

1. Worker kills: N unlearning jobs; the worker process is SIGKILLed at a random point of each and
   restarted; every job must complete exactly once (one new version per job, no duplicate, no
   orphaned artifact, ledger intact).
2. Redis restart: jobs are queued, Redis is stopped and started while the worker runs; all finish.
3. PostgreSQL stop: clients keep POSTing requests while PostgreSQL is stopped and started; every
   request answered 201 exists afterwards, and the outage is answered 503, never 500.
Prints a table; the last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _setup import REPO, django_setup  # noqa: E402

MLP = {"name": "mlp", "config": {"in_features": 30, "num_classes": 2, "hidden": [32]}}


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=REPO / ".data" / "reliability")
    args = parser.parse_args()
    import os

    os.environ["JOB_STALE_AFTER_SECONDS"] = "5"
    django_setup(data_dir=args.data_dir, fresh_database="reliability")
    from django.conf import settings

    from deletion.ledger import ledger_verify
    from deletion_platform import embedded
    from deletion_platform.demo import start_stack, stop_stack
    from models_registry.models import DataRecord, ModelVersion, StoredArtifact
    from models_registry.services import registered_model_create
    from workers.jobs import job_create, jobs_sweep_stale
    from workers.models import Job
    from workers.reference_data import reference_dataset_register
    from workers.runners.storage import artifact_store
    from workers.services import model_train

    rng = random.Random(args.seed)
    services = embedded.services_for(Path(os.environ["DATA_DIR"]))
    web, worker = start_stack(8200 + rng.randint(0, 500), name="reliability")
    figures: dict = {"benchmark": "reliability"}
    try:
        dataset = reference_dataset_register(name="breast_cancer")
        model = registered_model_create(name=f"bc-rel-{uuid.uuid4().hex[:6]}", task="classification",
                                        training_recipe="plain", architecture=MLP)
        train = model_train(model=model, dataset=dataset, recipe_config={"architecture": MLP, "epochs": 1500, "seed": 1})
        wait_for(lambda: Job.objects.get(pk=train.pk).status == "succeeded", 600, "training")
        source = Job.objects.get(pk=train.pk).result_version

        # 1. SIGKILL at random points of each job, then restart the worker.
        records = list(DataRecord.objects.filter(dataset=dataset, split="train").order_by("id")[:args.kills])
        kill_points, completed = [], 0
        for index, record in enumerate(records):
            job = job_create(kind="unlearn", registered_model=model, source_version=source, method="retrain",
                             guarantee_class="exact", forget_record_ids=[record.id])
            target = rng.uniform(5, 80)  # progress is written every 5 s: jobs last well over that
            wait_for(lambda j=job, t=target: Job.objects.get(pk=j.pk).progress_percent >= t
                     or Job.objects.get(pk=j.pk).status == "succeeded", 600, "progress")
            state = Job.objects.get(pk=job.pk)
            kill_points.append(round(state.progress_percent, 1))
            worker.kill()
            worker.wait()
            time.sleep(float(os.environ["JOB_STALE_AFTER_SECONDS"]) + 1)
            jobs_sweep_stale()
            worker = start_stack_worker_only()
            wait_for(lambda j=job: Job.objects.get(pk=j.pk).status in ("succeeded", "failed"), 600, "re-run")
            completed += Job.objects.get(pk=job.pk).status == "succeeded"
            print(f"kill {index + 1}: at {kill_points[-1]}%, job {Job.objects.get(pk=job.pk).status}", file=sys.stderr)
        jobs = Job.objects.filter(kind="unlearn", source_version=source)
        # Every version of the model is the trained one or the result of exactly one job.
        duplicates = ModelVersion.objects.filter(model=model).count() - 1 - jobs.filter(status="succeeded").count()
        referenced = set(StoredArtifact.objects.values_list("sha256", flat=True))
        store = artifact_store()
        orphans = [a for a in store.artifact_ids() if a not in referenced and store.manifest(a).kind != "checkpoint"]
        figures.update({"kills": len(records), "kill_points_percent": kill_points, "jobs_completed": completed,
                        "duplicate_versions": duplicates, "orphaned_top_level_artifacts": len(orphans),
                        "ledger_problems": len(ledger_verify())})

        # 2. Redis restart with jobs queued and running.
        queued = [job_create(kind="unlearn", registered_model=model, source_version=source, method="retrain",
                             guarantee_class="exact", forget_record_ids=[r.id])
                  for r in DataRecord.objects.filter(dataset=dataset, split="train").order_by("id")[50:53]]
        time.sleep(2)
        embedded.stop_redis(services)
        time.sleep(3)
        embedded.start_redis(services)
        wait_for(lambda: all(Job.objects.get(pk=j.pk).status in ("succeeded", "failed") for j in queued), 900,
                 "jobs after the Redis restart")
        figures["redis_restart_jobs_succeeded"] = sum(Job.objects.get(pk=j.pk).status == "succeeded" for j in queued)
        figures["redis_restart_jobs"] = len(queued)

        # 3. PostgreSQL stopped while clients submit requests.
        figures.update(_postgres_outage(web, services, settings))
    finally:
        stop_stack(*(p for p in (web, worker) if p))
    print("| figure | value |\n|---|---|")
    for key, value in figures.items():
        print(f"| {key} | {value} |")
    print(json.dumps(figures))


def start_stack_worker_only():
    import os
    import subprocess

    from django.conf import settings

    logs = Path(settings.DATA_DIR) / "logs"
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "deletion_platform", "worker", "-Q", "gpu,audit,default",
         "--pool", "solo", "--concurrency", "1", "--prefetch-multiplier", "1", "-n", f"rel-{time.time_ns()}@%h"],
        cwd=REPO, env={**os.environ}, stdout=(logs / "reliability-worker.log").open("ab"), stderr=subprocess.STDOUT)


def _postgres_outage(web, services, settings) -> dict:
    import requests

    from deletion.authentication import api_token_create
    from deletion.models import DeletionRequest
    from deletion_platform import embedded

    port = int(web.args[web.args.index("--bind") + 1].rsplit(":", 1)[1])
    _, token = api_token_create(name="outage", role="intake")
    answered: list[tuple[int, str | None]] = []
    stop = threading.Event()

    def client(n: int) -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token}"
        i = 0
        while not stop.is_set():
            i += 1
            try:
                r = session.post(f"http://127.0.0.1:{port}/api/v1/deletion-requests/", timeout=10,
                                 headers={"Idempotency-Key": f"outage-{n}-{i}"},
                                 json={"identifiers": {"email": f"o{n}.{i}@example.org"}, "jurisdiction": "GDPR",
                                       "legal_ground": "art17_1_a", "channel": "outage-test"})
                answered.append((r.status_code, r.json().get("id") if r.status_code == 201 else None))
            except requests.RequestException:
                answered.append((0, None))
            time.sleep(0.02)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    time.sleep(3)
    embedded.stop_postgres(services, mode="immediate")  # a crash, as far as clients can tell
    time.sleep(4)
    embedded.start_postgres(services)
    time.sleep(4)
    stop.set()
    for t in threads:
        t.join()
    from django.db import connection

    connection.close()
    created = [rid for code, rid in answered if code == 201]
    missing = len(created) - DeletionRequest.objects.filter(public_id__in=created).count()
    codes: dict[str, int] = {}
    for code, _ in answered:
        codes[str(code)] = codes.get(str(code), 0) + 1
    return {"outage_requests": len(answered), "outage_answered_201": len(created), "outage_201_missing": missing,
            "outage_status_counts": codes, "outage_500s": codes.get("500", 0)}


if __name__ == "__main__":
    main()
