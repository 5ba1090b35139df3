"""A real `celery worker` process for tests of the worker path (no eager mode, no in-process
worker): it reads the test database and the test broker, and stores artifacts where the test's
settings say."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings

REPO = Path(__file__).resolve().parent.parent


def test_database_url() -> str:
    """The test database, as the worker processes of a deployment reach it: on the embedded
    server, as the application's login role (no UPDATE or DELETE on the ledger; see
    deletion/migrations/0012_application_role.py), not as the superuser the tests use."""
    from django.db import connection

    from deletion_platform.embedded import APP_LOGIN_ROLE

    db = settings.DATABASES["default"]
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    host = db["HOST"]
    if host.startswith("/"):
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [APP_LOGIN_ROLE])
            if cursor.fetchone():
                auth = APP_LOGIN_ROLE
        return f"postgresql://{auth}@/{db['NAME']}?host={host}"
    return f"postgresql://{auth}@{host}:{db['PORT'] or 5432}/{db['NAME']}"


class WorkerProcess:
    def __init__(self, log_path: Path, extra_env: dict[str, str] | None = None, queues: str = "gpu,audit,default"):
        self.log_path = log_path
        self.queues = queues
        self.env = {
            **os.environ,
            "DATABASE_URL": test_database_url(),
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
            "ARTIFACT_ROOT": str(settings.ARTIFACT_ROOT),
            "DATASET_ROOT": str(settings.DATASET_ROOT),
            "REPORT_ROOT": str(settings.REPORT_ROOT),
            "DATA_DIR": str(settings.DATA_DIR),
            "SECRET_KEY": settings.SECRET_KEY,
            "SUBJECT_PEPPER": settings.SUBJECT_PEPPERS[settings.SUBJECT_PEPPER_VERSION],
            "CONTENT_FINGERPRINT_KEY": settings.CONTENT_FINGERPRINT_KEYS[settings.CONTENT_FINGERPRINT_KEY_VERSION],
            "PYTHONUNBUFFERED": "1",
            **(extra_env or {}),
        }
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 90) -> WorkerProcess:
        """Start the worker and wait until it is ready to take tasks."""
        return self.launch().wait_ready(timeout)

    def launch(self) -> WorkerProcess:
        """Start the worker process without waiting for it: it boots (torch, Django, the broker
        connection: seconds) while the test does other work; :meth:`wait_ready` before relying on it."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "deletion_platform", "worker", "-Q", self.queues,
             "--pool", "solo", "--concurrency", "1", "--prefetch-multiplier", "1", "--without-gossip",
             "--without-mingle", "--without-heartbeat", "-n", f"test-{os.getpid()}-{time.time_ns()}@%h",
             "--loglevel", "INFO"],
            cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )
        return self

    def wait_ready(self, timeout: float = 90) -> WorkerProcess:
        """Wait until the launched worker logs that it is ready (it fails the test if the process
        exits first or ``timeout`` seconds pass)."""
        deadline = time.monotonic() + timeout
        while b"ready." not in self.log_path.read_bytes():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"celery worker did not start:\n{self.log_text()[-3000:]}")
            time.sleep(0.2)
        return self

    def kill(self) -> None:
        """SIGKILL: what a crash or an OOM kill does; nothing is acknowledged or cleaned up."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def purge_broker() -> None:
    """Empty the queues, and drop what stopped workers of earlier tests left unacknowledged
    (kombu's Redis transport restores those to the queues when a new worker starts)."""
    from deletion_platform.celery import app

    app.control.purge()
    with app.connection_for_write() as connection:
        connection.default_channel.client.delete("unacked", "unacked_index", "unacked_mutex")


def wait_for(predicate, *, timeout: float, interval: float = 0.3, message: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)
