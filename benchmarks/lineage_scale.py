"""Lineage at scale: import rate, scope-query latency and bytes per membership row.

Generates a synthetic registry (subjects, records, model versions, memberships), loads it through
the platform's own import services (validation included), then times the scope of 1,000 random
subjects. Bytes per membership row: models_registry_membershipblock (where membership is stored,
see migration 0005), indexes and TOAST included. Prints a table; the last stdout line is one JSON object with the figures.

    python benchmarks/lineage_scale.py                       # 10M memberships over 200 versions
    python benchmarks/lineage_scale.py --memberships 1000000 --versions 40   # a quick run
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _setup import REPO, django_setup  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=200_000)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--versions", type=int, default=200)
    parser.add_argument("--memberships", type=int, default=10_000_000)
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=REPO / ".data" / "bench")
    parser.add_argument("--scope-only", action="store_true",
                        help="time the scope queries on the registry an earlier run loaded (no import)")
    parser.add_argument("--realtime", action="store_true",
                        help="run this client and its PostgreSQL backend at real-time priority (root only): "
                             "on a machine other jobs keep busy, what the query path costs without the "
                             "scheduler's waits; say so when you report the figure")
    args = parser.parse_args()
    if args.memberships // args.versions > args.records:
        parser.error("each version's membership cannot exceed --records")
    return args


def main() -> None:
    args = parse_args()
    django_setup(data_dir=args.data_dir, fresh_database="bench_lineage", reuse=args.scope_only)
    if args.scope_only:
        return scope_only(args)
    from django.db import connection

    from models_registry import services
    from models_registry.importing import dataset_records_import, training_membership_import
    from models_registry.models import DataSubject

    rng = random.Random(args.seed)
    progress = _progress_bar()
    dataset = services.dataset_register(
        name="synthetic", version="1", modality="tabular", storage_location="generated",
        purpose="benchmark", legal_basis="consent",
    )

    # Records (and subjects), through the records import service, in one CSV stream.
    class RecordStream:
        """A file-like CSV producer, so the import reads it line by line like an upload."""

        def __iter__(self):
            yield b"record_key,email,content\n"
            for i in range(args.records):
                yield f"rec{i},s{i % args.subjects}@example.org,content {i}\n".encode()

    started = time.perf_counter()
    result = dataset_records_import(dataset=dataset, source=RecordStream(), fmt="csv")
    record_seconds = time.perf_counter() - started
    print(f"records: {result.rows:,} rows, {result.subjects_created:,} subjects in {record_seconds:.1f} s "
          f"({result.rows / record_seconds:,.0f} rows/s)", file=sys.stderr)

    with connection.cursor() as cursor:  # what autovacuum does after a bulk load (visibility map, statistics)
        cursor.execute("VACUUM ANALYZE models_registry_datarecord")

    per_version = args.memberships // args.versions
    models = [services.registered_model_create(name=f"model-{m}", task="classification", training_recipe="sisa")
              for m in range(max(1, args.versions // 10))]
    import_seconds = 0.0
    total_rows = 0
    for v in range(args.versions):
        model = models[v % len(models)]
        run = services.training_run_start(model=model, recipe="sisa", config={}, seed=v, code_version="bench",
                                          datasets=[dataset])
        chosen = rng.sample(range(args.records), per_version)
        rows = ((i + 1, f"rec{r}", r % 5, (r // 5) % 4, i) for i, r in enumerate(chosen))
        started = time.perf_counter()
        total_rows += training_membership_import(run=run, dataset=dataset, rows=rows).rows
        import_seconds += time.perf_counter() - started
        services.model_version_create(model=model, artifact_sha256="0" * 64, training_run=run, status="serving")
        progress("membership import", (v + 1) / args.versions)
    print(file=sys.stderr)

    with connection.cursor() as cursor:
        # What autovacuum does after a bulk insert: statistics, and the visibility map that lets
        # the scope's block lookup be an index-only scan.
        started = time.perf_counter()
        cursor.execute("VACUUM ANALYZE")
        vacuum_seconds = time.perf_counter() - started
        cursor.execute("SELECT pg_total_relation_size('models_registry_membershipblock')")
        (membership_bytes,) = cursor.fetchone()

    subject_ids = list(DataSubject.objects.values_list("id", flat=True))
    timings, affected = _time_scopes(rng.sample(subject_ids, min(args.queries, len(subject_ids))), progress)
    figures = {
        "benchmark": "lineage_scale",
        "subjects": args.subjects,
        "records": args.records,
        "model_versions": args.versions,
        "memberships": total_rows,
        "record_import_rows_per_s": round(result.rows / record_seconds),
        "membership_import_rows_per_s": round(total_rows / import_seconds),
        "scope_queries": len(timings),
        "scope_p50_ms": round(statistics.median(timings), 3),
        "scope_p99_ms": round(timings[int(0.99 * (len(timings) - 1))], 3),
        "mean_versions_per_subject": round(statistics.mean(affected), 2),
        "bytes_per_membership_row": round(float(membership_bytes) / total_rows, 1),
        "vacuum_analyze_s": round(vacuum_seconds, 1),
    }
    print("| figure | value |\n|---|---|")
    for key, value in figures.items():
        print(f"| {key} | {value} |")
    print(json.dumps(figures))


def _time_scopes(subject_ids: list[int], progress) -> tuple[list[float], list[int]]:
    """Scope of each subject (the first 100 first, untimed, to warm the caches, as a serving
    system would be); returns milliseconds and the number of versions in scope, per subject."""
    from models_registry import selectors
    from models_registry.models import DataSubject

    for subject_id in subject_ids[:100]:
        selectors.subject_scope(subject=DataSubject(id=subject_id))
    timings, affected = [], []
    for i, subject_id in enumerate(subject_ids):
        started = time.perf_counter()
        scope = selectors.subject_scope(subject=DataSubject(id=subject_id))
        timings.append((time.perf_counter() - started) * 1000)
        affected.append(len(scope.versions))
        progress("scope queries", (i + 1) / len(subject_ids))
    print(file=sys.stderr)
    return sorted(timings), affected


def scope_only(args) -> None:
    import os

    from django.db import connection

    from models_registry.models import DataSubject

    if args.realtime:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            (backend,) = cursor.fetchone()
        for pid in (os.getpid(), backend):
            os.sched_setscheduler(pid, os.SCHED_FIFO, os.sched_param(10))
    subject_ids = list(DataSubject.objects.values_list("id", flat=True))
    if not subject_ids:
        raise SystemExit("no registry to query: run the benchmark once without --scope-only")
    sample = random.Random(args.seed + 1).sample(subject_ids, min(args.queries, len(subject_ids)))
    timings, affected = _time_scopes(sample, _progress_bar())
    figures = {
        "benchmark": "lineage_scale", "mode": "scope_only", "realtime_priority": args.realtime,
        "subjects": len(subject_ids), "scope_queries": len(timings),
        "scope_p50_ms": round(statistics.median(timings), 3),
        "scope_p99_ms": round(timings[int(0.99 * (len(timings) - 1))], 3),
        "mean_versions_per_subject": round(statistics.mean(affected), 2),
    }
    print(json.dumps(figures))


def _progress_bar():
    """A text progress bar on stderr, redrawn only when the whole percentage changes."""
    last = {"label": None, "percent": -1}

    def show(label: str, fraction: float) -> None:
        percent = int(fraction * 100)
        if label == last["label"] and percent == last["percent"]:
            return
        last.update(label=label, percent=percent)
        filled = percent * 30 // 100
        print(f"\r{label:<20} [{'#' * filled}{'.' * (30 - filled)}] {percent:3d}%", end="", file=sys.stderr, flush=True)

    return show


if __name__ == "__main__":
    main()
