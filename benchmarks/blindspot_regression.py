"""Blindspot against fine-tuning on a regression model, over several seeds (the repeated runs behind
tests/workers/unlearning/test_blindspot.py).

scikit-learn's bundled diabetes set (442 patients; nothing downloaded): per seed, a random 354 are
training records, the rest held out. An MLP (workers.datasets.reference.DIABETES_MLP) is trained to
memorise its training records (full-batch Adam, MSE); per forget set a model is retrained without
it from the same seed, and a second retrain from another seed gives the floor (how far two models
that never saw the records are from each other). Forget sets:

* ``random``: 30 random training records;
* ``subgroup``: the 30 training records of highest BMI (a coherent sub-population).

Per method: the RMS distance of its predictions on the forget set to the retrained model's (lower
is closer; the claim is Blindspot < fine-tune), its retain and test RMSE, and wall time as a
fraction of the retrain's. ``finetune`` is retain-set MSE training with Blindspot's optimizer,
learning rate and epochs; ``blindspot_no_forget_terms`` is Blindspot with its two forget-set terms
switched off (the negative control: then it is a fine-tune with a helper model nobody reads).

    python benchmarks/blindspot_regression.py --seeds 5

The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workers.datasets.base import RecordDataset  # noqa: E402
from workers.datasets.reference import DIABETES_MLP  # noqa: E402
from workers.training.architectures import build_model  # noqa: E402
from workers.training.membership import collate_records  # noqa: E402
from workers.unlearning.blindspot import Blindspot, BlindspotConfig  # noqa: E402

TRAIN, FORGET, STEPS = 354, 30, 200
BMI = 2  # load_diabetes's third feature


class Records(RecordDataset):
    def __init__(self, inputs: Tensor, targets: Tensor) -> None:
        self.inputs, self.targets = inputs, targets
        self._keys = [f"r{i:04d}" for i in range(len(targets))]

    @property
    def record_keys(self):
        return self._keys

    def __getitem__(self, index: int):
        return self._keys[index], self.inputs[index], self.targets[index]


def fit(inputs: Tensor, targets: Tensor, seed: int) -> tuple[nn.Module, float]:
    started = time.perf_counter()
    torch.manual_seed(seed)
    model = build_model(DIABETES_MLP)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(STEPS):
        optimizer.zero_grad()
        nn.functional.mse_loss(model(inputs).squeeze(-1), targets).backward()
        optimizer.step()
    return model.eval(), time.perf_counter() - started


def finetune(model: nn.Module, retain: DataLoader, config: BlindspotConfig) -> nn.Module:
    tuned = copy.deepcopy(model).train()
    optimizer = torch.optim.Adam(tuned.parameters(), lr=config.lr)
    for _ in range(config.epochs):
        for _keys, inputs, targets in retain:
            optimizer.zero_grad()
            nn.functional.mse_loss(tuned(inputs).squeeze(-1), targets).backward()
            optimizer.step()
    return tuned.eval()


@torch.no_grad()
def rms(a: nn.Module, b: nn.Module | Tensor, inputs: Tensor) -> float:
    other = b if isinstance(b, Tensor) else b.eval()(inputs).squeeze(-1)
    return float((a.eval()(inputs).squeeze(-1) - other).pow(2).mean().sqrt())


def one_run(seed: int, scenario: str) -> dict:
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True)
    inputs, targets = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    order = torch.randperm(len(targets), generator=torch.Generator().manual_seed(seed))
    train, test = order[:TRAIN], order[TRAIN:]
    if scenario == "random":
        forget_at = torch.arange(FORGET)
    else:
        forget_at = torch.argsort(inputs[train, BMI], descending=True)[:FORGET]
    keep = torch.ones(TRAIN, dtype=torch.bool)
    keep[forget_at] = False
    forget_idx, retain_idx = train[forget_at], train[keep]
    original, _ = fit(inputs[train], targets[train], seed)
    retrained, retrain_seconds = fit(inputs[retain_idx], targets[retain_idx], seed)
    floor_model, _ = fit(inputs[retain_idx], targets[retain_idx], seed + 1000)
    records = Records(inputs[train], targets[train])
    keys = list(records.record_keys)
    forget = DataLoader(records.subset([keys[i] for i in forget_at.tolist()]), batch_size=64,
                        collate_fn=collate_records)
    retain = DataLoader(records.subset([keys[i] for i in torch.nonzero(keep).flatten().tolist()]), batch_size=64,
                        collate_fn=collate_records)
    config = BlindspotConfig(seed=seed)
    xf, xr, xt = inputs[forget_idx], inputs[retain_idx], inputs[test]
    rows = {}

    def row(name: str, model: nn.Module, seconds: float) -> None:
        rows[name] = {"forget_distance_to_retrain": rms(model, retrained, xf),
                      "retain_rmse": rms(model, targets[retain_idx], xr), "test_rmse": rms(model, targets[test], xt),
                      "time_fraction": seconds / retrain_seconds}

    row("none", original, 0.0)
    started = time.perf_counter()
    row("finetune", finetune(original, retain, config), time.perf_counter() - started)
    started = time.perf_counter()
    row("blindspot", Blindspot(config).unlearn(original, forget, retain)[0], time.perf_counter() - started)
    control = BlindspotConfig(seed=seed, forget_weight=0.0, activation_weight=1e-9)
    started = time.perf_counter()
    row("blindspot_no_forget_terms", Blindspot(control).unlearn(original, forget, retain)[0],
        time.perf_counter() - started)
    return {"seed": seed, "scenario": scenario, "floor": rms(floor_model, retrained, xf), "methods": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--scenarios", default="random,subgroup")
    args = parser.parse_args()
    torch.set_num_threads(1)
    runs = [one_run(seed, scenario) for scenario in args.scenarios.split(",") for seed in range(args.seeds)]
    summary = {}
    for scenario in args.scenarios.split(","):
        mine = [r for r in runs if r["scenario"] == scenario]
        print(f"\n{scenario} forget set ({len(mine)} seeds; medians): floor "
              f"{statistics.median(r['floor'] for r in mine):.1f}")
        print("| method | forget distance to retrain | retain RMSE | test RMSE | time / retrain |")
        print("|---|---|---|---|---|")
        summary[scenario] = {"floor": statistics.median(r["floor"] for r in mine), "methods": {}}
        for name in mine[0]["methods"]:
            med = {k: statistics.median(r["methods"][name][k] for r in mine) for k in mine[0]["methods"][name]}
            summary[scenario]["methods"][name] = med
            print(f"| {name} | {med['forget_distance_to_retrain']:.1f} | {med['retain_rmse']:.1f} | "
                  f"{med['test_rmse']:.1f} | {med['time_fraction']:.2f} |")
        summary[scenario]["blindspot_closer_than_finetune"] = sum(
            r["methods"]["blindspot"]["forget_distance_to_retrain"]
            < r["methods"]["finetune"]["forget_distance_to_retrain"] for r in mine)
    print(json.dumps({"benchmark": "blindspot_regression", "seeds": args.seeds, "summary": summary, "runs": runs}))


if __name__ == "__main__":
    main()
