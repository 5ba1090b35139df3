"""Hugging Face transformers models brought by a company (issue 19, the huggingface family):
registered, uploaded as an archive of their ``save_pretrained`` folder, unlearned, audited and
reported in a signed PDF, through the REST API; hostile or malformed archives refused with a 400
naming the problem and nothing stored.

The models are tiny (two layers, hidden size 32, a 300-token vocabulary) and built from configs
in the test: GPT-2- and Llama-style causal LMs, a BERT-style sequence classifier
(tests/workers/hf_company.py plays the company's own pipeline). Jobs run in this process through
``job_execute``, as a worker runs them."""

from __future__ import annotations

import functools
import io
import json
import pickle
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch

from deletion.models import DeletionRequest, ModelOutcome
from models_registry.models import DataRecord, ModelVersion, StoredArtifact
from tests.audits.conftest import dev_identity, nss_db, pdfsig, signing_settings  # noqa: F401 (fixtures)
from tests.workers import hf_company
from workers.jobs import job_execute
from workers.models import Job
from workers.reference_data import reference_dataset_register

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("one_torch_thread")]

EVIDENCE = {"method": "email-link", "verified_at": "2026-11-20T10:00:00Z", "verifier": "support"}
GRADIENT_ASCENT = {"lr": 2e-2, "epochs": 5, "max_length": 128}
GRAD_DIFF = {"lr": 2e-2, "epochs": 10, "max_length": 128}
NPO = {"lr": 2e-2, "epochs": 10, "max_length": 128}
GUARD = {"alpha": 0.1, "delta": 0.1, "max_regenerations": 1, "max_new_tokens": 16, "calibration_prompts": 30,
         "thresholds": [0.2, 0.4, 0.6, 0.8]}
LM_RUN_CONFIG = {"epochs": 3, "lr": 1e-2, "batch_size": 8, "max_length": 96, "trainer": "company-lm-trainer 2.1"}
CLASSIFIER_RUN_CONFIG = {"epochs": 2, "lr": 2e-3, "batch_size": 16, "max_length": 96, "warmup": 10}



@pytest.fixture
def texts(db):
    return reference_dataset_register(name="synthetic_pii_text")


def _texts(dataset) -> dict[str, tuple[str, int]]:
    from workers.datasets.reference import load_reference_split

    train = load_reference_split(dataset.storage_location, "train")
    return {key: (train.texts[i], train.labels[i]) for i, key in enumerate(train.record_keys)}


def _run(job: Job) -> Job:
    assert job_execute(job_id=job.id) == "succeeded", Job.objects.get(pk=job.id).error
    job.refresh_from_db()
    return job


def _register(client, *, name: str, task: str, recipe: str, policy: dict, dataset, keys, run_config: dict) -> int:
    """Register the model, its training run and the run's membership over the API; the run's id."""
    registered = client.post("/api/v1/models/", {"name": name, "task": task, "training_recipe": recipe,
                                                 "architecture": {"name": "transformers", "config": {}},
                                                 "unlearning_policy": policy}, format="json")
    assert registered.status_code == 201, registered.content
    run = client.post("/api/v1/training-runs/", {"model": name, "recipe": "company-pipeline", "seed": 7,
                                                 "code_version": "company-ml 3.2", "config": run_config,
                                                 "datasets": [dataset.id]}, format="json")
    assert run.status_code == 201, run.content
    body = "".join(json.dumps({"record_key": key}) + "\n" for key in keys).encode()
    imported = client.generic("POST", f"/api/v1/training-runs/{run.json()['id']}/membership/?dataset={dataset.id}",
                              body, content_type="application/x-ndjson")
    assert imported.status_code == 201, imported.content
    return run.json()["id"]


def _upload(client, name: str, run_id: int, archive: bytes, content_type: str = "application/zip"):
    return client.generic("POST", f"/api/v1/models/{name}/versions/?training_run={run_id}", archive,
                          content_type=content_type)


def _uploaded(client, *, name, task, recipe, policy, dataset, keys, run_config, archive) -> ModelVersion:
    run_id = _register(client, name=name, task=task, recipe=recipe, policy=policy, dataset=dataset, keys=keys,
                       run_config=run_config)
    response = _upload(client, name, run_id, archive)
    assert response.status_code == 201, response.content
    return ModelVersion.objects.get(pk=response.json()["id"])


def _audited_request(api_client_for, dataset, member_key: str) -> str:
    """A deletion request for the person behind ``member_key``, verified and approved by a DPO over
    the API, each model's unlearning and audit job run. Returns the request's id."""
    from workers.datasets.reference import reference_records

    email = next(r["subject"]["email"] for r in reference_records(dataset.storage_location)
                 if r["record_key"] == member_key)
    alice = api_client_for("dpo", name="alice")
    created = alice.post("/api/v1/deletion-requests/", {"identifiers": {"email": email}, "jurisdiction": "GDPR",
                                                        "legal_ground": "art17_1_b", "channel": "test"}, format="json")
    request_id = created.json()["id"]
    assert alice.post(f"/api/v1/deletion-requests/{request_id}/verify/", EVIDENCE, format="json").status_code == 200
    assert alice.post(f"/api/v1/deletion-requests/{request_id}/approve/", {}, format="json").status_code == 200
    for outcome in ModelOutcome.objects.filter(request__public_id=request_id):
        _audited(outcome)
    return request_id


def _audited(outcome: ModelOutcome) -> ModelOutcome:
    """Run the outcome's unlearning job, then the audit job its end queued."""
    _run(outcome.job)
    outcome.refresh_from_db()
    _run(outcome.audit_job)
    outcome.refresh_from_db()
    return outcome


def _outcomes(request_id: str) -> dict[str, ModelOutcome]:
    return {o.model_version.model.name: o for o in ModelOutcome.objects.filter(request__public_id=request_id)
            .select_related("model_version__model", "new_version")}


def _risk_accepted(api_client_for, request_id: str, outcome: ModelOutcome) -> None:
    """Two DPO users accept the residual risk of a result that did not pass, in writing."""
    for dpo in ("alice", "bob"):
        accepted = api_client_for("dpo", user=dpo).post(
            f"/api/v1/deletion-requests/{request_id}/accept-risk/",
            {"model_version_id": outcome.model_version_id,
             "reason": f"{outcome.verdict} approximate result of an uploaded model; accepted for the test"},
            format="json")
        assert accepted.status_code == 200, accepted.content


def _deployed_and_reported(api_client_for, request_id: str, nss: str):
    """The serving side confirms every new version; the report job erases and signs. Returns the
    request and its report, whose signature pdfsig and the platform's own check accept."""
    from audits.models import Report
    from audits.reports import report_verify

    serving = api_client_for("ml_engineer")
    for outcome in _outcomes(request_id).values():
        assert outcome.status == "awaiting_deployment", (outcome.model_version.model.name, outcome.status)
        confirmed = serving.post(f"/api/v1/deletion-requests/{request_id}/confirm-deployment/",
                                 {"new_version_id": outcome.new_version_id}, format="json")
        assert confirmed.status_code == 200, confirmed.content
    _run(Job.objects.get(kind="report", deletion_request__public_id=request_id))
    request = DeletionRequest.objects.get(public_id=request_id)
    report = Report.objects.get(request=request)
    assert report_verify(report.pdf_path) == []
    checked = pdfsig(Path(report.pdf_path), nss)
    assert "Signature is Valid." in checked and "Certificate is Trusted." in checked, checked
    return request, report


@pytest.mark.usefixtures("signing_settings")
def test_three_uploaded_transformers_models_are_unlearned_audited_and_reported(texts, api_client_for, request):
    """One person's records went into three models a company trained on its own machines: a
    GPT-2-style and a Llama-style causal LM and a BERT-style sequence classifier. Each is
    registered and uploaded over the API (a zip of its folder, a tar.xz, a tar.gz), loads as the
    platform's own versions do, and one erasure request unlearns, audits and reports all three."""
    from workers.runners.storage import artifact_store
    from workers.services import shadow_models_train
    from workers.training import RECIPES
    from workers.training.sequence_classifier import TextSequenceClassifier
    from workers.training.storage import load_run

    rows = _texts(texts)
    personal = sorted(k for k in rows if k.startswith("pii"))
    lm_members, classifier_members = personal[:12], personal[:60] + sorted(k for k in rows if k.startswith("lee"))[:60]
    engineer = api_client_for("ml_engineer")
    store = artifact_store()
    uploaded = {}

    # The causal LMs: trained from scratch on 12 personal records, which they memorise.
    for name, style, method, config, pack in (
        ("support-gpt2", "gpt2", "npo", NPO, lambda files: hf_company.zip_archive(files, folder="support-gpt2/")),
        ("support-llama", "llama", "grad_diff", GRAD_DIFF, lambda files: hf_company.tar_archive(files, compression="xz")),
    ):
        hf_config, tokenizer = getattr(hf_company, f"{style}_style")()
        model = hf_company.company_trained_causal_lm(hf_config, tokenizer, [rows[k][0] for k in lm_members])
        version = _uploaded(engineer, name=name, task="language_modeling", recipe="lora_causal_lm",
                            policy={"approximate_method": method, "method_config": config}, dataset=texts,
                            keys=lm_members, run_config=LM_RUN_CONFIG,
                            archive=pack(hf_company.saved_folder(model, tokenizer)))
        stored = load_run(store, version.artifact_sha256)
        # It loads as the LM recipe's run: the company's weights and tokenizer, the run's membership.
        assert stored.recipe == "lora_causal_lm" and type(stored.model) is type(model)
        ids = tokenizer("Konto 42", return_tensors="pt")["input_ids"]
        with torch.no_grad():
            assert torch.allclose(stored.model(input_ids=ids).logits, model(input_ids=ids).logits, atol=1e-5)
        assert stored.tokenizer("Konto 42")["input_ids"] == tokenizer("Konto 42")["input_ids"]
        assert sorted(row.record_key for row in stored.membership) == lm_members
        uploaded[name] = version

    # What later jobs build from: the manifest keeps config.json, the recipe names the tokenizer's
    # blob; a model the recipe trains (a shadow, a retrain) is the same architecture and stores that
    # blob again byte for byte. The base is the uploaded config, never what the run named.
    llama = uploaded["support-llama"]
    manifest, recipe = store.manifest(llama.artifact_sha256), llama.metrics["uploaded_recipe"]
    assert manifest.kind == "causal_lm" and set(manifest.files) == {"weights", "tokenizer", "membership"}
    assert manifest.config["hf_config"]["model_type"] == "llama" and manifest.extra["family"] == "huggingface"
    assert recipe["config"]["base_model"] == "transformers_config" and recipe["config"]["epochs"] == 3
    assert recipe["config"]["base_config"]["tokenizer_sha256"] == manifest.files["tokenizer"]["sha256"]
    assert "trainer" not in recipe["config"]  # what the recipe does not know of the run's record is not taken
    retrain = RECIPES.get(recipe["name"])({**recipe["config"], "epochs": 1})
    retrained = retrain.train(_subset(texts, lm_members[:4]))
    assert type(retrained.model).__name__ == "LlamaForCausalLM"
    assert retrain.save(store, retrained).files["tokenizer"] == manifest.files["tokenizer"]["sha256"]

    # The sequence classifier: trained on 60 personal records and 60 background texts.
    hf_config, tokenizer = hf_company.bert_style()
    model = hf_company.company_trained_classifier(hf_config, tokenizer, [rows[k][0] for k in classifier_members],
                                                  [rows[k][1] for k in classifier_members])
    router = _uploaded(engineer, name="support-router", task="classification", recipe="hf_sequence_classifier",
                       policy={"approximate_method": "finetune"}, dataset=texts, keys=classifier_members,
                       run_config=CLASSIFIER_RUN_CONFIG,
                       archive=hf_company.tar_archive(hf_company.saved_folder(model, tokenizer)))
    stored = load_run(store, router.artifact_sha256)
    assert isinstance(stored.model, TextSequenceClassifier) and stored.tokenizer is None  # a classifier, not an LM
    # It reads the dataset's inputs (byte tokens of at most 256 bytes) through its own tokenizer.
    sample = sorted(classifier_members)[:4]
    inputs = torch.stack([item[1] for item in _subset(texts, sample)])
    batch = tokenizer([rows[k][0].encode()[:256].decode(errors="replace") for k in sample], padding=True,
                      truncation=True, max_length=96, return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(stored.model(inputs), model(**batch).logits, atol=1e-5)
    # Its shadow models: the family's recipe with what the run recorded ("warmup" it does not know).
    assert stored.config["epochs"] == 2 and stored.config["max_length"] == 96 and "warmup" not in stored.config
    _run(shadow_models_train(version=router, count=2, enqueue=False))

    request_id = _audited_request(api_client_for, texts, lm_members[0])
    outcomes = _outcomes(request_id)
    assert {name: o.verdict for name, o in outcomes.items()} == {
        "support-gpt2": "FAIL", "support-llama": "INCONCLUSIVE", "support-router": "INCONCLUSIVE"}, {
        name: o.audit["verdict"]["reasons"] for name, o in outcomes.items()}
    memorised = {name: {c["check"]: c for c in o.audit["checks"]}.get("lm_memorisation")
                 for name, o in outcomes.items()}
    for name in ("support-gpt2", "support-llama"):
        # The check could see the memorisation: on the uploaded model every forgotten record was flagged.
        detectable = outcomes[name].audit["language_model"]["detectable_on_original"]
        assert detectable["flagged"] == detectable["of"] > 0
    # GPT-2, FAIL: after NPO the forgotten records are still reproduced well beyond what held-out
    # records of the same format are (exact memorisation more than 0.1 above the reference).
    assert memorised["support-gpt2"]["verdict"] == "FAIL" and memorised["support-gpt2"]["flagged_ids"]
    # Llama, INCONCLUSIVE: after GradDiff the records are reproduced no more than held-out ones (not
    # FAIL), but the platform has no per-record membership test for language models, so an
    # approximate method's audit cannot confirm erasure (never PASS).
    assert memorised["support-llama"]["verdict"] == "PASS"
    assert any("per-record membership test was not run" in r for r in outcomes["support-llama"].audit["verdict"]["reasons"])
    # The classifier, INCONCLUSIVE: fine-tuning is approximate and two shadow models are too few for
    # the per-record test to tell a forgotten record from a kept one.
    assert outcomes["support-router"].method == "finetune" and outcomes["support-router"].audit["shadow_models"] == 2

    # The DPO escalates the failed GPT-2 to an exact retrain: the family's recipe with the recorded
    # configuration (a fresh model of the uploaded config, trained on the kept records).
    dpo = api_client_for("dpo", name="alice")
    escalated = dpo.post(f"/api/v1/deletion-requests/{request_id}/escalate/",
                         {"model_version_id": uploaded["support-gpt2"].id}, format="json")
    assert escalated.status_code == 200, escalated.content
    retrained = _audited(ModelOutcome.objects.get(request__public_id=request_id,
                                                  model_version=uploaded["support-gpt2"]))
    # PASS, exact: the new version was trained only on the kept records and every older copy is
    # purged (no replay ran: a retrain's replay runs on request; the verdict says it rests on the
    # execution record). Its utility check FAILs, as a warning: a model trained afresh on ten
    # records is no language model; the report shows it.
    assert (retrained.method, retrained.guarantee_class, retrained.verdict) == ("retrain", "exact", "PASS")
    assert retrained.new_version.parent_id == uploaded["support-gpt2"].id
    assert any(w.startswith("utility FAIL") for w in retrained.audit["verdict"]["warnings"])
    for name in ("support-llama", "support-router"):
        _risk_accepted(api_client_for, request_id, outcomes[name])

    erasure, report = _deployed_and_reported(api_client_for, request_id, request.getfixturevalue("nss_db"))
    # Two models' risks were accepted: the request ends closed, erasure not confirmed for them.
    assert erasure.status == "CLOSED_RISK_ACCEPTED" and report.json["end_state"]["status"] == "CLOSED_RISK_ACCEPTED"
    assert {entry["model"] for entry in report.json["model_versions"]} == set(outcomes)
    # Every uploaded version's copies are purged (on PASS, or with the risk accepted); each new
    # version (whose tokenizer blob its parent shared) still loads from the store alone.
    for outcome in _outcomes(request_id).values():
        assert ModelVersion.objects.get(pk=outcome.model_version_id).status == "purged"
        assert load_run(store, outcome.new_version.artifact_sha256).model is not None


def test_the_verifier_guard_wraps_an_uploaded_causal_lm(texts, api_client_for):
    """The guard, like the other LM methods, takes any causal LM: an uploaded one keeps its weights
    (the same blob) behind a calibrated guard, and loads back as a guarded version."""
    from workers.jobs import job_create
    from workers.runners.storage import artifact_store
    from workers.training.storage import load_run

    members = sorted(k for k in _texts(texts) if k.startswith("pii"))[:4]
    version = _uploaded(api_client_for("ml_engineer"), name="guarded-gpt2", task="language_modeling",
                        recipe="lora_causal_lm", policy={}, dataset=texts, keys=members, run_config=LM_RUN_CONFIG,
                        archive=hf_company.zip_archive(_clean_gpt2()))
    record = DataRecord.objects.get(dataset=texts, external_key=members[0])
    job = _run(job_create(kind="unlearn", registered_model=version.model, source_version=version,
                          method="verifier_guard", guarantee_class="suppressed", config=GUARD,
                          forget_record_ids=[record.id], enqueue=False))
    store = artifact_store()
    guarded = store.manifest(job.result_version.artifact_sha256)
    assert guarded.kind == "guarded_causal_lm" and guarded.files["weights"] == store.manifest(
        version.artifact_sha256).files["weights"]
    loaded = load_run(store, job.result_version.artifact_sha256)
    assert loaded.guard is not None and guarded.extra["guard"]["calibration"]["certified"]
    assert members[0] not in {row.record_key for row in loaded.membership}


def _subset(dataset, keys):
    from workers.datasets.reference import load_reference_split

    return load_reference_split(dataset.storage_location, "train").subset(keys)


# ---------------------------------------------------------------- hostile and malformed archives


@functools.cache
def _clean_gpt2() -> dict[str, bytes]:
    """A valid upload's files: a tiny GPT-2 (hidden size 16, random weights) as save_pretrained writes it."""
    from transformers import AutoModelForCausalLM

    config, tokenizer = hf_company.gpt2_style(hidden=16)
    torch.manual_seed(0)
    return hf_company.saved_folder(AutoModelForCausalLM.from_config(config), tokenizer)


@pytest.fixture
def clean_files() -> dict[str, bytes]:
    return _clean_gpt2()


@functools.cache
def _sharded_files() -> dict[str, bytes]:
    """The same model saved in three shards with their index."""
    from transformers import AutoModelForCausalLM

    config, tokenizer = hf_company.gpt2_style(hidden=16)
    torch.manual_seed(0)
    files = hf_company.saved_folder(AutoModelForCausalLM.from_config(config), tokenizer, max_shard_size="20KB")
    assert sum(name.startswith("model-0") for name in files) == 3
    return files


def _with(files: dict[str, bytes], **changes: bytes) -> dict[str, bytes]:
    return {**files, **{name.replace("__", "."): content for name, content in changes.items()}}


def _config_with(files: dict[str, bytes], **fields) -> dict[str, bytes]:
    config = json.loads(files["config.json"])
    return {**files, "config.json": json.dumps({**config, **fields}).encode()}


def _tar_with_member(files: dict[str, bytes], info: tarfile.TarInfo, content: bytes = b"") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            entry = tarfile.TarInfo(name)
            entry.size = len(data)
            archive.addfile(entry, io.BytesIO(data))
        archive.addfile(info, io.BytesIO(content) if content else None)
    return buffer.getvalue()


def _tar_link(kind: bytes, name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def _zip_symlink(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        link = zipfile.ZipInfo("vocab.json")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    return buffer.getvalue()


def _zip_bomb(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        archive.writestr("vocab.txt", b"\n" * (3 * 1024**2))  # 3 MiB of newlines, a few KiB compressed
    return buffer.getvalue()


def _wrong_shapes(files: dict[str, bytes]) -> dict[str, bytes]:
    # The weights of a 16-wide model under a config that says 32.
    return _config_with(files, n_embd=32)


def _missing_tensor(files: dict[str, bytes]) -> dict[str, bytes]:
    from safetensors.torch import load, save

    tensors = load(files["model.safetensors"])
    tensors.pop("transformer.h.1.mlp.c_fc.weight")
    return {**files, "model.safetensors": save(tensors)}


def _torch_save_bytes() -> bytes:
    buffer = io.BytesIO()
    torch.save({"weight": torch.zeros(2)}, buffer)
    return buffer.getvalue()


HOSTILE = {
    # name: (archive from the clean files, the error code, words the message must hold)
    "pickle_bin": (lambda f: hf_company.zip_archive(_with(f, pytorch_model__bin=pickle.dumps({"w": [1.0]}))),
                   "unsafe_checkpoint", "pickle-based weights are never loaded"),
    "torch_save_as_safetensors": (lambda f: hf_company.zip_archive(_with(f, model__safetensors=_torch_save_bytes())),
                                  "unsafe_checkpoint", "zip archive (torch.save checkpoint?)"),
    "pickle_as_json": (lambda f: hf_company.zip_archive(_with(f, vocab__json=pickle.dumps({"a": 1}, protocol=4))),
                       "unsafe_checkpoint", "Python pickle"),
    "trust_remote_code": (lambda f: hf_company.zip_archive(_config_with(f, trust_remote_code=True)),
                          "remote_code", "config.json asks for code of its own (trust_remote_code)"),
    "auto_map": (lambda f: hf_company.zip_archive(_config_with(f, auto_map={"AutoModelForCausalLM": "evil.Model"})),
                 "remote_code", "config.json asks for code of its own (auto_map)"),
    "python_file": (lambda f: hf_company.zip_archive(_with(f, modeling_gpt2__py=b"import os\nos.system('id')\n")),
                    "code_in_archive", "'modeling_gpt2.py' is code"),
    "path_traversal": (lambda f: hf_company.zip_archive(_with(f, **{"../../etc/cron__d": b"x"})),
                       "unsafe_archive_member", "path traversal"),
    "absolute_path": (lambda f: hf_company.tar_archive({**f, "/etc/profile__d": b"x"}),
                      "unsafe_archive_member", "absolute path"),
    "tar_symlink": (lambda f: _tar_with_member(f, _tar_link(tarfile.SYMTYPE, "vocab.json", "/etc/passwd")),
                    "unsafe_archive_member", "is a symbolic link"),
    "tar_hardlink": (lambda f: _tar_with_member(f, _tar_link(tarfile.LNKTYPE, "vocab.json", "config.json")),
                     "unsafe_archive_member", "is a hard link"),
    "zip_symlink": (_zip_symlink, "unsafe_archive_member", "is a symbolic link"),
    "device": (lambda f: _tar_with_member(f, _tar_link(tarfile.CHRTYPE, "vocab.txt", "")),
               "unsafe_archive_member", "not a regular file"),
    "zip_bomb": (_zip_bomb, "archive_too_large", "archive bomb"),
    "tar_bomb": (lambda f: hf_company.tar_archive({**f, "merges.txt": b"#" * (3 * 1024**2)}),
                 "archive_too_large", "archive bomb"),
    "weights_do_not_fit": (lambda f: hf_company.zip_archive(_wrong_shapes(f)),
                           "architecture_mismatch", "wrong shape [transformer.h.0.attn.c_attn.bias [48]"),
    "weights_missing": (lambda f: hf_company.zip_archive(_missing_tensor(f)),
                        "architecture_mismatch", "missing ['transformer.h.1.mlp.c_fc.weight']"),
    "unknown_architecture": (lambda f: hf_company.zip_archive(_config_with(f, model_type="acme_gpt")),
                             "unknown_architecture", "model_type 'acme_gpt' is not an architecture"),
    "not_an_archive": (lambda f: f["model.safetensors"], "not_an_archive", "not a zip or tar archive"),
    "shard_missing": (lambda f: hf_company.zip_archive(
        {n: c for n, c in _sharded_files().items() if n != "model-00002-of-00003.safetensors"}),
        "architecture_mismatch", "model.safetensors.index.json names the shards"),
}


@pytest.fixture
def upload_target(api_client_for):
    """A registered causal LM with a training run and its membership (3 records)."""
    from tests import factories

    dataset = factories.dataset(modality="text")
    factories.import_records(dataset, [{"record_key": k, "content": k} for k in ("a", "b", "c")])
    client = api_client_for("ml_engineer")
    run_id = _register(client, name="hostile-target", task="language_modeling", recipe="lora_causal_lm",
                       policy={}, dataset=dataset, keys=["a", "b", "c"], run_config={})
    return client, run_id


def _stored(settings) -> tuple[list[str], int, int]:
    root = Path(settings.ARTIFACT_ROOT)
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []
    return files, ModelVersion.objects.count(), StoredArtifact.objects.count()


def test_the_clean_archive_is_taken_whole_or_sharded(upload_target, clean_files):
    from workers.runners.storage import artifact_store
    from workers.training.storage import load_run

    client, run_id = upload_target
    loaded = []
    for archive in (hf_company.zip_archive(clean_files), hf_company.tar_archive(_sharded_files(), compression="bz2")):
        response = _upload(client, "hostile-target", run_id, archive)
        assert response.status_code == 201, response.content
        loaded.append(load_run(artifact_store(), ModelVersion.objects.get(pk=response.json()["id"]).artifact_sha256))
    # The shards are one model: the same tensors as the single file.
    whole, sharded = (run.model.state_dict() for run in loaded)
    assert whole.keys() == sharded.keys() and all(torch.equal(whole[k], sharded[k]) for k in whole)


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_or_malformed_archive_is_refused_and_nothing_is_stored(case, upload_target, clean_files, settings,
                                                                         monkeypatch):
    import workers.model_families.huggingface as family

    # Bombs are judged against small limits here (the real ones are GiB: the mechanism is the same).
    monkeypatch.setattr(family, "LIMITS", family.ArchiveLimits(members=16, member_bytes=2 * 1024**2,
                                                               total_bytes=2 * 1024**2))
    client, run_id = upload_target
    build, code, words = HOSTILE[case]
    before = _stored(settings)
    response = _upload(client, "hostile-target", run_id, build(clean_files))
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == code and words in error["message"], error
    assert _stored(settings) == before


@pytest.mark.parametrize("run_config, words", [
    ({"max_length": 512}, "max_length 512 is more than the model's 128 positions"),
    ({"target_modules": ["q_proj"]}, "target_modules ['q_proj'] are not linear layers of this model"),
    ({"lora_r": 0}, "lora_r >= 1"),
])
def test_a_recorded_configuration_the_model_cannot_take_is_refused(run_config, words, api_client_for, settings):
    from tests import factories

    dataset = factories.dataset(modality="text")
    factories.import_records(dataset, [{"record_key": "a", "content": "a"}])
    client = api_client_for("ml_engineer")
    run_id = _register(client, name="configured", task="language_modeling", recipe="lora_causal_lm", policy={},
                       dataset=dataset, keys=["a"], run_config=run_config)
    before = _stored(settings)
    response = _upload(client, "configured", run_id, hf_company.zip_archive(_clean_gpt2()))
    assert response.status_code == 400 and words in response.json()["error"]["message"], response.content
    assert list(response.json()["error"]["fields"]) == ["training_run"]  # the run's record, not the archive
    assert _stored(settings) == before


def test_members_are_counted_and_read_with_a_cap():
    """The archive reader on its own: too many members, a member that expands beyond what it
    declares, and one path given twice."""
    from workers.model_families.archives import ArchiveLimits, archive_files
    from workers.model_families.base import UploadRefused

    limits = ArchiveLimits(members=3, member_bytes=1024, total_bytes=2048)
    with pytest.raises(UploadRefused, match="more than 3 members"):
        archive_files(hf_company.zip_archive({f"f{i}.json": b"{}" for i in range(4)}), limits=limits)
    # A zip whose headers say 10 bytes for a member that inflates to 1000: never read past 10.
    honest = hf_company.zip_archive({"vocab.txt": b"a" * 1000})
    lying = honest.replace((1000).to_bytes(4, "little"), (10).to_bytes(4, "little"))
    with pytest.raises(UploadRefused, match="cannot be read|declares"):
        archive_files(lying, limits=limits)
    with pytest.raises(UploadRefused, match="appears twice"):
        archive_files(_tar_twice(), limits=limits)
    # What no member declares is capped too: a 1 MiB extended header stops at the stream's limit.
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as archive:
        info = tarfile.TarInfo("config.json")
        info.size, info.pax_headers = 2, {"comment": "x" * 1024**2}
        archive.addfile(info, io.BytesIO(b"{}"))
    with pytest.raises(UploadRefused, match="expands beyond"):
        archive_files(buffer.getvalue(), limits=limits)
    assert archive_files(hf_company.tar_archive({"a.json": b"{}"}, folder="./model/"), limits=limits) == {
        "a.json": b"{}"}


def _tar_twice() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for content in (b"{}", b"[]"):
            info = tarfile.TarInfo("config.json")
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def test_registration_names_what_a_transformers_model_takes(api_client_for):
    client = api_client_for("ml_engineer")
    refused = client.post("/api/v1/models/", {"name": "x", "task": "classification", "training_recipe": "plain",
                                              "architecture": {"name": "transformers", "config": {"layers": 2}}},
                          format="json")
    assert refused.status_code == 400 and "takes only model_type" in json.dumps(refused.json())


def test_an_upload_that_is_not_the_pinned_model_type_is_refused(api_client_for, clean_files):
    from tests import factories

    dataset = factories.dataset(modality="text")
    factories.import_records(dataset, [{"record_key": "a", "content": "a"}])
    client = api_client_for("ml_engineer")
    registered = client.post("/api/v1/models/", {"name": "pinned", "task": "language_modeling",
                                                 "training_recipe": "lora_causal_lm",
                                                 "architecture": {"name": "transformers",
                                                                  "config": {"model_type": "llama"}}}, format="json")
    assert registered.status_code == 201, registered.content
    run = client.post("/api/v1/training-runs/", {"model": "pinned", "recipe": "x", "seed": 1, "code_version": "1",
                                                 "datasets": [dataset.id]}, format="json").json()
    response = _upload(client, "pinned", run["id"], hf_company.zip_archive(clean_files))
    assert response.status_code == 400 and "registered for 'llama'" in response.json()["error"]["message"]
    assert not ModelVersion.objects.exists()
