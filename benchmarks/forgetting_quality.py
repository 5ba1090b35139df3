"""Forgetting quality (the NeurIPS 2023 unlearning challenge's score and the platform's variant) of every approximate method.

The challenge's question: over many runs, can the outputs of unlearned models be told apart from
those of models retrained without the forget set? Per forget record, N unlearned and N retrained
models give two samples of its loss; audits/checks/forgetting_quality.py turns them into the
platform's variant of the challenge's per-example epsilons and score (1.0 = indistinguishable;
single-threshold attacks both ways, delta 0.01) and compares the score with its noise floor (the
score's distribution when both samples come from one distribution, at the same N): FAIL when the
score is below the floor's 5% quantile. Beside it, ``challenge F`` is the challenge's own score
(audits/checks/challenge_metric.py, its metric.py's rules: logit-scaled confidences, double
thresholds, delta 1e-5) over the same N runs.

Set-up (one reference set, the platform's ``plain`` recipe): N originals (seeds 1..N) trained on
all training records, N retrained models (seeds 1001..1000+N) trained without the forget set;
each method unlearns original i with seed i. Control rows: ``none`` (the originals themselves,
nothing forgotten: should FAIL when the models memorise the forget set) and ``retrain`` (a second
set of N retrained models, seeds 2001..2000+N: should PASS). The default forget set is the reference set's
mislabelled canaries on MNIST, which a model only fits by memorising them. Prints a markdown table;
the last stdout line is one JSON object.

``--dataset diabetes``: the regression model (the ``plain_regression`` recipe on the set's suggested
MLP). Its rows are Blindspot and ``finetune`` (retain-set MSE training with Blindspot's optimizer,
learning rate and epochs: benchmarks/blindspot_regression.py) beside the controls; the signal is the
one the audit uses for regressors, the log-scaled squared error (audits.checks.signals.squared_error_signal,
higher = member). Forget sets: ``random`` (30 training records) or ``subgroup`` (the 30 of highest
BMI). The challenge's own score is defined on a classifier's confidences: ``-`` for a regressor.

    python benchmarks/forgetting_quality.py                                   # MNIST canaries, N = 16
    python benchmarks/forgetting_quality.py --dataset breast_cancer --forget random --models 32
    python benchmarks/forgetting_quality.py --dataset diabetes --forget subgroup
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from approximate_unlearning import (  # noqa: E402
    FORGET_CLASS,
    REGRESSION_EPOCHS,
    ShadowModels,
    canary_sources,
    per_record,
    regression_forget_keys,
    regression_predictions,
    regression_recipe,
)

from audits.checks.challenge_metric import challenge_forget_score, logit_scaled_confidence  # noqa: E402
from audits.checks.forgetting_quality import forgetting_quality  # noqa: E402
from workers.datasets.reference import load_reference_split, materialise_reference, plant_canaries  # noqa: E402
from workers.training import RECIPES  # noqa: E402
from workers.unlearning.base import METHODS  # noqa: E402
from workers.unlearning.catalogue import CLASSIFICATION, METHOD_SPECS, approximate_methods_for  # noqa: E402
from workers.unlearning.methods import load_all_methods  # noqa: E402

RECIPE_CONFIGS = {
    # An MLP on the pixels: 2N + N x methods models must be trained, and a small CNN costs ~3x.
    "mnist": {"architecture": {"name": "mlp", "config": {"in_features": 784, "num_classes": 10, "hidden": [256],
                                                         "input_norm": "none"}},
              "batch_size": 64, "lr": 3e-3},
    "breast_cancer": {"architecture": {"name": "mlp", "config": {"in_features": 30, "num_classes": 2,
                                                                   "hidden": [32, 16]}},
                      "lr": 3e-3, "batch_size": 32},
}
DEFAULT_EPOCHS = {"mnist": 20, "breast_cancer": 30, "diabetes": REGRESSION_EPOCHS}
CANARIES = 25
RANDOM_SHARE = 0.02


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted([*RECIPE_CONFIGS, "diabetes"]), default="mnist")
    parser.add_argument("--forget", choices=("canary", "random", "class", "subgroup"), default=None,
                        help="default: canary (diabetes: subgroup); subgroup and diabetes go together")
    parser.add_argument("--models", type=int, default=16, help="models per side (the check needs >= 16)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--methods", default="", help="comma-separated; default: every approximate method")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--shadow-pairs", type=int, default=8,
                        help="shadow pairs trained for methods that read them (dmm, oracle_matching read half)")
    args = parser.parse_args()
    regression = args.dataset == "diabetes"
    args.forget = args.forget or ("subgroup" if regression else "canary")
    if regression and args.forget not in ("random", "subgroup"):
        parser.error(f"--forget {args.forget} is not a forget set of the regression model: random or subgroup")
    if not regression and args.forget == "subgroup":
        parser.error("--forget subgroup (highest BMI) is the diabetes set's")
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    load_all_methods()
    if args.dataset == "diabetes":
        regression_main(args)
        return
    methods = [m for m in args.methods.split(",") if m] or approximate_methods_for(CLASSIFICATION)
    # A whole-class method (data_free_class) refuses any other forget set.
    methods = [m for m in methods if args.forget == "class" or not METHOD_SPECS.get(m).whole_class_only]
    epochs = args.epochs or DEFAULT_EPOCHS[args.dataset]

    def recipe(seed: int):
        return RECIPES.get("plain")({**RECIPE_CONFIGS[args.dataset], "epochs": epochs, "seed": seed})

    with tempfile.TemporaryDirectory() as scratch:
        path = materialise_reference(args.dataset, Path(scratch), seed=0)
        train = load_reference_split(path, "train")
        if args.forget == "canary":
            info = json.loads((path / "dataset.json").read_text())
            forget_keys = [k for c in info.get("canaries", []) if c["kind"] == "mislabel" for k in c["record_keys"]]
            if not forget_keys:
                forget_keys = plant_canaries(path, kind="mislabel", count=CANARIES, seed=0)
            train = load_reference_split(path, "train").without(canary_sources(path))
        elif args.forget == "class":  # every training record of one class
            forget_keys = [key for key, (_, _, target) in zip(train.record_keys, train, strict=True)
                           if int(target) == FORGET_CLASS]
        else:
            rng = np.random.default_rng(7)
            keys = train.record_keys
            forget_keys = [keys[i] for i in sorted(rng.choice(len(keys), size=max(1, round(RANDOM_SHARE * len(keys))),
                                                              replace=False))]
    forget, retain = train.subset(forget_keys), train.without(forget_keys)
    n = args.models
    print(f"# Forgetting quality, {args.dataset} ({len(train)} train records, forget set: {args.forget}, "
          f"{len(forget)} records), plain recipe, {epochs} epochs, {n} models per side", flush=True)

    started = time.perf_counter()
    signals: dict[str, list[np.ndarray]] = {"none": [], "retrain": [], **{m: [] for m in methods}}
    confidences: dict[str, list[np.ndarray]] = {name: [] for name in signals}  # for the challenge's own score
    reference: list[np.ndarray] = []
    reference_confidences: list[np.ndarray] = []
    seconds: dict[str, float] = {m: 0.0 for m in methods}
    # One set of shadow pairs for every original (they depend only on the data), for the methods that
    # read them; their training time is counted once, in each such method's seconds.
    shadows = ShadowModels(recipe(0), train, pairs=args.shadow_pairs)
    for i in range(1, n + 1):
        original = recipe(i).train(train).model
        signals["none"].append(per_record(original, forget)[0])
        confidences["none"].append(confidence(original, forget))
        # Seeds apart from the originals' (a shared seed would correlate a method's start with
        # its reference and flatter it), and apart from each other.
        retrained_model = recipe(1000 + i).train(retain).model
        reference.append(per_record(retrained_model, forget)[0])
        reference_confidences.append(confidence(retrained_model, forget))
        second_retrain = recipe(2000 + i).train(retain).model
        signals["retrain"].append(per_record(second_retrain, forget)[0])
        confidences["retrain"].append(confidence(second_retrain, forget))
        for name in methods:
            method = METHODS.get(name)({"seed": i})
            forget_loader = DataLoader(forget, batch_size=32, shuffle=True)
            retain_loader = DataLoader(retain, batch_size=64, shuffle=True)
            model, result = method.unlearn(original, forget_loader, retain_loader, **shadows.context(name))
            seconds[name] += result.wall_seconds + (shadows.seconds_for(name) if i == 1 else 0.0)
            signals[name].append(per_record(model, forget)[0])
            confidences[name].append(confidence(model, forget))
        print(f"  model set {i}/{n} done ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)

    retrained = np.stack(reference)
    rows = {}
    print("\n| method | platform score | noise floor (median, 5%) | p (score <= floor) | verdict | leans to | "
          "challenge F | mean forget loss (retrained) | seconds per run |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, runs in signals.items():
        check = forgetting_quality(record_ids=forget_keys, unlearned_signals=np.stack(runs),
                                   retrained_signals=retrained, higher_is_member=False, signal="loss")
        rows[name] = {
            "score": check.score, "null_median": check.null.quantiles["0.5"] if check.null else None,
            "null_p05": check.null.quantiles.get("0.05") if check.null else None,
            "p_value": check.null_p_value, "verdict": str(check.verdict.value), "side": check.side,
            "mean_forget_loss": float(np.stack(runs).mean()),
            "seconds_per_run": seconds[name] / n if name in seconds else None,
            # The challenge's own score (metric.py's rules, logit-scaled confidences), N = n.
            "challenge_f": (challenge_forget_score(np.stack(confidences[name]), np.stack(reference_confidences)).score
                            if n >= 3 else None),
        }
        r = rows[name]
        print(f"| {name} | {_f(r['score'])} | {_f(r['null_median'])}, {_f(r['null_p05'])} | {_f(r['p_value'])} "
              f"| {r['verdict']} | {r['side']} | {_f(r['challenge_f'])} | {r['mean_forget_loss']:.3f} ({retrained.mean():.3f}) "
              f"| {_f(r['seconds_per_run'])} |")
    print(json.dumps({"benchmark": "forgetting_quality", "dataset": args.dataset, "forget": args.forget,
                      "forget_records": len(forget), "models_per_side": n, "epochs": epochs,
                      "wall_seconds": round(time.perf_counter() - started, 1), "rows": rows}))


def regression_main(args: argparse.Namespace) -> None:
    """The regression model's rows: N originals, N retrained, N second retrains, Blindspot and the MSE
    fine-tune on each original; the audit's regression signal per forget record."""
    from blindspot_regression import finetune as mse_finetune

    from audits.checks.signals import squared_error_signal
    from workers.training.membership import collate_records
    from workers.unlearning.blindspot import BlindspotConfig

    epochs = args.epochs or DEFAULT_EPOCHS[args.dataset]
    with tempfile.TemporaryDirectory() as scratch:
        train = load_reference_split(materialise_reference("diabetes", Path(scratch), seed=0), "train")
    forget_keys = regression_forget_keys(args.forget, train, 0)
    forget, retain = train.subset(forget_keys), train.without(forget_keys)
    n = args.models
    print(f"# Forgetting quality, diabetes regression ({len(train)} train records, forget set: {args.forget}, "
          f"{len(forget)} records), plain_regression recipe, {epochs} epochs, {n} models per side", flush=True)

    def signal(model) -> np.ndarray:
        return squared_error_signal(*regression_predictions(model, forget))

    def loader(dataset, batch_size: int) -> DataLoader:
        return DataLoader(dataset, batch_size=batch_size, shuffle=True, collate_fn=collate_records)

    started = time.perf_counter()
    signals: dict[str, list[np.ndarray]] = {"none": [], "retrain": [], "finetune": [], "blindspot": []}
    seconds = {"finetune": 0.0, "blindspot": 0.0}
    reference: list[np.ndarray] = []
    for i in range(1, n + 1):
        original = regression_recipe(epochs, i).train(train).model
        signals["none"].append(signal(original))
        reference.append(signal(regression_recipe(epochs, 1000 + i).train(retain).model))
        signals["retrain"].append(signal(regression_recipe(epochs, 2000 + i).train(retain).model))
        config = BlindspotConfig(seed=i)
        tick = time.perf_counter()
        torch.manual_seed(i)
        signals["finetune"].append(signal(mse_finetune(original, loader(retain, 64), config)))
        seconds["finetune"] += time.perf_counter() - tick
        model, result = METHODS.get("blindspot")(config).unlearn(original, loader(forget, 32), loader(retain, 64))
        signals["blindspot"].append(signal(model))
        seconds["blindspot"] += result.wall_seconds
        print(f"  model set {i}/{n} done ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
    retrained = np.stack(reference)
    rows = {}
    print("\n| method | platform score | noise floor (median, 5%) | p (score <= floor) | verdict | leans to | "
          "mean forget signal (retrained) | seconds per run |")
    print("|---|---|---|---|---|---|---|---|")
    for name, runs in signals.items():
        check = forgetting_quality(record_ids=forget_keys, unlearned_signals=np.stack(runs),
                                   retrained_signals=retrained, higher_is_member=True,
                                   signal="log-scaled squared error")
        rows[name] = {
            "score": check.score, "null_median": check.null.quantiles["0.5"] if check.null else None,
            "null_p05": check.null.quantiles.get("0.05") if check.null else None,
            "p_value": check.null_p_value, "verdict": str(check.verdict.value), "side": check.side,
            "mean_forget_signal": float(np.stack(runs).mean()),
            "seconds_per_run": seconds[name] / n if name in seconds else None, "challenge_f": None,
        }
        r = rows[name]
        print(f"| {name} | {_f(r['score'])} | {_f(r['null_median'])}, {_f(r['null_p05'])} | {_f(r['p_value'])} "
              f"| {r['verdict']} | {r['side']} | {r['mean_forget_signal']:.3f} ({retrained.mean():.3f}) "
              f"| {_f(r['seconds_per_run'])} |")
    print(json.dumps({"benchmark": "forgetting_quality", "dataset": "diabetes", "forget": args.forget,
                      "forget_records": len(forget), "models_per_side": n, "epochs": epochs,
                      "signal": "log-scaled squared error (audits.checks.signals.squared_error_signal)",
                      "wall_seconds": round(time.perf_counter() - started, 1), "rows": rows}))


@torch.no_grad()
def confidence(model, dataset) -> np.ndarray:
    """The challenge's signal per record of ``dataset``: log p_y - log(1 - p_y) from the logits."""
    model.eval()
    logits, labels = zip(*[(model(inputs), targets) for _, inputs, targets in DataLoader(dataset, batch_size=512)], strict=True)
    return logit_scaled_confidence(torch.cat(logits).numpy(), torch.cat(labels).numpy())[1]


def _f(value) -> str:
    return "-" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    main()
