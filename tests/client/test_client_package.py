"""The lineage client installs into an empty virtual environment, without Django or torch, and its
own unit tests pass there (issue 21)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
QUIET = ["--quiet", "--disable-pip-version-check", "--no-deps", "--no-index"]


def _run(*command, **options) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DJANGO_SETTINGS_MODULE")}
    return subprocess.run([str(part) for part in command], capture_output=True, text=True, timeout=120, env=env,
                          **options)


def test_the_client_installs_alone_and_its_tests_pass_there(tmp_path):
    # A copy, so that building leaves nothing in the repository.
    source = shutil.copytree(REPO / "client", tmp_path / "client",
                             ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    venv = tmp_path / "venv"
    assert _run(sys.executable, "-m", "venv", venv).returncode == 0
    python = venv / "bin" / "python"
    # setuptools before 70.1 (what ensurepip gives Python 3.11) builds wheels only with the wheel
    # package; without it the wheel is built by this environment's pip, offline, and installed.
    if _run(python, "-c", "import setuptools.command.bdist_wheel").returncode == 0:
        installed = _run(python, "-m", "pip", "install", *QUIET, "--no-build-isolation", source)
    else:
        built = _run(sys.executable, "-m", "pip", "wheel", *QUIET, "--no-build-isolation", "--wheel-dir",
                     tmp_path / "wheels", source)
        assert built.returncode == 0, built.stderr
        installed = _run(python, "-m", "pip", "install", *QUIET, *(tmp_path / "wheels").glob("*.whl"))
    assert installed.returncode == 0, installed.stderr

    absent = _run(python, "-c", "import importlib.util as u; print([m for m in ('django', 'torch', 'transformers') "
                                "if u.find_spec(m)])")
    assert absent.stdout.strip() == "[]", absent.stdout + absent.stderr
    where = _run(python, "-c", "import lineage_client; print(lineage_client.__file__)", cwd=tmp_path)
    assert where.stdout.startswith(str(venv)), where.stdout + where.stderr

    tests = _run(python, "-m", "unittest", "discover", "-s", REPO / "client" / "tests", cwd=tmp_path)
    assert tests.returncode == 0, tests.stderr[-3000:]
    assert "OK" in tests.stderr and "Ran " in tests.stderr
