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
from audits.checks.verdict import final_verdict, with_family_alpha  # noqa: E402
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
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    load_all_methods()
    methods = [m for m in args.methods.split(",") if m]
    configs = json.loads(args.method_config)
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
                                             audit_shadows, method_shadows, applicable, configs, args.runs, started)
    print(json.dumps({"benchmark": "full_audit_methods", "train_records": len(train), "runs": args.runs,
                      "audit_shadows": 2 * args.audit_pairs, "method_shadows": 2 * args.method_pairs,
                      "epochs": args.epochs, "hidden": args.hidden, "load_average_1min_at_start": round(load, 2),
                      "cpus": os.cpu_count(), "wall_seconds": round(time.perf_counter() - started, 1),
                      "forget_sets": results}, default=float))


def run_forget_set(name, forget_keys, train, test, labels, recipe, originals, audit_shadows, method_shadows,
                   methods, configs, runs, started) -> dict:
    forget_keys = sorted(forget_keys)
    forget, retain = train.subset(forget_keys), train.without(forget_keys)
    retrain_started = time.perf_counter()
    references = [recipe(1000 + i).train(retain).model.eval() for i in range(1, runs + 1)]
    retrain_seconds = (time.perf_counter() - retrain_started) / runs
    floor = [recipe(2000 + i).train(retain).model.eval() for i in range(1, runs + 1)]
    print(f"  {name}: retrained models ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
    scale = AuditScale(forget_keys, train, test, retain, audit_shadows, labels)
    reference_margins = np.stack([forget_margins(m, forget) for m in references])
    reference_losses = np.stack([forget_losses(m, forget) for m in references])

    rows: dict[str, dict] = {}

    def row(label: str, models: list, seconds: float, method: str | None, method_seconds: float = 0.0) -> None:
        unlearned_margins = np.stack([forget_margins(m, forget) for m in models])
        quality = forgetting_quality(record_ids=forget_keys, unlearned_signals=np.stack(
            [forget_losses(m, forget) for m in models]), retrained_signals=reference_losses,
            higher_is_member=False, signal="loss")
        verdict, checks = scale.audit(models[0], originals[0], method=method, config=configs.get(method or "", {}),
                                      references=floor, forget_set=name)
        rows[label] = {
            "verdict": verdict.verdict.value, "checks": dict(verdict.checks), "reason": verdict.reason,
            "forgetting_quality": quality.score, "forgetting_quality_verdict": quality.verdict.value,
            "klom_p95": klom(unlearned_margins, reference_margins).percentiles["p95"],
            "forget_accuracy": accuracy(models[0], forget), "retain_accuracy": accuracy(models[0], retain),
            "test_accuracy": accuracy(models[0], test), "time_fraction": seconds / retrain_seconds,
            "time_fraction_method_only": method_seconds / retrain_seconds,
        }
        print(f"  {name}: {label} audited: {rows[label]['verdict']} ({time.perf_counter() - started:.0f} s)",
              file=sys.stderr, flush=True)

    row("none", originals, 0.0, None)
    row("retrain", floor, retrain_seconds, None, retrain_seconds)
    for method in methods:
        models, seconds = [], 0.0
        for i, original in enumerate(originals, start=1):
            context = method_shadows.context(method)
            model, result = METHODS.get(method)({**configs.get(method, {}), "seed": i}).unlearn(
                original, DataLoader(forget, batch_size=64, collate_fn=collate_records),
                DataLoader(retain, batch_size=64, shuffle=True, collate_fn=collate_records), **context)
            models.append(model.eval())
            seconds += result.wall_seconds
        row(method, models, seconds / runs + method_shadows.seconds_for(method), method, seconds / runs)
    print_table(name, len(forget_keys), rows)
    return {"forget_records": len(forget_keys), "retrain_seconds": retrain_seconds, "rows": rows}


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

    def audit(self, unlearned, original, *, method: str | None, config: dict, references: list, forget_set: str):
        f_after, _, _ = _scores_and_accuracy(unlearned, self.forget_ds, DEVICE)
        r_after, _, retain_acc = _scores_and_accuracy(unlearned, self.retain_ds, DEVICE)
        t_after, _, test_acc = _scores_and_accuracy(unlearned, self.test_ds, DEVICE)
        f_before, _, _ = _scores_and_accuracy(original, self.forget_ds, DEVICE)
        r_before, _, retain_before = _scores_and_accuracy(original, self.retain_ds, DEVICE)
        t_before, _, test_before = _scores_and_accuracy(original, self.test_ds, DEVICE)
        f_after_z, f_before_z = standardise(f_after, t_after)[0], standardise(f_before, t_before)[0]
        ulira = ulira_retain = None
        if method is not None:
            ulira, _ = self._ulira(method, config, f_after_z)
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
            equivalence_margins=DeclaredMargins.symmetric(DEFAULT_MARGIN, declared_by="the platform default"),
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

    def _ulira(self, method: str, config: dict, target_z):
        """U-LiRA exactly as the audit runs it (audits.unlearned_shadows), the shadows held in memory."""
        if METHOD_SPECS.get(method).needs:
            return None, {"ran": False}  # the audit does not run a method that reads shadows on a shadow
        def unlearn_shadow(unlearning, run, held_keys, *, train, seed_offset, device, progress, before=None):
            retain = sorted(k for k in run.members if k not in set(held_keys))
            cfg = dict(unlearning["config"])
            cfg["seed"] = int(cfg.get("seed", 0)) + 1 + seed_offset
            measured = before(run.model) if before is not None else None
            model, _ = METHODS.get(unlearning["method"])(cfg).unlearn(
                run.model, DataLoader(train.subset(sorted(held_keys)), batch_size=64, collate_fn=collate_records),
                DataLoader(train.subset(retain), batch_size=64, collate_fn=collate_records), device=device,
                progress=progress)
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
