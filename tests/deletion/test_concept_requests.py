"""Concept requests ("stop using attribute X", issue 25 item 4): filed over the API with no data subject,
planned with the concept methods only (class concept_erased, against linear probes only), run by the
worker (a new version with the eraser stored as safetensors), audited by the concept probe, and signed
in a report that says it is a concept erasure, not anyone's erasure. Plus the API's 400s for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import factories
from tests.audits.conftest import dev_identity, nss_db, pdfsig, rendered_text, signing_settings  # noqa: F401
from tests.company_sources import parquet_bytes, source_dataset_over_api
from tests.flows import run_job
from workers.models import Job, JobKind

pytestmark = pytest.mark.django_db


DIGITS_MLP = {"name": "mlp", "config": {"in_features": 64, "num_classes": 10, "hidden": [32], "input_norm": "none"}}
DIGITS_SCHEMA = {"record_key": "record_id", "features": [f"p{j}" for j in range(64)], "label": "digit",
                 "split": "split"}


def _digits_rows() -> list[dict]:
    """scikit-learn's 1,797 handwritten digits (8x8, pixels scaled to [0, 1]), every fifth a test record."""
    from sklearn.datasets import load_digits

    images, digits = load_digits(return_X_y=True)
    return [{"record_id": f"d{i:04d}", **{f"p{j}": float(v) / 16.0 for j, v in enumerate(image)},
             "digit": int(digit), "split": "test" if i % 5 == 0 else "train"}
            for i, (image, digit) in enumerate(zip(images, digits, strict=True))]


def _digits_model_over_api(engineer, *, model: str = "digits-mlp") -> tuple[list[dict], dict]:
    """The digits dataset imported and a small MLP trained on it, over the API; returns the rows and the version."""
    rows = _digits_rows()
    registered, imported = source_dataset_over_api(engineer, name="digits", modality="tabular",
                                                   source={"kind": "parquet"}, schema=DIGITS_SCHEMA,
                                                   body=parquet_bytes(rows))
    assert imported.status_code == 201, imported.content
    assert engineer.post("/api/v1/models/", {"name": model, "task": "classification", "training_recipe": "plain",
                                             "architecture": DIGITS_MLP}, format="json").status_code == 201
    started = engineer.post("/api/v1/training-jobs/", {
        "model": model, "dataset": registered.json()["id"],
        "recipe_config": {"architecture": DIGITS_MLP, "epochs": 15, "lr": 0.01, "seed": 0}}, format="json")
    assert started.status_code == 202, started.content
    run_job(Job.objects.get(pk=started.json()["id"]))
    return rows, engineer.get(started.json()["url"]).json()["result_version"]


def _concept_body(labels: dict[str, int], models: list[dict], **extra) -> dict:
    return {"attribute": "digit parity", "dataset": "digits@1", "labels": labels, "models": models,
            "jurisdiction": "GDPR", "channel": "dpo-console", "reason": "the product must not use parity", **extra}


@pytest.mark.usefixtures("signing_settings", "one_torch_thread")
def test_a_concept_request_goes_from_the_api_to_a_signed_report_that_erases_no_one(api_client_for, request,
                                                                                 tmp_path):
    from audits.models import Report
    from models_registry.models import ModelVersion
    from workers.runners.storage import artifact_store

    engineer, dpo = api_client_for("ml_engineer"), api_client_for("dpo", name="alice")
    rows, version = _digits_model_over_api(engineer)
    parity = {row["record_id"]: row["digit"] % 2 for row in rows}

    filed = dpo.post("/api/v1/concept-requests/", _concept_body(parity, [{"model": "digits-mlp"}]), format="json",
                     HTTP_IDEMPOTENCY_KEY="parity-1")
    assert filed.status_code == 201, filed.content
    state = filed.json()
    # No person, no record: planned at once, with the concept method only, and its limits said.
    assert (state["kind"], state["status"], state["subject"]) == ("concept", "SCOPED", None)
    assert state["concept"]["labelled_records"] == 1797 and "labels" not in state["concept"]
    [step] = state["plan"]
    assert (step["model_version_id"], step["method"], step["guarantee_class"]) == (version["id"], "leace",
                                                                                   "concept_erased")
    assert step["holds_against"] == "linear probes only" and step["alternatives"] == []
    assert "not erasure of anyone's data" in step["audit_cannot_confirm"]
    assert step["concept"]["layer"] == "act0" and step["records"] == 0
    assert step["concept"]["fit_records"] + step["concept"]["probe_records"] == 1797
    again = dpo.post("/api/v1/concept-requests/", _concept_body(parity, [{"model": "digits-mlp"}]), format="json",
                     HTTP_IDEMPOTENCY_KEY="parity-1")
    assert (again.status_code, again.json()["id"]) == (200, state["id"])

    assert dpo.post(f"/api/v1/deletion-requests/{state['id']}/approve/", {}, format="json").status_code == 200
    [unlearn] = Job.objects.filter(kind=JobKind.UNLEARN, deletion_request__public_id=state["id"])
    unlearn = run_job(unlearn)
    new = ModelVersion.objects.get(pk=unlearn.result_version_id)
    assert (new.parent_id, new.guarantee_class) == (version["id"], "concept_erased")
    assert not new.excluded_records.exists()  # nobody's records were taken out
    # The eraser is stored as its own safetensors blob beside the unchanged weights.
    manifest = artifact_store().manifest(new.artifact_sha256)
    assert "concept_erasers" in manifest.files
    parent_manifest = artifact_store().manifest(ModelVersion.objects.get(pk=version["id"]).artifact_sha256)
    assert manifest.files["weights"]["sha256"] == parent_manifest.files["weights"]["sha256"]

    [audit] = Job.objects.filter(kind=JobKind.AUDIT, deletion_request__public_id=state["id"])
    run_job(audit)
    [outcome] = dpo.get(f"/api/v1/deletion-requests/{state['id']}/").json()["outcomes"]
    assert (outcome["verdict"], outcome["status"]) == ("PASS", "awaiting_deployment"), outcome
    # What the erasure cost the model's own task, measured and shown to whoever deploys it (it only warns).
    task = Job.objects.get(pk=audit.id).result["audit"]["task_utility"]
    assert task["retain"]["records"] > 0 and task["test"]["records"] > 0 and task["min_ratio"] == 0.95
    assert "outside its training split" in task["test_records"]
    [pending] = engineer.get("/api/v1/deployments/pending/").json()
    assert pending["utility"]["metric"] == "accuracy" and pending["utility"]["min_ratio"] == 0.95
    assert pending["utility"]["retain_ratio"] == pytest.approx(task["retain"]["erased"] / task["retain"]["original"])
    print(f"concept erasure's task accuracy: training probe records {task['retain']['original']:.3f} -> "
          f"{task['retain']['erased']:.3f}, held-out {task['test']['original']:.3f} -> {task['test']['erased']:.3f} "
          f"(utility {pending['utility']['verdict']})")
    assert dpo.post(f"/api/v1/deletion-requests/{state['id']}/confirm-deployment/",
                    {"new_version_id": new.id}, format="json").status_code == 200
    # The version that still uses the attribute is retired (out of later requests' scope), not purged.
    assert ModelVersion.objects.get(pk=version["id"]).status == "retired"
    assert ModelVersion.objects.get(pk=new.id).status == "serving"
    run_job(Job.objects.get(kind=JobKind.REPORT, deletion_request__public_id=state["id"]))
    done = dpo.get(f"/api/v1/deletion-requests/{state['id']}/").json()
    assert done["status"] == "COMPLETED", done

    report = Report.objects.get(request__public_id=state["id"])
    # The request links its signed report (null before there is one).
    assert state["report"] is None and done["report"]["id"] == report.id
    fetched = dpo.get(done["report"]["pdf_url"])
    assert fetched.status_code == 200 and b"".join(fetched.streaming_content if fetched.streaming else
                                                    [fetched.content]).startswith(b"%PDF")
    checked = pdfsig(Path(report.pdf_path), request.getfixturevalue("nss_db"))
    assert "Signature is Valid." in checked and "Certificate is Trusted." in checked, checked
    data = report.json
    assert data["concept"]["attribute"] == "digit parity"
    assert data["subject_reference"].startswith("none") and data["scope"]["records"] == 0
    # The status the version had when scoped (it is retired now that the erased one serves).
    [scoped] = data["scope"]["model_versions"]
    assert scoped["status"] == step["status"] != "retired"
    [entry] = data["model_versions"]
    assert entry["guarantee"]["guarantee_class"] == "concept_erased" and entry["verdict"]["verdict"] == "PASS"
    # The linear probe decided at chance; the MLP probe's figure is printed beside it.
    figures = {m["name"]: m for m in entry["metrics"]}
    linear, mlp = figures["Linear probe AUC (decides)"], figures["Non-linear (MLP) probe AUC (shown, not counted)"]
    assert abs(linear["after"] - 0.5) <= 0.1 < abs(linear["before"] - 0.5) and linear["result"] == "PASS"
    assert mlp["after"] is not None and figures["concept_probe"]["result"] == "PASS"
    # The chance spread the too-few-records gate compared, measured on shuffles of the attribute.
    spread = figures["Linear probe AUC with the attribute shuffled: spread at chance"]
    assert spread["before"] is None and 0 < spread["after"] <= spread["reference"] == 0.05
    assert spread["result"] == "enough records" and "Permutation p-value" in spread["description"]
    text = rendered_text(data, tmp_path / "concept.pdf")
    assert "spread at chance" in text
    assert "The model's own task, accuracy before -> after the erasure" in text
    assert "Task accuracy, held-out records" in text and "not the attribute's erasure" in text
    assert "This request names no person and no record" in text and "of this person" not in text
    assert "Concept-erasure report" in text
    assert "This is a concept erasure, not an erasure of anyone's personal data" in text
    assert "erasure confirmed against the probes its method names" in text and "Erasure report" not in text
    figures = Job.objects.get(pk=audit.id).result["audit"]["concept"]
    print(f"concept probe: linear AUC {figures['original_linear_auc']:.3f} -> {figures['linear_auc']:.3f}, "
          f"MLP AUC {figures['original_nonlinear_auc']:.3f} -> {figures['nonlinear_auc']:.3f}")


# ---------------------------------------------------------------- the API's 400s


@pytest.fixture
def labelled():
    """A dataset of 60 records and a plain MLP (one hidden layer) trained on it (registry rows only)."""
    ds = factories.dataset(name="digits")
    factories.import_records(ds, [{"record_key": f"d{i:04d}", "content": f"c{i}"} for i in range(60)])
    model = factories.registered_model(name="digits-mlp", architecture=DIGITS_MLP)
    factories.trained_version(model, ds, [(f"d{i:04d}", 0, 0) for i in range(60)])
    return ds, {f"d{i:04d}": i % 2 for i in range(60)}


def _refused(dpo, body: dict, *, field: str, code: str) -> str:
    response = dpo.post("/api/v1/concept-requests/", body, format="json")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert (list(error.get("fields") or {}), error["code"]) == ([field], code), error
    return error["message"]


def test_an_attribute_with_one_value_or_too_few_records_or_unknown_keys_is_refused(api_client_for, labelled):
    dpo = api_client_for("dpo")
    _, parity = labelled
    one_value = {key: 1 for key in parity}
    assert "single value" in _refused(dpo, _concept_body(one_value, [{"model": "digits-mlp"}]),
                                      field="labels", code="attribute_not_erasable")
    scarce = {**{key: 0 for key in parity}, "d0001": 1}
    assert "at least 20" in _refused(dpo, _concept_body(scarce, [{"model": "digits-mlp"}]),
                                     field="labels", code="attribute_not_erasable")
    unknown = {**parity, "nobody-1": 0}
    assert "nobody-1" in _refused(dpo, _concept_body(unknown, [{"model": "digits-mlp"}]),
                                  field="labels", code="unknown_records")
    not_integers = dpo.post("/api/v1/concept-requests/", _concept_body({k: "odd" for k in parity},
                                                                       [{"model": "digits-mlp"}]), format="json")
    assert not_integers.status_code == 400 and "labels" in not_integers.content.decode()
    assert "no-such-model" in _refused(dpo, _concept_body(parity, [{"model": "no-such-model"}]),
                                       field="models[0].model", code="validation_failed")


def test_a_model_without_representations_the_platform_can_erase_is_refused(api_client_for, labelled):
    dpo = api_client_for("dpo")
    ds, parity = labelled
    keys = [(key, 0, 0) for key in parity]
    flat = factories.registered_model(name="logistic", architecture={"name": "mlp", "config": {
        "in_features": 64, "num_classes": 10, "hidden": []}})
    factories.trained_version(flat, ds, keys)
    assert "without hidden layers" in _refused(dpo, _concept_body(parity, [{"model": "logistic"}]),
                                          field="models[0]", code="no_representations")
    sharded = factories.registered_model(name="sharded", recipe="sisa", architecture=DIGITS_MLP)
    factories.trained_version(sharded, ds, keys)
    assert "sisa recipe" in _refused(dpo, _concept_body(parity, [{"model": "sharded"}]),
                                     field="models[0]", code="no_representations")
    forest = factories.registered_model(name="forest", recipe="sklearn", architecture={
        "name": "sklearn", "config": {"in_features": 64, "num_classes": 10}})
    factories.trained_version(forest, ds, keys)
    message = _refused(dpo, _concept_body(parity, [{"model": "forest"}]), field="models[0]",
                       code="no_representations")
    assert "sklearn recipe" in message or "scikit-learn" in message
    other = factories.dataset(name="other")
    factories.import_records(other, [{"record_key": "x0", "content": "x"}])
    elsewhere = factories.registered_model(name="elsewhere", architecture=DIGITS_MLP)
    factories.trained_version(elsewhere, other, [("x0", 0, 0)])
    assert "not trained on dataset digits@1" in _refused(dpo, _concept_body(parity, [{"model": "elsewhere"}]),
                                                         field="models[0]", code="dataset_mismatch")


def test_a_layer_the_model_does_not_have_is_refused_at_intake_with_the_layers_it_has(api_client_for, labelled):
    dpo = api_client_for("dpo")
    _, parity = labelled
    message = _refused(dpo, _concept_body(parity, [{"model": "digits-mlp", "layer": "fc9"}]),
                       field="models[0].layer", code="unknown_layer")
    assert "no layer 'fc9'" in message and "its layers: flatten, fc0, act0, head" in message
    named = dpo.post("/api/v1/concept-requests/", _concept_body(parity, [{"model": "digits-mlp", "layer": "fc0"}]),
                     format="json")
    assert named.status_code == 201, named.content
    assert [step["concept"]["layer"] for step in named.json()["plan"]] == ["fc0"]


COMPANY_NET = {"name": "entry_point",  # tests/fixtures/company_models: input_norm, hidden.0-2, classifier
               "config": {"entry_point": "company-tabular", "config": {"in_features": 30, "num_classes": 2, "hidden": 16}}}


def test_a_layer_a_company_module_lacks_is_refused_at_intake_from_the_names_its_upload_check_recorded(
        api_client_for, labelled):
    from safetensors.torch import save

    from models_registry import services as registry
    from models_registry.models import ModelVersion
    from tests.flows import registered_over_api, upload_over_api
    from workers.training.architectures import build_model

    engineer, dpo = api_client_for("ml_engineer"), api_client_for("dpo")
    ds, parity = labelled
    run_id = registered_over_api(engineer, name="company-net", architecture=COMPANY_NET, dataset=ds,
                                 keys=sorted(parity), run_config={"epochs": 1, "lr": 0.01, "seed": 5})
    weights = save({k: v.contiguous() for k, v in build_model(COMPANY_NET).state_dict().items()})
    check = upload_over_api(engineer, "company-net", run_id, weights)
    assert check.status_code == 202, check.content
    run_job(Job.objects.get(pk=check.json()["id"]))  # the worker builds the module and registers the version
    registered = engineer.get(check.json()["url"]).json()
    assert registered["status"] == "registered", registered
    uploaded = ModelVersion.objects.get(pk=registered["version"]["id"])
    assert uploaded.metrics["module_names"] == {"names": ["input_norm", "hidden", "hidden.0", "hidden.1", "hidden.2",
                                                          "classifier"], "count": 6}

    message = _refused(dpo, _concept_body(parity, [{"model": "company-net", "layer": "hiden.1"}]),
                       field="models[0].layer", code="unknown_layer")
    assert f"{uploaded}: the model has no layer 'hiden.1'; its layers: input_norm, hidden, hidden.0, hidden.1" in message
    named = dpo.post("/api/v1/concept-requests/", _concept_body(parity, [{"model": "company-net", "layer": "hidden.1"}]),
                     format="json")
    assert named.status_code == 201, named.content
    assert [step["concept"]["layer"] for step in named.json()["plan"]] == ["hidden.1"]
    # A version made from the upload (an unlearning's, a concept erasure's) has its modules.
    child = registry.model_version_create(model=uploaded.model, artifact_sha256="1" * 64, parent=uploaded,
                                          training_run=uploaded.training_run, status="retained")
    assert "no layer 'head'" in _refused(dpo, _concept_body(parity, [{"model": "company-net", "version": child.version,
                                                                      "layer": "head"}]),
                                         field="models[0].layer", code="unknown_layer")

    # Uploaded before upload checks recorded module names: accepted as before, the worker checks the layer.
    older = factories.registered_model(name="company-older", architecture=COMPANY_NET)
    factories.trained_version(older, ds, [(key, 0, 0) for key in sorted(parity)])
    unchecked = dpo.post("/api/v1/concept-requests/", _concept_body(parity, [{"model": "company-older",
                                                                              "layer": "hiden.1"}]), format="json")
    assert unchecked.status_code == 201, unchecked.content


def test_a_concept_request_is_cancelled_not_refused_under_art17_3(api_client_for, labelled, client):
    """No person asked: there is no one to refuse and no Art. 17(3) ground applies. The API refuses a
    refusal with what to do instead; the admin offers Cancel, not Reject."""
    import io

    from django.core.management import call_command
    from django.urls import reverse

    from deletion.concept_requests import concept_request_create

    _, parity = labelled
    filed, _ = concept_request_create(client=None, body=_concept_body(parity, [{"model": "digits-mlp"}]))
    dpo = api_client_for("dpo")
    refused = dpo.post(f"/api/v1/deletion-requests/{filed.public_id}/reject/",
                       {"ground": "art17_3_b", "reason": "we still need it"}, format="json")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "concept_request", refused.content
    assert "cancel it instead" in refused.json()["error"]["message"]
    call_command("setup_roles", stdout=io.StringIO())
    client.force_login(factories.staff_user("bob", role="dpo"))
    html = client.get(reverse("admin:deletion_deletionrequest_change", args=[filed.pk])).content.decode()
    assert 'id="dp-reject"' not in html and 'id="dp-cancel-reason"' in html
    cancelled = dpo.post(f"/api/v1/deletion-requests/{filed.public_id}/cancel/", {"reason": "decided otherwise"},
                         format="json")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "CANCELLED", cancelled.content


def test_a_concept_outcome_that_did_not_pass_cannot_be_escalated_to_a_retrain(labelled):
    from deletion import decisions
    from deletion.concept_requests import concept_request_create
    from deletion.models import ModelOutcome
    from foundation.errors import Conflict

    _, parity = labelled
    filed, _ = concept_request_create(client=None, body=_concept_body(parity, [{"model": "digits-mlp"}]))
    approved = decisions.deletion_request_approve(request=filed, actor="alice")
    [outcome] = approved.outcomes.all()
    job = outcome.job
    # Its own job (no batching window), carrying the attribute's labels; no record to forget.
    assert (job.method, job.forget_record_ids, job.config["concept"]["labels"]) == ("leace", [], parity)
    ModelOutcome.objects.filter(pk=outcome.pk).update(status="audit_failed", verdict="FAIL")
    with pytest.raises(Conflict, match="no exact method to escalate to") as refused:
        decisions.outcome_escalate(request=approved, actor="alice", model_version_id=outcome.model_version_id)
    assert refused.value.code == "escalation_impossible"


@pytest.mark.usefixtures("signing_settings", "one_torch_thread")
def test_a_pef_coupling_request_holds_against_the_mlp_probe_and_its_model_needs_the_attribute(api_client_for,
                                                                                             tmp_path):
    """The stronger method through the same flow: planned with its own guarantee and what it needs, its
    MLP probe decides in the audit, the stored version refuses inputs without their attribute, and the
    report says what it holds against."""
    from audits.models import Report
    from models_registry.models import ModelVersion
    from workers.runners.storage import artifact_store
    from workers.training.storage import load_run
    from workers.unlearning.concept_coupling import AttributeNeeded, attribute_given

    engineer, dpo = api_client_for("ml_engineer"), api_client_for("dpo", name="alice")
    rows, version = _digits_model_over_api(engineer)
    parity = {row["record_id"]: row["digit"] % 2 for row in rows}
    filed = dpo.post("/api/v1/concept-requests/", _concept_body(parity, [{"model": "digits-mlp"}],
                                                                method="pef_coupling"), format="json")
    assert filed.status_code == 201, filed.content
    state = filed.json()
    [step] = state["plan"]
    assert (step["method"], step["guarantee_class"]) == ("pef_coupling", "concept_erased")
    assert step["holds_against"].startswith("linear and non-linear probes") and step["alternatives"] == []
    assert step["concept"]["needs_attribute_at_inference"] and "needs the attribute" in step["concept"]["summary"]
    assert state["concept"]["method"] == "pef_coupling"

    assert dpo.post(f"/api/v1/deletion-requests/{state['id']}/approve/", {}, format="json").status_code == 200
    unlearn = run_job(Job.objects.get(kind=JobKind.UNLEARN, deletion_request__public_id=state["id"]))
    new = ModelVersion.objects.get(pk=unlearn.result_version_id)
    served = load_run(artifact_store(), new.artifact_sha256).model
    inputs = __import__("torch").tensor([[row[f"p{j}"] for j in range(64)] for row in rows[:8]])
    with pytest.raises(AttributeNeeded, match="needs the attribute of every input"):
        served(inputs)
    with attribute_given(served, __import__("torch").tensor([parity[row["record_id"]] for row in rows[:8]])):
        assert served(inputs).shape == (8, 10)

    audit = run_job(Job.objects.get(kind=JobKind.AUDIT, deletion_request__public_id=state["id"]))
    figures = Job.objects.get(pk=audit.id).result["audit"]["concept"]
    print(f"pef_coupling concept probe: linear AUC {figures['original_linear_auc']:.3f} -> {figures['linear_auc']:.3f}, "
          f"MLP AUC {figures['original_nonlinear_auc']:.3f} -> {figures['nonlinear_auc']:.3f}")
    assert figures["nonlinear_decides"] and figures["method"] == "pef_coupling"
    # Its task is measured on labelled records only, each given its attribute (the model refuses inputs without).
    task = Job.objects.get(pk=audit.id).result["audit"]["task_utility"]
    assert "each given its attribute" in task["test_records"] and task["test"]["records"] > 0
    print(f"pef_coupling task accuracy: {task['retain']['original']:.3f} -> {task['retain']['erased']:.3f}, "
          f"held-out {task['test']['original']:.3f} -> {task['test']['erased']:.3f}")
    [outcome] = dpo.get(f"/api/v1/deletion-requests/{state['id']}/").json()["outcomes"]
    assert (outcome["verdict"], outcome["status"]) == ("PASS", "awaiting_deployment"), outcome
    assert dpo.post(f"/api/v1/deletion-requests/{state['id']}/confirm-deployment/",
                    {"new_version_id": new.id}, format="json").status_code == 200
    run_job(Job.objects.get(kind=JobKind.REPORT, deletion_request__public_id=state["id"]))
    data = Report.objects.get(request__public_id=state["id"]).json
    assert "holds against linear and non-linear probes" in data["concept"]["statement"]
    assert "neither a linear nor a non-linear (MLP) probe" in data["end_state"]["meaning"]
    assert any("needs the attribute of every input at inference" in line for line in data["limitations"])
    [entry] = data["model_versions"]
    metrics = {m["name"]: m for m in entry["metrics"]}
    mlp = metrics["Non-linear (MLP) probe AUC (decides)"]
    assert abs(mlp["after"] - 0.5) <= 0.1 < abs(mlp["before"] - 0.5) and mlp["result"] == "PASS"
    assert "Concept-erasure report" in rendered_text(data, tmp_path / "pef.pdf")


def test_an_unknown_concept_method_is_refused_by_name(api_client_for, labelled):
    _, parity = labelled
    message = _refused(api_client_for("dpo"), _concept_body(parity, [{"model": "digits-mlp"}], method="scrub"),
                       field="method", code="validation_failed")
    assert "unknown concept method 'scrub'" in message and "leace, pef_coupling" in message
