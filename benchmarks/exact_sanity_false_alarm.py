"""False-alarm rate of the statistical sanity check beside an exact deletion.

After an exact deletion (a SISA shard retrain, a full retrain) the audit still runs the per-record
offline-LiRA test (``membership_lira``, audits/checks/membership.py) on the forgotten records. Those
records are provably absent from the new model, so every record the test flags is a false alarm.
This measures how often that happens, computed the way the production audit computes it
(audits/runner.py ``_classifier_evidence``, workers/runners/shadow.py), without Django:

1. the target model trains on the whole training split of a reference dataset (``plain`` recipe
   for the ``retrain`` method, ``sisa`` for the ``sisa`` method; ``CONFIGS`` below);
2. ``--shadows`` shadow models (the production count, 16) of the same recipe and config with seeds
   10,000 + index, each on the half of the training records that ``shadow_half`` picks for it;
3. per deletion, random data subjects (each with all their training records, as a request erases
   a person) are drawn until the forget set holds ``--forget-size`` records, and deleted from the
   target with the exact method; subjects are not drawn twice within one replicate;
4. the new model and every shadow model score the forgotten records and the held-out records (up
   to 1,000, the audit's sample): logit-scaled confidence of the true class; each model's scores
   are put on the scale of its own held-out records (median 0, interquartile range 1;
   ``standardise_on_held_out``, imported from the audit's checks);
5. per subject (one request, one audit, as in production): ``fit_shadow_reference`` on that
   subject's records with the shadow models' held-out scores (default variance mode, as the audit
   calls it), then ``membership_test`` calibrated on the new model's held-out scores, at
   family-wise alpha = 0.05 (Holm over the subject's records).

Counted per dataset x method: per-record tests, records with raw p <= alpha (the per-record test's
false alarms at its nominal level; stated level = alpha) with the one-sided 95% Clopper-Pearson
bounds of that rate, and the check's own false alarms: records detected after Holm's correction
and requests with at least one detection (a FAIL of an exact deletion; stated level = alpha
family-wise). The issue's condition: the one-sided 95% lower bound of the per-record rate does not
exceed the stated level. Diagnostics: the same test with the whole forget set as one request;
the test as it was before it was calibrated on held-out records (p-values from the Student-t fit
of the OUT shadow scores alone: its raw rejections and the requests it FAILed, on the same
records); and that uncalibrated test on the held-out records themselves (never in any model:
``calibration_diagnostic``), which shows how far the shadow models alone misdescribe the target.
``--replicates`` repeats everything with another target seed and other shadow halves: the tests
of one replicate share one target and one set of shadow models, and the bounds treat the tests as
independent, which holds only given those models.

Two pieces of the audit live in Django modules and are repeated here, line for line:
``shadow_half`` and ``SHADOW_COUNT_DEFAULT`` (workers/runners/shadow.py) and the held-out sample
(audits/runner.py); tests/audits/test_sanity_benchmark.py holds them to the originals. Prints
markdown tables; the last stdout line is one JSON object.

    python benchmarks/exact_sanity_false_alarm.py            # the full run (>= 1,000 tests)
    python benchmarks/exact_sanity_false_alarm.py --quick    # a reduced run (a few minutes)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from audits.checks.membership import (  # noqa: E402
    DEFAULT_ALPHA,
    calibration_diagnostic,
    fit_shadow_reference,
    membership_test,
)
from audits.checks.signals import logit_scaled_confidence, standardise_on_held_out  # noqa: E402
from audits.checks.stats import clopper_pearson  # noqa: E402
from workers.datasets.base import RecordDataset  # noqa: E402
from workers.datasets.reference import (  # noqa: E402
    load_reference_split,
    materialise_reference,
    reference_records,
)
from workers.training import RECIPES  # noqa: E402
from workers.training.base import TrainingRun  # noqa: E402
from workers.training.device import select_device  # noqa: E402
from workers.training.evaluate import accuracy  # noqa: E402
from workers.training.membership import collate_records  # noqa: E402
from workers.unlearning.base import METHODS  # noqa: E402
from workers.unlearning.methods import load_all_methods  # noqa: E402

# workers/runners/shadow.py (imports Django): the production count and the half each shadow gets.
SHADOW_COUNT_DEFAULT = 32
SHADOW_FRACTION = 0.5
SHADOW_SEED_BASE = 10_000
# audits/runner.py: held-out records the audit scores.
TEST_SAMPLE = 1000

# The demo's configs (deletion_platform/demo.py: BC_PLAIN, MNIST_SISA); the other two use the same
# architecture with the other recipe (stages for SISA; for plain, about as many passes over the data).
_BC_MLP = {"name": "mlp", "config": {"in_features": 30, "num_classes": 2, "hidden": [32, 16]}}
_MNIST_CNN = {"name": "small_cnn", "config": {"num_classes": 10, "channels": [8, 16], "hidden": 32}}
CONFIGS: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {
    ("breast_cancer", "retrain"): ("plain", {"architecture": _BC_MLP, "epochs": 30, "lr": 3e-3,
                                             "batch_size": 32, "seed": 7}),
    ("breast_cancer", "sisa"): ("sisa", {"architecture": _BC_MLP, "shards": 5, "slices": 4,
                                         "slice_epochs": [30, 15, 10, 5], "lr": 3e-3, "batch_size": 32,
                                         "seed": 7}),
    ("mnist", "retrain"): ("plain", {"architecture": _MNIST_CNN, "epochs": 5, "lr": 3e-3,
                                     "batch_size": 32, "seed": 7}),
    ("mnist", "sisa"): ("sisa", {"architecture": _MNIST_CNN, "shards": 5, "slices": 4,
                                 "slice_epochs": [6, 3, 2, 1], "lr": 3e-3, "batch_size": 32, "seed": 7}),
}
MIN_TESTS_FULL_RUN = 1000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="breast_cancer,mnist", help="reference datasets, comma-separated")
    parser.add_argument("--methods", default="sisa,retrain", help="exact methods, comma-separated")
    parser.add_argument("--shadows", type=int, default=SHADOW_COUNT_DEFAULT, help="shadow models per target")
    parser.add_argument("--replicates", type=int, default=3,
                        help="targets (own seed, own shadow halves) per dataset x method")
    parser.add_argument("--trials", type=int, default=10, help="deletions per replicate")
    parser.add_argument("--forget-size", type=int, default=25,
                        help="records per deletion (whole subjects are drawn until there are this many)")
    parser.add_argument("--alpha", type=float, default=DEFAULT_ALPHA, help="the check's alpha (family-wise)")
    parser.add_argument("--seed", type=int, default=0, help="forget-set draws and dataset materialisation")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="", help="cpu or cuda (default: cuda when present)")
    parser.add_argument("--data-dir", default="", help="where to materialise the reference sets")
    parser.add_argument("--quick", action="store_true",
                        help="reduced run: 1 replicate, 4 deletions of 10 records per dataset x method")
    args = parser.parse_args(argv)
    if args.quick:
        args.replicates, args.trials, args.forget_size = 1, 4, 10
    return args


def shadow_half(keys: list[str], *, version_id: int, index: int) -> list[str]:
    """workers.runners.shadow.shadow_half: complementary pairs (indices 2i and 2i + 1) split the
    keys by a hash of (version, pair, key), one half each (the test holds the two equal)."""
    pair, second = divmod(index, 2)

    def first_half(key: str) -> bool:
        return hashlib.sha256(f"shadow:{version_id}:{pair}:{key}".encode()).digest()[0] < 256 * SHADOW_FRACTION

    return sorted(k for k in keys if first_half(k) != bool(second))


def standardise(scores: np.ndarray, held_out: np.ndarray) -> np.ndarray:
    """A model's scores on the scale of its own held-out records, as the audit puts them."""
    return standardise_on_held_out(scores, held_out)[0]


def held_out_sample(test: RecordDataset, seed: int) -> list[str]:
    """audits/runner.py ``_sample``: up to TEST_SAMPLE held-out keys."""
    keys = sorted(test.record_keys)
    if len(keys) <= TEST_SAMPLE:
        return keys
    return sorted(np.random.default_rng(seed).choice(keys, size=TEST_SAMPLE, replace=False).tolist())


def scores_by_key(model: torch.nn.Module, dataset: RecordDataset, device: torch.device) -> dict[str, float]:
    """LiRA statistic (logit-scaled confidence of the true class) of every record, by key, as the
    audit's ``_scores_and_accuracy`` computes it (eval mode, batches of 256)."""
    model = model.to(device).eval()
    keys, logits, labels = [], [], []
    with torch.no_grad():
        for batch_keys, inputs, targets in DataLoader(dataset, batch_size=256, collate_fn=collate_records):
            keys.extend(batch_keys)
            logits.append(model(inputs.to(device)).float().cpu().numpy())
            labels.append(targets.numpy())
    values = logit_scaled_confidence(np.concatenate(logits), np.concatenate(labels))
    return dict(zip(keys, values.tolist(), strict=True))


def training_subjects(directory: Path) -> list[list[str]]:
    """The training records of each data subject (a request erases all of a subject's records)."""
    by_subject: dict[str, list[str]] = {}
    for row in reference_records(directory):
        if row["split"] == "train" and row["subject"]:
            by_subject.setdefault(row["subject"]["email"], []).append(row["record_key"])
    return [sorted(keys) for _, keys in sorted(by_subject.items())]


class Shadows:
    """The shadow models of one target, each scored once on every training and held-out record
    (a model's score of a record does not depend on which other records are scored with it)."""

    def __init__(self, recipe: str, config: dict[str, Any], train: RecordDataset, test: RecordDataset,
                 test_keys: list[str], *, count: int, version_id: int, device: torch.device) -> None:
        keys = sorted(train.record_keys)
        held_out = test.subset(test_keys)
        self.members: list[set[str]] = []
        self.train_scores: list[dict[str, float]] = []
        self.test_scores: list[np.ndarray] = []
        for index in range(count):
            half = shadow_half(keys, version_id=version_id, index=index)
            run = RECIPES.get(recipe)({**config, "seed": SHADOW_SEED_BASE + index}).train(
                train.subset(half), device=device)
            self.members.append({row.record_key for row in run.membership})
            self.train_scores.append(scores_by_key(run.model, train, device))
            by_key = scores_by_key(run.model, held_out, device)
            self.test_scores.append(np.array([by_key[k] for k in test_keys]))
        # Held-out records are OUT for every shadow model: the test's empirical null (with the
        # tested model's scores of them) and the calibration diagnostic's reference.
        self.held_out = np.array([standardise(t, t) for t in self.test_scores])
        self.held_out_reference = fit_shadow_reference(self.held_out, np.zeros(self.held_out.shape, dtype=bool))

    def reference_inputs(self, forget: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Standardised shadow scores ``(n_shadow, n_forget)`` and the IN mask, as the audit builds them."""
        scores = [standardise(np.array([s[k] for k in forget]), t)
                  for s, t in zip(self.train_scores, self.test_scores, strict=True)]
        is_in = [[k in members for k in forget] for members in self.members]
        return np.array(scores), np.array(is_in, dtype=bool)


@dataclass
class Counts:
    """Per-record tests, raw p <= alpha, Holm detections; requests and those that FAILed; the
    same test uncalibrated (the Student-t fit of the shadow scores alone): raw p <= alpha and
    requests FAILed."""

    tests: int = 0
    false_alarms: int = 0
    holm_detections: int = 0
    requests: int = 0
    requests_failed: int = 0
    uncalibrated_false_alarms: int = 0
    uncalibrated_requests_failed: int = 0

    def add(self, other: Counts) -> None:
        for name in vars(self):
            setattr(self, name, getattr(self, name) + getattr(other, name))


def request_counts(keys: list[str], observed: np.ndarray, shadow_scores: np.ndarray, shadow_in: np.ndarray,
                   held_out: np.ndarray, shadow_held_out: np.ndarray, *, alpha: float) -> Counts:
    """One request's ``membership_lira`` check (``keys`` its records, arrays in their order), as
    the audit runs it (calibrated on the held-out records) and uncalibrated."""
    reference = fit_shadow_reference(shadow_scores, shadow_in, nonmember_shadow_scores=shadow_held_out)
    result = membership_test(record_ids=keys, unlearned_scores=observed, reference=reference,
                             nonmember_scores=held_out, alpha=alpha)
    before = membership_test(record_ids=keys, unlearned_scores=observed, reference=reference, alpha=alpha)
    p = result.p_values[np.isfinite(result.p_values)]
    p_before = before.p_values[np.isfinite(before.p_values)]
    return Counts(tests=int(p.size), false_alarms=int(np.sum(p <= alpha)), holm_detections=result.n_detected,
                  requests=1, requests_failed=int(result.n_detected > 0),
                  uncalibrated_false_alarms=int(np.sum(p_before <= alpha)),
                  uncalibrated_requests_failed=int(before.n_detected > 0))


def audit_deletion(new: TrainingRun, requests: list[list[str]], shadows: Shadows, train: RecordDataset,
                   test: RecordDataset, test_keys: list[str], *, alpha: float,
                   device: torch.device) -> dict[str, Any]:
    """The audit's per-record test on the new model, one request per subject; the same with the
    whole forget set as one request; the uncorrected test on the held-out records."""
    forget = [k for keys in requests for k in keys]
    if {row.record_key for row in new.membership} & set(forget):
        raise AssertionError("a forgotten record is still a member of the new model")
    by_key = scores_by_key(new.model, train.subset(forget), device)
    held = scores_by_key(new.model, test.subset(test_keys), device)
    held_scores = np.array([held[k] for k in test_keys])
    observed = standardise(np.array([by_key[k] for k in forget]), held_scores)
    held_standardised = standardise(held_scores, held_scores)
    shadow_scores, shadow_in = shadows.reference_inputs(forget)
    per_request, start = Counts(), 0
    for keys in requests:
        columns = slice(start, start + len(keys))
        per_request.add(request_counts(keys, observed[columns], shadow_scores[:, columns],
                                       shadow_in[:, columns], held_standardised, shadows.held_out, alpha=alpha))
        start += len(keys)
    batch = request_counts(forget, observed, shadow_scores, shadow_in, held_standardised, shadows.held_out,
                           alpha=alpha)
    held_out = calibration_diagnostic(held_standardised, shadows.held_out_reference, alpha=alpha)
    return {"records": len(forget), "subjects": len(requests), "per_request": vars(per_request),
            "batch": vars(batch), "held_out_tests": held_out.n_nonmembers,
            "held_out_flagged": round(held_out.empirical_fpr * held_out.n_nonmembers)}


def draw_requests(subjects: list[list[str]], available: list[int], size: int, rng: random.Random) -> list[list[str]]:
    """Random subjects (taken out of ``available``) until their records number at least ``size``."""
    chosen: list[list[str]] = []
    while sum(map(len, chosen)) < size:
        if not available:
            raise SystemExit("not enough data subjects left for the deletions asked for")
        chosen.append(subjects[available.pop(rng.randrange(len(available)))])
    return chosen


def run_cell(dataset: str, method_name: str, train: RecordDataset, test: RecordDataset,
             subjects: list[list[str]], args: argparse.Namespace, rng: random.Random,
             device: torch.device) -> dict[str, Any]:
    """Every replicate and deletion of one dataset x method; returns the cell's figures."""
    recipe, base_config = CONFIGS[(dataset, method_name)]
    method = METHODS.get(method_name)()
    test_keys = held_out_sample(test, args.seed)
    wall, cpu = time.perf_counter(), time.process_time()
    deletions, accuracies = [], []
    for replicate in range(args.replicates):
        config = {**base_config, "seed": base_config["seed"] + 1000 * replicate}
        target = RECIPES.get(recipe)(config).train(train, device=device)
        accuracies.append(round(accuracy(target.model.to(device), test, device=device), 4))
        # Production hashes the version id into the halves; each replicate stands for another version.
        shadows = Shadows(recipe, config, train, test, test_keys, count=args.shadows,
                          version_id=replicate + 1, device=device)
        available = list(range(len(subjects)))
        for trial in range(args.trials):
            requests = draw_requests(subjects, available, args.forget_size, rng)
            forget = [k for keys in requests for k in keys]
            new, _ = method.unlearn(target, forget, train.without(forget), device=str(device))
            outcome = audit_deletion(new, requests, shadows, train, test, test_keys, alpha=args.alpha,
                                     device=device)
            deletions.append({"replicate": replicate, "trial": trial, **outcome})
            found = outcome["per_request"]
            print(f"  {dataset} {method_name} replicate {replicate} deletion {trial}: {outcome['records']} "
                  f"records of {outcome['subjects']} subjects, {found['false_alarms']} raw p <= alpha, "
                  f"{found['holm_detections']} after Holm (uncalibrated: {found['uncalibrated_false_alarms']} raw); "
                  f"as one request {outcome['batch']['false_alarms']} "
                  f"/ {outcome['batch']['holm_detections']}; held-out {outcome['held_out_flagged']} of "
                  f"{outcome['held_out_tests']}", flush=True)
    return summarise({"dataset": dataset, "method": method_name}, deletions, args.alpha, {
        "recipe": recipe, "config": base_config, "target_test_accuracy": accuracies,
        "seconds": round(time.perf_counter() - wall, 1), "cpu_seconds": round(time.process_time() - cpu, 1),
        "per_deletion": deletions})


def one_sided_bounds(successes: int, trials: int) -> tuple[float, float]:
    """One-sided 95% Clopper-Pearson lower and upper bounds (the two-sided 90% interval's ends)."""
    return clopper_pearson(successes, trials, level=0.90)


def rate_figures(prefix: str, successes: int, trials: int) -> dict[str, float]:
    low, high = one_sided_bounds(successes, trials)
    return {f"{prefix}rate": successes / trials if trials else float("nan"),
            f"{prefix}lower_95": low, f"{prefix}upper_95": high}


def summarise(labels: dict[str, str], deletions: list[dict[str, Any]], alpha: float,
              extra: dict[str, Any]) -> dict[str, Any]:
    """Counts and rates with one-sided 95% bounds over ``deletions`` (per_deletion outcomes)."""
    per_request, batch = Counts(), Counts()
    for d in deletions:
        per_request.add(Counts(**d["per_request"]))
        batch.add(Counts(**d["batch"]))
    held_tests = sum(d["held_out_tests"] for d in deletions)
    held_flagged = sum(d["held_out_flagged"] for d in deletions)
    figures = {
        **labels, "deletions": len(deletions), "requests": per_request.requests, "tests": per_request.tests,
        "stated_level": alpha, "false_alarms": per_request.false_alarms,
        **rate_figures("", per_request.false_alarms, per_request.tests),
        "holm_detections": per_request.holm_detections,
        **rate_figures("holm_", per_request.holm_detections, per_request.tests),
        "requests_failed": per_request.requests_failed,
        **rate_figures("request_fail_", per_request.requests_failed, per_request.requests),
        "batch_false_alarms": batch.false_alarms, **rate_figures("batch_", batch.false_alarms, batch.tests),
        "batch_holm_detections": batch.holm_detections, "batch_deletions_failed": batch.requests_failed,
        "held_out_tests": held_tests, "held_out_flagged": held_flagged,
        **rate_figures("held_out_", held_flagged, held_tests),
        "uncalibrated_false_alarms": per_request.uncalibrated_false_alarms,
        **rate_figures("uncalibrated_", per_request.uncalibrated_false_alarms, per_request.tests),
        "uncalibrated_requests_failed": per_request.uncalibrated_requests_failed,
        **rate_figures("uncalibrated_request_fail_", per_request.uncalibrated_requests_failed,
                       per_request.requests),
    }
    figures["passes"] = bool(figures["lower_95"] <= alpha)
    return {**figures, **extra}


TABLE_HEADER = (
    "| dataset | method | deletions | requests | per-record tests | raw p <= alpha | rate | one-sided 95% lower "
    "| one-sided 95% upper | stated level | lower <= level | Holm detections: rate (upper) "
    "| requests FAILed: rate (lower-upper) |\n"
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|"
)
DIAGNOSTICS_HEADER = (
    "| dataset | method | uncalibrated test: raw p <= alpha (rate, lower) | its requests FAILed (rate) "
    "| forget set as one request: raw p <= alpha (rate) | its Holm detections | deletions FAILed "
    "| held-out non-members, uncalibrated p <= alpha (rate) | target test accuracy | seconds |\n"
    "|---|---|---|---|---|---:|---:|---|---|---:|"
)


def table_row(row: dict[str, Any]) -> str:
    return (f"| {row['dataset']} | {row['method']} | {row['deletions']} | {row['requests']} | {row['tests']} | "
            f"{row['false_alarms']} | {row['rate']:.4f} | {row['lower_95']:.4f} | {row['upper_95']:.4f} | "
            f"{row['stated_level']:.2f} | {'pass' if row['passes'] else 'FAIL'} | {row['holm_detections']}: "
            f"{row['holm_rate']:.4f} ({row['holm_upper_95']:.4f}) | {row['requests_failed']} of {row['requests']}: "
            f"{row['request_fail_rate']:.4f} ({row['request_fail_lower_95']:.4f}-{row['request_fail_upper_95']:.4f}) |")


def diagnostics_row(row: dict[str, Any]) -> str:
    accuracies = ", ".join(f"{a:.3f}" for a in row.get("target_test_accuracy", [])) or "-"
    seconds = f"{row['seconds']:.0f}" if "seconds" in row else "-"
    return (f"| {row['dataset']} | {row['method']} | {row['uncalibrated_false_alarms']} of {row['tests']} "
            f"({row['uncalibrated_rate']:.4f}, {row['uncalibrated_lower_95']:.4f}) | "
            f"{row['uncalibrated_requests_failed']} of {row['requests']} ({row['uncalibrated_request_fail_rate']:.4f}) "
            f"| {row['batch_false_alarms']} of {row['tests']} "
            f"({row['batch_rate']:.4f}) | {row['batch_holm_detections']} | {row['batch_deletions_failed']} of "
            f"{row['deletions']} | {row['held_out_flagged']} of {row['held_out_tests']} ({row['held_out_rate']:.4f}) "
            f"| {accuracies} | {seconds} |")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    load_all_methods()
    device = select_device(args.device or None)
    rng = random.Random(args.seed)
    data_root = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp(prefix="sanity-bench-"))
    datasets = [d for d in args.datasets.split(",") if d]
    methods = [m for m in args.methods.split(",") if m]
    machine = f"{os.cpu_count()} CPU core(s), {platform.processor() or platform.machine()}"
    started = time.perf_counter()
    print(f"exact-deletion sanity check: {', '.join(datasets)} x {', '.join(methods)}; {args.replicates} "
          f"replicate(s) x {args.trials} deletions of >= {args.forget_size} records (whole subjects), "
          f"{args.shadows} shadow models, alpha {args.alpha}; device {device}, {args.threads} torch thread(s), "
          f"torch {torch.__version__}, {machine}", flush=True)
    cells = []
    for dataset in datasets:
        directory = materialise_reference(dataset, data_root, seed=args.seed)
        train, test = load_reference_split(directory, "train"), load_reference_split(directory, "test")
        subjects = training_subjects(directory)
        for method in methods:
            cell = run_cell(dataset, method, train, test, subjects, args, rng, device)
            cells.append(cell)
            print(f"{dataset} {method}: {cell['tests']} tests, {cell['false_alarms']} raw false alarms, "
                  f"{cell['holm_detections']} Holm detections, {cell['seconds']:.0f} s "
                  f"({cell['cpu_seconds']:.0f} s CPU)", flush=True)
    pooled = [summarise({"dataset": "both", "method": m}, [d for c in cells if c["method"] == m
                                                          for d in c["per_deletion"]], args.alpha, {})
              for m in methods]
    pooled.append(summarise({"dataset": "both", "method": "both"},
                            [d for c in cells for d in c["per_deletion"]], args.alpha, {}))
    seconds = time.perf_counter() - started
    overall = pooled[-1]

    # Pooled rows where they add something: per method over the datasets, then over everything.
    shown = [*cells, *(pooled[:-1] if len(datasets) > 1 else []), *(pooled[-1:] if len(methods) > 1 else [])]
    print()
    print(TABLE_HEADER)
    for row in shown:
        print(table_row(row))
    print()
    print(DIAGNOSTICS_HEADER)
    for row in shown:
        print(diagnostics_row(row))
    print()
    enough = overall["tests"] >= MIN_TESTS_FULL_RUN
    print(f"- {overall['tests']} per-record tests in all ({'>=' if enough else '<'} {MIN_TESTS_FULL_RUN}); "
          f"{seconds:.0f} s wall")
    print(f"- one-sided 95% lower bound of the per-record false-alarm rate <= stated level ({args.alpha}): "
          + ", ".join(f"{c['dataset']} {c['method']} {'pass' if c['passes'] else 'FAIL'}" for c in cells))
    print(f"- requests FAILed, one-sided 95% lower bound <= alpha ({args.alpha}, family-wise): "
          + ", ".join(f"{c['dataset']} {c['method']} "
                      f"{'pass' if c['request_fail_lower_95'] <= args.alpha else 'FAIL'}" for c in cells))
    summary = {
        "benchmark": "exact_sanity_false_alarm", "date": time.strftime("%Y-%m-%d"), "device": str(device),
        "threads": args.threads,
        "machine": machine, "torch": torch.__version__, "args": vars(args), "seconds": round(seconds, 1),
        "enough_tests": enough, "all_pass": all(c["passes"] for c in cells),
        "cells": cells, "pooled": pooled,
    }
    print(json.dumps(summary, default=str))
    return summary


if __name__ == "__main__":
    main()
