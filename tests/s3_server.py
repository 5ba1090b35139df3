"""A real S3-compatible server for the tests: moto's standalone server (``moto[server]``) in a
process of its own, over HTTP on a free loopback port, one per test session, started the first
time a test asks for it. A versioned bucket for the artifact store, and a second bucket with
Object Lock for the purge that must not claim what a retention keeps."""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ACCESS_KEY = "test-access-key"
SECRET_KEY = "test-secret-key"
REGION = "us-east-1"
BUCKET = "artifacts-versioned"
LOCKED_BUCKET = "artifacts-object-lock"


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    bucket: str = BUCKET
    locked_bucket: str = LOCKED_BUCKET

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name=REGION, aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=SECRET_KEY)

    def location(self, prefix: str, *, bucket: str | None = None):
        from workers.object_store import S3Location

        return S3Location(bucket=bucket or self.bucket, prefix=prefix, endpoint_url=self.endpoint_url, region=REGION,
                          access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_until_serving(process: subprocess.Popen, port: int, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto server exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"moto server did not listen on 127.0.0.1:{port} within {timeout} s")


@pytest.fixture(scope="session")
def s3_server():
    """The session's S3 server (moto, its own process, loopback only), with its two buckets."""
    port = _free_port()
    # Its request log goes to a file: a pipe nobody reads would fill and stop the server.
    log = Path(tempfile.mkdtemp(prefix="moto-")) / "server.log"
    with log.open("wb") as sink:
        process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                   stdout=sink, stderr=subprocess.STDOUT)
    try:
        _wait_until_serving(process, port, log)
        server = S3Server(endpoint_url=f"http://127.0.0.1:{port}")
        client = server.client()
        client.create_bucket(Bucket=BUCKET)
        client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        client.create_bucket(Bucket=LOCKED_BUCKET, ObjectLockEnabledForBucket=True)  # versioned by S3's rules
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
