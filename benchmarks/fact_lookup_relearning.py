"""Fact-lookup localisation against its baselines under relearning, at the same forgetting level,
over seeds, on tiny GPT-2 models (arXiv 2410.12949's claim: unlearning localised to the fact-lookup
MLPs is relearned less than unlearning of every layer).

The paper's protocol, as its code runs it (``finetuning_scripts/localized_finetuning_script_sports.py``
and the ``results_rebuttal/*/parent_config.json`` of github.com/magikarp01/mechanistic-unlearning):
every localisation trains the same epochs (50) with the same loss (``-log(1 - p(answer))`` plus the
maintained facts' and the Pile's NLL), but with *its own* learning rate and forget weight, picked per
localisation from a sweep by the best sum of forget, maintain and general scores; baselines of the
same size (output-tracing, random components, random MLPs) get the fact-lookup localisation's
parameter count, ``all_mlps`` and ``nonlocalized`` everything. Relearning: a LoRA (rank 512, alpha 32,
lr 2e-4 with cosine decay, 20 steps) on half of the forgotten facts plus the maintained facts and the
Pile; robustness is the forget accuracy on the *other* half.

Here, per seed (the model's initialisation, which people are forgotten and their numbers): a tiny
GPT-2 over-fitted on ``--forget`` + ``--retain`` synthetic records ("NAME lives at N Oak Road, phone
555-NNNN."). The forgetting target is the memorised model's answer-token NLL on ``--held-out``
records it never saw (the answers as unknown as a stranger's). Each localisation unlearns at each of
``--lrs`` and keeps one (:func:`pick_trial`: beyond the target with the least damage to the kept
records, the paper's per-localisation choice): with ``--protocol stop_at_target`` every run stops at
the first epoch that reaches the target (the same forgetting level), with ``full_budget`` every run
trains all ``--max-epochs`` (the paper's equal epochs). Then relearning:
``--relearn-steps`` full-weight AdamW steps at ``--relearn-lr`` on the first half of the forgotten
records plus the kept ones (the paper's relearning batch without the Pile); measured on the other
half: answer-token NLL and top-1 answer accuracy, and recovery ``(after unlearning - after
relearning) / (after unlearning - memorised)`` of that NLL.

    nice -n 10 python benchmarks/fact_lookup_relearning.py --seeds 0 1 2 3 4 --layers 2 4

Prints one line per run, a summary per layer count; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import workers.unlearning.lm  # noqa: E402,F401  (registers the methods)
from workers.language_models import byte_tokenizer, tiny_gpt2  # noqa: E402
from workers.unlearning.base import METHODS  # noqa: E402
from workers.unlearning.lm.data import lm_batches  # noqa: E402
from workers.unlearning.lm.fact_lookup import answer_token_accuracy, answer_token_nll, mark_answers  # noqa: E402
from workers.unlearning.lm.losses import average_token_nll, mean_token_nll  # noqa: E402

FIRST = ["Alice", "Bruno", "Chloe", "Dmitri", "Elena", "Farid", "Greta", "Hugo", "Ines", "Jonas", "Kira",
         "Liam", "Mona", "Nils", "Olga", "Pablo", "Quinn", "Rosa", "Sven", "Tara"]
LAST = ["Moreau", "Keller", "Novak", "Ivanov", "Rossi", "Haddad", "Lind", "Berg", "Duarte", "Weber", "Sato",
        "Walsh", "Aziz", "Dahl", "Petrov", "Ruiz"]
LOCALISATIONS = ("fact_lookup", "random", "all_mlps", "all_layers")


def synthetic_records(count: int, seed: int) -> list[tuple[str, str]]:
    """``count`` ``(key, text)`` records of distinct people, names and numbers drawn from ``seed``."""
    rng = random.Random(seed)
    names = rng.sample([f"{f} {s}" for f in FIRST for s in LAST], count)
    return [(f"rec-{i:02d}", f"{name} lives at {rng.randint(10, 99)} Oak Road, phone 555-{rng.randint(1000, 9999)}.")
            for i, name in enumerate(names)]


def memorised(texts: list[tuple[str, str]], tokenizer: Any, *, n_layer: int, seed: int, steps: int) -> Any:
    """A tiny GPT-2 (``n_layer`` layers, 64 wide) over-fitted on ``texts`` (full batch, Adam 3e-3)."""
    (batch,) = lm_batches(tokenizer, texts, max_length=64, batch_size=len(texts))
    model = tiny_gpt2(seed=seed, n_layer=n_layer)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _ in range(steps):
            loss = mean_token_nll(model, batch)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return model.eval()


def relearned(model: Any, relearn: list[dict[str, Any]], kept: list[dict[str, Any]], *, steps: int, lr: float,
              seed: int) -> Any:
    """The relearning attack: ``steps`` full-weight AdamW steps on the NLL of the relearned records
    plus that of the kept ones (the paper's relearning batch, without its Pile term)."""
    attacker = copy.deepcopy(model).train()
    optimiser = torch.optim.AdamW(attacker.parameters(), lr=lr, weight_decay=0.0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for step in range(steps):
            loss = mean_token_nll(attacker, relearn[step % len(relearn)]) + mean_token_nll(attacker, kept[step % len(kept)])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return attacker.eval()


def one_seed(seed: int, n_layer: int, args: argparse.Namespace, tokenizer: Any) -> list[dict[str, Any]]:
    records = synthetic_records(args.forget + args.retain + args.held_out, seed)
    forget = records[: args.forget]
    retain = records[args.forget: args.forget + args.retain]
    held_out = records[args.forget + args.retain:]
    half = args.forget // 2

    def batches(pairs: list[tuple[str, str]], size: int = 4) -> list[dict[str, Any]]:
        return lm_batches(tokenizer, pairs, max_length=64, batch_size=size)

    forget_b, retain_b, held_b = batches(forget), batches(retain), batches(held_out)
    relearn_b, measured_b = batches(forget[:half]), batches(forget[half:])
    for marked in (held_b, measured_b):
        mark_answers(marked, retain_b)
    model = memorised(forget + retain, tokenizer, n_layer=n_layer, seed=seed, steps=args.memorise_steps)
    target = answer_token_nll(model, held_b)
    memorised_nll = answer_token_nll(model, measured_b)
    rows = []
    for localisation in LOCALISATIONS:
        trials, models = [], []
        for lr in args.rate.get(localisation, args.lrs):
            config = {"lr": lr, "epochs": args.max_epochs, "localisation": localisation, "seed": seed}
            if args.protocol == "stop_at_target":
                config["stop_at_answer_nll"] = target
            t0 = time.perf_counter()
            unlearned, result = METHODS.get("fact_lookup")(config).unlearn(model, forget_b, retain_b)
            trials.append({"lr": lr, "steps": result.steps, "unlearning_s": time.perf_counter() - t0,
                           "reached_target": result.details["answer_token_nll_after"] >= target,
                           "forget_answer_nll": result.details["answer_token_nll_after"],
                           "retain_nll": average_token_nll(unlearned, retain_b)})
            models.append((unlearned, result))
        chosen = pick_trial(trials)
        unlearned, result = models[chosen]
        after_unlearning = answer_token_nll(unlearned, measured_b)
        attacked = {steps: relearned(unlearned, relearn_b, retain_b, steps=steps, lr=args.relearn_lr, seed=seed)
                    for steps in args.relearn_steps}
        row = {
            "seed": seed, "n_layer": n_layer, "localisation": localisation,
            "trained_mlp_layers": result.details["trained_mlp_layers"],
            "trainable_parameters": result.details["trainable_parameters"],
            **trials[chosen],
            "answer_target": target,
            "held_out_nll": average_token_nll(unlearned, held_b),
            "measured_answer_nll": {"memorised": memorised_nll, "unlearned": after_unlearning,
                                    **{f"relearned_{k}": answer_token_nll(m, measured_b) for k, m in attacked.items()}},
            "measured_answer_accuracy": {"memorised": answer_token_accuracy(model, measured_b),
                                         "unlearned": answer_token_accuracy(unlearned, measured_b),
                                         **{f"relearned_{k}": answer_token_accuracy(m, measured_b)
                                            for k, m in attacked.items()}},
            "recovery": {str(k): recovery(memorised_nll, after_unlearning, answer_token_nll(m, measured_b))
                         for k, m in attacked.items()},
            "trials": trials,
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def pick_trial(trials: list[dict[str, Any]]) -> int:
    """Index of the learning-rate trial to keep (the paper picks a rate per localisation by the best
    forget plus maintain score): among trials that reached the forgetting target, the one with the
    lowest retain NLL; when none did, the one that forgot most (highest forget answer NLL)."""
    if not trials:
        raise ValueError("no trials to pick from")
    reached = [i for i, t in enumerate(trials) if t["reached_target"]]
    if reached:
        return min(reached, key=lambda i: trials[i]["retain_nll"])
    return max(range(len(trials)), key=lambda i: trials[i]["forget_answer_nll"])


def recovery(memorised_nll: float, after_unlearning: float, after_relearning: float) -> float | None:
    """The share of the unlearning's NLL rise that relearning undid: 0 none, 1 all; None when
    unlearning raised the NLL by under 0.05 nats (nothing to recover)."""
    rise = after_unlearning - memorised_nll
    return (after_unlearning - after_relearning) / rise if rise > 0.05 else None


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per layer count and relearning length: per localisation the median recovery, relearned answer
    NLL and accuracy, and in how many seeds fact lookup recovered less than each baseline (of the
    seeds where both reached the forgetting target)."""
    out: dict[str, Any] = {}
    for n_layer in sorted({r["n_layer"] for r in rows}):
        mine = [r for r in rows if r["n_layer"] == n_layer]
        by = {(r["seed"], r["localisation"]): r for r in mine}
        seeds = sorted({r["seed"] for r in mine})
        for steps in mine[0]["recovery"]:
            entry: dict[str, Any] = {}
            for loc in LOCALISATIONS:
                found = [by[(s, loc)] for s in seeds if (s, loc) in by]
                entry[loc] = {
                    "median_recovery": _median([r["recovery"][steps] for r in found]),
                    "median_relearned_answer_nll": _median([r["measured_answer_nll"][f"relearned_{steps}"] for r in found]),
                    "median_relearned_answer_accuracy": _median(
                        [r["measured_answer_accuracy"][f"relearned_{steps}"] for r in found]),
                    "median_retain_nll": _median([r["retain_nll"] for r in found]),
                    "reached_target": sum(r["reached_target"] for r in found),
                }
            for loc in LOCALISATIONS[1:]:
                pairs = [(by[(s, "fact_lookup")]["recovery"][steps], by[(s, loc)]["recovery"][steps]) for s in seeds
                         if by[(s, "fact_lookup")]["reached_target"] and by[(s, loc)]["reached_target"]]
                pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
                entry[f"fact_lookup_recovers_less_than_{loc}"] = f"{sum(a < b for a, b in pairs)}/{len(pairs)}"
            out[f"{n_layer} layers, {steps} relearning steps"] = entry
    return out


def _median(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.median(kept) if kept else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--layers", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--forget", type=int, default=8)
    parser.add_argument("--retain", type=int, default=16)
    parser.add_argument("--held-out", type=int, default=8)
    parser.add_argument("--memorise-steps", type=int, default=150)
    parser.add_argument("--max-epochs", type=int, default=60)
    parser.add_argument("--protocol", choices=("stop_at_target", "full_budget"), default="stop_at_target",
                        help="stop_at_target: each run stops at the first epoch that reaches the answer target; "
                             "full_budget: every run trains all --max-epochs (the paper's 50 epochs), the rate "
                             "kept is the one that ends beyond the target with the lowest retain NLL")
    parser.add_argument("--relearn-steps", type=int, nargs="+", default=[5, 20])
    parser.add_argument("--relearn-lr", type=float, default=1e-3)
    parser.add_argument("--lrs", type=float, nargs="+", default=[3e-4, 1e-3, 3e-3],
                        help="learning rates tried per localisation (the one kept: pick_trial)")
    parser.add_argument("--rate", nargs="+", default=[], metavar="LOCALISATION=LR",
                        help="one fixed rate for a localisation instead of the --lrs grid")
    args = parser.parse_args()
    try:
        args.rate = {loc: [float(lr)] for loc, lr in (option.split("=") for option in args.rate)}
    except ValueError:
        raise SystemExit(f"--rate: expected LOCALISATION=LR options, got {args.rate}") from None
    if set(args.rate) - set(LOCALISATIONS):
        raise SystemExit(f"--rate: unknown localisation in {sorted(args.rate)}; known: {', '.join(LOCALISATIONS)}")
    torch.set_num_threads(1)
    tokenizer = byte_tokenizer()
    started = time.perf_counter()
    rows = [row for n_layer in args.layers for seed in args.seeds for row in one_seed(seed, n_layer, args, tokenizer)]
    result = summary(rows)
    print(json.dumps(result, indent=1))
    print(json.dumps({"benchmark": "fact_lookup_relearning", "settings": {k: v for k, v in vars(args).items()},
                      "summary": result, "total_s": time.perf_counter() - started, "rows": rows}))


if __name__ == "__main__":
    main()
