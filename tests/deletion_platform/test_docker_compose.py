"""docker/compose.yaml is a valid compose file (checked with docker compose or docker-compose)."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

COMPOSE = Path(__file__).resolve().parents[2] / "docker" / "compose.yaml"


def _compose_command() -> list[str] | None:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_compose_file_is_valid():
    command = _compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    env = {**os.environ, "POSTGRES_PASSWORD": "x", "SECRET_KEY": "y", "SUBJECT_PEPPER": "z", "RECORD_KEK": "w", "APP_DB_PASSWORD": "v",
           "CONTENT_FINGERPRINT_KEY": "u"}
    result = subprocess.run([*command, "-f", str(COMPOSE), "config", "--services"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) >= {"postgres", "redis", "web", "worker", "gpu-worker", "beat"}
