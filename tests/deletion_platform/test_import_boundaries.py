"""The boundaries DESIGN.md draws: the web side does not import torch when it starts
(a web process stays small and starts fast); the method library imports no Django."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120,
                          env={**os.environ, "DJANGO_SETTINGS_MODULE": "deletion_platform.settings"})


def test_the_web_side_starts_without_importing_torch():
    # The WSGI application with every URL resolved (each view module and the admin imported), a
    # schema render (every serializer).
    code = """
import json, sys
from django.core.wsgi import get_wsgi_application
application = get_wsgi_application()
from django.urls import get_resolver
get_resolver().url_patterns
import deletion_platform.urls, deletion.admin, models_registry.admin, workers.admin, workers.training_apis, audits.apis
from drf_spectacular.generators import SchemaGenerator
SchemaGenerator().get_schema(request=None, public=True)
bad = [m for m in ("torch", "transformers", "peft", "opacus") if m in sys.modules]
print(*bad)
sys.exit(1 if bad else 0)
"""
    done = _run(code)
    assert done.returncode == 0, f"imported at start: {done.stdout}{done.stderr[-2000:]}"


def test_the_method_library_imports_no_django():
    code = """
import sys
from workers.unlearning.methods import load_all_methods
load_all_methods()
import workers.artifacts, workers.training.lm, workers.unlearning.catalogue, foundation.strict_json
bad = [m for m in sys.modules if m == "django" or m.startswith("django.")]
print(*bad[:5])
sys.exit(1 if bad else 0)
"""
    done = _run(code)
    assert done.returncode == 0, f"imported Django: {done.stdout}{done.stderr[-2000:]}"
