"""A PyTorch model from the company's own package, trained in its own loop on a Parquet file, with the
lineage client recording which exams the loop used; then one patient asks to be erased.

    pip install ./client ./examples/acme_models          # the client, and Acme's package (the platform's
                                                         # workers need it too: `make venv` installs it)
    python examples/pytorch_parquet.py --url http://127.0.0.1:8000 --parquet exams.parquet \\
        --engineer-token "$ENGINEER" --dpo-token "$DPO"

The data: scikit-learn's breast-cancer table as a clinic would export it, three examinations per
patient (one person over several rows), written to ``--parquet`` and registered with the platform.
The model: ``acme_models.exams`` (the package's entry point ``acme-exam-net``), trained with Adam in
the script's own loop over a DataLoader wrapped by ``RecordingLoader``.

Policy: exact. The platform retrains the module from Acme's factory on the kept exams with the
configuration the run recorded (``retrain``: its plain recipe, Adam as here, its own seeded order; not
this loop, so the new weights are not what this loop would give, but no kept exam's data is missing
and no erased one is in them), and the audit rebuilds it once more from the registry's records and
compares every tensor bit for bit (``replay_retrain``). Verdict PASS, request COMPLETED.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import erasure
from erasure import say

ENTRY_POINT = "acme-exam-net"
NET = {"in_features": 30, "num_classes": 2, "hidden": 32}
EXAMS_PER_PATIENT = 3


def exams_table(*, limit: int | None, tag: str) -> list[dict]:
    """The clinic's export: one row per examination, the patient's e-mail, 30 measurements, the
    diagnosis and the split (by patient, so that no patient is in both)."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    names = [name.replace(" ", "_") for name in data.feature_names]
    rows = []
    for i, (measurements, diagnosis) in enumerate(zip(data.data[:limit], data.target[:limit], strict=True)):
        patient = i // EXAMS_PER_PATIENT
        rows.append({"exam_id": f"exam-{i:04d}", "patient_email": f"patient.{patient:04d}@clinic-{tag}.example.org",
                     **{name: float(value) for name, value in zip(names, measurements, strict=True)},
                     "diagnosis": int(diagnosis), "split": "test" if patient % 5 == 4 else "train"})
    return rows


class Exams:
    """The company's torch dataset over the Parquet file's training rows: one dict per exam, its key
    among the columns (what RecordingLoader reads)."""

    def __init__(self, table, features: list[str]) -> None:
        import pyarrow.compute as pc
        import torch

        train = table.filter(pc.equal(table["split"], "train")).to_pydict()
        self.keys = train["exam_id"]
        self.features = torch.tensor(list(zip(*(train[name] for name in features), strict=True)), dtype=torch.float32)
        self.targets = torch.tensor(train["diagnosis"])

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> dict:
        return {"record_key": self.keys[index], "features": self.features[index], "target": self.targets[index]}


def main(argv: list[str] | None = None) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch
    from acme_models.exams import build_exam_net  # the company's own package
    from lineage_client import MembershipRecorder, PlatformClient, RecordingLoader
    from safetensors.torch import save

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    erasure.platform_arguments(parser)
    parser.add_argument("--parquet", type=Path, default=Path("exams.parquet"), help="where the exams file is written")
    args = parser.parse_args(argv)
    erasure.required_tokens(parser, args)
    # What the loop below does, recorded with the run: the platform's retrain trains the same way.
    config = {"epochs": 8 if args.small else 30, "lr": 1e-2 if args.small else 3e-3, "batch_size": 32,
              "optimizer": "adam", "seed": 5}

    say("== The clinic's exams, exported to Parquet")
    rows = exams_table(limit=150 if args.small else None, tag=args.tag)
    pq.write_table(pa.Table.from_pylist(rows), args.parquet)
    features = [name for name in rows[0] if name not in ("exam_id", "patient_email", "diagnosis", "split")]
    say(f"  {args.parquet}: {len(rows)} exams of {len({r['patient_email'] for r in rows})} patients")

    say("== On the platform (ml_engineer): the dataset, imported from the file")
    engineer = PlatformClient(args.url, args.engineer_token)
    dataset = engineer.register_dataset(
        name=f"exams-{args.tag}", version="1", modality="tabular", purpose="Diagnosis support", legal_basis="consent",
        source={"kind": "parquet"}, record_schema={"record_key": "exam_id", "subjects": {"patient_email": "email"},
                                                   "features": features, "label": "diagnosis", "split": "split"})
    imported = engineer.import_dataset_file(dataset["id"], args.parquet)
    say(f"  dataset {dataset['id']}: {imported.get('rows')} records")
    model = f"exam-net-{args.tag}"
    engineer.register_model(name=model, task="classification", training_recipe="plain",
                            architecture={"name": "entry_point", "config": {"entry_point": ENTRY_POINT, "config": NET}},
                            unlearning_policy={"replay_retrain": True})
    run = engineer.register_training_run(model=model, recipe="plain", seed=config["seed"],
                                         code_version="acme-models 1.0.0 / exam-trainer 2.3", config=config,
                                         datasets=[dataset["id"]])

    say("== The company's own training loop; the loader is wrapped to record which exams it yielded")
    torch.manual_seed(config["seed"])
    exams = Exams(pq.read_table(args.parquet), features)
    loader = torch.utils.data.DataLoader(exams, batch_size=config["batch_size"], shuffle=True,
                                         generator=torch.Generator().manual_seed(config["seed"]))
    recorder = MembershipRecorder()
    recording = RecordingLoader(loader, recorder)
    net = build_exam_net(**NET)
    optimizer = torch.optim.Adam(net.parameters(), lr=config["lr"])
    for epoch in range(config["epochs"]):
        total = 0.0
        for batch in recording:
            loss = torch.nn.functional.cross_entropy(net(batch["features"]), batch["target"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch["target"])
        say(f"  epoch {epoch + 1}: loss {total / len(exams):.3f}")
    net.eval()

    say("== Lineage and weights to the platform (a worker builds acme-exam-net and checks the fit)")
    upload = engineer.upload_membership(run["id"], dataset["id"], recorder.rows())
    say(f"  membership of run {run['id']}: {upload['rows']} exams in {len(upload['chunks'])} chunk(s)")
    weights = save({name: tensor.contiguous() for name, tensor in net.state_dict().items()})
    version = engineer.upload_weights(model, run["id"], weights, poll=0.5)
    say(f"  {model} v{version['version']} registered")
    shadows = engineer.request("POST", "/api/v1/shadow-jobs/", json_body={
        "model": model, "version": version["version"], "count": 2 if args.small else 16})
    erasure.job_done(engineer, shadows)
    say(f"  {shadows['count']} shadow models trained for the audits")

    say("== A patient asks to be erased")
    patient = next(r["patient_email"] for r in rows if r["split"] == "train" and r["exam_id"] in recorder)
    desk = erasure.ErasureDesk(args.url, dpo_token=args.dpo_token, serving_token=args.engineer_token)
    return erasure.conclude(erasure.take_to_the_end(desk, {"email": patient}, out=args.out))


if __name__ == "__main__":
    sys.exit(main())
