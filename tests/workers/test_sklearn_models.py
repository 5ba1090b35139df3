"""scikit-learn estimators from outside (issue 19): a pipeline with preprocessing (StandardScaler +
LogisticRegression on breast cancer) stored with skops, registered and uploaded as one estimator
(recipe ``sklearn``) and as a SISA ensemble of three (``sklearn_sisa``), unlearned exactly and audited
to a signed report through the REST API; approximate methods are refused for it; hostile and
malformed skops uploads are refused with a 4xx naming the problem, and nothing is stored."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from django.conf import settings

from models_registry.models import DataRecord, ModelVersion, RegisteredModel, StoredArtifact
from tests.audits.conftest import dev_identity, nss_db, pdfsig, signing_settings  # noqa: F401 (fixtures)
from tests.flows import registered_over_api, upload_over_api
from workers.jobs import job_execute
from workers.models import Job, JobKind
from workers.reference_data import reference_dataset_register

pytestmark = pytest.mark.django_db

SKLEARN = {"name": "sklearn", "config": {"in_features": 30, "num_classes": 2}}
SHARD_KEY = "company-shard-key-7"
EVIDENCE = {"method": "email-link", "verified_at": "2026-11-20T10:00:00Z", "verifier": "support"}


class Exfiltrator:
    """A class of the uploader's own: loading it would import and run its module's code."""

    def __init__(self) -> None:
        self.target = "https://attacker.example"


def _pipeline():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))


def _fitted(dataset, keys, estimator=None):
    """What the company's pipeline fitted on its own machines, on the records ``keys``."""
    import numpy as np

    from workers.datasets.reference import load_reference_split

    train = load_reference_split(dataset.storage_location, "train").subset(keys)
    inputs = np.stack([train[i][1].double().numpy() for i in range(len(train))])
    targets = np.array([int(train[i][2]) for i in range(len(train))])
    return (estimator or _pipeline()).fit(inputs, targets)


def _shard(key: str, shards: int = 3) -> int:
    from workers.training.sisa import keyed_assignment

    return keyed_assignment(key, key=SHARD_KEY, shards=shards, slices=1)[0]


@pytest.fixture
def breast_cancer():
    """The reference table and the keys of its first 200 training records."""
    dataset = reference_dataset_register(name="breast_cancer")
    keys = sorted(DataRecord.objects.filter(dataset=dataset, split="train").values_list("external_key", flat=True))
    return dataset, keys[:200]


def _registered(client, dataset, keys, *, name: str, recipe: str, run_config: dict, shards=None,
                policy=None) -> int:
    """The model, its training run and membership (with shards when given), over the REST API;
    returns the run's id."""
    return registered_over_api(client, name=name, architecture=SKLEARN, dataset=dataset, keys=keys, recipe=recipe,
                               policy=policy, run_config=run_config, code_version="company-pipeline-3.1",
                               shard_of=shards)


_upload = upload_over_api


def _nothing_stored(model_name: str) -> None:
    assert not ModelVersion.objects.filter(model__name=model_name).exists()
    assert not StoredArtifact.objects.filter(training_run__model__name=model_name).exists()
    assert not [p for p in Path(settings.ARTIFACT_ROOT).rglob("*") if p.is_file()]


def _run(job_id: int) -> Job:
    assert job_execute(job_id=job_id) == "succeeded", Job.objects.get(pk=job_id).error
    return Job.objects.get(pk=job_id)


@pytest.mark.usefixtures("signing_settings")
def test_a_pipeline_and_a_sisa_ensemble_of_pipelines_are_unlearned_exactly_and_audited_to_a_signed_report(
        api_client_for, breast_cancer, request):
    import skops.io

    from audits.models import Report
    from workers.runners.storage import artifact_store
    from workers.services import shadow_models_train
    from workers.training.storage import load_run

    dataset, keys = breast_cancer
    engineer, dpo = api_client_for("ml_engineer"), api_client_for("dpo", name="alice")
    # One pipeline on every record (replayed in the audit: the policy asks for it).
    single_run = _registered(engineer, dataset, keys, name="bc-sklearn", recipe="sklearn",
                             run_config={"seed": 5, "solver": "lbfgs"}, policy={"replay_retrain": True})
    uploaded = _upload(engineer, "bc-sklearn", single_run, skops.io.dumps(_fitted(dataset, keys)))
    assert uploaded.status_code == 201, uploaded.content
    single = ModelVersion.objects.get(pk=uploaded.json()["id"])
    # Three pipelines, one per shard of the company's keyed hash.
    sisa_run = _registered(engineer, dataset, keys, name="bc-sklearn-sisa", recipe="sklearn_sisa",
                           run_config={"seed": 5, "shards": 3, "shard_key": SHARD_KEY}, shards=_shard)
    ensemble = [_fitted(dataset, [k for k in keys if _shard(k) == s]) for s in range(3)]
    uploaded = _upload(engineer, "bc-sklearn-sisa", sisa_run, skops.io.dumps(ensemble))
    assert uploaded.status_code == 201, uploaded.content
    sisa = ModelVersion.objects.get(pk=uploaded.json()["id"])

    stored = load_run(artifact_store(), single.artifact_sha256)
    assert stored.recipe == "sklearn" and sorted(row.record_key for row in stored.membership) == keys
    assert "estimator" not in stored.config["architecture"] and stored.config["seed"] == 5  # "solver" is not taken
    assert [(r.recipe, len(r.model.estimators)) for r in [load_run(artifact_store(), sisa.artifact_sha256)]] == [
        ("sklearn_sisa", 3)]
    for version in (single, sisa):  # the family's recipe with the recorded configuration
        _run(shadow_models_train(version=version, count=8, enqueue=False).id)

    # A policy that names an approximate method is refused when saved (below); one edited around
    # that check is not followed either: the plan keeps the exact retrain.
    RegisteredModel.objects.filter(name="bc-sklearn").update(
        unlearning_policy={"replay_retrain": True, "approximate_method": "finetune"})
    request_id = dpo.post("/api/v1/deletion-requests/", {
        "identifiers": {}, "record_keys": [{"dataset": f"{dataset.name}@{dataset.version}", "record_key": keys[0]}],
        "jurisdiction": "GDPR", "legal_ground": "art17_1_b", "channel": "web-form"},
        format="json", HTTP_IDEMPOTENCY_KEY="sklearn-1").json()["id"]
    scoped = dpo.post(f"/api/v1/deletion-requests/{request_id}/verify/", EVIDENCE, format="json").json()
    assert [(p["model"], p["method"], p["guarantee_class"]) for p in scoped["plan"]] == [
        ("bc-sklearn", "retrain", "exact"), ("bc-sklearn-sisa", "sklearn_sisa", "exact")]
    dpo.post(f"/api/v1/deletion-requests/{request_id}/approve/", {}, format="json")
    for job in Job.objects.filter(kind=JobKind.UNLEARN).order_by("id"):
        _run(job.id)
    refit = Job.objects.get(kind=JobKind.UNLEARN, method="sklearn_sisa")
    assert refit.result["unlearning"]["details"]["shards_refit"] == [_shard(keys[0])]
    new_sisa = load_run(artifact_store(), refit.result_version.artifact_sha256)
    parent_sisa = load_run(artifact_store(), sisa.artifact_sha256)
    kept = [s for s in range(3) if s != _shard(keys[0])]
    assert all(new_sisa.model.estimators[s].steps[1][1].coef_.tobytes()
               == parent_sisa.model.estimators[s].steps[1][1].coef_.tobytes() for s in kept)
    for job in Job.objects.filter(kind=JobKind.AUDIT).order_by("id"):
        _run(job.id)

    state = dpo.get(f"/api/v1/deletion-requests/{request_id}/").json()
    outcomes = {o["model"]: o for o in state["outcomes"]}
    # Stated verdicts, both exact and PASS: the lineage proves each new version was fitted only on
    # records without the forgotten one (the full refit, or the refit of the one shard that held it)
    # and every older copy holding it is purged, and the audit's independent replay refit the
    # pipeline(s) from the registry's kept records to identical numbers (scaler means and scales,
    # coefficients, bit for bit). The statistics (8 shadow models) are sanity checks and do not
    # decide an exact verdict.
    assert {(m, o["method"], o["verdict"]) for m, o in outcomes.items()} == {
        ("bc-sklearn", "retrain", "PASS"), ("bc-sklearn-sisa", "sklearn_sisa", "PASS")}, outcomes
    for job in Job.objects.filter(kind=JobKind.AUDIT):
        replay = job.result["audit"]["replay"]
        assert replay["ran"] and replay["comparison"]["identical"] and replay["comparison"]["tensors_compared"] > 10
    for outcome in outcomes.values():
        confirmed = dpo.post(f"/api/v1/deletion-requests/{request_id}/confirm-deployment/",
                             {"new_version_id": outcome["new_version_id"]}, format="json")
        assert confirmed.status_code == 200, confirmed.content
    _run(Job.objects.get(kind=JobKind.REPORT).id)
    done = dpo.get(f"/api/v1/deletion-requests/{request_id}/").json()
    assert done["status"] == "COMPLETED", done
    report = Report.objects.get(request__public_id=request_id)
    checked = pdfsig(Path(report.pdf_path), request.getfixturevalue("nss_db"))
    assert "Signature is Valid." in checked and "Certificate is Trusted." in checked, checked
    assert {e["verdict"]["verdict"] for e in report.json["model_versions"]} == {"PASS"}
    single.refresh_from_db()
    sisa.refresh_from_db()
    assert (single.status, sisa.status) == ("purged", "purged")


def test_approximate_methods_and_a_malformed_architecture_are_refused_at_registration(api_client_for):
    engineer = api_client_for("ml_engineer")
    model = {"name": "bc-sklearn", "task": "classification", "training_recipe": "sklearn", "architecture": SKLEARN}
    refused = engineer.post("/api/v1/models/", {**model, "unlearning_policy": {"approximate_method": "finetune"}},
                            format="json")
    assert refused.status_code == 400, refused.content
    error = refused.json()["error"]
    assert "unlearning_policy.approximate_method" in error["fields"]
    assert "'finetune' does not apply to a model of the sklearn family" in error["message"]
    assert "no gradients" in error["message"] and "exact" in error["message"]
    malformed = {"name": "sklearn", "config": {"in_features": 30, "num_classes": 1}}
    refused = engineer.post("/api/v1/models/", {**model, "architecture": malformed}, format="json")
    assert refused.status_code == 400 and "num_classes must be an integer >= 2" in refused.json()["error"]["message"]
    assert not RegisteredModel.objects.exists()


def _hostile_bodies(dataset, keys) -> dict[str, tuple[bytes, int, str, str]]:
    """name -> (body, status, error code, what the message must name)."""
    import numpy as np
    import skops.io
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer
    from sklearn.tree import DecisionTreeClassifier

    fitted = _fitted(dataset, keys)
    evaluating = _fitted(dataset, keys, make_pipeline(FunctionTransformer(func=np.log1p), LogisticRegression()))
    evaluating.steps[0][1].func = eval  # noqa: S307 (the hostile reference under test; never called)
    good = skops.io.dumps(fitted)
    return {
        "a class of the uploader's own": (skops.io.dumps(Exfiltrator()), 400, "untrusted_types",
                                          f"{__name__}.Exfiltrator"),
        "a reference to builtins.eval": (skops.io.dumps(evaluating), 400, "untrusted_types", "builtins.eval"),
        "tree node storage scikit-learn does not bounds-check": (
            skops.io.dumps(_fitted(dataset, keys, DecisionTreeClassifier(max_depth=2))), 400, "untrusted_types",
            "sklearn.tree._tree.Tree"),
        "a plain pickle": (pickle.dumps(fitted), 400, "unsafe_checkpoint", "is a pickle"),
        "a truncated skops file": (good[: len(good) // 2], 400, "invalid_upload", "not a readable skops file"),
        "not a skops file": (b'{"coef": [1, 2, 3]}', 400, "invalid_upload", "not a skops file"),
        "a pipeline for 5 features": (skops.io.dumps(_pipeline().fit(np.eye(6, 5), [0, 1] * 3)), 400,
                                      "architecture_mismatch", "in_features=30"),
    }


def test_hostile_and_malformed_uploads_are_refused_and_nothing_is_stored(api_client_for, breast_cancer):
    dataset, keys = breast_cancer
    engineer = api_client_for("ml_engineer")
    run_id = _registered(engineer, dataset, keys, name="bc-sklearn", recipe="sklearn", run_config={"seed": 5})
    for what, (body, status, code, named) in _hostile_bodies(dataset, keys).items():
        refused = _upload(engineer, "bc-sklearn", run_id, body)
        assert refused.status_code == status, (what, refused.content)
        error = refused.json()["error"]
        assert error["code"] == code and named in error["message"], (what, error)
        _nothing_stored("bc-sklearn")
    # A SISA ensemble whose membership does not follow its keyed hash cannot be refit exactly.
    sisa_run = _registered(engineer, dataset, keys, name="bc-sklearn-sisa", recipe="sklearn_sisa",
                           run_config={"seed": 5, "shards": 3, "shard_key": SHARD_KEY},
                           shards=lambda key: (_shard(key) + 1) % 3)
    import skops.io

    ensemble = skops.io.dumps([_fitted(dataset, keys) for _ in range(3)])
    refused = _upload(engineer, "bc-sklearn-sisa", sisa_run, ensemble)
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "membership_mismatch", refused.content
    assert "not where the keyed hash puts them" in refused.json()["error"]["message"]
    _nothing_stored("bc-sklearn-sisa")
