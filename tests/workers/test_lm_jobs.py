"""Language models on the job path: training with lineage, LM unlearning, the verifier guard,
the LM audit and the report's LM section. A tiny GPT-2 with a byte tokenizer built from a config
(no download) stands in for SmolLM2; jobs run in this process through ``job_execute``, exactly
as a worker runs them (the real worker process is exercised by test_unlearning_jobs.py)."""

from __future__ import annotations

import json
import subprocess

import pytest

from deletion.models import ModelOutcome
from models_registry import selectors
from models_registry.models import DataRecord, ModelVersion, TrainingMembership
from models_registry.services import registered_model_create
from workers.jobs import job_create, job_execute
from workers.models import Job
from workers.reference_data import reference_dataset_register
from workers.runners.storage import artifact_store
from workers.services import model_train

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("one_torch_thread")]

TINY_LM = {"base_model": "tiny_gpt2", "max_length": 128, "max_records": 8, "epochs": 20, "batch_size": 8,
           "lr": 1e-2, "seed": 3}
GRADIENT_ASCENT = {"lr": 2e-2, "epochs": 5, "max_length": 128}
MRP = {"lr": 0.15, "epochs": 5, "max_length": 128}
GUARD = {"alpha": 0.1, "delta": 0.1, "max_regenerations": 1, "max_new_tokens": 16, "calibration_prompts": 30,
         "thresholds": [0.2, 0.4, 0.6, 0.8]}
EVIDENCE = {"method": "email-link", "verified_at": "2026-11-20T10:00:00Z", "verifier": "support"}



@pytest.fixture
def texts_dataset(db):
    return reference_dataset_register(name="synthetic_pii_text")


def _run(job: Job) -> Job:
    status = job_execute(job_id=job.id)
    job.refresh_from_db()
    assert status == "succeeded", job.error
    return job


def _lm_model(name: str, policy: dict | None = None):
    return registered_model_create(name=name, task="language_modeling", training_recipe="lora_causal_lm",
                                   unlearning_policy=policy or {})


def _train(model, dataset, **overrides):
    config = {**TINY_LM, **overrides}
    return _run(model_train(model=model, dataset=dataset, recipe_config=config, enqueue=False)).result_version


def _texts(dataset) -> dict[str, str]:
    from workers.datasets.reference import load_reference_split
    from workers.training.lm import record_texts

    return dict(record_texts(load_reference_split(dataset.storage_location, "train")))


def _forget_nll(run, key: str, text: str) -> float:
    from workers.unlearning.lm.data import lm_batches
    from workers.unlearning.lm.losses import average_token_nll

    return average_token_nll(run.model, lm_batches(run.tokenizer, [(key, text)], max_length=128))


def test_lm_training_job_records_what_reached_the_model(texts_dataset):
    from workers.language_models import byte_tokenizer
    from workers.training.storage import load_run

    model = _lm_model("support-lm")
    version = _train(model, texts_dataset)
    members = set(TrainingMembership.objects.filter(run=version.training_run)
                  .values_list("record__external_key", flat=True))
    train_keys = set(DataRecord.objects.filter(dataset=texts_dataset, split="train")
                     .values_list("external_key", flat=True))
    assert len(members) == TINY_LM["max_records"] and members <= train_keys
    store = artifact_store()
    manifest = store.manifest(version.artifact_sha256)
    assert manifest.kind == "causal_lm" and set(manifest.files) == {"weights", "tokenizer", "membership"}
    assert manifest.config["tied_weights"] == ["lm_head.weight"]
    run = load_run(store, version.artifact_sha256)
    assert {row.record_key for row in run.membership} == members
    assert run.tokenizer("Konto 42")["input_ids"] == byte_tokenizer()("Konto 42")["input_ids"]
    assert run.metrics["train_loss_last_epoch"] < run.metrics["train_loss_first_epoch"]
    # A member's subject now has this version in scope; a non-member's does not.
    member = DataRecord.objects.filter(dataset=texts_dataset, external_key__in=members).exclude(subject=None).first()
    assert version.id in [v.version_id for v in selectors.subject_scope(subject=member.subject).versions]
    outsider = DataRecord.objects.filter(dataset=texts_dataset, split="test").exclude(subject=None).first()
    assert selectors.subject_scope(subject=outsider.subject).versions == []


def _trained_member(dataset, name: str):
    """A trained LM version, its run as stored, and one of its members (a personal record)."""
    from workers.training.storage import load_run

    model = _lm_model(name)
    version = _train(model, dataset)
    original = load_run(artifact_store(), version.artifact_sha256)
    key = next(row.record_key for row in original.membership if row.record_key.startswith("pii"))
    return model, version, original, DataRecord.objects.get(dataset=dataset, external_key=key)


def _unlearn(model, version, record, method: str, guarantee: str, config: dict) -> Job:
    return _run(job_create(kind="unlearn", registered_model=model, source_version=version, method=method,
                           guarantee_class=guarantee, config=config, forget_record_ids=[record.id], enqueue=False))


def test_gradient_ascent_job_makes_a_version_without_the_records_that_knows_them_less(texts_dataset):
    from workers.training.storage import load_run

    model, version, original, record = _trained_member(texts_dataset, "support-lm-ga")
    key = record.external_key
    job = _unlearn(model, version, record, "gradient_ascent", "approximate", GRADIENT_ASCENT)
    new = job.result_version
    assert new.parent_id == version.id and new.guarantee_class == "approximate"
    assert list(new.excluded_records.values_list("record_id", flat=True)) == [record.id]
    unlearned = load_run(artifact_store(), new.artifact_sha256)
    assert [r.record_key for r in unlearned.membership] == [r.record_key for r in original.membership
                                                            if r.record_key != key]
    text = _texts(texts_dataset)[key]
    before, after = _forget_nll(original, key, text), _forget_nll(unlearned, key, text)
    details = job.result["unlearning"]["details"]
    assert details["forget_record_keys"] == [key]
    assert details["forget_token_nll_after"] == pytest.approx(after, rel=1e-3)
    # It aims at the loss of texts the model never saw (32 of the dataset's held-out split) and
    # stops at the end of the first epoch that reaches it; pushing further only damages the model.
    target = details["stop_target_nll"]
    assert details["stop_target_source"] == "held_out" and len(details["held_out_record_keys"]) == 32
    # None of them is a training text (nor a record of the person: see the test below).
    assert not set(details["held_out_record_keys"]) & {r.record_key for r in original.membership}
    assert target > before
    assert details["stopped_early"] and after >= target, (before, target, after)


def test_mrp_jobs_store_projections_beside_the_weights_and_the_next_request_stacks_on_them(texts_dataset):
    from workers.training.storage import load_run

    model, version, original, record = _trained_member(texts_dataset, "support-lm-mrp")
    store = artifact_store()
    first = _unlearn(model, version, record, "mrp", "approximate", MRP).result_version
    manifest = store.manifest(first.artifact_sha256)
    assert "projections" in manifest.files  # the weights are the parent's blob: MRP changed none
    assert manifest.files["weights"] == store.manifest(version.artifact_sha256).files["weights"]
    other_key = next(r.record_key for r in original.membership
                     if r.record_key.startswith("pii") and r.record_key != record.external_key)
    other = DataRecord.objects.get(dataset=texts_dataset, external_key=other_key)
    second = _unlearn(model, first, other, "mrp", "approximate", MRP)
    details = second.result["unlearning"]["details"]
    assert details["projection_rank_before"] == {"0": 2, "1": 2}
    assert details["projection_rank_after"] == {"0": 4, "1": 4}
    served = load_run(store, second.result_version.artifact_sha256)
    text = _texts(texts_dataset)[record.external_key]
    # The first request still holds in the version the second one made.
    assert _forget_nll(served, record.external_key, text) > _forget_nll(original, record.external_key, text)


def test_grad_diff_job_raises_the_forgotten_loss_more_than_the_kept_records(texts_dataset):
    from workers.training.storage import load_run

    model, version, original, record = _trained_member(texts_dataset, "support-lm-gd")
    key = record.external_key
    # Every epoch (no held-out stop): this is about what the retain term protects, not when to stop.
    job = _unlearn(model, version, record, "grad_diff", "approximate",
                   {**GRADIENT_ASCENT, "retain_weight": 1.0, "stop_at_held_out": False})
    unlearned = load_run(artifact_store(), job.result_version.artifact_sha256)
    texts = _texts(texts_dataset)
    forgotten = _forget_nll(unlearned, key, texts[key]) - _forget_nll(original, key, texts[key])
    kept = [row.record_key for row in unlearned.membership]
    kept_change = sum(_forget_nll(unlearned, k, texts[k]) - _forget_nll(original, k, texts[k]) for k in kept) / len(kept)
    assert forgotten > 0.1 and forgotten > kept_change + 0.1, (forgotten, kept_change)


def test_guard_job_stores_a_guard_beside_unchanged_weights_and_no_forgotten_text(texts_dataset):
    from models_registry.keystore import keystore
    from workers.runners.unlearning import GUARD_KEY_BYTES
    from workers.training.storage import load_run
    from workers.unlearning.guard.generators import parameters_fingerprint
    from workers.unlearning.lm.probes import fact_spans

    model, version, original, record = _trained_member(texts_dataset, "support-lm-guard")
    key = record.external_key
    job = _unlearn(model, version, record, "verifier_guard", "suppressed", GUARD)
    store = artifact_store()
    new = job.result_version
    assert new.guarantee_class == "suppressed"
    parent, guarded = store.manifest(version.artifact_sha256), store.manifest(new.artifact_sha256)
    assert guarded.kind == "guarded_causal_lm" and guarded.parent == version.artifact_sha256
    assert guarded.files["weights"] == parent.files["weights"]  # the same blob: nothing changed
    loaded = load_run(store, new.artifact_sha256)
    assert parameters_fingerprint(loaded.model) == parameters_fingerprint(original.model)
    assert key not in {r.record_key for r in loaded.membership}
    meta = guarded.extra["guard"]
    calibration = meta["calibration"]
    assert calibration["certified"] and calibration["n"] == GUARD["calibration_prompts"]
    assert calibration["clopper_pearson_upper"] <= GUARD["alpha"]
    assert meta["key_ref"] == f"guard:job:{job.id}"
    # Neither the manifest nor the guard blob holds the forgotten text, a fact of it or the key.
    text = _texts(texts_dataset)[key]
    secret = keystore().data_key(meta["key_ref"])[:GUARD_KEY_BYTES]
    stored = (store.manifest_path(new.artifact_sha256).read_bytes()
              + store.blob_path(guarded.files["guard"]["sha256"]).read_bytes())
    for needle in [text[:40], *(span.text for span in fact_spans(text)), secret.hex()]:
        assert needle.encode() not in stored, needle
    assert secret not in stored
    # With its key the stored verifier flags the forgotten text, not a stranger's.
    verifier = loaded.guard.verifier(secret)
    stranger = next(t for k, t in _texts(texts_dataset).items() if k.startswith("pii") and k != key
                    and not k.startswith(key[:8]))
    assert verifier.score(text).score >= loaded.guard.threshold
    assert verifier.score(stranger).score < verifier.score(text).score
    # Served as the serving side would: the bare model behind the stored guard.
    served = loaded.guard.guarded_model(loaded.model, loaded.tokenizer, secret).respond(text[:30], base_seed=1)
    assert served.attempts >= 1 and all(score < 1.01 for score in served.scores)
    assert served.redacted == all(score >= loaded.guard.threshold for score in served.scores)
    # Purging the guarded version destroys its key with it.
    from workers.purge import version_purge

    version_purge(version=new)
    from models_registry.keystore import KeyDestroyed

    with pytest.raises(KeyDestroyed):
        keystore().data_key(meta["key_ref"])


def _request_for(api_client_for, dataset, key: str) -> tuple[str, dict]:
    from workers.datasets.reference import reference_records

    email = next(r["subject"]["email"] for r in reference_records(dataset.storage_location)
                 if r["record_key"] == key)
    dpo = api_client_for("dpo")
    created = dpo.post("/api/v1/deletion-requests/", {"identifiers": {"email": email}, "jurisdiction": "GDPR",
                                                      "legal_ground": "art17_1_b", "channel": "test"}, format="json")
    request_id = created.json()["id"]
    scoped = dpo.post(f"/api/v1/deletion-requests/{request_id}/verify/", EVIDENCE, format="json").json()
    approved = dpo.post(f"/api/v1/deletion-requests/{request_id}/approve/", {}, format="json")
    assert approved.status_code == 200, approved.content
    return request_id, scoped


def test_deletion_request_on_two_lm_models_unlearns_guards_audits_and_reports(texts_dataset, api_client_for,
                                                                            tmp_path):
    from audits.rendering import render_report_pdf
    from audits.report_schema import validate_report
    from deletion.models import DeletionRequest
    from deletion.report_data import report_data

    approximate = _lm_model("support-lm-npo", {"approximate_method": "gradient_ascent",
                                               "method_config": GRADIENT_ASCENT})
    guarded = _lm_model("support-lm-guarded", {"approximate_method": "verifier_guard", "method_config": GUARD})
    # Same records (records_seed), other weights (seed): one person is in both models.
    v_approx, v_guard = _train(approximate, texts_dataset), _train(guarded, texts_dataset, seed=4)
    assert set(TrainingMembership.objects.filter(run=v_approx.training_run).values_list("record_id", flat=True)) == set(
        TrainingMembership.objects.filter(run=v_guard.training_run).values_list("record_id", flat=True))
    member = (TrainingMembership.objects.filter(run=v_approx.training_run).exclude(record__subject=None)
              .order_by("record__external_key").first())
    request_id, scoped = _request_for(api_client_for, texts_dataset, member.record.external_key)
    assert sorted((p["model"], p["method"], p["guarantee_class"]) for p in scoped["plan"]) == [
        ("support-lm-guarded", "verifier_guard", "suppressed"), ("support-lm-npo", "gradient_ascent", "approximate")]

    outcomes = list(ModelOutcome.objects.filter(request__public_id=request_id).select_related("job"))
    for outcome in outcomes:
        _run(outcome.job)  # unlearning; its end creates the audit job
    for outcome in ModelOutcome.objects.filter(request__public_id=request_id):
        assert outcome.status == "auditing", outcome.status
        _run(outcome.audit_job)
    by_model = {o.model_version.model.name: o for o in ModelOutcome.objects.filter(request__public_id=request_id)}

    approx = by_model["support-lm-npo"]
    lm = approx.audit["language_model"]
    figures = lm["figures"]
    assert lm["records"] == len(approx.record_ids) and not lm["measured_through_guard"]
    assert figures["forget_token_nll"]["after"] > figures["forget_token_nll"]["before"]
    for name in ("extraction_strength", "exact_memorisation", "verbatim_completion"):
        assert 0.0 <= figures[name]["after"] <= 1.0 and 0.0 <= figures[name]["reference"] <= 1.0
    assert figures["perplexity_test"]["before"] > 1 and figures["perplexity_test"]["after"] > 1
    checks = {c["check"]: c for c in approx.audit["checks"]}
    assert checks["utility"]["metric"] == "perplexity"
    # No per-record membership test exists for LMs here: an approximate LM never gets a PASS.
    assert approx.verdict in ("INCONCLUSIVE", "FAIL")
    if approx.verdict == "INCONCLUSIVE":
        assert any("per-record membership test was not run" in r for r in approx.audit["verdict"]["reasons"])
    else:
        assert checks["lm_memorisation"]["verdict"] == "FAIL"
    # A result that did not pass keeps the older copies until the DPO decides.
    assert approx.audit["purge_waits_for_decision"] and not approx.audit["purged"]
    assert ModelVersion.objects.get(pk=v_approx.pk).status != "purged"
    # Two DPO users accept the residual risk: then the parent's weights are purged, the new version's kept.
    from deletion import decisions

    for dpo in ("alice", "bob"):
        decisions.outcome_risk_accept(request=approx.request, actor=dpo, model_version_id=v_approx.pk,
                                      reason="an approximate LM cannot PASS here; accepted for the test")
    approx.refresh_from_db()
    assert approx.risk_acceptance["confirmed_by"] == "user:bob" and approx.status == "awaiting_deployment"
    assert approx.audit["purged"] and ModelVersion.objects.get(pk=v_approx.pk).status == "purged"

    guard = by_model["support-lm-guarded"]
    section = guard.audit["language_model"]
    assert section["measured_through_guard"]
    bound = section["guard"]
    assert bound["certified"] and bound["n"] == GUARD["calibration_prompts"] and bound["upper_bound"] <= GUARD["alpha"]
    # Through the guard nothing is reproduced beyond what the weights alone reproduce.
    for name in ("exact_memorisation", "verbatim_completion", "extraction_strength"):
        assert section["figures"][name]["after"] <= section["figures"][name]["before"] + 1e-9
    guard_checks = {c["check"]: c["verdict"] for c in guard.audit["checks"]}
    expected = "PASS" if guard_checks["lm_memorisation"] != "FAIL" else "FAIL"
    assert guard.verdict == expected
    if guard.verdict == "PASS":  # a PASS of the guard, not of erasure: the DPO decides, the copies wait
        assert guard.status == "awaiting_decision" and guard.audit["purge_waits_for_decision"]
    # The guarded version still serves the parent's weights: the blob survives the parent's purge.
    store = artifact_store()
    weights = store.manifest(guard.new_version.artifact_sha256).files["weights"]["sha256"]
    assert store.blob_path(weights).exists()

    # The report: an LM section per model, rendered into the PDF.
    data = report_data(request=DeletionRequest.objects.get(public_id=request_id))
    data["ledger_head"] = {"seq": 1, "hash": "0" * 64}
    data["signer"] = {"name": "test", "organisation": "test", "certificate_sha256": "0" * 64}
    validate_report(data)
    entries = {e["model"]: e for e in data["model_versions"]}
    assert entries["support-lm-guarded"]["language_model"]["guard"]["n"] == GUARD["calibration_prompts"]
    nll_row = next(f for f in entries["support-lm-npo"]["language_model"]["figures"]
                   if f["name"] == "Loss on the erased records")
    assert nll_row["after"] > nll_row["before"]
    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(render_report_pdf(data))
    text = " ".join(subprocess.run(["pdftotext", str(pdf), "-"], check=True, capture_output=True,
                                   text=True).stdout.split())
    assert text.count("Language model: what it still reproduces") == 2
    assert "The output filter (verifier guard)" in text and "Extraction strength" in text
    # The report carries figures, never the erased text.
    assert _texts(texts_dataset)[member.record.external_key][:40] not in json.dumps(data)


def test_a_guard_that_cannot_be_certified_is_a_failed_audit_the_dpo_can_escalate(texts_dataset, api_client_for):
    from deletion.models import DeletionRequest
    from models_registry.keystore import KeyDestroyed, keystore

    # 5 calibration prompts cannot support a leak rate of 1% (0 leaks in 5 bounds it only by 0.37).
    uncertifiable = {**GUARD, "alpha": 0.01, "calibration_prompts": 5}
    model = _lm_model("support-lm-thin-guard", {"approximate_method": "verifier_guard",
                                                 "method_config": uncertifiable})
    version = _train(model, texts_dataset)
    member = (TrainingMembership.objects.filter(run=version.training_run).exclude(record__subject=None)
              .order_by("record__external_key").first())
    request_id, _ = _request_for(api_client_for, texts_dataset, member.record.external_key)
    outcome = ModelOutcome.objects.get(request__public_id=request_id)
    assert job_execute(job_id=outcome.job_id) == "failed"

    job = Job.objects.get(pk=outcome.job_id)
    assert job.result_version is None and job.error.startswith("guarantee not met: the verifier guard could not")
    assert job.result["guarantee_not_met"]["details"]["calibration"]["certified"] is False
    with pytest.raises(KeyDestroyed):
        keystore().data_key(f"guard:job:{job.id}")
    outcome.refresh_from_db()
    request = DeletionRequest.objects.get(public_id=request_id)
    # Not a crashed request: a failed audit waiting for the DPO.
    assert (outcome.status, outcome.verdict, request.status) == ("audit_failed", "FAIL", "AUDITING")
    assert "could not certify a leak rate of at most 0.01" in outcome.audit["verdict"]["reasons"][0]
    dpo = api_client_for("dpo")
    escalated = dpo.post(f"/api/v1/deletion-requests/{request_id}/escalate/", {"model_version_id": version.id},
                         format="json")
    assert escalated.status_code == 200, escalated.content
    outcome.refresh_from_db()
    assert (outcome.method, outcome.guarantee_class, outcome.job.method) == ("retrain", "exact", "retrain")
    [attempt] = outcome.attempts
    assert attempt["method"] == "verifier_guard" and attempt["new_version"] is None and attempt["verdict"] == "FAIL"


def test_the_stop_target_leaves_out_the_forgotten_peoples_held_out_records(texts_dataset, monkeypatch):
    import workers.runners.unlearning as runner

    # A person with records on both sides of the split (here made so: the reference set keeps each
    # person on one side): their held-out record is their data too.
    record = DataRecord.objects.filter(dataset=texts_dataset, split="train").exclude(subject=None).order_by("id").first()
    other = DataRecord.objects.filter(dataset=texts_dataset, split="test").exclude(subject=None).order_by("id").first()
    DataRecord.objects.filter(pk=other.pk).update(subject=record.subject)
    test_keys = set(DataRecord.objects.filter(dataset=texts_dataset, split="test").exclude(subject=None)
                    .values_list("external_key", flat=True))
    theirs = runner._keys_of_the_same_people([record])
    assert {record.external_key, other.external_key} <= theirs
    monkeypatch.setattr(runner, "HELD_OUT_FOR_STOP", 10_000)  # every held-out text that may be used
    used = {key for key, _ in runner._held_out_texts(texts_dataset, exclude=theirs, seed=0)}
    assert used and not used & theirs
    assert test_keys - theirs <= used  # everyone else's held-out records stay in
