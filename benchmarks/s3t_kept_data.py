"""S3T deletions in sequence: how much of the kept data the served model still learned from, and
what it costs, with deactivation alone (``s3t``) and with the switched-off adapters retrained on
the kept data (``s3t_retrain``), against a full retrain of the recipe on the kept data.

scikit-learn's digits (1,797 8x8 images, bundled with scikit-learn: no download), 80 % train and
20 % test by a fixed permutation. An S3T model (one shard, four slices, one ordering by default)
is trained once; then ``--deletions`` single-record deletions, each of a record drawn at random
(seeded) from the records still kept, are applied one after another, each method building on its
own previous result as the platform does. After each deletion it prints, per method: the kept
records the served model learned from, test accuracy and wall seconds; the retrain row is the
recipe trained from scratch on the same kept records. The last stdout line is one JSON object.

    python benchmarks/s3t_kept_data.py                 # 5 deletions (a few minutes on a CPU)
    python benchmarks/s3t_kept_data.py --deletions 2   # quicker
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workers.datasets.memory import TensorRecordDataset  # noqa: E402
from workers.training import RECIPES  # noqa: E402
from workers.training.evaluate import accuracy  # noqa: E402
from workers.unlearning.base import METHODS  # noqa: E402
from workers.unlearning.methods import load_all_methods  # noqa: E402


def digits() -> tuple[TensorRecordDataset, TensorRecordDataset]:
    from sklearn.datasets import load_digits

    data = load_digits()
    inputs = torch.tensor(data.data, dtype=torch.float32) / 16.0
    targets = torch.tensor(data.target, dtype=torch.int64)
    order = torch.randperm(len(targets), generator=torch.Generator().manual_seed(0)).tolist()
    cut = int(0.8 * len(order))
    keys = [f"digit-{i:04d}" for i in range(len(targets))]

    def part(indices: list[int]) -> TensorRecordDataset:
        return TensorRecordDataset([keys[i] for i in indices], inputs[indices], targets[indices])

    return part(order[:cut]), part(order[cut:])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deletions", type=int, default=5)
    parser.add_argument("--shards", type=int, default=1)
    parser.add_argument("--slices", type=int, default=4)
    parser.add_argument("--orderings", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0, help="draws the deleted records")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    load_all_methods()
    train, test = digits()
    config = {"architecture": {"name": "mlp", "config": {"in_features": 64, "num_classes": 10, "hidden": [64],
                                                         "input_norm": "none"}},
              "epochs": args.epochs, "batch_size": 32, "lr": 0.01, "shards": args.shards, "slices": args.slices,
              "orderings": args.orderings, "lora_rank": 8, "seed": 0}
    recipe = RECIPES.get("s3t")(config)
    started = time.perf_counter()
    trained = recipe.train(train)
    print(f"trained S3T on {len(train)} records in {time.perf_counter() - started:.1f} s; "
          f"test accuracy {accuracy(trained.model, test):.3f}")
    runs = {"s3t": trained, "s3t_retrain": trained}
    registry = list(trained.membership)  # the registry's membership: the run's rows less every deletion
    draw = random.Random(args.seed)
    forgotten: list[str] = []
    rows = []
    print("| deletions | method | kept records learned from | test accuracy | seconds |")
    print("|---|---|---|---|---|")
    for k in range(1, args.deletions + 1):
        key = draw.choice(sorted(row.record_key for row in registry))
        forgotten.append(key)
        kept = train.without(forgotten)
        for method, run in runs.items():
            started = time.perf_counter()
            new, result = METHODS.get(method)().unlearn(run, [key], kept, membership=registry)
            seconds = time.perf_counter() - started
            runs[method] = new
            served, total = result.details["kept_records_served"], result.details["kept_records"]
            rows.append({"deletions": k, "method": method, "kept_records_served": served, "kept_records": total,
                         "test_accuracy": round(accuracy(new.model, test), 4), "seconds": round(seconds, 2)})
            print(f"| {k} | {method} | {served} of {total} | {rows[-1]['test_accuracy']:.3f} | {seconds:.1f} |")
        registry = [row for row in registry if row.record_key != key]
        started = time.perf_counter()
        scratch = recipe.train(kept)
        seconds = time.perf_counter() - started
        rows.append({"deletions": k, "method": "retrain", "kept_records_served": len(kept), "kept_records": len(kept),
                     "test_accuracy": round(accuracy(scratch.model, test), 4), "seconds": round(seconds, 2)})
        print(f"| {k} | retrain | {len(kept)} of {len(kept)} | {rows[-1]['test_accuracy']:.3f} | {seconds:.1f} |")
    summary = {"config": config, "rows": rows}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
