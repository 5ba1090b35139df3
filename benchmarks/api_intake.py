"""Intake throughput: POST /api/v1/deletion-requests/ under gunicorn on PostgreSQL.

Starts gunicorn (sync workers) against a fresh benchmark database, drives creates from a separate
process on loopback with N concurrent keep-alive clients for a bounded time (authentication,
idempotency key, subject lookup and ledger append included), and prints sustained creates/s and
p50/p99 latency. Last stdout line: one JSON object.

    python benchmarks/api_intake.py --seconds 20 --clients 16 --workers 4
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _setup import REPO, django_setup  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _drive(port: int, token: str, clients: int, seconds: float, warmup: float, queue) -> None:
    """Runs in its own process: ``clients`` threads, each a keep-alive connection posting creates."""
    stop_at = time.perf_counter() + warmup + seconds
    measure_from = time.perf_counter() + warmup
    results: list[tuple[float, float, int]] = []
    lock = threading.Lock()

    def client(index: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        local = []
        n = 0
        while time.perf_counter() < stop_at:
            n += 1
            body = json.dumps({"identifiers": {"email": f"bench-{index}-{n}@example.org"}, "jurisdiction": "GDPR",
                               "legal_ground": "art17_1_b", "channel": "benchmark"})
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json",
                       "Idempotency-Key": uuid.uuid4().hex}
            started = time.perf_counter()
            try:
                conn.request("POST", "/api/v1/deletion-requests/", body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                status = 0
            local.append((started, time.perf_counter() - started, status))
        with lock:
            results.extend(r for r in local if r[0] >= measure_from)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    queue.put(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--data-dir", type=Path, default=REPO / ".data" / "bench")
    args = parser.parse_args()
    django_setup(data_dir=args.data_dir, fresh_database="bench_intake")
    from foundation.access.authentication import api_token_create

    _, token = api_token_create(name="benchmark", role="intake")
    port = _free_port()
    from django.conf import settings

    # Production mode (DEBUG off: no query log), with this data directory's secrets.
    env = {**os.environ, "ALLOWED_HOSTS": "127.0.0.1", "LOG_LEVEL": "WARNING", "DJANGO_DEBUG": "false",
           "SECRET_KEY": settings.SECRET_KEY, "SUBJECT_PEPPER": settings.SUBJECT_PEPPERS[settings.SUBJECT_PEPPER_VERSION],
           "RECORD_KEK": settings.RECORD_KEK, "KEYSTORE_DIR": str(settings.KEYSTORE_DIR),
           "CONTENT_FINGERPRINT_KEY": settings.CONTENT_FINGERPRINT_KEYS[settings.CONTENT_FINGERPRINT_KEY_VERSION],
           # Plain HTTP on loopback (TLS ends at a proxy in production); no rate limit on the load.
           "SECURE_SSL_REDIRECT": "false", "BEHIND_TLS_PROXY": "false", "INTAKE_RATE_LIMIT": "10000000/minute"}
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "deletion_platform.wsgi:application", "--workers", str(args.workers),
         "--bind", f"127.0.0.1:{port}", "--log-level", "warning"], cwd=REPO, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("gunicorn did not start") from None
                time.sleep(0.2)
        queue = multiprocessing.Queue()
        driver = multiprocessing.Process(target=_drive, args=(port, token, args.clients, args.seconds, args.warmup, queue))
        driver.start()
        results = queue.get()
        driver.join()
    finally:
        server.terminate()
        server.wait(timeout=30)
    ok = [r for r in results if r[2] == 201]
    errors = len(results) - len(ok)
    if errors:
        codes = sorted({r[2] for r in results if r[2] != 201})
        print(f"non-201 answers: {errors} (status codes {codes})", file=sys.stderr)
    latencies = sorted(r[1] * 1000 for r in ok)
    figures = {
        "benchmark": "api_intake",
        "clients": args.clients,
        "gunicorn_workers": args.workers,
        "seconds": args.seconds,
        "creates": len(ok),
        "non_201": errors,
        "creates_per_s": round(len(ok) / args.seconds, 1),
        "p50_ms": round(statistics.median(latencies), 1) if latencies else None,
        "p99_ms": round(latencies[int(0.99 * (len(latencies) - 1))], 1) if latencies else None,
    }
    print("| figure | value |\n|---|---|")
    for key, value in figures.items():
        print(f"| {key} | {value} |")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
