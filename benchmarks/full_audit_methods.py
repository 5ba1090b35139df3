"""The full audit's verdict on each approximate method, on memorised canaries and on a coherent sub-population.

Issue 24's table: per forget set and method, the verdict of the audit an approximate result gets
(the registered checks the audit runner runs on a classifier, fed as audits/runner.py feeds them,
and the verdict rule of audits/checks/verdict.py: per-record LiRA and RMIA against shadow models,
the population attack, the equivalence test, the power and shadow-policy checks, U-LiRA (the
method run on the shadows that held the records, by audits.unlearned_shadows itself) and, for a
class or sub-population, the representation and relearning checks against models retrained
without the forget set); the forgetting quality (audits/checks/forgetting_quality.py, N unlearned
runs against N retrained ones), KLoM's 95th percentile on the forget set (audits/checks/klom.py,
same runs), forget / retain / test accuracy of run 1 and time as a fraction of one retrain (a
method that reads shadow models is charged the training of those it read).

Set-up, small enough for a shared 2-core machine: the MNIST reference set (real digits) cut to
``--train-records`` training records plus 25 planted mislabelled canaries (each the only copy of
its image: a model fits one only by memorising it), a one-hidden-layer MLP (the ``plain`` recipe).
Two kinds of shadow models, never the same ones: ``--audit-pairs`` complementary pairs the audit
calibrates with (each record OUT of exactly one model of each pair: 16 pairs meet the platform's
16 OUT shadows per record), and ``--method-pairs`` pairs handed to the methods that read shadow
models (dmm and oracle_matching read the lower half of those), so the audit never judges a
method against its own oracle. Forget sets: ``canary`` (the 25 canaries) and ``class`` (every
training record of class 3: a coherent sub-population; the only one a whole-class method takes).
Rows ``none`` (the original, nothing forgotten) and ``retrain`` (a second set of retrained models,
the floor) are the controls. The last stdout line is one JSON object.

    python benchmarks/full_audit_methods.py                          # 16 runs a side: hours on 2 busy cores
    python benchmarks/full_audit_methods.py --runs 2 --train-records 800 --epochs 10 --forget canary  # ~20 min

``--setting mixed`` runs the same audit in the setting of benchmarks/audit_memorised_settings.py in
which a model retrained without the records PASSes (17 of 20 seeds there): ``--inputs mixed
--canaries 600 --forget 10 --width 1024 --label-smoothing 0.1``, its data, original and 32 audit
shadow models built by that script's ``replicate`` (600 uniform-noise images with random labels added
to scikit-learn's digits before the random 1,300 / 1,097 split; 10 of the training ones forgotten; a
64-1024-10 MLP, 60 epochs, Adam 3e-3, label smoothing 0.1, for every model). Each ``--seeds`` is its own
replicate (split, images, original, audit shadows); the ``--method-pairs`` method shadows, the further
originals and the retrained models are trained alike by :class:`MixedRecipe`. ``--forget``,
``--train-records``, ``--hidden``, ``--epochs`` and ``--audit-pairs`` belong to the MNIST setting and
are ignored. Time is also stated as CPU time and with the replacement after the purge charged: the
shadow models the method read that held a forgotten record must be retrained without it.

A method that reads shadow models is run for U-LiRA on the audit shadows reading only its own method
shadows, as the platform's audit does since 2026-12-07 (before, the audit skipped U-LiRA for such a
method, and ``--ulira-with-method-shadows`` added this verdict beside the one without it; the flag now
only repeats the verdict in the ``with_ulira_on_method_shadows`` column the README's tables A-C show). The equivalence margins carry the
plan's alpha (``planned_alpha_share``), as the runner's do.

    nice -n 10 python benchmarks/full_audit_methods.py --setting mixed --seeds 2 --runs 2 --threads 1 \
        --methods finetune,oracle_matching,dmm --model-cache .data/mixed-models   # a few minutes a seed
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "deletion_platform.settings")

import django  # noqa: E402

django.setup()  # settings only (the audit's constants); no database is used

from approximate_unlearning import FORGET_CLASS, ShadowModels, canary_sources  # noqa: E402

import audits.checks  # noqa: E402,F401  (registers every check)
import audits.unlearned_shadows as unlearned_shadows  # noqa: E402
from audits.checks.equivalence import DEFAULT_MARGIN, DeclaredMargins  # noqa: E402
from audits.checks.evidence import (  # noqa: E402
    ClassifierEvidence,
    ForgetReferenceFigures,
    ShadowProcedure,
    UtilityFigures,
)
from audits.checks.forgetting_quality import forgetting_quality  # noqa: E402
from audits.checks.klom import klom, margins  # noqa: E402
from audits.checks.membership import fit_shadow_reference  # noqa: E402
from audits.checks.registry import run_checks  # noqa: E402
from audits.checks.signals import standardise_on_held_out as standardise  # noqa: E402
from audits.checks.verdict import final_verdict, planned_alpha_share, with_family_alpha  # noqa: E402
from audits.forget_references import (  # noqa: E402
    BUDGET_FIELDS,
    PROBE_OTHERS,
    RELEARNING_EXAMPLES,
    REPRESENTATION_INPUTS,
    _batches,
    _derived_controls,
    forget_population,
    penultimate_features,
    relearning_recovery,
)
from audits.runner import (  # noqa: E402
    FAMILY_ALPHA,
    RETAIN_SAMPLE,
    RMIA_MIN_POPULATION,
    TEST_SAMPLE,
    _attack_scores,
    _sample,
    _scores_and_accuracy,
)
from workers.datasets.memory import TensorRecordDataset  # noqa: E402
from workers.datasets.reference import load_reference_split, materialise_reference, plant_canaries  # noqa: E402
from workers.training import RECIPES  # noqa: E402
from workers.training.membership import collate_records  # noqa: E402
from workers.unlearning.base import METHODS  # noqa: E402
from workers.unlearning.catalogue import METHOD_SPECS  # noqa: E402
from workers.unlearning.methods import load_all_methods  # noqa: E402

CANARIES = 25
DEFAULT_METHODS = "finetune,dmm,oracle_matching,laf,data_free_class"
DEVICE = "cpu"
SETTINGS = ("mnist", "mixed")
# audit_memorised_settings.py's mixed setting in which a retrained model PASSes (its options).
MIXED = {"inputs": "mixed", "canaries": 600, "forget": 10, "width": 1024, "epochs": 60, "steps": 0, "lr": 3e-3,
         "label_smoothing": 0.1, "weight_decay": 0.0, "duplicates": 1}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--forget", default="canary,class")
    parser.add_argument("--methods", default=DEFAULT_METHODS)
    parser.add_argument("--runs", type=int, default=16,
                        help="models per side for forgetting quality (its check needs 16) and KLoM")
    parser.add_argument("--train-records", type=int, default=2000)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--audit-pairs", type=int, default=16)
    parser.add_argument("--method-pairs", type=int, default=4)
    parser.add_argument("--method-config", default="{}", help='JSON: method -> config, e.g. {"dmm": {"epochs": 50}}')
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--setting", choices=SETTINGS, default="mnist",
                        help="mnist (default): MNIST canaries / class; mixed: audit_memorised_settings.py's mixed "
                             "setting, where a retrained model can PASS")
    parser.add_argument("--seeds", type=int, default=2, help="mixed: replicates (own split, original, shadows)")
    parser.add_argument("--ulira-with-method-shadows", action="store_true",
                        help="also audit dmm / oracle_matching with U-LiRA run on the audit shadows, the method "
                             "reading its own shadows (the audit skips U-LiRA for them); reported beside the verdict")
    parser.add_argument("--first-seed", type=int, default=0, help="mixed: the first replicate's seed")
    parser.add_argument("--model-cache", type=Path, default=None,
                        help="mixed: keep the replicate's original and audit shadows (safetensors) here and load "
                             "them when present (planted_audit.use_model_cache)")
    args = parser.parse_args()
    if args.runs < 1 or args.seeds < 1 or args.method_pairs < 2:
        parser.error("--runs and --seeds must be at least 1, --method-pairs at least 2")
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    load_all_methods()
    methods = [m for m in args.methods.split(",") if m]
    configs = json.loads(args.method_config)
    if args.setting == "mixed":
        whole_class = [m for m in methods if METHOD_SPECS.get(m).whole_class_only]
        if whole_class:  # the mixed setting forgets 10 scattered noise images, never a whole class
            raise SystemExit(f"--setting mixed forgets scattered records: {', '.join(whole_class)} forget(s) whole "
                             "classes only; leave them out")
        run_mixed(args, methods, configs)
        return
    recipe_config = {"architecture": {"name": "mlp", "config": {"in_features": 784, "num_classes": 10,
                                                                  "hidden": [args.hidden], "input_norm": "none"}},
                     "batch_size": 64, "lr": 3e-3, "epochs": args.epochs}

    def recipe(seed: int):
        return RECIPES.get("plain")({**recipe_config, "seed": seed})

    with tempfile.TemporaryDirectory() as scratch:
        path = materialise_reference("mnist", Path(scratch), seed=0)
        canaries = plant_canaries(path, kind="mislabel", count=CANARIES, seed=0)
        full = load_reference_split(path, "train").without(canary_sources(path))
        test = load_reference_split(path, "test")
    ordinary = [k for k in full.record_keys if k not in set(canaries)]
    chosen = np.random.default_rng(0).choice(len(ordinary), size=args.train_records, replace=False)
    train = in_memory(full.subset([ordinary[i] for i in sorted(chosen)] + list(canaries)))
    test = in_memory(test)
    labels = {key: int(target) for key, _, target in train}
    load = os.getloadavg()[0]
    print(f"# Full audit per method: MNIST reference, {len(train)} train records incl. {len(canaries)} mislabelled "
          f"canaries, {len(test)} test; MLP 784-{args.hidden}-10, {args.epochs} epochs; {args.runs} runs a side; "
          f"{2 * args.audit_pairs} audit shadows, {2 * args.method_pairs} method shadows; load {load:.1f} on "
          f"{os.cpu_count()} CPUs", flush=True)
    started = time.perf_counter()

    keys = list(train.record_keys)
    audit_shadows = []
    rng = np.random.default_rng(50_000)
    for pair in range(args.audit_pairs):
        first = rng.random(len(keys)) < 0.5
        for side, chosen_side in enumerate((first, ~first)):
            members = [k for k, c in zip(keys, chosen_side, strict=True) if c]
            model = recipe(50_000 + 2 * pair + side).train(train.subset(members)).model.eval()
            audit_shadows.append(SimpleNamespace(index=2 * pair + side, model=model, members=frozenset(members)))
    print(f"  audit shadows trained ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
    method_shadows = ShadowModels(recipe(0), train, pairs=args.method_pairs, seed=1)
    originals = [recipe(i).train(train).model.eval() for i in range(1, args.runs + 1)]
    print(f"  originals trained ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)

    results: dict[str, Any] = {}
    for forget_set in args.forget.split(","):
        forget_keys = (list(canaries) if forget_set == "canary"
                       else [k for k in keys if labels[k] == FORGET_CLASS and k not in set(canaries)])
        applicable = [m for m in methods if forget_set == "class" or not METHOD_SPECS.get(m).whole_class_only]
        results[forget_set] = run_forget_set(forget_set, forget_keys, train, test, labels, recipe, originals,
                                             audit_shadows, method_shadows, applicable, configs, args.runs, started,
                                             args.ulira_with_method_shadows)
    print(json.dumps({"benchmark": "full_audit_methods", "train_records": len(train), "runs": args.runs,
                      "audit_shadows": 2 * args.audit_pairs, "method_shadows": 2 * args.method_pairs,
                      "epochs": args.epochs, "hidden": args.hidden, "load_average_1min_at_start": round(load, 2),
                      "cpus": os.cpu_count(), "wall_seconds": round(time.perf_counter() - started, 1),
                      "forget_sets": results}, default=float))


class MixedRecipe:
    """The mixed setting's training (audit_memorised_settings.py's ``mlp`` and ``train``, as its
    ``replicate`` trains the original and the shadows) behind the recipe calls this benchmark and
    ``ShadowModels`` make: ``MixedRecipe(config).train(records).model``; ``config`` is :data:`MIXED`'s
    training options and the model's ``seed``."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.options = dict(config)
        self.config = SimpleNamespace(to_dict=lambda: dict(self.options))

    def train(self, records) -> SimpleNamespace:
        import audit_memorised_settings as memorised

        o = self.options
        x = torch.stack([records[i][1] for i in range(len(records))])
        y = torch.stack([records[i][2] for i in range(len(records))])
        model = memorised.train(memorised.mlp(o["width"], o["seed"]), x, y, o["epochs"], seed=o["seed"], lr=o["lr"],
                                label_smoothing=o["label_smoothing"], weight_decay=o["weight_decay"])
        return SimpleNamespace(model=model)


def run_mixed(args: argparse.Namespace, methods: list[str], configs: dict) -> None:
    """The full audit per method in audit_memorised_settings.py's mixed setting, one replicate per
    seed (its split, noise images, forget set, original and 32 audit shadows from ``replicate``);
    prints a table per seed, one over the seeds and, last, the JSON line."""
    import audit_memorised_settings as memorised

    from tests.audits.checks import planted_audit as planted

    planted.use_model_cache(args.model_cache)
    setting = argparse.Namespace(**MIXED)
    training = {k: MIXED[k] for k in ("width", "epochs", "lr", "label_smoothing", "weight_decay")}
    load = os.getloadavg()[0]
    print(f"# Full audit per method, mixed setting (audit_memorised_settings.py --inputs mixed --canaries "
          f"{MIXED['canaries']} --forget {MIXED['forget']} --width {MIXED['width']} --label-smoothing "
          f"{MIXED['label_smoothing']}): seeds {args.first_seed}-{args.first_seed + args.seeds - 1}; {args.runs} runs "
          f"a side; {planted.SHADOWS} audit shadows, {2 * args.method_pairs} method shadows; load {load:.1f} on "
          f"{os.cpu_count()} CPUs, {args.threads} torch thread(s)", flush=True)
    started = time.perf_counter()
    per_seed: dict[str, dict] = {}
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        rep, _ = memorised.replicate(seed, setting)
        torch.set_num_threads(args.threads)  # replicate sets one thread
        train = TensorRecordDataset(rep.keys, rep.x, rep.y)
        test = TensorRecordDataset([f"s{seed}-t{i:04d}" for i in range(len(rep.yt))], rep.xt, rep.yt)
        labels = {key: int(target) for key, _, target in train}
        audit_shadows = [SimpleNamespace(index=i, model=model, members=frozenset(
            k for k, held in zip(rep.keys, rep.shadow_members[i], strict=True) if held))
            for i, model in enumerate(rep.shadows)]

        def recipe(model_seed: int, seed: int = seed) -> MixedRecipe:
            # Apart from replicate's seeds (seed * 1000 + 100,000 + up to 500).
            return MixedRecipe({**training, "seed": 10_000_000 + 100_000 * seed + model_seed})

        method_shadows = ShadowModels(recipe(0), train, pairs=args.method_pairs, seed=1)
        originals = [rep.original] + [recipe(i).train(train).model.eval() for i in range(2, args.runs + 1)]
        print(f"  seed {seed}: replicate ready ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
        forget_keys = [rep.keys[i] for i in rep.canaries]
        per_seed[str(seed)] = run_forget_set(f"mixed, seed {seed}", forget_keys, train, test, labels, recipe,
                                             originals, audit_shadows, method_shadows, methods, configs, args.runs,
                                             started, args.ulira_with_method_shadows)
    summary = mixed_summary(per_seed)
    print_mixed_summary(summary, len(per_seed))
    print(json.dumps({"benchmark": "full_audit_methods", "setting": "mixed", "options": MIXED, "runs": args.runs,
                      "seeds": list(per_seed), "audit_shadows": planted.SHADOWS,
                      "method_shadows": 2 * args.method_pairs, "method_config": configs,
                      "load_average_1min_at_start": round(load, 2), "load_average_at_end": list(os.getloadavg()),
                      "cpus": os.cpu_count(), "threads": args.threads,
                      "wall_seconds": round(time.perf_counter() - started, 1), "summary": summary,
                      "per_seed": per_seed}, default=float))


def mixed_summary(per_seed: dict[str, dict]) -> dict[str, dict]:
    """Per row label over the seeds: the verdict counts, the checks that did not PASS (with the number
    of seeds), the mean accuracies and time fractions, and each seed's verdict."""
    labels = list(next(iter(per_seed.values()))["rows"])
    summary: dict[str, dict] = {}
    for label in labels:
        rows = [result["rows"][label] for result in per_seed.values()]
        not_pass: dict[str, int] = {}
        for r in rows:
            for check, verdict in r["checks"].items():
                if verdict not in ("PASS", "NOT_APPLICABLE"):
                    not_pass[f"{check} {verdict}"] = not_pass.get(f"{check} {verdict}", 0) + 1
        with_ulira = [r["with_ulira_on_method_shadows"] for r in rows if "with_ulira_on_method_shadows" in r]
        summary[label] = {
            "with_ulira_on_method_shadows": {
                "per_seed": [w["verdict"] for w in with_ulira],
                "unlearning_lira": [w["checks"].get("unlearning_lira", "-") for w in with_ulira]} if with_ulira else None,
            "verdicts": {v: sum(r["verdict"] == v for r in rows) for v in ("PASS", "FAIL", "INCONCLUSIVE")},
            "per_seed": [r["verdict"] for r in rows], "not_pass": not_pass,
            **{k: float(np.mean([r[k] for r in rows])) for k in (
                "forget_accuracy", "retain_accuracy", "test_accuracy", "time_fraction", "time_fraction_method_only",
                "cpu_time_fraction_method_only", "time_fraction_per_purge")},
        }
    return summary


def print_mixed_summary(summary: dict[str, dict], seeds: int) -> None:
    print(f"\n## Over {seeds} seed(s): mixed setting, 10 noise images forgotten\n")
    print("| method | full audit (PASS / FAIL / INCONCLUSIVE) | checks that did not PASS (seeds) | forget acc "
          "| retain acc | test acc | time / retrain: method only (CPU) | with the shadows it read | per purge "
          "(method + replacing its shadows that held a record) | with U-LiRA on the method's shadows |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label, r in summary.items():
        v = r["verdicts"]
        failing = ", ".join(f"{c} ({n})" for c, n in sorted(r["not_pass"].items())) or "-"
        w = r["with_ulira_on_method_shadows"]
        ulira = "-" if w is None else (f"{sum(v == 'PASS' for v in w['per_seed'])} PASS of {len(w['per_seed'])} "
                                       f"(U-LiRA: {', '.join(w['unlearning_lira'])})")
        print(f"| {label} | {v['PASS']} / {v['FAIL']} / {v['INCONCLUSIVE']} ({', '.join(r['per_seed'])}) "
              f"| {failing} | {r['forget_accuracy']:.3f} | {r['retain_accuracy']:.3f} | {r['test_accuracy']:.3f} "
              f"| {r['time_fraction_method_only']:.2f} ({r['cpu_time_fraction_method_only']:.2f}) "
              f"| {r['time_fraction']:.2f} | {r['time_fraction_per_purge']:.2f} | {ulira} |")
    sys.stdout.flush()


def run_forget_set(name, forget_keys, train, test, labels, recipe, originals, audit_shadows, method_shadows,
                   methods, configs, runs, started, ulira_with_method_shadows: bool = False) -> dict:
    forget_keys = sorted(forget_keys)
    forget, retain = train.subset(forget_keys), train.without(forget_keys)
    retrain_started, retrain_cpu_started = time.perf_counter(), time.process_time()
    references = [recipe(1000 + i).train(retain).model.eval() for i in range(1, runs + 1)]
    floor = [recipe(2000 + i).train(retain).model.eval() for i in range(1, runs + 1)]
    # One retrain's time: the mean over both sets of retrained models (a shared machine's load varies).
    retrain_seconds = (time.perf_counter() - retrain_started) / (2 * runs)
    retrain_cpu = (time.process_time() - retrain_cpu_started) / (2 * runs)
    print(f"  {name}: retrained models ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
    scale = AuditScale(forget_keys, train, test, retain, audit_shadows, labels)
    reference_margins = np.stack([forget_margins(m, forget) for m in references])
    reference_losses = np.stack([forget_losses(m, forget) for m in references])

    rows: dict[str, dict] = {}

    def row(label: str, models: list, seconds: float, method: str | None, method_seconds: float = 0.0,
            method_cpu: float = 0.0, replacement_seconds: float = 0.0) -> None:
        unlearned_margins = np.stack([forget_margins(m, forget) for m in models])
        quality = forgetting_quality(record_ids=forget_keys, unlearned_signals=np.stack(
            [forget_losses(m, forget) for m in models]), retrained_signals=reference_losses,
            higher_is_member=False, signal="loss")
        config = configs.get(method or "", {})
        # As the platform's audit (since 2026-12-07): a method that reads shadow models is run on the audit's
        # shadows for U-LiRA reading its own shadows (never the audit's).
        context = method_shadows.context(method) if method is not None and method_shadows.needed(method) else None
        verdict, checks = scale.audit(models[0], originals[0], method=method, config=config, references=floor,
                                      forget_set=name, ulira_context=context)
        extra = {}
        if ulira_with_method_shadows and context is not None:  # the earlier tables' column: now the verdict itself
            extra = {"with_ulira_on_method_shadows": {"verdict": verdict.verdict.value,
                                                      "checks": dict(verdict.checks), "reason": verdict.reason}}
        rows[label] = {
            "verdict": verdict.verdict.value, "checks": dict(verdict.checks), "reason": verdict.reason,
            "forgetting_quality": quality.score, "forgetting_quality_verdict": quality.verdict.value,
            "klom_p95": klom(unlearned_margins, reference_margins).percentiles["p95"],
            "forget_accuracy": accuracy(models[0], forget), "retain_accuracy": accuracy(models[0], retain),
            "test_accuracy": accuracy(models[0], test), "time_fraction": seconds / retrain_seconds,
            "time_fraction_method_only": method_seconds / retrain_seconds,
            "cpu_time_fraction_method_only": method_cpu / retrain_cpu,
            "time_fraction_per_purge": (method_seconds + replacement_seconds) / retrain_seconds, **extra,
        }
        print(f"  {name}: {label} audited: {rows[label]['verdict']} ({time.perf_counter() - started:.0f} s)",
              file=sys.stderr, flush=True)

    row("none", originals, 0.0, None)
    row("retrain", floor, retrain_seconds, None, retrain_seconds, retrain_cpu)
    for method in methods:
        models, seconds, cpu = [], 0.0, 0.0
        for i, original in enumerate(originals, start=1):
            context = method_shadows.context(method)
            cpu_started = time.process_time()
            model, result = METHODS.get(method)({**configs.get(method, {}), "seed": i}).unlearn(
                original, DataLoader(forget, batch_size=64, collate_fn=collate_records),
                DataLoader(retain, batch_size=64, shuffle=True, collate_fn=collate_records), **context)
            cpu += time.process_time() - cpu_started
            models.append(model.eval())
            seconds += result.wall_seconds
        read_seconds, replacement_seconds = shadow_charges(method_shadows, method, configs.get(method, {}),
                                                           forget_keys)
        row(method, models, seconds / runs + read_seconds, method, seconds / runs, cpu / runs, replacement_seconds)
    print_table(name, len(forget_keys), rows)
    return {"forget_records": len(forget_keys), "retrain_seconds": retrain_seconds, "rows": rows}


def shadow_charges(method_shadows: ShadowModels, method: str, config: dict,
                   forget_keys: list[str]) -> tuple[float, float]:
    """Seconds charged to ``method`` for the method shadow models: the training of those it read
    (its ``shadow_share`` of the pairs), and their replacement after the purge (those it read that
    trained on a forgotten record hold it, so they are purged and retrained without it, as the audit's
    own are). Each model at the mean training time of the method shadows; (0, 0) for a method that
    reads none."""
    if not method_shadows.needed(method) or not method_shadows.references:
        return 0.0, 0.0
    from workers.unlearning.references import shadow_split

    read = shadow_split(method_shadows.references, float(config.get("shadow_share", 0.5))).method
    holding = sum(1 for reference in read if reference.members & set(forget_keys))
    each = method_shadows.seconds / len(method_shadows.references)
    return len(read) * each, holding * each


class AuditScale:
    """What the audit runner scores once per forget set (the audit shadows on the forgotten records
    and the held-out sample), and the audit of one model against it (audits/runner.py's steps)."""

    def __init__(self, forget_keys, train, test, retain, shadows, labels) -> None:
        self.forget_keys, self.train, self.test, self.shadows, self.labels = forget_keys, train, test, shadows, labels
        retain_keys = _sample(list(retain.record_keys), RETAIN_SAMPLE, seed=0)
        test_keys = _sample(list(test.record_keys), TEST_SAMPLE, seed=0)
        self.forget_ds, self.retain_ds, self.test_ds = train.subset(forget_keys), train.subset(retain_keys), \
            test.subset(test_keys)
        self.shadow_in = np.array([[k in s.members for k in forget_keys] for s in shadows], dtype=bool)
        self.raw_shadow = np.array([_scores_and_accuracy(s.model, self.forget_ds, DEVICE)[0] for s in shadows])
        self.shadow_test = [_scores_and_accuracy(s.model, self.test_ds, DEVICE)[0] for s in shadows]
        self.shadow_z = np.array([standardise(sc, te)[0] for sc, te in zip(self.raw_shadow, self.shadow_test,
                                                                            strict=True)])
        self.shadow_test_z = np.array([standardise(te, te)[0] for te in self.shadow_test])
        self.reference = fit_shadow_reference(self.shadow_z, self.shadow_in, nonmember_shadow_scores=self.shadow_test_z)

    def audit(self, unlearned, original, *, method: str | None, config: dict, references: list, forget_set: str,
              ulira_context: dict | None = None):
        """The audit's verdict and checks for ``unlearned``; ``ulira_context``: the context (method
        shadows) with which U-LiRA runs a method that reads shadow models, as the platform's audit does."""
        f_after, _, _ = _scores_and_accuracy(unlearned, self.forget_ds, DEVICE)
        r_after, _, retain_acc = _scores_and_accuracy(unlearned, self.retain_ds, DEVICE)
        t_after, _, test_acc = _scores_and_accuracy(unlearned, self.test_ds, DEVICE)
        f_before, _, _ = _scores_and_accuracy(original, self.forget_ds, DEVICE)
        r_before, _, retain_before = _scores_and_accuracy(original, self.retain_ds, DEVICE)
        t_before, _, test_before = _scores_and_accuracy(original, self.test_ds, DEVICE)
        f_after_z, f_before_z = standardise(f_after, t_after)[0], standardise(f_before, t_before)[0]
        ulira = ulira_retain = None
        if method is not None:
            ulira, _ = self._ulira(method, config, f_after_z, ulira_context)
            ulira_retain = ulira.pop("retain", None) if ulira is not None else None
        attacked_forget, attacked_test, signal = _attack_scores(f_after, t_after, self.raw_shadow, self.shadow_in,
                                                                self.shadow_test)
        raw = None
        if len(self.test_ds) >= RMIA_MIN_POPULATION:
            raw = {"unlearned_conf": f_after, "original_conf": f_before, "reference_conf": self.raw_shadow,
                   "population_unlearned_conf": t_after, "population_original_conf": t_before,
                   "population_reference_conf": np.array(self.shadow_test)}
        evidence = ClassifierEvidence(
            record_ids=tuple(self.forget_keys), forget_scores=f_after_z, original_forget_scores=f_before_z,
            shadow_reference=self.reference,
            equivalence_margins=DeclaredMargins.symmetric(DEFAULT_MARGIN, declared_by="the platform default",
                                                          alpha=planned_alpha_share("classifier")),
            attack_forget_scores=attacked_forget, attack_nonmember_scores=attacked_test, attack_signal=signal,
            retain_scores=r_after, original_retain_scores=r_before, nonmember_scores=t_after,
            original_nonmember_scores=t_before,
            utility=UtilityFigures(metric="accuracy", retain=retain_acc, test=test_acc, original_retain=retain_before,
                                   original_test=test_before),
            nonmember_null_scores=standardise(t_after, t_after)[0],
            original_nonmember_null_scores=standardise(t_before, t_before)[0],
            shadow_procedure=ShadowProcedure(True, "the model's recipe and configuration on random halves",
                                             "the plain recipe on every training record"),
            raw_confidences=raw, out_shadow_counts=(~self.shadow_in).sum(axis=0), shadow_models=len(self.shadows),
            min_out_shadows=django.conf.settings.AUDIT_MIN_OUT_SHADOWS, ulira=ulira, ulira_retain=ulira_retain,
            forget_references=self._forget_references(original, unlearned, method, config, references))
        checks = run_checks(with_family_alpha(evidence, level=FAMILY_ALPHA))
        return final_verdict(guarantee_class="approximate", checks=checks), checks

    def _ulira(self, method: str, config: dict, target_z, context: dict | None = None):
        """U-LiRA exactly as the audit runs it (audits.unlearned_shadows), the shadows held in memory;
        a method that reads shadow models runs with ``context`` (its own shadows, the method shadows)."""
        if METHOD_SPECS.get(method).needs and context is None:
            return None, {"ran": False}  # no method shadows to hand it
        def unlearn_shadow(unlearning, run, held_keys, *, train, seed_offset, device, progress, before=None,
                           context_cache=None):
            retain = sorted(k for k in run.members if k not in set(held_keys))
            cfg = dict(unlearning["config"])
            cfg["seed"] = int(cfg.get("seed", 0)) + 1 + seed_offset
            measured = before(run.model) if before is not None else None
            model, _ = METHODS.get(unlearning["method"])(cfg).unlearn(
                run.model, DataLoader(train.subset(sorted(held_keys)), batch_size=64, collate_fn=collate_records),
                DataLoader(train.subset(retain), batch_size=64, collate_fn=collate_records), device=device,
                progress=progress, **(context or {}))
            return model.eval(), set(run.members), measured

        unlearned_shadows._unlearned_shadow = unlearn_shadow
        return unlearned_shadows.unlearned_shadow_runs(
            unlearning={"method": method, "config": dict(config)}, shadows=self.shadows, shadow_in=self.shadow_in,
            shadow_forget=self.raw_shadow, shadow_test=self.shadow_test, target_scores=target_z,
            forget_keys=self.forget_keys, train=self.train, forget_ds=self.forget_ds, test_ds=self.test_ds,
            device=DEVICE, progress=lambda *a: None, retain_ds=self.retain_ds,
            score=lambda model, records: _scores_and_accuracy(model, records, DEVICE)[0])

    def _forget_references(self, original, unlearned, method, config, references) -> ForgetReferenceFigures:
        """As audits.forget_references.forget_reference_figures: the references (models retrained
        without the forget set, here the floor's first ones) and derived controls at the method's
        budget, for a class or sub-population; NOT_APPLICABLE for scattered records."""
        settings = django.conf.settings
        member_labels = [self.labels[k] for k in self.train.record_keys]
        population = forget_population(forget_labels=[self.labels[k] for k in self.forget_keys],
                                       member_labels=member_labels)
        if population.kind == "records":
            return ForgetReferenceFigures(not_applicable=f"Not a class or sub-population: {population.statement}.")
        refs = references[:settings.AUDIT_FORGET_REFERENCES]
        budget = {k: v for k, v in config.items() if k in BUDGET_FIELDS} if "epochs" in config else {}
        retain = self.train.without(self.forget_keys)
        controls = _derived_controls(original, self.forget_ds, retain, budget=budget,
                                     count=settings.AUDIT_FORGET_CONTROLS, device=DEVICE, progress=lambda *a: None)
        forgotten = _batches(self.train, _sample(self.forget_keys, REPRESENTATION_INPUTS, seed=0))
        test_labels = {k: int(t) for k, _, t in self.test}
        others = _batches(self.test, _sample([k for k, y in test_labels.items() if y != population.label],
                                             PROBE_OTHERS, seed=0))
        inputs = forgotten + others
        is_forget = np.r_[np.ones(sum(len(t) for _, t in forgotten), dtype=bool),
                          np.zeros(sum(len(t) for _, t in others), dtype=bool)]
        candidates = [k for k, y in test_labels.items() if y == population.label]
        chosen = _batches(self.test, _sample(candidates, RELEARNING_EXAMPLES, seed=0))
        examples = (torch.cat([x for x, _ in chosen]), torch.cat([y for _, y in chosen]))
        return ForgetReferenceFigures(
            original_representation=penultimate_features(original, inputs, device=DEVICE),
            unlearned_representation=penultimate_features(unlearned, inputs, device=DEVICE),
            reference_representations=tuple(penultimate_features(m, inputs, device=DEVICE) for m in refs),
            control_representations=tuple(penultimate_features(m, inputs, device=DEVICE) for m in controls),
            is_forget=is_forget, unlearned_recovery=relearning_recovery(unlearned, examples, forgotten, device=DEVICE),
            reference_recovery=tuple(relearning_recovery(m, examples, forgotten, device=DEVICE) for m in refs))


def in_memory(dataset) -> TensorRecordDataset:
    """The records of ``dataset`` as tensors held in memory (every model here reads them many times;
    the image adapter decodes each item on every read)."""
    items = [dataset[i] for i in range(len(dataset))]
    return TensorRecordDataset([k for k, _, _ in items], torch.stack([x for _, x, _ in items]),
                               torch.stack([y for _, _, y in items]), modality=dataset.modality)


@torch.no_grad()
def _logits(model, dataset) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    out, targets = [], []
    for _keys, inputs, y in DataLoader(dataset, batch_size=512, collate_fn=collate_records):
        out.append(model(inputs).numpy())
        targets.append(y.numpy())
    return np.concatenate(out), np.concatenate(targets)


def forget_margins(model, dataset) -> np.ndarray:
    return margins(*_logits(model, dataset))


def forget_losses(model, dataset) -> np.ndarray:
    z, y = _logits(model, dataset)
    z = z - z.max(axis=1, keepdims=True)
    return -(z[np.arange(len(y)), y] - np.log(np.exp(z).sum(axis=1)))


def accuracy(model, dataset) -> float:
    z, y = _logits(model, dataset)
    return float((z.argmax(1) == y).mean())


def print_table(name: str, records: int, rows: dict[str, dict]) -> None:
    print(f"\n## Forget set: {name} ({records} records)\n")
    print("| method | full audit | checks that did not PASS | forgetting quality | KLoM p95 (forget) | forget acc "
          "| retain acc | test acc | time / retrain (method only) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, r in rows.items():
        failing = ", ".join(f"{c} {v}" for c, v in r["checks"].items()
                            if v not in ("PASS", "NOT_APPLICABLE")) or "-"
        quality = "-" if r["forgetting_quality"] is None else f"{r['forgetting_quality']:.3f}"
        print(f"| {label} | {r['verdict']} | {failing} | {quality} "
              f"({r['forgetting_quality_verdict']}) | {r['klom_p95']:.2f} | {r['forget_accuracy']:.3f} "
              f"| {r['retain_accuracy']:.3f} | {r['test_accuracy']:.3f} | {r['time_fraction']:.2f} "
              f"({r['time_fraction_method_only']:.2f}) |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
