"""A model the company keeps in its MLflow registry: a scikit-learn pipeline logged with MLflow's sklearn
flavor (saved with skops), registered and served from the alias ``production``; the platform imports
it from the tracking server, and when a person's data is erased it registers the unlearned version
back and moves the alias.

    pip install ./client
    python examples/mlflow_registry.py --url http://127.0.0.1:8000 --tracking-uri http://127.0.0.1:5000 \\
        --jsonl digits.jsonl --engineer-token "$ENGINEER" --dpo-token "$DPO"

The platform must reach the same tracking server (``MLFLOW_TRACKING_URI`` in the environment of its web
process and workers). The data: scikit-learn's handwritten digits, each image written by a synthetic
writer, as a JSON Lines file (``--jsonl``). The pipeline's MLflow run is tagged with the platform's
training run (``deletion_platform.training_run``), which is how the import finds its lineage.

Policy: exact. The platform refits the pipeline on the kept images (``retrain``) and the audit refits it
once more from the registry's records, comparing every fitted number bit for bit (``replay_retrain``).
Verdict PASS, request COMPLETED; the serving side's confirmation registers the refit pipeline in MLflow
as a new version (tagged with the request and the guarantee class) and moves ``production`` to it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import erasure
from erasure import say

TRAINING_RUN_TAG = "deletion_platform.training_run"  # the MLflow run tag the platform's import reads
ALIAS = "production"


def digit_images(*, limit: int | None, tag: str) -> list[dict]:
    """One row per scanned digit: its 8x8 pixels, the digit, its writer's e-mail (each writer gave
    several), and the split (by writer)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    rows = []
    for i, (pixels, digit) in enumerate(zip(data.data[:limit], data.target[:limit], strict=True)):
        writer = i // 4
        rows.append({"image_id": f"img-{i:05d}", "writer_email": f"writer.{writer:04d}@forms-{tag}.example.org",
                     **{f"px{j:02d}": float(v) for j, v in enumerate(pixels)}, "digit": int(digit),
                     "split": "test" if writer % 5 == 4 else "train"})
    return rows


def main(argv: list[str] | None = None) -> int:
    import mlflow
    import sklearn
    import skops
    from lineage_client import MembershipRecorder, PlatformClient
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    erasure.platform_arguments(parser)
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"),
                        help="the company's MLflow tracking server (MLFLOW_TRACKING_URI)")
    parser.add_argument("--jsonl", type=Path, default=Path("digits.jsonl"), help="where the images file is written")
    args = parser.parse_args(argv)
    erasure.required_tokens(parser, args)
    if not args.tracking_uri:
        parser.error("--tracking-uri (or MLFLOW_TRACKING_URI) is needed: the company's MLflow tracking server")

    say("== The scanned forms' digits, exported as JSON Lines")
    rows = digit_images(limit=300 if args.small else None, tag=args.tag)
    args.jsonl.write_text("".join(json.dumps(row) + "\n" for row in rows))
    pixels = [name for name in rows[0] if name.startswith("px")]
    say(f"  {args.jsonl}: {len(rows)} images of {len({r['writer_email'] for r in rows})} writers")

    say("== On the platform (ml_engineer): the dataset, the model, its training run")
    engineer = PlatformClient(args.url, args.engineer_token)
    dataset = engineer.register_dataset(
        name=f"digits-{args.tag}", version="1", modality="tabular", purpose="Reading handwritten amounts on forms",
        legal_basis="contract", source={"kind": "jsonl"},
        record_schema={"record_key": "image_id", "subjects": {"writer_email": "email"}, "features": pixels,
                       "label": "digit", "split": "split"})
    imported = engineer.import_dataset_file(dataset["id"], args.jsonl)
    say(f"  dataset {dataset['id']}: {imported.get('rows')} records")
    model = f"digits-{args.tag}"
    engineer.register_model(name=model, task="classification", training_recipe="sklearn",
                            architecture={"name": "sklearn", "config": {"in_features": len(pixels), "num_classes": 10}},
                            unlearning_policy={"replay_retrain": True})
    run = engineer.register_training_run(model=model, recipe="sklearn", seed=5, code_version="forms-ml 1.4",
                                         config={"seed": 5}, datasets=[dataset["id"]])

    say("== The company's pipeline, logged and registered in MLflow")
    train = [row for row in rows if row["split"] == "train"]
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300))
    pipeline.fit([[row[p] for p in pixels] for row in train], [row["digit"] for row in train])
    recorder = MembershipRecorder()
    recorder.record(row["image_id"] for row in train)
    engineer.upload_membership(run["id"], dataset["id"], recorder.rows())
    mlflow.set_tracking_uri(args.tracking_uri)
    mlflow.set_experiment("forms-digits")
    registry = mlflow.MlflowClient(args.tracking_uri)
    with mlflow.start_run(tags={TRAINING_RUN_TAG: str(run["id"])}) as mlflow_run:
        logged = mlflow.sklearn.log_model(pipeline, name="model", registered_model_name=model,
                                          pip_requirements=[f"scikit-learn=={sklearn.__version__}",
                                                            f"skops=={skops.__version__}"])
    registry.set_registered_model_alias(model, ALIAS, logged.registered_model_version)
    say(f"  MLflow run {mlflow_run.info.run_id}: {model} version {logged.registered_model_version} "
        f"@{ALIAS} (fitted on {len(recorder)} images)")

    say("== The platform imports the registered model from MLflow")
    answer = engineer.request("POST", "/api/v1/mlflow/imports/",
                              json_body={"registered_model": model, "model": model, "alias": ALIAS})
    for version in answer["versions"]:
        say(f"  MLflow version {version['mlflow_version']}: {version['status']}"
            + (f" as v{version['platform_version']['version']} ({version['form']}, lineage from the "
               f"{version['membership_from'].replace('_', ' ')})" if version["platform_version"] else
               f" ({version['code']}: {version['reason']})"))
    [served] = [v["platform_version"] for v in answer["versions"] if v["mlflow_version"] == answer["alias_version"]]
    shadows = engineer.request("POST", "/api/v1/shadow-jobs/", json_body={
        "model": model, "version": served["version"], "count": 2 if args.small else 16})
    erasure.job_done(engineer, shadows)
    say(f"  {shadows['count']} shadow models trained for the audits")

    say("== A writer asks to be erased")
    writer = train[0]["writer_email"]
    desk = erasure.ErasureDesk(args.url, dpo_token=args.dpo_token, serving_token=args.engineer_token)
    ending = erasure.take_to_the_end(desk, {"email": writer}, out=args.out)

    say("== MLflow after the serving side's confirmation")
    deadline = time.monotonic() + 120
    while not [s for s in engineer.request("GET", "/api/v1/mlflow/syncs/", retry=True)
               if s["registered_model"] == model and s["status"] in ("done", "failed")]:
        if time.monotonic() > deadline:
            raise SystemExit("the platform has not written the new version to MLflow after 120 s")
        time.sleep(0.5)
    now_serving = registry.get_model_version_by_alias(model, ALIAS)
    tags = {k: v for k, v in now_serving.tags.items() if k.startswith("deletion_platform.")}
    say(f"  {model}@{ALIAS} is version {now_serving.version}: "
        f"request {tags.get('deletion_platform.deletion_request')}, "
        f"guarantee class {tags.get('deletion_platform.guarantee_class')}, replaces version "
        f"{tags.get('deletion_platform.replaces')}")
    return erasure.conclude(ending)


if __name__ == "__main__":
    sys.exit(main())
