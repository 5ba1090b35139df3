"""Bring your own model, every family: time from upload to signed report, per family.

Plays the company for each family the platform takes from outside and trains the model on its own
machines: on 200 records of the breast-cancer reference set, the platform's own MLP (family
``builtin``, a safetensors file), a tabular classifier with batch-norm built by the company's
installed package (family ``entry_point``: ``company-tabular`` of ``tests/fixtures/company_models``,
which ``make venv`` installs; a safetensors file that a worker's upload check builds and registers),
and a StandardScaler + LogisticRegression pipeline (family ``sklearn``, a skops file) alone and as
a SISA ensemble of three (recipe ``sklearn_sisa``); on the personal-text set, the GPT-2-style,
Llama-style and BERT-style models of ``byo_huggingface.py`` (smaller by default than that
script's, so that a run takes minutes on two CPU cores). The PyTorch tabular models are trained by
the plain procedure that the company's training run records, so shadow models and a retrain repeat
it. Then, against the real stack (gunicorn and two Celery workers), over HTTP, one model after the
other (``_byo.py``): registers the model, its training run and membership, uploads it, trains the
shadow models its audit needs, and takes one person's erasure request (a person whose record only
that model holds) through verification, approval, unlearning and audit, the DPO's decision (two DPO
users accept the residual risk of a result that did not pass) and the serving side's confirmation
to the signed report.

Prints per model the upload check, shadow training and request seconds (receipt to signed report)
and the verdict, then a markdown table; the last stdout line is one JSON object, with the jobs that
failed on the way (shadow models a purge replenishes included).

    python benchmarks/byo_models.py --data-dir /tmp/byo-bench-data
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Collection, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _byo import CompanyModel, byo_stack, company_model_to_signed_report, failed_jobs, results_table  # noqa: E402
from _setup import REPO, django_setup  # noqa: E402
from byo_huggingface import STYLES, huggingface_company_models  # noqa: E402

TABULAR = ("builtin", "entry_point", "sklearn", "sklearn_sisa")
BC_MLP = {"name": "mlp", "config": {"in_features": 30, "num_classes": 2, "hidden": [32, 16]}}
COMPANY_TABULAR = {"name": "entry_point", "config": {"entry_point": "company-tabular",
                                                     "config": {"in_features": 30, "num_classes": 2, "hidden": 16}}}
TORCH_RUN = {"epochs": 30, "lr": 3e-3, "batch_size": 32, "seed": 7}
SKLEARN = {"name": "sklearn", "config": {"in_features": 30, "num_classes": 2}}
SISA_SHARDS = 3
SHARD_KEY = "company-shard-key-7"


def _plain_trained(train, architecture: dict) -> tuple[bytes, int]:
    """The company's PyTorch model trained by the plain procedure its run records: its whole
    ``state_dict`` as safetensors, and its parameter count."""
    from safetensors.torch import save

    from workers.training import RECIPES

    model = RECIPES.get("plain")({"architecture": architecture, **TORCH_RUN}).train(train).model
    weights = save({k: v.contiguous() for k, v in model.state_dict().items()})
    return weights, sum(p.numel() for p in model.parameters())


def _fitted_pipeline(train):
    """A StandardScaler + LogisticRegression pipeline fitted on the company's machines."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    inputs = np.stack([train[i][1].double().numpy() for i in range(len(train))])
    targets = np.array([int(train[i][2]) for i in range(len(train))])
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(inputs, targets)


def _fitted_numbers(pipeline) -> int:
    """How many numbers a pipeline fitted (scaler means and scales, coefficients, intercepts)."""
    return sum(getattr(step, attribute).size for step in pipeline.named_steps.values()
               for attribute in ("mean_", "scale_", "coef_", "intercept_") if hasattr(step, attribute))


def tabular_company_models(*, records: int, shadows: int, suffix: str,
                           only: Collection[str] = TABULAR) -> Iterator[CompanyModel]:
    """The company's breast-cancer models of the families in ``only`` (of ``TABULAR``), each
    trained when the iteration reaches it on ``records`` shared training records and one record of
    a person of its own (so each request touches one model), with ``shadows`` shadow models."""
    import skops.io

    from models_registry.models import DataRecord
    from workers.datasets.reference import load_reference_split, reference_records
    from workers.reference_data import reference_dataset_register
    from workers.training.sisa import keyed_assignment

    dataset = reference_dataset_register(name="breast_cancer")
    keys = sorted(DataRecord.objects.filter(dataset=dataset, split="train").values_list("external_key", flat=True))
    email_of = {r["record_key"]: r["subject"]["email"] for r in reference_records(dataset.storage_location)
                if r["subject"]}
    train = load_reference_split(dataset.storage_location, "train")
    shared = keys[len(TABULAR): len(TABULAR) + records]
    for index, family in enumerate(TABULAR):
        if family not in only:
            continue
        person = keys[index]
        members = sorted([person, *shared])
        started = time.perf_counter()
        shard_of = None
        if family in ("builtin", "entry_point"):
            architecture = BC_MLP if family == "builtin" else COMPANY_TABULAR
            recipe, run_config, policy = "plain", TORCH_RUN, {"approximate_method": "finetune"}
            body, parameters = _plain_trained(train.subset(members), architecture)
        elif family == "sklearn":
            architecture, recipe, run_config, policy = SKLEARN, "sklearn", {"seed": 7}, {"replay_retrain": True}
            pipeline = _fitted_pipeline(train.subset(members))
            body, parameters = skops.io.dumps(pipeline), _fitted_numbers(pipeline)
        else:
            architecture, recipe, policy = SKLEARN, "sklearn_sisa", {}
            run_config = {"seed": 7, "shards": SISA_SHARDS, "shard_key": SHARD_KEY}
            shard_of = {k: keyed_assignment(k, key=SHARD_KEY, shards=SISA_SHARDS, slices=1)[0] for k in members}
            ensemble = [_fitted_pipeline(train.subset([k for k in members if shard_of[k] == shard]))
                        for shard in range(SISA_SHARDS)]
            body, parameters = skops.io.dumps(ensemble), sum(_fitted_numbers(p) for p in ensemble)
        label = f"bc-{family.replace('_', '-')}"
        yield CompanyModel(
            label=label, family=family if family != "sklearn_sisa" else "sklearn", name=f"{label}-{suffix}",
            task="classification", recipe=recipe, architecture=architecture, policy=policy, run_recipe=recipe,
            run_config=run_config, seed=7, dataset_id=dataset.id, members=members, body=body,
            content_type="application/octet-stream", identifiers={"email": email_of[person]}, shadows=shadows,
            shard_of=shard_of, details={"architecture": architecture["name"], "parameters": parameters,
                                        "company_training_s": round(time.perf_counter() - started, 1)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="*", choices=TABULAR + STYLES, default=TABULAR + STYLES,
                        help="run only these (tabular families, Hugging Face architecture styles)")
    parser.add_argument("--records", type=int, default=200, help="breast-cancer records per tabular model")
    parser.add_argument("--shadows", type=int, default=16, help="shadow models per tabular model")
    parser.add_argument("--hf-hidden", type=int, default=64)
    parser.add_argument("--hf-layers", type=int, default=2)
    parser.add_argument("--hf-lm-records", type=int, default=64)
    parser.add_argument("--hf-lm-steps", type=int, default=100)
    parser.add_argument("--hf-classifier-records", type=int, default=200)
    parser.add_argument("--hf-shadows", type=int, default=4, help="shadow models of the BERT-style classifier")
    parser.add_argument("--request-timeout", type=float, default=1200, help="seconds a request may take")
    parser.add_argument("--data-dir", type=Path, default=REPO / ".data" / "bench")
    args = parser.parse_args()
    started = time.perf_counter()
    django_setup(data_dir=args.data_dir, fresh_database="bench_byo_models")
    suffix = str(int(time.time()))
    results = []
    with byo_stack(name="byo-models", port=8120) as clients:
        models = [tabular_company_models(records=args.records, shadows=args.shadows, suffix=suffix,
                                         only=args.families),
                  huggingface_company_models(hidden=args.hf_hidden, layers=args.hf_layers,
                                             lm_records=args.hf_lm_records, lm_steps=args.hf_lm_steps,
                                             classifier_records=args.hf_classifier_records,
                                             shadows=args.hf_shadows, suffix=suffix, only=args.families)]
        for model in (model for family in models for model in family):
            results.append(company_model_to_signed_report(clients, model, request_timeout_s=args.request_timeout))
        failed = failed_jobs()
    for job in failed:
        print(f"job {job['job']} ({job['kind']} of {job['model']}) failed: {job['error']}", file=sys.stderr)
    print(results_table(results))
    print(json.dumps({"benchmark": "byo_models", "records": args.records, "shadows": args.shadows,
                      "hf_hidden": args.hf_hidden, "hf_layers": args.hf_layers,
                      "wall_s": round(time.perf_counter() - started, 1), "models": results, "failed_jobs": failed}))


if __name__ == "__main__":
    main()
