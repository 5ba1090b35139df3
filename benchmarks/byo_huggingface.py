"""Bring your own Hugging Face model: time from upload to signed report, per architecture.

For each of a GPT-2-style and a Llama-style causal LM and a BERT-style sequence classifier (built
from configs, larger than the tests' by default; nothing is downloaded), plays the company: trains
the model with plain PyTorch on records of the synthetic personal-text reference set and archives
its ``save_pretrained`` folder. Then, against the real stack (gunicorn and two Celery workers), over
HTTP: registers the model, its training run and membership, uploads the archive, trains shadow
models for the classifier (its audit needs them), and takes one person's erasure request through
verification, approval, unlearning and audit, the DPO's decision (two DPO users accept the residual
risk of a result that did not pass) and the serving side's confirmation to the signed report.
Prints per model the upload check, shadow training and request seconds; the last stdout line is one
JSON object.

    python benchmarks/byo_huggingface.py --hidden 128 --layers 4 --lm-records 64 --classifier-records 400
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _setup import REPO, django_setup  # noqa: E402

EVIDENCE = {"method": "benchmark", "verified_at": "2026-11-25T00:00:00Z", "verifier": "benchmark"}
MODELS = (
    # name, architecture style, task, recipe, unlearning policy
    ("byo-gpt2", "gpt2", "language_modeling", "lora_causal_lm",
     {"approximate_method": "gradient_ascent", "method_config": {"lr": 2e-2, "epochs": 5, "max_length": 128}}),
    ("byo-llama", "llama", "language_modeling", "lora_causal_lm",
     {"approximate_method": "grad_diff", "method_config": {"lr": 2e-2, "epochs": 10, "max_length": 128}}),
    ("byo-bert", "bert", "classification", "hf_sequence_classifier", {"approximate_method": "finetune"}),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--lm-records", type=int, default=64)
    parser.add_argument("--lm-steps", type=int, default=150)
    parser.add_argument("--classifier-records", type=int, default=400)
    parser.add_argument("--shadows", type=int, default=4)
    parser.add_argument("--data-dir", type=Path, default=REPO / ".data" / "bench")
    parser.add_argument("--only", nargs="*", choices=[style for _, style, *_ in MODELS],
                        help="run only these architectures")
    args = parser.parse_args()
    # A timeout's SIGTERM still stops the web server and the workers (the finally below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    django_setup(data_dir=args.data_dir, fresh_database="bench_byo_hf")
    import requests

    from audits.signing import ensure_dev_signing_identity
    from deletion.models import DeletionRequest
    from deletion_platform.demo import _free_port, _wait_http, start_stack, stop_stack, wait_jobs
    from foundation.access.authentication import api_token_create
    from models_registry.models import ModelVersion
    from tests.workers import hf_company
    from workers.datasets.reference import load_reference_split, reference_records
    from workers.reference_data import reference_dataset_register
    from workers.services import shadow_models_train

    ensure_dev_signing_identity()
    port = _free_port(8110)
    stack = start_stack(port, name="byo-hf")
    results = []
    try:
        _wait_http(f"http://127.0.0.1:{port}")
        api = f"http://127.0.0.1:{port}/api/v1"
        sessions = {}
        for role, name in (("ml_engineer", "byo-engineer"), ("dpo", "byo-alice"), ("dpo", "byo-bob")):
            _, token = api_token_create(name=name, role=role)
            sessions[name] = requests.Session()
            sessions[name].headers["Authorization"] = f"Bearer {token}"
        engineer, alice, bob = sessions["byo-engineer"], sessions["byo-alice"], sessions["byo-bob"]
        dataset = reference_dataset_register(name="synthetic_pii_text")
        train = load_reference_split(dataset.storage_location, "train")
        rows = {key: (train.texts[i], train.labels[i]) for i, key in enumerate(train.record_keys)}
        email_of = {r["record_key"]: r["subject"]["email"] for r in reference_records(dataset.storage_location)
                    if r["subject"]}
        personal = sorted(k for k in rows if k.startswith("pii"))
        background = sorted(k for k in rows if k.startswith("lee"))
        suffix = int(time.time())
        for index, (base_name, style, task, recipe, policy) in enumerate(MODELS):
            if args.only and style not in args.only:
                continue
            name = f"{base_name}-{suffix}"
            # A different person per model: each request touches one model.
            if task == "classification":
                half = args.classifier_records // 2
                members = personal[index * 40: index * 40 + half] + background[:half]
            else:
                members = personal[index * 40: index * 40 + args.lm_records]
            config, tokenizer = getattr(hf_company, f"{style}_style")(hidden=args.hidden, layers=args.layers,
                                                                     positions=256)
            started = time.perf_counter()
            if task == "classification":
                model = hf_company.company_trained_classifier(config, tokenizer, [rows[k][0] for k in members],
                                                              [rows[k][1] for k in members], max_length=128)
            else:
                model = hf_company.company_trained_causal_lm(config, tokenizer, [rows[k][0] for k in members],
                                                             steps=args.lm_steps, max_length=128)
            archive = hf_company.tar_archive(hf_company.saved_folder(model, tokenizer))
            company_seconds = time.perf_counter() - started
            parameters = sum(p.numel() for p in model.parameters())

            started = time.perf_counter()
            engineer.post(f"{api}/models/", json={"name": name, "task": task, "training_recipe": recipe,
                                                  "architecture": {"name": "transformers", "config": {}},
                                                  "unlearning_policy": policy}, timeout=60).raise_for_status()
            run = engineer.post(f"{api}/training-runs/", json={
                "model": name, "recipe": "company-pipeline", "seed": 1, "code_version": "benchmark",
                "config": {"epochs": 2, "lr": 2e-3, "batch_size": 16, "max_length": 128},
                "datasets": [dataset.id]}, timeout=60).json()
            body = "".join(json.dumps({"record_key": k}) + "\n" for k in members).encode()
            engineer.post(f"{api}/training-runs/{run['id']}/membership/?dataset={dataset.id}", data=body,
                          headers={"Content-Type": "application/x-ndjson"}, timeout=120).raise_for_status()
            upload_started = time.perf_counter()
            uploaded = engineer.post(f"{api}/models/{name}/versions/?training_run={run['id']}", data=archive,
                                     headers={"Content-Type": "application/x-tar"}, timeout=600)
            if uploaded.status_code != 201:
                raise SystemExit(f"{name}: upload refused: {uploaded.text}")
            upload_seconds = time.perf_counter() - upload_started
            shadow_seconds = 0.0
            if task == "classification":
                shadow_started = time.perf_counter()
                job = shadow_models_train(version=ModelVersion.objects.get(pk=uploaded.json()["id"]),
                                          count=args.shadows)
                wait_jobs([job], lambda job, name=name: f"{args.shadows} shadow models of {name}")
                shadow_seconds = time.perf_counter() - shadow_started

            request_started = time.perf_counter()
            base = f"{api}/deletion-requests/"
            created = alice.post(base, json={"identifiers": {"email": email_of[members[0]]}, "jurisdiction": "GDPR",
                                             "legal_ground": "art17_1_b", "channel": "benchmark"},
                                 headers={"Idempotency-Key": f"byo-{name}"}, timeout=60).json()
            request_id = created["id"]
            alice.post(f"{base}{request_id}/verify/", json=EVIDENCE, timeout=120).raise_for_status()
            alice.post(f"{base}{request_id}/approve/", json={}, timeout=120).raise_for_status()
            verdicts = {}
            while True:
                state = alice.get(f"{base}{request_id}/", timeout=60).json()
                for outcome in state["outcomes"]:
                    verdicts[outcome["model"]] = outcome["verdict"]
                    if outcome["status"] in ("awaiting_decision", "audit_failed") and not outcome["risk_acceptance"]:
                        for dpo in (alice, bob):
                            dpo.post(f"{base}{request_id}/accept-risk/", json={
                                "model_version_id": outcome["model_version_id"],
                                "reason": f"{outcome['verdict']} approximate result; benchmark"}, timeout=60)
                    if outcome["status"] == "awaiting_deployment":
                        engineer.post(f"{base}{request_id}/confirm-deployment/",
                                      json={"new_version_id": outcome["new_version_id"]}, timeout=60)
                if state["status"] in ("COMPLETED", "CLOSED_RISK_ACCEPTED", "FAILED"):
                    break
                time.sleep(0.5)
            request = DeletionRequest.objects.get(public_id=request_id)
            if request.status == "FAILED":
                raise SystemExit(f"{name}: request {request_id} failed: {request.failure}")
            request_seconds = (request.completed_at - request.received_at).total_seconds()
            wall = time.perf_counter() - request_started
            result = {"model": base_name, "architecture": style, "parameters": parameters, "records": len(members),
                      "company_training_s": round(company_seconds, 1), "archive_bytes": len(archive),
                      "upload_check_s": round(upload_seconds, 2), "shadow_models": args.shadows if shadow_seconds else 0,
                      "shadow_training_s": round(shadow_seconds, 1), "request_to_signed_report_s": round(request_seconds, 1),
                      "upload_to_signed_report_s": round(time.perf_counter() - upload_started, 1),
                      "end_state": request.status, "verdict": verdicts.get(name), "poll_wall_s": round(wall, 1)}
            results.append(result)
            print(f"{base_name}: {parameters:,} parameters, upload {upload_seconds:.2f} s, shadows "
                  f"{shadow_seconds:.1f} s, request to signed report {request_seconds:.1f} s "
                  f"({request.status}, verdict {result['verdict']})", file=sys.stderr)
    finally:
        stop_stack(*stack)
    print("| model | parameters | upload check s | shadow models s | request to signed report s | "
          "upload to signed report s | verdict |\n|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['model']} | {r['parameters']:,} | {r['upload_check_s']} | {r['shadow_training_s']} | "
              f"{r['request_to_signed_report_s']} | {r['upload_to_signed_report_s']} | {r['verdict']} |")
    print(json.dumps({"benchmark": "byo_huggingface", "hidden": args.hidden, "layers": args.layers,
                      "models": results}))


if __name__ == "__main__":
    main()
