"""The runnable examples (examples/, issue 21) at small size, each as a company would run it: a
subprocess that reaches the platform over HTTP only (a live server) with API tokens, one real Celery
worker shared by the four, and its own data (a Parquet file it writes, a CSV, the company's own
PostgreSQL database, an MLflow tracking server). Each must end with the verdict and end state its
policy makes determinate, with a report whose signature verifies."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from foundation.access.authentication import api_token_create
from tests.audits.conftest import dev_identity, nss_db, pdfsig  # noqa: F401 (fixtures)
from tests.company_sources import second_database
from tests.factories import staff_user
from tests.workers.test_mlflow import MlflowServer

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
CLIENT_SOURCE = REPO / "client" / "src"
PLATFORM_PACKAGES = {"django", "rest_framework", "celery", "deletion", "deletion_platform", "workers",
                     "models_registry", "audits", "foundation", "tests"}
# The operator's query of the CRM table (examples/sklearn_postgres.py); the DSN is a secret in the environment.
CRM_QUERIES = {"crm-accounts": {"sql": "SELECT * FROM crm_accounts", "dsn_env": "CRM_DSN", "timeout_seconds": 30}}


@pytest.fixture(scope="module")
def platform_folders(tmp_path_factory) -> dict[str, Path]:
    """Where the web side (the live server, in this process) and the worker keep artifacts, datasets,
    reports and subject keys: the same folders for both, for the whole module."""
    root = tmp_path_factory.mktemp("platform")
    return {"DATA_DIR": root, "ARTIFACT_ROOT": root / "artifacts", "DATASET_ROOT": root / "datasets",
            "REPORT_ROOT": root / "reports", "KEYSTORE_DIR": root / "keystore"}


@pytest.fixture(scope="module")
def crm():
    """The company's CRM: a database of its own on the test server, not the platform's."""
    with second_database("crm_examples") as database, pytest.MonkeyPatch.context() as patch:
        patch.setenv("CRM_DSN", database.dsn)  # the web side reads the secret from its environment
        yield database


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """The company's MLflow tracking server, started at once (it starts while the other examples run)."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    yield server
    server.stop()


def _signing_env(identity) -> dict[str, str]:
    return {"REPORT_SIGNING_KEY": str(identity.key_path), "REPORT_SIGNING_CERT": str(identity.cert_path),
            "REPORT_SIGNING_CHAIN": str(identity.root_path), "REPORT_TRUST_ROOT": str(identity.root_path)}


@pytest.fixture(scope="module")
def platform_worker(django_db_setup, django_db_blocker, platform_folders, crm, mlflow_server, tmp_path_factory,
                    dev_identity):  # noqa: F811
    """One real `celery worker` (every queue) for the four examples, configured as an operator would
    configure the platform's workers: the signing identity, the CRM query and its DSN, the company's
    MLflow tracking server."""
    from django.conf import settings

    from tests.worker_process import WorkerProcess, purge_broker

    env = {**{name: str(path) for name, path in platform_folders.items()}, **_signing_env(dev_identity),
           "RECORD_KEK": settings.RECORD_KEK, "DATA_SOURCE_QUERIES": json.dumps(CRM_QUERIES), "CRM_DSN": crm.dsn,
           "MLFLOW_TRACKING_URI": mlflow_server.url, "OMP_NUM_THREADS": "1"}
    with django_db_blocker.unblock():
        purge_broker()
        worker = WorkerProcess(tmp_path_factory.mktemp("worker") / "worker.log", extra_env=env)
    worker.start()
    yield worker
    worker.kill()  # a throwaway worker: no need to wait for its warm shutdown; the next purge_broker() cleans up


@pytest.fixture(autouse=True)
def _web_side_like_the_worker(_isolated_stores, _isolated_keystore, settings, platform_folders, mlflow_server,
                              dev_identity):  # noqa: F811
    """The web side (this process's live server) configured as the worker is."""
    for name, path in platform_folders.items():
        setattr(settings, name, path)
    settings.REPORT_SIGNING_KEY, settings.REPORT_SIGNING_CERT = dev_identity.key_path, dev_identity.cert_path
    settings.REPORT_SIGNING_CHAIN = settings.REPORT_TRUST_ROOT = dev_identity.root_path
    settings.REPORT_SIGNING_PKCS12 = settings.REPORT_SIGNING_PASSPHRASE = settings.REPORT_TSA_URL = None
    settings.DATA_SOURCE_QUERIES = CRM_QUERIES
    settings.MLFLOW_TRACKING_URI = mlflow_server.url


def token_options(*, second_dpo: bool = False) -> list[str]:
    """The company's API clients, as the examples' options: its ML platform (ml_engineer, also its serving
    side) and its DPO users' consoles, each token bound to its user (a second one where a residual risk is
    accepted: that takes two people)."""
    dpos = ("alice", "bob") if second_dpo else ("alice",)
    for dpo in dpos:
        staff_user(dpo, role="dpo")
    options = ["--engineer-token", api_token_create(name="acme-ml-platform", role="ml_engineer")[1],
               "--dpo-token", api_token_create(name="alice-console", role="dpo", user="alice")[1]]
    if second_dpo:
        options += ["--second-dpo-token", api_token_create(name="bob-console", role="dpo", user="bob")[1]]
    return options


def run_example(script: str, *args, cwd: Path, env: dict | None = None, timeout: float = 300) -> tuple[str, str, str]:
    """Run an example as a company's process would: its own environment, the lineage client installed
    (here: on its path) and no platform settings. Returns (verdict, end state, output)."""
    env = {**{k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "PYTHONPATH")},
           "PYTHONPATH": str(CLIENT_SOURCE), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    done = subprocess.run([sys.executable, str(EXAMPLES / script), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    output = done.stdout + done.stderr
    ending = re.search(r"^verdict: (\S+)\nend state: (\S+)\n\Z", done.stdout, re.MULTILINE)
    assert done.returncode == 0 and ending, output[-6000:]
    return ending.group(1), ending.group(2), output


def _signed_report(out: Path, nss: str) -> dict:
    """The report the example saved: its PDF's signature verifies; returns the report's data."""
    [pdf] = out.glob("erasure-report-*.pdf")
    checked = pdfsig(pdf, nss)
    assert "Signature is Valid." in checked and "Certificate is Trusted." in checked, checked
    return json.loads(pdf.with_suffix(".json").read_text())


def test_the_examples_reach_the_platform_only_over_http():
    """No example imports Django or a platform package: they use the lineage client and HTTP only."""
    for script in EXAMPLES.rglob("*.py"):
        imported = set()
        for node in ast.walk(ast.parse(script.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported.add(node.module.split(".")[0])
        assert not imported & PLATFORM_PACKAGES, (script, imported & PLATFORM_PACKAGES)


def test_a_scikit_learn_pipeline_on_rows_of_the_companys_postgresql(live_server, platform_worker, crm,
                                                                     tmp_path, nss_db):  # noqa: F811
    verdict, end, output = run_example("sklearn_postgres.py", "--url", live_server.url, *token_options(),
                                       "--dsn", crm.dsn, "--small", "--out", tmp_path / "out", cwd=tmp_path)
    # Exact: the platform refits the pipeline on the kept accounts, the audit's replay refits it again bit for bit.
    assert (verdict, end) == ("PASS", "COMPLETED"), output
    assert "still holds 2 of the erased records" in output and "deletes the customer's 2 row(s)" in output, output
    _signed_report(tmp_path / "out", nss_db)


def test_a_pytorch_model_from_the_companys_package_trained_in_its_own_loop_on_parquet(
        live_server, platform_worker, tmp_path, nss_db):  # noqa: F811
    verdict, end, output = run_example("pytorch_parquet.py", "--url", live_server.url, *token_options(),
                                       "--parquet", tmp_path / "exams.parquet", "--small", "--out", tmp_path / "out",
                                       cwd=tmp_path)
    # Exact: a retrain of Acme's module on the kept exams, which the audit's replay rebuilds bit for bit.
    assert (verdict, end) == ("PASS", "COMPLETED"), output
    assert "scoped: 3 record(s)" in output and "retrain (exact)" in output, output
    _signed_report(tmp_path / "out", nss_db)


def test_a_hugging_face_classifier_trained_with_the_trainer_on_a_csv(live_server, platform_worker, tmp_path,
                                                                    nss_db):  # noqa: F811
    verdict, end, output = run_example("huggingface_csv.py", "--url", live_server.url, *token_options(second_dpo=True),
                                       "--csv", tmp_path / "tickets.csv", "--small", "--out", tmp_path / "out",
                                       cwd=tmp_path)
    # Approximate: fine-tuning cannot be confirmed by the audit; two DPO users accept the residual risk.
    assert (verdict, end) == ("INCONCLUSIVE", "CLOSED_RISK_ACCEPTED"), output
    assert "finetune (approximate)" in output and "two DPO users accept the residual risk" in output, output
    [entry] = _signed_report(tmp_path / "out", nss_db)["model_versions"]
    accepted = entry["risk_acceptance"]
    assert (accepted["proposed_by"], accepted["confirmed_by"]) == ("user:alice via api:alice-console(dpo)",
                                                                   "user:bob via api:bob-console(dpo)"), accepted
    assert (accepted["proposed_by_person"], accepted["confirmed_by_person"]) == ("user:alice", "user:bob"), accepted


def test_a_model_kept_in_mlflow(live_server, platform_worker, mlflow_server, tmp_path, nss_db):  # noqa: F811
    quiet = {"MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    verdict, end, output = run_example("mlflow_registry.py", "--url", live_server.url, *token_options(),
                                       "--tracking-uri", mlflow_server.ready(), "--jsonl", tmp_path / "digits.jsonl",
                                       "--small", "--out", tmp_path / "out", cwd=tmp_path, env=quiet)
    # Exact: a refit on the kept images, replayed bit for bit; MLflow gets the refit as version 2 @production.
    assert (verdict, end) == ("PASS", "COMPLETED"), output
    assert "MLflow version 1: imported as v1 (sklearn_flavor" in output, output
    moved = r"@production is version 2: request \S+, guarantee class exact, replaces version 1"
    assert re.search(moved, output), output
    report = _signed_report(tmp_path / "out", nss_db)
    # MLflow keeps the replaced version's weights; the report says so and what the company must delete.
    assert any(line.startswith("The company's MLflow registry still holds version 1 of ") and "mlflow gc" in line
               for line in report["limitations"]), report["limitations"]
