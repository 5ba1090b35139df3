"""`make serve`: embedded PostgreSQL + Redis, the web server on 127.0.0.1:8000 and one Celery
worker (all queues) plus beat, in the foreground; Ctrl-C stops all of them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> int:
    from deletion_platform import embedded

    embedded_mode = not os.environ.get("DATABASE_URL")
    if embedded_mode:
        embedded.ensure_running()
    python = sys.executable
    subprocess.run([python, "manage.py", "migrate", "--noinput"], cwd=REPO, check=True)
    # Migrations ran as the schema owner; the web and the worker run as the application's role.
    url = os.environ.get("DATABASE_URL") or embedded.services_for().database_url
    env = {**os.environ, "DATABASE_URL": embedded.app_database_url(url)}
    children = [
        subprocess.Popen([python, "manage.py", "runserver", "127.0.0.1:8000", "--noreload"], cwd=REPO, env=env),
        subprocess.Popen([python, "-m", "celery", "-A", "deletion_platform", "worker", "-B",
                          "-Q", "gpu,audit,default", "--concurrency", "1", "--prefetch-multiplier", "1",
                          "--loglevel", "INFO"], cwd=REPO, env=env),
    ]
    print("web: http://127.0.0.1:8000/admin/  API: http://127.0.0.1:8000/api/docs/  (Ctrl-C stops everything)")
    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        while not stopping and all(child.poll() is None for child in children):
            time.sleep(0.5)
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
        if embedded_mode:
            embedded.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
