"""External retrain (issue 21): a model trained outside the platform whose exact method is the
company's own pipeline. The pipeline here is a local HTTP endpoint that takes the signed job (and
refuses a bad signature), refits the company's scikit-learn pipeline (StandardScaler +
LogisticRegression on breast cancer, stored with skops) without the records it names, and uploads the
new version with its membership, and reference models trained the same way, to the job's upload URL
with the job's token only. End to end to a signed report; a declaration that still holds an erased
record is refused with the key named and the request stays with the DPO; forged, expired, replayed
and API tokens, and a withdrawn model's token, open nothing and nothing is stored."""

from __future__ import annotations

import hashlib
import json
import subprocess
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone
from rest_framework.test import APIClient

from deletion.external_retrain import external_retrains_expire
from deletion.models import ExternalRetrain, ModelOutcome, WebhookDelivery
from deletion.webhooks import verify_signature, webhook_deliver
from models_registry.models import DataRecord, ModelVersion, StoredArtifact, TrainingRun
from tests.audits.conftest import dev_identity, nss_db, pdfsig, require_tool, signing_settings  # noqa: F401
from tests.flows import EVIDENCE, registered_over_api, run_job, upload_over_api
from workers.jobs import job_gate_reason
from workers.models import Job, JobKind
from workers.reference_data import reference_dataset_register

pytestmark = pytest.mark.django_db

SKLEARN = {"name": "sklearn", "config": {"in_features": 30, "num_classes": 2}}
ATTESTER = "ML platform team (Jane Doe, head of ML platform)"
PIPELINE = "company-pipeline-3.2"
MODEL = "bc-pipeline"
REFERENCES = 8


class CompanyPipeline:
    """The company's training pipeline as the platform reaches it: an endpoint that takes signed
    jobs (a bad signature is answered 401 and the job ignored), and the code that answers them."""

    def __init__(self) -> None:
        self.secret = ""
        self.jobs: list[dict] = []
        self.bad_signatures = 0
        pipeline = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if not verify_signature(pipeline.secret, body, self.headers.get("X-Deletion-Signature", "")):
                    pipeline.bad_signatures += 1
                    self.send_response(401)
                else:
                    event = json.loads(body)
                    if event.get("event") == "external_retrain.requested":
                        pipeline.jobs.append(event)
                    self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/platform-jobs"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()

    def receive(self) -> dict:
        """Deliver the signed job the platform queued (the Celery task's work) and return it as received."""
        delivery = WebhookDelivery.objects.filter(event__event="external_retrain.requested").order_by("-id").first()
        assert webhook_deliver(delivery_id=delivery.id) == "delivered", delivery.last_error
        return self.jobs[-1]

    def answer(self, job: dict, dataset, keys: list[str], *, references: int = REFERENCES, token: str | None = None,
               client: APIClient | None = None):
        """Refit on ``keys`` (what the pipeline believes it may still use) and upload the version with
        its membership and ``references`` reference models, each on a half of those keys."""
        import skops.io

        files = {"weights": _file("model.skops", skops.io.dumps(_fitted(dataset, keys))),
                 "membership": _file("membership.jsonl", _membership(keys)),
                 "run": json.dumps({"code_version": PIPELINE, "seed": 5, "config": {"seed": 5}})}
        halves = [[k for k in keys if hashlib.sha256(f"{i}:{k}".encode()).digest()[0] < 128] for i in range(references)]
        if references:
            files["reference_weights"] = [_file(f"reference-{i}.skops", skops.io.dumps(_fitted(dataset, half)))
                                          for i, half in enumerate(halves)]
            files["reference_membership"] = [_file(f"reference-{i}.jsonl", _membership(half))
                                             for i, half in enumerate(halves)]
        token = job["upload"]["token"] if token is None else token
        return (client or APIClient()).post(job["upload"]["url"], files, format="multipart",
                                            HTTP_AUTHORIZATION=f"Upload {token}")


def _file(name: str, data: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type="application/octet-stream")


def _membership(keys: list[str]) -> bytes:
    return "".join(json.dumps({"record_key": k}) + "\n" for k in keys).encode()


def _fitted(dataset, keys):
    """What the company's pipeline fits on its own machines, on the records ``keys``."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from workers.datasets.reference import load_reference_split

    train = load_reference_split(dataset.storage_location, "train").subset(keys)
    inputs = np.stack([train[i][1].double().numpy() for i in range(len(train))])
    targets = np.array([int(train[i][2]) for i in range(len(train))])
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(inputs, targets)


@pytest.fixture
def pipeline():
    company = CompanyPipeline()
    yield company
    company.close()


@pytest.fixture
def breast_cancer():
    dataset = reference_dataset_register(name="breast_cancer")
    keys = sorted(DataRecord.objects.filter(dataset=dataset, split="train").values_list("external_key", flat=True))
    return dataset, keys[:200]


def _model_with_pipeline(api_client_for, pipeline: CompanyPipeline, dataset, keys, *,
                         use: str = "every_deletion") -> ModelVersion:
    """The company's ML side registers its pipeline's webhook and the model, trained outside, whose
    exact method that pipeline is; the first version is uploaded as any model trained elsewhere."""
    import skops.io

    engineer = api_client_for("ml_engineer", name="company-pipeline")
    registered = engineer.post("/api/v1/webhooks/", {"url": pipeline.url}, format="json").json()
    pipeline.secret = registered["secret"]
    policy = {"external_retrain": {"webhook": registered["id"], "attested_by": ATTESTER, "use": use}}
    run_id = registered_over_api(engineer, name=MODEL, architecture=SKLEARN, dataset=dataset, keys=keys,
                                 recipe="sklearn", policy=policy, run_config={"seed": 5},
                                 code_version="company-pipeline-3.1")
    uploaded = upload_over_api(engineer, MODEL, run_id, skops.io.dumps(_fitted(dataset, keys)))
    assert uploaded.status_code == 201, uploaded.content
    return ModelVersion.objects.get(pk=uploaded.json()["id"])


def _erasure_approved(dpo, dataset, keys: list[str]) -> str:
    """An erasure request for ``keys``, verified and approved by the DPO; returns its id."""
    request_id = dpo.post("/api/v1/deletion-requests/", {
        "identifiers": {}, "jurisdiction": "GDPR", "legal_ground": "art17_1_b", "channel": "web-form",
        "record_keys": [{"dataset": f"{dataset.name}@{dataset.version}", "record_key": k} for k in keys]},
        format="json").json()["id"]
    scoped = dpo.post(f"/api/v1/deletion-requests/{request_id}/verify/", EVIDENCE, format="json").json()
    assert [(p["model"], p["method"], p["guarantee_class"]) for p in scoped["plan"]] == [
        (MODEL, "external_retrain", "exact_attested")], scoped["plan"]
    approved = dpo.post(f"/api/v1/deletion-requests/{request_id}/approve/", {}, format="json")
    assert approved.status_code == 200 and approved.json()["status"] == "EXECUTING", approved.content
    return request_id


def _stored() -> tuple[int, int, int]:
    return ModelVersion.objects.count(), TrainingRun.objects.count(), StoredArtifact.objects.count()


@pytest.mark.usefixtures("signing_settings")
def test_the_pipeline_answers_the_signed_job_and_the_request_ends_with_a_signed_report(
        api_client_for, breast_cancer, pipeline, request):
    from audits.models import Report

    dataset, keys = breast_cancer
    dpo = api_client_for("dpo", name="alice")
    v1 = _model_with_pipeline(api_client_for, pipeline, dataset, keys)
    request_id = _erasure_approved(dpo, dataset, [keys[0]])
    outcome = dpo.get(f"/api/v1/deletion-requests/{request_id}/").json()["outcomes"][0]
    assert outcome["status"] == "executing" and outcome["external_retrain"]["status"] == "awaiting_upload"

    job = pipeline.receive()
    assert pipeline.bad_signatures == 0
    assert job["request"] == request_id and job["model"] == MODEL and job["model_version"]["id"] == v1.id
    assert job["exclude"] == [{"dataset": f"{dataset.name}@{dataset.version}", "record_keys": [keys[0]]}]
    assert job["attested_by"] == ATTESTER and job["upload"]["token"].startswith("dpx_")
    assert job["upload"]["url"] == f"/api/v1/external-retrains/{job['external_retrain']}/upload/"
    # The platform keeps the token's hash only; the delivery row forgets the token once delivered.
    retrain = ExternalRetrain.objects.get()
    assert retrain.token_hash == hashlib.sha256(job["upload"]["token"].encode()).hexdigest()
    assert job["upload"]["token"] not in json.dumps(WebhookDelivery.objects.get(pk=retrain.delivery_id).event)

    kept = [k for k in keys if k not in job["exclude"][0]["record_keys"]]
    uploaded = pipeline.answer(job, dataset, kept)
    assert uploaded.status_code == 201, uploaded.content
    assert uploaded.json()["status"] == "registered" and uploaded.json()["reference_models"] == REFERENCES
    check = uploaded.json()["membership_check"]
    assert (check["records_declared"], check["request_records_checked"], check["in_version"]) == (199, 1, 0)
    stored = _stored()
    replayed = pipeline.answer(job, dataset, kept)  # the same token a second time
    assert replayed.status_code == 403 and replayed.json()["error"]["code"] == "upload_token_used", replayed.content
    assert _stored() == stored

    v2 = ModelVersion.objects.get(pk=uploaded.json()["new_version_id"])
    assert (v2.parent_id, v2.guarantee_class, v2.training_run.code_version) == (v1.id, "exact_attested", PIPELINE)
    producer = Job.objects.get(result_version=v2)
    assert (producer.kind, producer.method, producer.status) == (JobKind.UNLEARN, "external_retrain", "succeeded")
    run_job(Job.objects.get(kind=JobKind.AUDIT))
    state = dpo.get(f"/api/v1/deletion-requests/{request_id}/").json()
    outcome = state["outcomes"][0]
    assert (outcome["method"], outcome["guarantee_class"], outcome["verdict"]) == (
        "external_retrain", "exact_attested", "PASS"), outcome
    audit = ModelOutcome.objects.get().audit
    assert audit["shadow_models"] == REFERENCES and audit["shadow_procedure"]["same_as_model"]
    # Nothing detected; a record the test cannot detect even on the old model is INCONCLUSIVE for the
    # test itself (no power), which the attested class states beside its PASS.
    lira = next(c for c in audit["checks"] if c["check"] == "membership_lira")
    assert lira["n_detected"] == 0 and not lira["untestable_ids"] and lira["verdict"] in ("PASS", "INCONCLUSIVE")
    assert "the platform checked its declared membership" in audit["verdict"]["reasons"][0]
    confirmed = dpo.post(f"/api/v1/deletion-requests/{request_id}/confirm-deployment/",
                         {"new_version_id": v2.id}, format="json")
    assert confirmed.status_code == 200, confirmed.content
    run_job(Job.objects.get(kind=JobKind.REPORT))
    assert dpo.get(f"/api/v1/deletion-requests/{request_id}/").json()["status"] == "COMPLETED"

    report = Report.objects.get(request__public_id=request_id)
    checked = pdfsig(Path(report.pdf_path), request.getfixturevalue("nss_db"))
    assert "Signature is Valid." in checked and "Certificate is Trusted." in checked, checked
    entry, = report.json["model_versions"]
    assert entry["guarantee"]["guarantee_class"] == "exact_attested" and entry["verdict"]["verdict"] == "PASS"
    attestation = entry["attestation"]
    assert (attestation["attested_by"], attestation["records_declared"], attestation["erased_found"],
            attestation["reference_models"]) == (ATTESTER, 199, 0, REFERENCES)
    assert report.json["end_state"]["status"] == "COMPLETED"
    text = " ".join(subprocess.run([require_tool("pdftotext"), str(report.pdf_path), "-"], check=True,
                                   capture_output=True, text=True).stdout.split())
    assert "Overall result: PASS" in text and "completed, erasure confirmed" in text
    assert f"attested by {ATTESTER}" in text and "Exact, as declared by the company's pipeline." in text
    assert "none of them is in it" in text and "The platform did not compute the new model itself" in text
    v1.refresh_from_db()
    assert v1.status == "purged"


def test_a_membership_that_still_holds_an_erased_record_is_refused_and_the_request_stays_with_the_dpo(
        api_client_for, breast_cancer, pipeline):
    from models_registry.services import records_erase

    dataset, keys = breast_cancer
    dpo = api_client_for("dpo", name="alice")
    _model_with_pipeline(api_client_for, pipeline, dataset, keys)
    # A record an earlier request erased: the company's pipeline must leave it out too.
    records_erase(records=DataRecord.objects.filter(dataset=dataset, external_key=keys[1]), reason="earlier request")
    request_id = _erasure_approved(dpo, dataset, [keys[0]])
    job = pipeline.receive()
    assert job["erased_before"]["records"] == 1
    stored = _stored()

    refused = pipeline.answer(job, dataset, keys, references=2)  # its data still hold both
    assert refused.status_code == 409, refused.content
    error = refused.json()["error"]
    assert error["code"] == "erased_records_in_membership" and error["details"]["record_keys"] == sorted(keys[:2])
    assert keys[0] in error["message"] and keys[1] in error["message"] and "back with the DPO" in error["message"]
    assert _stored() == stored  # nothing of the upload is kept

    state = dpo.get(f"/api/v1/deletion-requests/{request_id}/").json()
    outcome = state["outcomes"][0]
    assert state["status"] == "AUDITING" and (outcome["status"], outcome["verdict"]) == ("audit_failed", "FAIL")
    assert outcome["external_retrain"]["status"] == "refused"
    # The DPO's view (and this person's report) names this request's key; the other person's is counted.
    refusal = outcome["external_retrain"]["refusal"]
    assert (refusal["of_this_request"], refusal["count"]) == ([keys[0]], 2) and keys[1] not in json.dumps(outcome)
    waiting = dpo.get("/api/v1/deletion-requests/?awaiting=audit_failed").json()["results"]
    assert [r["id"] for r in waiting] == [request_id]
    again = pipeline.answer(job, dataset, keys[2:], references=0)  # the token was spent on the refused upload
    assert again.status_code == 403 and again.json()["error"]["code"] == "upload_token_used"

    # The DPO escalates again: a new signed job with a new token; the refused attempt stays on record.
    escalated = dpo.post(f"/api/v1/deletion-requests/{request_id}/escalate/",
                         {"model_version_id": outcome["model_version_id"]}, format="json")
    assert escalated.status_code == 200 and escalated.json()["status"] == "EXECUTING", escalated.content
    second = pipeline.receive()
    assert second["external_retrain"] != job["external_retrain"] and second["upload"]["token"] != job["upload"]["token"]
    outcome = escalated.json()["outcomes"][0]
    assert outcome["external_retrain"]["status"] == "awaiting_upload"
    assert [(a["method"], a["verdict"]) for a in outcome["earlier_attempts"]] == [("external_retrain", "FAIL")]

    # Answered without the erased records this time, but with no reference models: the audit cannot
    # test the declaration on the model and says so; no PASS, the request waits for the DPO again.
    answered = pipeline.answer(second, dataset, keys[2:], references=0)
    assert answered.status_code == 201, answered.content
    run_job(Job.objects.get(kind=JobKind.AUDIT))
    decided = ModelOutcome.objects.get()
    assert (decided.status, decided.verdict, decided.audit["shadow_models"]) == ("awaiting_decision", "INCONCLUSIVE", 0)
    assert decided.audit["verdict"]["reasons"] == [
        "No reference models from the company's pipeline were given, so the per-record test did not run: the "
        "company's declaration was checked against the registry but not tested on the model, and erasure would "
        "rest on the company's word alone.",
        "The older copies that hold the records are not purged yet."]  # they wait for the DPO's decision


def test_forged_expired_and_api_tokens_open_nothing_and_an_expired_job_goes_back_to_the_dpo(
        api_client_for, breast_cancer, pipeline):
    dataset, keys = breast_cancer
    dpo = api_client_for("dpo", name="alice")
    v1 = _model_with_pipeline(api_client_for, pipeline, dataset, keys)
    request_id = _erasure_approved(dpo, dataset, [keys[0]])
    job = pipeline.receive()
    kept = keys[1:]
    stored = _stored()
    # Meanwhile another deletion's unlearning job on the model waits for what the pipeline uploads.
    assert "being retrained by the company's pipeline" in job_gate_reason(Job(kind=JobKind.UNLEARN,
                                                                              registered_model=v1.model))

    anonymous = APIClient().post(job["upload"]["url"], {}, format="multipart")
    assert anonymous.status_code == 401 and anonymous["WWW-Authenticate"].startswith("Upload")
    engineer = api_client_for("ml_engineer")  # an API token is not the credential here, whatever its role
    with_api_token = engineer.post(job["upload"]["url"], {}, format="multipart")
    assert with_api_token.status_code == 403 and with_api_token.json()["error"]["code"] == "upload_token_required"
    forged = pipeline.answer(job, dataset, kept, references=0, token="dpx_" + "A" * 43)
    assert forged.status_code == 401 and forged.json()["error"]["code"] == "upload_token_invalid", forged.content
    other_retrain = {**job, "upload": {**job["upload"], "url": job["upload"]["url"].replace(
        job["external_retrain"], "00000000-0000-4000-8000-000000000000")}}
    elsewhere = pipeline.answer(other_retrain, dataset, kept, references=0)  # a real token, for another retrain
    assert elsewhere.status_code == 401 and elsewhere.json()["error"]["code"] == "upload_token_invalid"

    ExternalRetrain.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    expired = pipeline.answer(job, dataset, kept, references=0)
    assert expired.status_code == 401 and expired.json()["error"]["code"] == "upload_token_expired", expired.content
    assert "expired at" in expired.json()["error"]["message"]
    assert _stored() == stored and ExternalRetrain.objects.get().used_at is None

    # The beat task hands the expired job back to the DPO as a failed audit.
    assert external_retrains_expire() == [job["external_retrain"]]
    state = dpo.get(f"/api/v1/deletion-requests/{request_id}/").json()
    outcome = state["outcomes"][0]
    assert state["status"] == "AUDITING" and (outcome["status"], outcome["verdict"]) == ("audit_failed", "FAIL")
    assert outcome["external_retrain"]["status"] == "expired"
    assert "before its upload token expired" in ModelOutcome.objects.get().audit["verdict"]["reasons"][0]


def test_a_withdrawn_model_closes_its_job_and_the_pipeline_is_checked_when_the_policy_is_saved(
        api_client_for, breast_cancer, pipeline):
    dataset, keys = breast_cancer
    dpo = api_client_for("dpo", name="alice")
    v1 = _model_with_pipeline(api_client_for, pipeline, dataset, keys)
    request_id = _erasure_approved(dpo, dataset, [keys[0]])
    job = pipeline.receive()
    withdrawn = dpo.post(f"/api/v1/deletion-requests/{request_id}/withdraw-model/",
                         {"model_version_id": v1.id, "reason": "taken out of service instead"}, format="json")
    assert withdrawn.status_code == 200, withdrawn.content
    closed = pipeline.answer(job, dataset, keys[1:], references=0)
    assert closed.status_code == 403 and closed.json()["error"]["code"] == "external_retrain_closed", closed.content
    assert not ModelVersion.objects.filter(parent=v1).exists()

    # A policy naming a webhook that is not the ML side's, or none, or nobody who attests, is refused.
    intake_hook = api_client_for("intake").post("/api/v1/webhooks/", {"url": pipeline.url}, format="json").json()
    engineer = api_client_for("ml_engineer")
    for section, named in (({"webhook": intake_hook["id"], "attested_by": ATTESTER}, "intake client"),
                           ({"webhook": 999999, "attested_by": ATTESTER}, "no webhook endpoint 999999"),
                           ({"webhook": intake_hook["id"]}, "attested_by is required"),
                           ({"webhook": intake_hook["id"], "attested_by": ATTESTER, "use": "sometimes"}, "use must be")):
        refused = engineer.post("/api/v1/models/", {
            "name": "another", "task": "classification", "training_recipe": "sklearn", "architecture": SKLEARN,
            "unlearning_policy": {"external_retrain": section}}, format="json")
        assert refused.status_code == 400 and named in refused.json()["error"]["message"], refused.content
