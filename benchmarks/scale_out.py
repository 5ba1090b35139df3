"""Scale-out: erasure requests completed per minute with 1 and with 3 worker processes.

A batch that can run in parallel: ``--models`` (default 6) small MLP models trained on the same
reference dataset, so each request scopes every model and the models' unlearning jobs, their
audits and the requests' reports are separate jobs that several workers can take at once (one
model's jobs still run one after another: requests within its batching window share one job).
Each phase files ``--requests`` erasure requests for records not erased before, plays the DPO
(the residual risk of an audit that did not pass is accepted by two DPO users: no shadow models
are trained here) and the serving side (confirms every new version), and times the batch from
the first approval to the last request ended. Every worker is a real ``celery worker`` process
(``--pool solo``, every queue); they share this host's database, broker and artifact store.

    nice -n 10 python benchmarks/scale_out.py --models 6 --requests 6 --workers 1 3

The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _setup import REPO, django_setup  # noqa: E402

MLP = {"name": "mlp", "config": {"in_features": 30, "num_classes": 2, "hidden": [16]}}


def requests_per_minute(completed: int, seconds: float) -> float:
    """Requests completed per minute over a batch that took ``seconds``."""
    if seconds <= 0:
        raise ValueError("seconds must be positive")
    return round(60.0 * completed / seconds, 2)


def start_workers(count: int, logs: Path) -> list[subprocess.Popen]:
    from deletion_platform import embedded

    env = {**os.environ, "DATABASE_URL": embedded.app_database_url(os.environ["DATABASE_URL"]),
           "OMP_NUM_THREADS": "1"}
    logs.mkdir(parents=True, exist_ok=True)
    workers = []
    for index in range(count):
        log = logs / f"scale-out-worker-{count}-{index}.log"
        workers.append(subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "deletion_platform", "worker", "-Q", "gpu,audit,default",
             "--pool", "solo", "--concurrency", "1", "--prefetch-multiplier", "1", "--without-gossip",
             "--without-mingle", "-n", f"scale-{count}-{index}-{os.getpid()}@%h", "--loglevel", "INFO"],
            cwd=REPO, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT))
    deadline = time.monotonic() + 180
    for index in range(count):
        log = logs / f"scale-out-worker-{count}-{index}.log"
        while b"ready." not in log.read_bytes():
            if workers[index].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker {index} did not start: {log.read_text()[-2000:]}")
            time.sleep(0.3)
    return workers


def run_batch(records, timeout: float) -> float:
    """File, verify and approve one request per record; drive them to their end. Seconds taken."""
    from deletion.models import DeletionRequest
    from tests.flows import approved_request, outcomes_settle
    from workers.jobs import jobs_sweep_stale

    started = time.monotonic()
    requests = [approved_request([record]) for record in records]
    ended = {"COMPLETED", "CLOSED_RISK_ACCEPTED", "FAILED"}
    while True:
        statuses = list(DeletionRequest.objects.filter(pk__in=[r.pk for r in requests]).values_list("status", flat=True))
        if all(s in ended for s in statuses):
            failed = statuses.count("FAILED")
            if failed:
                raise RuntimeError(f"{failed} request(s) failed")
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"batch not done after {timeout} s: {sorted(statuses)}")
        jobs_sweep_stale()
        outcomes_settle(requests, reason="benchmark")
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=6)
    parser.add_argument("--requests", type=int, default=6, help="requests per phase")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--data-dir", type=Path, default=REPO / ".data" / "bench")
    args = parser.parse_args()
    if args.models < 1 or args.requests < 1 or min(args.workers) < 1:
        parser.error("--models, --requests and --workers must be at least 1")
    django_setup(data_dir=args.data_dir, fresh_database="bench_scale_out")
    from audits.signing import ensure_dev_signing_identity
    from models_registry.models import DataRecord
    from models_registry.services import registered_model_create
    from workers.jobs import job_execute
    from workers.reference_data import reference_dataset_register
    from workers.services import model_train

    ensure_dev_signing_identity()
    dataset = reference_dataset_register(name="breast_cancer")
    setup_started = time.monotonic()
    for index in range(args.models):
        model = registered_model_create(name=f"scale-out-{index}", task="classification", training_recipe="plain",
                                        unlearning_policy={"batch_window_seconds": 3})
        job = model_train(model=model, dataset=dataset, enqueue=False,
                          recipe_config={"architecture": MLP, "epochs": args.epochs, "seed": index})
        if job_execute(job_id=job.id) != "succeeded":
            raise RuntimeError(f"training model {index} failed")
    print(f"setup: {args.models} models trained in {time.monotonic() - setup_started:.0f} s", flush=True)
    records = list(DataRecord.objects.filter(dataset=dataset, split="train", subject__isnull=False).order_by("id")
                   [:args.requests * len(args.workers)])
    results = {}
    for phase, count in enumerate(args.workers):
        workers = start_workers(count, Path(args.data_dir) / "logs")
        try:
            seconds = run_batch(records[phase * args.requests:(phase + 1) * args.requests], args.timeout)
        finally:
            for worker in workers:
                worker.terminate()
            for worker in workers:
                worker.wait(timeout=60)
        rate = requests_per_minute(args.requests, seconds)
        results[str(count)] = {"seconds": round(seconds, 1), "requests_per_minute": rate}
        print(f"{count} worker(s): {args.requests} requests x {args.models} models in {seconds:.1f} s "
              f"= {rate} requests/min", flush=True)
    print(json.dumps({"benchmark": "scale_out", "models": args.models, "requests_per_phase": args.requests,
                      "results": results, "cpus": os.cpu_count(), "machine": platform.machine(),
                      "store": "local (one host)"}))


if __name__ == "__main__":
    main()
