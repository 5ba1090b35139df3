"""Transfer training that keeps deletable data out of the weights (arXiv 2405.10425), on digits.

Per seed: the 1,797 digits are split into the company's training split (800), a public auxiliary pool
(600, with its own labels) and a test split (397). ``--static`` of the company's split is static, the
rest non-static. Rows: the recipe (static + the ``k`` nearest auxiliary examples of each non-static
record) against static data alone and against training on the whole company split (what the recipe
avoids: every non-static record in the weights); and, over every non-static record, the share whose
deletion changes the selection (a retrain) rather than leaving the model's hash as it was.
The last stdout line is one JSON object.

    python benchmarks/keep_out_transfer.py --seeds 5 --static 0.05 --neighbours 1 3
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from statistics import mean

import numpy as np
import torch
from sklearn.datasets import load_digits

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workers.training.keep_out_transfer import (  # noqa: E402
    FeatureScaling,
    KeepOutTransferConfig,
    keep_out_deletion,
    select_auxiliary,
    train_keep_out,
    training_keys,
)


def accuracy(model: torch.nn.Module, features: dict, labels: dict, keys: list[str]) -> float:
    x = torch.tensor(np.stack([features[k] for k in keys]), dtype=torch.float32)
    y = torch.tensor([labels[k] for k in keys])
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def one_seed(seed: int, static_fraction: float, neighbours: int) -> dict:
    images, digits = load_digits(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(digits))
    company, pool, test = order[:800], order[800:1400], order[1400:]
    features = {f"r{i}": images[i] / 16.0 for i in range(len(digits))}
    labels = {f"r{i}": int(digits[i]) for i in range(len(digits))}
    cut = max(1, round(len(company) * static_fraction))
    static = [f"r{i}" for i in company[:cut]]
    non_static = [f"r{i}" for i in company[cut:]]
    pool_keys = [f"r{i}" for i in pool]
    test_keys = [f"r{i}" for i in test]
    scaling = FeatureScaling.fit(np.stack([features[k] for k in pool_keys + static]))
    selection = select_auxiliary({k: features[k] for k in non_static}, pool_keys,
                                 np.stack([features[k] for k in pool_keys]), neighbours=neighbours, scaling=scaling)
    config = KeepOutTransferConfig(seed=seed, neighbours=neighbours)
    keys = training_keys(static, selection)
    figures = {}
    for name, trained_on in (("recipe", keys), ("static_only", static), ("all_company_data", static + non_static)):
        model = train_keep_out(features, labels, trained_on, classes=10, config=config)
        figures[name] = accuracy(model, features, labels, test_keys)
    retrains = sum(keep_out_deletion(selection, [key]).retrain for key in non_static)
    return {**figures, "auxiliary_selected": len(keys) - len(static),
            "deletions_needing_retrain": retrains / len(non_static)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--static", type=float, default=0.05)
    parser.add_argument("--neighbours", type=int, nargs="+", default=[1, 3])
    args = parser.parse_args()
    summary = {}
    print("| k | recipe | static only | all company data | auxiliary selected | deletions needing a retrain |")
    print("|---|---|---|---|---|---|")
    for k in args.neighbours:
        runs = [one_seed(seed, args.static, k) for seed in range(args.seeds)]
        row = {name: mean(r[name] for r in runs) for name in runs[0]}
        summary[f"k={k}"] = row
        print(f"| {k} | {row['recipe']:.3f} | {row['static_only']:.3f} | {row['all_company_data']:.3f} | "
              f"{row['auxiliary_selected']:.0f} | {row['deletions_needing_retrain']:.3f} |")
    print(json.dumps({"benchmark": "keep_out_transfer", "seeds": args.seeds, "static_fraction": args.static,
                      "test_accuracy_and_retrain_share": summary}))


if __name__ == "__main__":
    main()
