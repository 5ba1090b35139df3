"""The company's MLflow registry (issue 21), against a real MLflow tracking server that the tests start
as its own process (``mlflow server``, a SQLite database as its backend store, artifacts served by the
server from a local folder). The company logs and registers scikit-learn pipelines the way it would
(the sklearn flavor, which MLflow saves with skops), plus a cloudpickled pipeline and a pickled PyTorch
module; the platform imports the versions over the API (the pickles refused with their reason, never
downloaded), unlearns a record, and on the serving side's confirmation registers the unlearned version
in MLflow (tagged with the request and the guarantee class) and moves the serving alias to it, after
MLflow was unreachable once; a withdrawn model's alias is removed. A transformers classifier logged with
the transformers flavor is imported and written back in the same folders."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.flows import registered_over_api
from tests.workers.test_sklearn_models import SKLEARN, _fitted, breast_cancer  # noqa: F401 (fixture)
from workers.jobs import job_execute
from workers.mlflow_registry import TRAINING_RUN_TAG, MlflowUnavailable, mlflow_sync_run
from workers.models import Job, JobKind, MlflowSync, MlflowSyncKind

pytestmark = pytest.mark.django_db

EVIDENCE = {"method": "email-link", "verified_at": "2026-11-20T10:00:00Z", "verifier": "support"}
REQUIREMENTS = ["scikit-learn==1.9.1", "skops==0.16.0"]  # given, so MLflow does not infer them


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class MlflowServer:
    """A real MLflow tracking server in its own process: SQLite backend store (a database file),
    artifacts under a local folder served through the server (the platform reaches it only over
    HTTP, as it would the company's). Started at once; :meth:`ready` waits for its health check,
    so that the tests' own set-up runs while it starts."""

    def __init__(self, folder: Path) -> None:
        self.log = folder / "server.log"
        self.url = f"http://127.0.0.1:{_free_port()}"
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", self.url.rsplit(":", 1)[1],
                 "--workers", "1", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
                 "--serve-artifacts", "--artifacts-destination", str(folder / "artifacts")],
                cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def ready(self, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if requests.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self.url
            except requests.RequestException:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the MLflow server did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        # A throwaway server (its database and artifacts are in a temporary folder): killed with
        # its process group (the CLI and its uvicorn child) rather than waiting on a graceful stop.
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    yield server
    server.stop()


@pytest.fixture
def mlflow_configured(mlflow_server, settings, monkeypatch):
    """The platform pointed at the server (not waiting for it); MLflow's client fails fast (the
    platform retries itself)."""
    url = mlflow_server.url
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)  # the company's side (mlflow's fluent API)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    settings.MLFLOW_TRACKING_URI = url
    return url


def _company_logs(url: str, dataset, keys: list[str], *, platform_run: int) -> dict[str, str]:
    """What the company's pipelines logged and registered in MLflow: ``bc-churn`` v1 (the sklearn
    flavor, saved with skops; its run tagged with the platform training run by the client library;
    alias production), v2 (the same pipeline cloudpickled), v3 (a PyTorch module, the pytorch flavor
    with torch.save), v4 (skops, a run the platform knows nothing of); ``bc-churn-eu`` v1 (production).
    Returns the MLflow run ids by name."""
    import mlflow
    import torch

    mlflow.set_experiment("churn-models")
    pipeline = _fitted(dataset, keys)
    runs = {}
    for name, tags, log in [
        ("v1", {TRAINING_RUN_TAG: str(platform_run)},
         lambda: mlflow.sklearn.log_model(pipeline, name="model", registered_model_name="bc-churn",
                                          pip_requirements=REQUIREMENTS)),
        ("v2", {}, lambda: mlflow.sklearn.log_model(pipeline, name="model", registered_model_name="bc-churn",
                                                    serialization_format="cloudpickle", pip_requirements=REQUIREMENTS)),
        ("v3", {}, lambda: mlflow.pytorch.log_model(torch.nn.Linear(30, 2), name="model", registered_model_name="bc-churn",
                                                    serialization_format="pickle", pip_requirements=["torch"])),
        ("v4", {}, lambda: mlflow.sklearn.log_model(pipeline, name="model", registered_model_name="bc-churn",
                                                    pip_requirements=REQUIREMENTS)),
        ("eu", {}, lambda: mlflow.sklearn.log_model(pipeline, name="model", registered_model_name="bc-churn-eu",
                                                    pip_requirements=REQUIREMENTS)),
    ]:
        with mlflow.start_run(tags=tags) as run:
            log()
        runs[name] = run.info.run_id
    client = mlflow.MlflowClient(url)
    client.set_registered_model_alias("bc-churn", "production", "1")
    client.set_registered_model_alias("bc-churn-eu", "production", "1")
    return runs


def _run(job_id: int) -> Job:
    assert job_execute(job_id=job_id) == "succeeded", Job.objects.get(pk=job_id).error
    return Job.objects.get(pk=job_id)


def test_versions_are_imported_pickles_refused_and_the_serving_alias_follows_the_erasure(
        mlflow_server, mlflow_configured, api_client_for, breast_cancer, settings):  # noqa: F811
    import mlflow

    from models_registry.models import ModelVersion
    from workers.runners.storage import artifact_store
    from workers.training.sklearn_estimators import load_skops, skops_from_tensors

    dataset, keys = breast_cancer
    engineer, dpo = api_client_for("ml_engineer"), api_client_for("dpo", name="alice")
    policy = {"replay_retrain": True}
    run_a = registered_over_api(engineer, name="churn", architecture=SKLEARN, dataset=dataset, keys=keys,
                                recipe="sklearn", policy=policy, run_config={"seed": 5})
    run_b = registered_over_api(engineer, name="churn-eu", architecture=SKLEARN, dataset=dataset, keys=keys,
                                recipe="sklearn", policy=policy, run_config={"seed": 5})
    url = mlflow_server.ready()
    runs = _company_logs(url, dataset, keys, platform_run=run_a)

    imported = engineer.post("/api/v1/mlflow/imports/", {"registered_model": "bc-churn", "model": "churn",
                                                          "alias": "production"}, format="json")
    assert imported.status_code == 200, imported.content
    assert imported.json()["alias_version"] == 1
    versions = {v["mlflow_version"]: v for v in imported.json()["versions"]}
    assert (versions[1]["status"], versions[1]["form"], versions[1]["aliases"], versions[1]["membership_from"],
            versions[1]["training_run"]) == ("imported", "sklearn_flavor", ["production"], "run_tag", run_a)
    # The pickles: refused, their flavor and file named with what to log instead, and never fetched.
    assert (versions[2]["status"], versions[2]["code"]) == ("refused", "unsafe_checkpoint")
    assert all(w in versions[2]["reason"] for w in ("sklearn flavor", "cloudpickle", "model.pkl", "skops"))
    assert (versions[3]["status"], versions[3]["code"]) == ("refused", "unsafe_checkpoint")
    assert all(w in versions[3]["reason"] for w in ("pytorch flavor", "data/model.pth", "torch.save", "safetensors"))
    assert not [line for line in mlflow_server.log.read_text().splitlines()
                if "GET " in line and ("model.pkl" in line or "model.pth" in line)]
    # No membership, no version: it could not be unlearned.
    assert (versions[4]["status"], versions[4]["code"], versions[4]["platform_version"]) == (
        "no_membership", "no_membership", None)
    assert runs["v4"] in versions[4]["reason"] and TRAINING_RUN_TAG in versions[4]["reason"]
    served = ModelVersion.objects.get(pk=versions[1]["platform_version"]["id"])
    assert served.status == "serving" and served.training_run_id == run_a
    again = engineer.post("/api/v1/mlflow/imports/", {"registered_model": "bc-churn", "model": "churn",
                                                       "alias": "production"}, format="json").json()
    assert again["versions"][0]["platform_version"] == versions[1]["platform_version"]
    assert ModelVersion.objects.filter(model__name="churn").count() == 1
    # The second model's run carries no tag: the request maps it to its training run.
    eu = engineer.post("/api/v1/mlflow/imports/", {"registered_model": "bc-churn-eu", "model": "churn-eu",
                                                    "alias": "production", "training_runs": {runs["eu"]: run_b}},
                       format="json")
    assert eu.status_code == 200, eu.content
    [eu_version] = eu.json()["versions"]
    assert (eu_version["status"], eu_version["membership_from"]) == ("imported", "request")
    for body, status, code in [({"registered_model": "bc-churn", "model": "churn", "alias": "staging"}, 400,
                                "validation_failed"),
                               ({"registered_model": "no-such-model", "model": "churn", "alias": "production"}, 404,
                                "mlflow_not_found")]:
        refused = engineer.post("/api/v1/mlflow/imports/", body, format="json")
        assert (refused.status_code, refused.json()["error"]["code"]) == (status, code), refused.content

    # One record erased from both models: churn is retrained and confirmed, churn-eu withdrawn.
    request_id = dpo.post("/api/v1/deletion-requests/", {
        "identifiers": {}, "record_keys": [{"dataset": f"{dataset.name}@{dataset.version}", "record_key": keys[0]}],
        "jurisdiction": "GDPR", "legal_ground": "art17_1_b", "channel": "web-form"},
        format="json", HTTP_IDEMPOTENCY_KEY="mlflow-1").json()["id"]
    scoped = dpo.post(f"/api/v1/deletion-requests/{request_id}/verify/", EVIDENCE, format="json").json()
    assert {(p["model"], p["method"]) for p in scoped["plan"]} == {("churn", "retrain"), ("churn-eu", "retrain")}
    dpo.post(f"/api/v1/deletion-requests/{request_id}/approve/", {}, format="json")
    withdrawn = dpo.post(f"/api/v1/deletion-requests/{request_id}/withdraw-model/",
                         {"model_version_id": eu_version["platform_version"]["id"], "reason": "EU churn model retired"},
                         format="json")
    assert withdrawn.status_code == 200, withdrawn.content
    for job in Job.objects.filter(kind=JobKind.UNLEARN, status="pending"):
        _run(job.id)
    for job in Job.objects.filter(kind=JobKind.AUDIT):
        _run(job.id)
    outcome = next(o for o in dpo.get(f"/api/v1/deletion-requests/{request_id}/").json()["outcomes"]
                   if o["model"] == "churn")
    assert (outcome["verdict"], outcome["status"]) == ("PASS", "awaiting_deployment"), outcome

    # The serving side confirms while MLflow cannot be reached: the platform's state moves on, the
    # registration waits on its row and is tried again.
    settings.MLFLOW_TRACKING_URI = f"http://127.0.0.1:{_free_port()}"
    confirmed = engineer.post(f"/api/v1/deletion-requests/{request_id}/confirm-deployment/",
                              {"new_version_id": outcome["new_version_id"]}, format="json")
    assert confirmed.status_code == 200, confirmed.content
    register = MlflowSync.objects.get(kind=MlflowSyncKind.REGISTER)
    with pytest.raises(MlflowUnavailable):
        mlflow_sync_run(sync_id=register.id)
    register.refresh_from_db()
    assert (register.status, register.attempts) == ("pending", 1) and "could not be reached" in register.last_error
    new = ModelVersion.objects.get(pk=outcome["new_version_id"])
    assert new.status == "serving"
    settings.MLFLOW_TRACKING_URI = url
    assert mlflow_sync_run(sync_id=register.id) == "done"
    assert mlflow_sync_run(sync_id=register.id) == "skipped"  # a redelivered task does nothing twice

    client = mlflow.MlflowClient(url)
    [registered] = [v for v in client.search_model_versions("name='bc-churn'") if v.version == "5"]
    assert {k: v for k, v in registered.tags.items() if k.startswith("deletion_platform.")} == {
        "deletion_platform.model": "churn", "deletion_platform.model_version": str(new.id),
        "deletion_platform.version": str(new.version), "deletion_platform.deletion_request": request_id,
        "deletion_platform.guarantee_class": "exact", "deletion_platform.replaces": "1",
        "deletion_platform.artifact_sha256": new.artifact_sha256}
    assert client.get_registered_model("bc-churn").aliases == {"production": "5"}
    # Its artifact is the platform's stored pipeline, in the form v1 came in (the sklearn flavor, skops).
    folder = Path(mlflow.artifacts.download_artifacts(artifact_uri="models:/bc-churn@production",
                                                      dst_path=str(Path(settings.ARTIFACT_ROOT).parent / "mv5")))
    store = artifact_store()
    stored = skops_from_tensors(store.load_blob(store.manifest(new.artifact_sha256).files["estimator"]["sha256"]))
    assert (folder / "model.skops").read_bytes() == stored
    assert load_skops(stored, source="test").predict_proba
    from mlflow.models import Model

    flavor = Model.load(str(folder / "MLmodel"))
    assert flavor.flavors["sklearn"]["serialization_format"] == "skops" and flavor.run_id == registered.run_id
    assert MlflowSync.objects.get(pk=register.id).result["alias"] == {
        "name": "production", "moved": True, "from": 1, "to": 5}

    # The withdrawn model's serving alias is removed, and its version says why.
    remove = MlflowSync.objects.get(kind=MlflowSyncKind.REMOVE_ALIAS)
    assert remove.alias == "production" and remove.registered_model == "bc-churn-eu"
    assert mlflow_sync_run(sync_id=remove.id) == "done"
    assert client.get_registered_model("bc-churn-eu").aliases == {}
    assert client.get_model_version("bc-churn-eu", "1").tags["deletion_platform.withdrawn"] == request_id
    listed = engineer.get("/api/v1/mlflow/syncs/").json()
    assert {(s["kind"], s["status"], s["attempts"]) for s in listed} == {("register", "done", 2),
                                                                         ("remove_alias", "done", 1)}


def test_without_a_tracking_server_the_import_is_off_and_says_so(api_client_for, settings):
    settings.MLFLOW_TRACKING_URI = None
    engineer = api_client_for("ml_engineer")
    engineer.post("/api/v1/models/", {"name": "churn", "task": "classification", "training_recipe": "sklearn",
                                      "architecture": SKLEARN}, format="json")
    refused = engineer.post("/api/v1/mlflow/imports/", {"registered_model": "bc-churn", "model": "churn",
                                                         "alias": "production"}, format="json")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "mlflow_not_configured"
    assert "MLFLOW_TRACKING_URI" in refused.json()["error"]["message"]
    assert engineer.get("/api/v1/mlflow/syncs/").json() == []


def test_a_transformers_flavor_version_is_imported_and_written_back_in_the_same_form(
        mlflow_server, mlflow_configured, api_client_for, tmp_path):
    """A sequence classifier logged with the transformers flavor (its model/ folder and
    components/tokenizer/) is checked by the Hugging Face family like an uploaded archive; the
    platform's stored version is written back as the same folders and loads in transformers."""
    import mlflow
    from transformers import AutoModelForSequenceClassification, BertForSequenceClassification

    from models_registry.models import ModelVersion
    from tests import factories
    from tests.workers.hf_company import bert_style
    from workers.mlflow_registry import version_folder_write
    from workers.models import MlflowModelVersion

    dataset = factories.dataset(modality="text")
    factories.import_records(dataset, [{"record_key": k, "content": f"ticket {k}"} for k in ("a", "b", "c")])
    engineer = api_client_for("ml_engineer")
    engineer.post("/api/v1/models/", {"name": "tickets", "task": "classification",
                                      "training_recipe": "hf_sequence_classifier",
                                      "architecture": {"name": "transformers", "config": {}}}, format="json")
    run_id = engineer.post("/api/v1/training-runs/", {
        "model": "tickets", "recipe": "company-pipeline", "seed": 7, "code_version": "company-ml 3.2", "config": {},
        "datasets": [dataset.id]}, format="json").json()["id"]
    engineer.generic("POST", f"/api/v1/training-runs/{run_id}/membership/?dataset={dataset.id}",
                     b"".join(b'{"record_key": "%s"}\n' % k for k in (b"a", b"b", b"c")),
                     content_type="application/x-ndjson")
    config, tokenizer = bert_style()
    mlflow_server.ready()
    mlflow.set_experiment("tickets")
    with mlflow.start_run(tags={TRAINING_RUN_TAG: str(run_id)}):
        mlflow.transformers.log_model({"model": BertForSequenceClassification(config), "tokenizer": tokenizer},
                                      name="model", task="text-classification", registered_model_name="tickets-bert",
                                      pip_requirements=["transformers==5.24.0"])
    mlflow.MlflowClient().set_registered_model_alias("tickets-bert", "champion", "1")

    imported = engineer.post("/api/v1/mlflow/imports/", {"registered_model": "tickets-bert", "model": "tickets",
                                                          "alias": "champion"}, format="json")
    assert imported.status_code == 200, imported.content
    [version] = imported.json()["versions"]
    assert (version["status"], version["form"], version["code"]) == ("imported", "transformers_flavor", ""), version
    stored = ModelVersion.objects.get(pk=version["platform_version"]["id"])
    link = MlflowModelVersion.objects.get(model_version=stored)
    assert link.layout == {"form": "transformers_flavor", "model_dir": "model", "tokenizer_dir": "components/tokenizer"}

    version_folder_write(tmp_path / "model", version=stored, layout=link.layout, flavor_files=link.flavor_files,
                         run_id="0" * 32)
    written = sorted(str(p.relative_to(tmp_path / "model")) for p in (tmp_path / "model").rglob("*") if p.is_file())
    assert {"MLmodel", "model/config.json", "model/model.safetensors", "components/tokenizer/tokenizer.json"} <= set(
        written), written
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "model" / "model")
    assert reloaded.config.num_labels == 2 and "transformers" in (tmp_path / "model" / "MLmodel").read_text()
