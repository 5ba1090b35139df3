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
        message = "neither `docker compose` nor `docker-compose` is installed (run scripts/install_system_deps.sh)"
        if os.environ.get("SKIP_SYSTEM_TOOLS") == "1":
            pytest.skip(message)
        pytest.fail(message)
    env = {**os.environ, "POSTGRES_PASSWORD": "x", "SECRET_KEY": "y", "SUBJECT_PEPPER": "z", "RECORD_KEK": "w", "APP_DB_PASSWORD": "v",
           "CONTENT_FINGERPRINT_KEY": "u", "MINIO_ROOT_USER": "t", "MINIO_ROOT_PASSWORD": "ssssssss",
           "KEYSTORE_DB_PASSWORD": "r"}
    result = subprocess.run([*command, "-f", str(COMPOSE), "config", "--services"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) >= {"postgres", "redis", "web", "worker", "gpu-worker-0", "gpu-worker-1",
                                          "beat", "minio", "minio-init", "keystore-db"}


def test_one_gpu_worker_service_per_device_and_workers_on_the_object_store():
    """Read without docker: each GPU worker service reserves its own device (not --scale on one
    reservation); every app service is on the object store (MinIO, its bucket made by an init
    service) with a keystore database of its own, and language-model audits go to the GPU queue."""
    import yaml

    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    gpu = {name: s for name, s in services.items() if name.startswith("gpu-worker")}
    devices = [s["deploy"]["resources"]["reservations"]["devices"] for s in gpu.values()]
    assert len(gpu) >= 2 and all(len(d) == 1 and "count" not in d[0] for d in devices)
    assert len({tuple(d[0]["device_ids"]) for d in devices}) == len(gpu)  # one device each, all different
    assert all("-Q" in s["command"] and s["command"][s["command"].index("-Q") + 1] == "gpu" for s in gpu.values())
    env = compose["x-app"]["environment"]
    assert env["ARTIFACT_STORE"] == "s3" and "minio:9000" in env["ARTIFACT_S3_ENDPOINT_URL"]
    assert "@keystore-db:" in env["KEYSTORE_DATABASE_URL"] and env["LM_AUDIT_QUEUE"] == "gpu"
    init = services["minio-init"]
    assert "mc mb" in " ".join(init["command"]) and "version enable" in " ".join(init["command"])
    assert compose["x-app"]["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"
