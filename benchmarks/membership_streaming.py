"""Membership streamed through the lineage client (client/) into the platform: records/s.

Registers a dataset of --records records (through the import service; not timed as streaming), then
plays a company's training loop: one epoch over the keys in shuffled batches of 256, its loader
wrapped by the client's RecordingLoader (timed: keys recorded/s). The client then streams the run's
membership over HTTP to the web API under gunicorn in chunks of --chunk-rows (each chunk checked and
loaded in its own transaction, as in production) and completes the upload (timed: records/s, from
the first request to the completed upload, CSV encoding included). Prints a table; the last stdout
line is one JSON object with the figures.

    python benchmarks/membership_streaming.py                        # 1,000,000 records, chunks of 50,000
    python benchmarks/membership_streaming.py --records 200000 --reuse   # the records an earlier run loaded
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _setup import REPO, django_setup  # noqa: E402

sys.path.insert(0, str(REPO / "client" / "src"))

DATASET = "streaming-bench"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--chunk-rows", type=int, default=50_000)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=REPO / ".data" / "bench")
    parser.add_argument("--reuse", action="store_true", help="keep the records an earlier run of this size loaded")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    django_setup(data_dir=args.data_dir, fresh_database="bench_membership_streaming", reuse=args.reuse)
    from django.db import connection
    from lineage_client import MembershipRecorder, PlatformClient, RecordingLoader

    from foundation.access.authentication import api_token_create
    from models_registry import services
    from models_registry.importing import dataset_records_import
    from models_registry.models import Dataset

    dataset = Dataset.objects.filter(name=DATASET, version=str(args.records)).first()
    record_seconds = None
    if dataset is None:
        dataset = services.dataset_register(name=DATASET, version=str(args.records), modality="tabular",
                                            storage_location="generated", purpose="benchmark", legal_basis="consent")

        class RecordStream:
            """A CSV producer the import reads line by line, as it reads an upload."""

            def __iter__(self):
                yield b"record_key,content\n"
                for i in range(args.records):
                    yield f"rec{i:08d},content {i}\n".encode()

        started = time.perf_counter()
        dataset_records_import(dataset=dataset, source=RecordStream(), fmt="csv")
        record_seconds = time.perf_counter() - started
        with connection.cursor() as cursor:  # what autovacuum does after a bulk load
            cursor.execute("VACUUM ANALYZE models_registry_datarecord")
    print(f"records: {args.records:,}" + (f" imported in {record_seconds:.1f} s" if record_seconds else " (reused)"),
          file=sys.stderr)
    model_name = services.registered_model_create(name=f"streamed-model-{time.time_ns()}", task="classification",
                                                  training_recipe="plain").name
    _, token = api_token_create(name="benchmark", role="ml_engineer")

    # The company's loop: one epoch of shuffled batches, each a dict with its keys.
    rng = random.Random(args.seed)
    keys = [f"rec{i:08d}" for i in range(args.records)]
    rng.shuffle(keys)
    batches = [{"record_key": keys[i:i + 256]} for i in range(0, len(keys), 256)]
    recorder = MembershipRecorder()
    started = time.perf_counter()
    for _ in RecordingLoader(batches, recorder):
        pass
    record_keys_seconds = time.perf_counter() - started
    rows = recorder.rows()

    server, url = _gunicorn(args.workers)
    try:
        client = PlatformClient(url, token)
        run = client.register_training_run(model=model_name, recipe="plain", seed=args.seed,
                                           code_version="benchmark", config={"epochs": 1}, datasets=[dataset.id])
        chunk_seconds: list[float] = []
        send = client._send

        def timed_send(request):
            began = time.perf_counter()
            answer = send(request)
            if "/chunks/" in request.full_url:
                chunk_seconds.append(time.perf_counter() - began)
            return answer

        client._send = timed_send
        started = time.perf_counter()
        done = client.upload_membership(run["id"], dataset.id, rows, chunk_rows=args.chunk_rows)
        stream_seconds = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert done["status"] == "complete" and done["rows"] == args.records, done

    figures = {
        "benchmark": "membership_streaming",
        "records": args.records,
        "chunk_rows": args.chunk_rows,
        "chunks": len(done["chunks"]),
        "gunicorn_workers": args.workers,
        "streaming_records_per_s": round(args.records / stream_seconds),
        "streaming_s": round(stream_seconds, 2),
        "chunk_p50_s": round(statistics.median(chunk_seconds), 3),
        "chunk_max_s": round(max(chunk_seconds), 3),
        "recording_keys_per_s": round(args.records / record_keys_seconds),
        "record_import_rows_per_s": round(args.records / record_seconds) if record_seconds else None,
    }
    print("| figure | value |\n|---|---|")
    for key, value in figures.items():
        print(f"| {key} | {value} |")
    print(json.dumps(figures))


def _gunicorn(workers: int) -> tuple[subprocess.Popen, str]:
    """The web API under gunicorn on a free loopback port, in production mode (DEBUG off)."""
    from django.conf import settings

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "ALLOWED_HOSTS": "127.0.0.1", "LOG_LEVEL": "WARNING", "DJANGO_DEBUG": "false",
           "SECRET_KEY": settings.SECRET_KEY, "SUBJECT_PEPPER": settings.SUBJECT_PEPPERS[settings.SUBJECT_PEPPER_VERSION],
           "RECORD_KEK": settings.RECORD_KEK, "KEYSTORE_DIR": str(settings.KEYSTORE_DIR),
           "CONTENT_FINGERPRINT_KEY": settings.CONTENT_FINGERPRINT_KEYS[settings.CONTENT_FINGERPRINT_KEY_VERSION],
           "SECURE_SSL_REDIRECT": "false", "BEHIND_TLS_PROXY": "false"}
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "deletion_platform.wsgi:application", "--workers",
                               str(workers), "--timeout", "300", "--bind", f"127.0.0.1:{port}", "--log-level",
                               "warning"], cwd=REPO, env=env)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server, f"http://127.0.0.1:{port}"
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.terminate()
                raise SystemExit("gunicorn did not start") from None
            time.sleep(0.2)


if __name__ == "__main__":
    main()
