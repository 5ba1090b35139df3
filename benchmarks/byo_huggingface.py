"""Bring your own Hugging Face model: time from upload to signed report, per architecture.

For each of a GPT-2-style and a Llama-style causal LM and a BERT-style sequence classifier (built
from configs, larger than the tests' by default; nothing is downloaded), plays the company: trains
the model with plain PyTorch on records of the synthetic personal-text reference set and archives
its ``save_pretrained`` folder. Then, against the real stack (gunicorn and two Celery workers), over
HTTP: registers the model, its training run and membership, uploads the archive, trains shadow
models for the classifier (its audit needs them), and takes one person's erasure request through
verification, approval, unlearning and audit, the DPO's decision (two DPO users accept the residual
risk of a result that did not pass) and the serving side's confirmation to the signed report
(``_byo.py``; ``byo_models.py`` does the same for every family).
Prints per model the upload check, shadow training and request seconds; the last stdout line is one
JSON object.

    python benchmarks/byo_huggingface.py --hidden 128 --layers 4 --lm-records 64 --classifier-records 400
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Collection, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _byo import CompanyModel, byo_stack, company_model_to_signed_report, results_table  # noqa: E402
from _setup import REPO, django_setup  # noqa: E402

MODELS = (
    # name, architecture style, task, recipe, unlearning policy
    ("byo-gpt2", "gpt2", "language_modeling", "lora_causal_lm",
     {"approximate_method": "gradient_ascent", "method_config": {"lr": 2e-2, "epochs": 5, "max_length": 128}}),
    ("byo-llama", "llama", "language_modeling", "lora_causal_lm",
     {"approximate_method": "grad_diff", "method_config": {"lr": 2e-2, "epochs": 10, "max_length": 128}}),
    ("byo-bert", "bert", "classification", "hf_sequence_classifier", {"approximate_method": "finetune"}),
)
STYLES = tuple(style for _, style, *_ in MODELS)


def huggingface_company_models(*, hidden: int, layers: int, lm_records: int, lm_steps: int,
                               classifier_records: int, shadows: int, suffix: str,
                               only: Collection[str] = STYLES) -> Iterator[CompanyModel]:
    """The company's Hugging Face models, each trained when the iteration reaches it: for each
    architecture style in ``only`` (of ``STYLES``), a model of ``hidden`` width and ``layers``
    layers trained from scratch on ``lm_records`` (causal LM, ``lm_steps`` steps) or
    ``classifier_records`` (half of them personal, half background) records, among them those
    of a person of its own whose erasure is requested, archived as a gzipped tar of its ``save_pretrained``
    folder; the classifier gets ``shadows`` shadow models."""
    from tests.workers import hf_company
    from workers.datasets.reference import load_reference_split, reference_records
    from workers.reference_data import reference_dataset_register

    dataset = reference_dataset_register(name="synthetic_pii_text")
    train = load_reference_split(dataset.storage_location, "train")
    rows = {key: (train.texts[i], train.labels[i]) for i, key in enumerate(train.record_keys)}
    email_of = {r["record_key"]: r["subject"]["email"] for r in reference_records(dataset.storage_location)
                if r["subject"]}
    personal = sorted(k for k in rows if k.startswith("pii"))
    background = sorted(k for k in rows if k.startswith("lee"))
    # A person per model whose records (a person has up to three) only that model holds, so that
    # each request touches one model; the other people's records are shared by the models.
    people = list(dict.fromkeys(email_of[k] for k in personal))[:len(MODELS)]
    others = [k for k in personal if email_of[k] not in people]
    for index, (base_name, style, task, recipe, policy) in enumerate(MODELS):
        if style not in only:
            continue
        own = [k for k in personal if email_of[k] == people[index]]
        if task == "classification":
            half = classifier_records // 2
            members = own + others[:half - len(own)] + background[:half]
        else:
            members = own + others[:lm_records - len(own)]
        config, tokenizer = getattr(hf_company, f"{style}_style")(hidden=hidden, layers=layers, positions=256)
        started = time.perf_counter()
        if task == "classification":
            model = hf_company.company_trained_classifier(config, tokenizer, [rows[k][0] for k in members],
                                                          [rows[k][1] for k in members], max_length=128)
        else:
            model = hf_company.company_trained_causal_lm(config, tokenizer, [rows[k][0] for k in members],
                                                         steps=lm_steps, max_length=128)
        archive = hf_company.tar_archive(hf_company.saved_folder(model, tokenizer))
        yield CompanyModel(
            label=base_name, family="huggingface", name=f"{base_name}-{suffix}", task=task, recipe=recipe,
            architecture={"name": "transformers", "config": {}}, policy=policy, run_recipe="company-pipeline",
            run_config={"epochs": 2, "lr": 2e-3, "batch_size": 16, "max_length": 128},
            dataset_id=dataset.id, members=members, body=archive, content_type="application/x-tar",
            identifiers={"email": people[index]}, shadows=shadows if task == "classification" else 0,
            details={"architecture": style, "parameters": sum(p.numel() for p in model.parameters()),
                     "company_training_s": round(time.perf_counter() - started, 1)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--lm-records", type=int, default=64)
    parser.add_argument("--lm-steps", type=int, default=150)
    parser.add_argument("--classifier-records", type=int, default=400)
    parser.add_argument("--shadows", type=int, default=4)
    parser.add_argument("--only", nargs="*", choices=STYLES, help="run only these architectures")
    parser.add_argument("--data-dir", type=Path, default=REPO / ".data" / "bench")
    args = parser.parse_args()
    django_setup(data_dir=args.data_dir, fresh_database="bench_byo_hf")
    results = []
    with byo_stack(name="byo-hf", port=8110) as clients:
        for model in huggingface_company_models(
                hidden=args.hidden, layers=args.layers, lm_records=args.lm_records, lm_steps=args.lm_steps,
                classifier_records=args.classifier_records, shadows=args.shadows, suffix=str(int(time.time())),
                only=args.only or STYLES):
            results.append(company_model_to_signed_report(clients, model))
    print(results_table(results))
    print(json.dumps({"benchmark": "byo_huggingface", "hidden": args.hidden, "layers": args.layers,
                      "models": results}))


if __name__ == "__main__":
    main()
