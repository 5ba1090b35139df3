"""Fault injection (`make reliability`): what the platform survives, with figures.

1. Worker kills: N unlearning jobs; the worker process is SIGKILLed at a random point of each and
   restarted; every job must complete exactly once (one new version per job, no duplicate, ledger
   intact). A kill between a job's write to the artifact store and its final transaction leaves
   files no registry row names: the garbage collector (workers/artifact_gc.py) then runs, and
   the figures say how many orphans it found and removed, and that no file a registry row
   reaches was lost (checked apart from the collector, and by loading every version).
2. Redis restart: jobs are queued, Redis is stopped and started while the worker runs; all finish.
   The collector runs over and over meanwhile (grace period --gc-grace seconds): the jobs'
   fresh artifacts must survive it.
3. PostgreSQL stop: clients keep POSTing requests while PostgreSQL is stopped and started; every
   request answered 201 exists afterwards, and the outage is answered 503, never 500.
Prints a table; the last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
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
    parser.add_argument("--gc-grace", type=float, default=10.0,
                        help="the collector's grace period while jobs run (phase 2), in seconds")
    args = parser.parse_args()
    os.environ["JOB_STALE_AFTER_SECONDS"] = "5"
    # The database is made afresh below, so the artifact store is too: files of an earlier run,
    # whose rows went with its database, would otherwise be counted as this run's orphans.
    artifact_root = args.data_dir.resolve() / "reliability-artifacts"
    shutil.rmtree(artifact_root, ignore_errors=True)
    os.environ["ARTIFACT_ROOT"] = str(artifact_root)
    django_setup(data_dir=args.data_dir, fresh_database="reliability")
    from django.conf import settings

    from deletion_platform import embedded
    from deletion_platform.demo import start_stack, stop_stack
    from foundation.ledger.services import ledger_verify
    from models_registry.models import DataRecord, ModelVersion, StoredArtifact
    from models_registry.services import registered_model_create
    from workers.artifact_gc import artifact_store_gc
    from workers.jobs import job_create, jobs_sweep_stale
    from workers.models import Job
    from workers.reference_data import reference_dataset_register
    from workers.runners.storage import artifact_store
    from workers.services import model_train

    rng = random.Random(args.seed)
    services = embedded.services_for(Path(os.environ["DATA_DIR"]))
    web, worker = start_stack(8200 + rng.randint(0, 500), name="reliability", single_worker=True)
    figures: dict = {"benchmark": "reliability"}
    try:
        dataset = reference_dataset_register(name="breast_cancer")
        model = registered_model_create(name=f"bc-rel-{uuid.uuid4().hex[:6]}", task="classification",
                                        training_recipe="plain", architecture=MLP)
        train = model_train(model=model, dataset=dataset, recipe_config={"architecture": MLP, "epochs": 1500, "seed": 1})
        wait_for(lambda: Job.objects.get(pk=train.pk).status == "succeeded", 600, "training")
        source = Job.objects.get(pk=train.pk).result_version

        # 1. SIGKILL at random points of each job, then restart the worker. Every other kill lands
        # the moment the job starts writing its manifest (its blobs are stored by then), before its
        # final transaction (if the kill is quick enough): the window that leaves orphans.
        store = artifact_store()
        records = list(DataRecord.objects.filter(dataset=dataset, split="train").order_by("id")[:args.kills])
        kill_points, completed, at_write = [], 0, []
        for index, record in enumerate(records):
            known = set(os.listdir(store.manifest_dir))
            job = job_create(kind="unlearn", registered_model=model, source_version=source, method="retrain",
                             guarantee_class="exact", forget_record_ids=[record.id])
            if index % 2:
                wait_for_new_manifest(store, known, job)
                at_write.append(job.pk)
            else:
                target = rng.uniform(5, 80)  # progress is written every 5 s: jobs last well over that
                wait_for(lambda j=job, t=target: Job.objects.get(pk=j.pk).progress_percent >= t
                         or Job.objects.get(pk=j.pk).status == "succeeded", 600, "progress")
            state = Job.objects.get(pk=job.pk)
            kill_points.append("store write" if index % 2 else round(state.progress_percent, 1))
            worker.kill()
            worker.wait()
            time.sleep(float(os.environ["JOB_STALE_AFTER_SECONDS"]) + 1)
            jobs_sweep_stale()
            worker = start_stack_worker_only()
            wait_for(lambda j=job: Job.objects.get(pk=j.pk).status in ("succeeded", "failed"), 600, "re-run")
            completed += Job.objects.get(pk=job.pk).status == "succeeded"
            print(f"kill {index + 1}: at {kill_points[-1]}, job {Job.objects.get(pk=job.pk).status}", file=sys.stderr)
        jobs = Job.objects.filter(kind="unlearn", source_version=source)
        # Every version of the model is the trained one or the result of exactly one job.
        duplicates = ModelVersion.objects.filter(model=model).count() - 1 - jobs.filter(status="succeeded").count()
        referenced = set(StoredArtifact.objects.values_list("sha256", flat=True))
        orphans = [a for a in store.artifact_ids() if a not in referenced and store.manifest(a).kind != "checkpoint"]
        figures.update({"kills": len(records), "kill_points": kill_points,
                        "kills_at_store_write": len(at_write),
                        "of_which_before_final_commit": jobs.filter(pk__in=at_write, attempts__gte=2).count(),
                        "jobs_completed": completed,
                        "duplicate_versions": duplicates, "orphaned_top_level_artifacts": len(orphans),
                        "ledger_problems": len(ledger_verify())})

        # The garbage collector after the kills (no job runs now: no grace period needed).
        reached = referenced_files(store)
        gc = artifact_store_gc(min_age_seconds=0, actor="reliability benchmark")
        referenced_now = set(StoredArtifact.objects.values_list("sha256", flat=True))
        figures.update({
            "gc_orphan_files_found": len(gc.orphans),
            "gc_orphan_manifests_found": sum(f.kind == "manifest" for f in gc.orphans),
            "gc_orphan_blobs_found": sum(f.kind == "blob" for f in gc.orphans),
            "gc_partial_writes_found": sum(f.kind == "partial" for f in gc.orphans),
            "gc_orphan_files_removed": len(gc.removed), "gc_removed_bytes": gc.removed_bytes,
            "gc_referenced_files": len(reached),
            "gc_referenced_files_lost": sum(not path.exists() for path in reached),
            "gc_rows_with_missing_files": len(gc.missing),
            "orphaned_top_level_artifacts_after_gc": sum(
                1 for a in store.artifact_ids() if a not in referenced_now and store.manifest(a).kind != "checkpoint"),
            "versions_loadable_after_gc": f"{loadable_versions(store, model)}/"
                                          f"{ModelVersion.objects.filter(model=model).exclude(status='purged').count()}",
        })

        # 2. Redis restart with jobs queued and running.
        queued = [job_create(kind="unlearn", registered_model=model, source_version=source, method="retrain",
                             guarantee_class="exact", forget_record_ids=[r.id])
                  for r in DataRecord.objects.filter(dataset=dataset, split="train").order_by("id")[50:53]]
        collector = _CollectorLoop(args.gc_grace)
        collector.start()
        time.sleep(2)
        embedded.stop_redis(services)
        time.sleep(3)
        embedded.start_redis(services)
        wait_for(lambda: all(Job.objects.get(pk=j.pk).status in ("succeeded", "failed") for j in queued), 900,
                 "jobs after the Redis restart")
        collector.stop()
        figures["redis_restart_jobs_succeeded"] = sum(Job.objects.get(pk=j.pk).status == "succeeded" for j in queued)
        figures["redis_restart_jobs"] = len(queued)
        reached = referenced_files(store)
        figures.update({
            "gc_runs_during_jobs": collector.runs, "gc_removed_during_jobs": collector.removed,
            "gc_errors_during_jobs": collector.errors,
            "referenced_files_lost_after_concurrent_gc": sum(not path.exists() for path in reached),
            "rows_with_missing_files_after_concurrent_gc": len(artifact_store_gc(dry_run=True, min_age_seconds=0).missing),
        })

        # 3. PostgreSQL stopped while clients submit requests.
        figures.update(_postgres_outage(web, services, settings))
    finally:
        stop_stack(*(p for p in (web, worker) if p))
    print("| figure | value |\n|---|---|")
    for key, value in figures.items():
        print(f"| {key} | {value} |")
    print(json.dumps(figures))


def wait_for_new_manifest(store, known: set[str], job, timeout: float = 900) -> None:
    """Return the moment a file not in ``known`` appears among the manifests (the temporary file of
    an atomic write counts: polled every 2 ms), or the job ends."""
    from workers.models import Job

    deadline = time.monotonic() + timeout
    checked = 0.0
    while not set(os.listdir(store.manifest_dir)) - known:
        now = time.monotonic()
        if now > deadline:
            raise SystemExit("timed out waiting for the job's store write")
        if now - checked > 1.0:
            checked = now
            if Job.objects.filter(pk=job.pk, status__in=("succeeded", "failed")).exists():
                return
        time.sleep(0.002)


def referenced_files(store) -> set[Path]:
    """Every manifest and blob a present StoredArtifact row reaches (through parts), worked out
    here apart from the collector's own code, so that a loss it caused would show."""
    from models_registry.models import StoredArtifact

    paths = set()
    for sha256 in set(StoredArtifact.objects.filter(status="present").exclude(kind="dataset_cache")
                      .values_list("sha256", flat=True)):
        if not store.exists(sha256):
            continue
        for member in store.closure(sha256, skip_missing=True):
            paths.add(store.manifest_path(member))
            paths |= {store.blob_path(entry["sha256"]) for entry in store.manifest(member).files.values()}
    return paths


def loadable_versions(store, model) -> int:
    """How many of ``model``'s versions that are not purged load whole (every blob's sha256 checked)."""
    from models_registry.models import ModelVersion
    from workers.runners.training import load_recipes
    from workers.training.storage import load_run

    load_recipes()
    count = 0
    for version in ModelVersion.objects.filter(model=model).exclude(status="purged"):
        try:
            load_run(store, version.artifact_sha256)
        except Exception as exc:
            print(f"{version} does not load: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        count += 1
    return count


class _CollectorLoop(threading.Thread):
    """The garbage collector, run again and again while jobs run and register their artifacts."""

    def __init__(self, grace: float) -> None:
        super().__init__(daemon=True)
        self.grace, self.runs, self.removed, self.errors = grace, 0, 0, 0
        self._halt = threading.Event()

    def run(self) -> None:
        from django.db import connection

        from workers.artifact_gc import artifact_store_gc

        try:
            while not self._halt.is_set():
                try:
                    self.removed += len(artifact_store_gc(min_age_seconds=self.grace,
                                                          actor="reliability benchmark").removed)
                    self.runs += 1
                except Exception as exc:
                    self.errors += 1
                    print(f"gc during jobs: {type(exc).__name__}: {exc}", file=sys.stderr)
                self._halt.wait(0.5)
        finally:
            connection.close()

    def stop(self) -> None:
        self._halt.set()
        self.join()


def start_stack_worker_only():
    import subprocess

    from django.conf import settings

    from deletion_platform import embedded

    logs = Path(settings.DATA_DIR) / "logs"
    # As the application's role, like the worker start_stack started (see demo.start_stack).
    url = os.environ.get("DATABASE_URL") or embedded.services_for(Path(settings.DATA_DIR)).database_url
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "deletion_platform", "worker", "-Q", "gpu,audit,default",
         "--pool", "solo", "--concurrency", "1", "--prefetch-multiplier", "1", "-n", f"rel-{time.time_ns()}@%h"],
        cwd=REPO, env={**os.environ, "DATABASE_URL": embedded.app_database_url(url)},
        stdout=(logs / "reliability-worker.log").open("ab"), stderr=subprocess.STDOUT)


def _postgres_outage(web, services, settings) -> dict:
    import requests

    from deletion.models import DeletionRequest
    from deletion_platform import embedded
    from foundation.access.authentication import api_token_create

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
