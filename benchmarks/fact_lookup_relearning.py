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

``--world facts`` (the hypothesis that the records above are memorised as sequences, with no
lookup for the localisation to find): ``--people`` people, each with a city, a sport and an employer
(12 one-word values each), every fact a word-level text through templates of its attribute
("resident NAME lives in Lima", "citizen NAME resides within Lima", "neighbour NAME hometown is
Lima"); a ``--width``-wide GPT-2 trained on the first two templates of every known person and the
third of every second kept person, so that the forgotten people's third template, never trained,
is answered only by a lookup (``world`` in each row: the kept people's accuracy on a template never
trained for them). ``--forget`` people are unlearned on the first two templates, relearning uses
half of them, the other half is measured on those templates and on the third (keys ending in
``_other_template``: the paper's other prompt formats); the target is the answer NLL of
``--held-out`` strangers. The method runs unchanged with ``specific_share`` set to
``--specific-share`` (its default 0.25 counts these template words as record-specific).

``--world pretrained`` (the paper's setting: facts a pretrained model knows): SmolLM2-135M, not
trained, and the country capitals it knows (its top-1 first answer token right under both templates
"The capital of X is the city of Y" and "The capital of X is Y"); ``--forget`` of them unlearned and
relearned on the first template, ``--retain`` kept on both, the other half of the forgotten measured
on both (the second never in the forget loss). The target is the model's answer NLL on ``--held-out``
capitals it knows under neither template: a fact it does not know, the same level as the other
worlds' strangers (the capital under another country's prompt would ask for a confidently wrong
model, not an ignorant one). The method runs unchanged at its default ``specific_share``.

    nice -n 10 python benchmarks/fact_lookup_relearning.py --seeds 0 1 2 3 4 --layers 2 4
    nice -n 10 python benchmarks/fact_lookup_relearning.py --world facts --seeds 0 1 2 3 --layers 4
    nice -n 10 python benchmarks/fact_lookup_relearning.py --world pretrained --cache-dir DIR --seeds 0 1 2

Prints one line per run, a summary per layer count; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import copy
import functools
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
from workers.language_models import byte_tokenizer, load_smollm2, tiny_gpt2  # noqa: E402
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
    return compare(model, forget_b, retain_b, held_b, relearn_b, {"": measured_b}, seed=seed, n_layer=n_layer,
                   args=args)


def compare(model: Any, forget_b: list[dict[str, Any]], retain_b: list[dict[str, Any]],
            held_b: list[dict[str, Any]], relearn_b: list[dict[str, Any]], measured: dict[str, list[dict[str, Any]]],
            *, seed: int, n_layer: int, args: argparse.Namespace, config: dict[str, Any] | None = None,
            extra: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every localisation unlearns ``forget_b`` from ``model`` (at each of its rates, one kept by
    :func:`pick_trial`), then is relearned on ``relearn_b``; one row each. ``held_b`` (answers
    marked) sets the forgetting target; ``measured`` names the marked batches measured (the key is
    the suffix of the row's measurement keys, "" for the main set); ``config`` adds method settings."""
    target = answer_token_nll(model, held_b)
    memorised_nll = {name: answer_token_nll(model, b) for name, b in measured.items()}
    rows = []
    for localisation in LOCALISATIONS:
        trials, models = [], []
        for lr in args.rate.get(localisation, args.lrs):
            settings = {"lr": lr, "epochs": args.max_epochs, "localisation": localisation, "seed": seed, **(config or {})}
            if args.protocol == "stop_at_target":
                settings["stop_at_answer_nll"] = target
            t0 = time.perf_counter()
            unlearned, result = METHODS.get("fact_lookup")(settings).unlearn(model, forget_b, retain_b)
            trials.append({"lr": lr, "steps": result.steps, "unlearning_s": time.perf_counter() - t0,
                           "reached_target": result.details["answer_token_nll_after"] >= target,
                           "forget_answer_nll": result.details["answer_token_nll_after"],
                           "retain_nll": average_token_nll(unlearned, retain_b)})
            models.append((unlearned, result))
        chosen = pick_trial(trials)
        unlearned, result = models[chosen]
        attacked = {steps: relearned(unlearned, relearn_b, retain_b, steps=steps, lr=args.relearn_lr, seed=seed)
                    for steps in args.relearn_steps}
        row = {
            "seed": seed, "n_layer": n_layer, "localisation": localisation,
            "trained_mlp_layers": result.details["trained_mlp_layers"],
            "trainable_parameters": result.details["trainable_parameters"],
            **trials[chosen],
            "answer_target": target,
            "held_out_nll": average_token_nll(unlearned, held_b),
            **(extra or {}),
        }
        if extra is not None:
            row["localisation_extraction_layer"] = result.details["localisation_extraction_layer"]
        for name, measured_b in measured.items():
            after_unlearning = answer_token_nll(unlearned, measured_b)
            relearned_nll = {k: answer_token_nll(m, measured_b) for k, m in attacked.items()}
            row.update({
                f"measured_answer_nll{name}": {"memorised": memorised_nll[name], "unlearned": after_unlearning,
                                               **{f"relearned_{k}": v for k, v in relearned_nll.items()}},
                f"measured_answer_accuracy{name}": {"memorised": answer_token_accuracy(model, measured_b),
                                                    "unlearned": answer_token_accuracy(unlearned, measured_b),
                                                    **{f"relearned_{k}": answer_token_accuracy(m, measured_b)
                                                       for k, m in attacked.items()}},
                f"recovery{name}": {str(k): recovery(memorised_nll[name], after_unlearning, v)
                                    for k, v in relearned_nll.items()},
            })
        row["trials"] = trials
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


# --world facts: people with attributes stated through several templates, each a word-level text
# "<w1> FIRST LAST <w2> <w3> VALUE" whose template words are its own, so that a position's bigram is
# template (shared by a template's texts) or record-specific (the name, the word after it, the value).
ATTRIBUTES = {
    "city": ["Paris", "Lagos", "Lima", "Oslo", "Quito", "Dakar", "Hanoi", "Perth", "Turin", "Porto", "Cairo", "Delhi"],
    "sport": ["tennis", "rugby", "chess", "rowing", "judo", "hockey", "golf", "polo", "squash", "karate", "fencing",
              "curling"],
    "employer": ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay", "Stark", "Wayne", "Cyberdyne", "Tyrell",
                 "Soylent", "Wonka"],
}
# Per attribute, its templates; the last one is never in the unlearning loss nor the relearning batch
# (the paper's other prompt formats), and is trained only for the people who teach it.
TEMPLATES = {
    "city": [("resident", "lives", "in"), ("citizen", "resides", "within"), ("neighbour", "hometown", "is")],
    "sport": [("athlete", "plays", "sport"), ("player", "enjoys", "playing"), ("fan", "favourite", "game")],
    "employer": [("worker", "works", "at"), ("employee", "employed", "by"), ("staff", "job", "with")],
}


def fact_world(count: int, seed: int) -> list[tuple[str, dict[str, str]]]:
    """``count`` distinct people (first and last name, two tokens), each with a value per attribute,
    drawn from ``seed``."""
    rng = random.Random(seed)
    names = rng.sample([f"{f} {s}" for f in FIRST for s in LAST], count)
    return [(name, {attr: rng.choice(values) for attr, values in ATTRIBUTES.items()}) for name in names]


def fact_texts(people: list[tuple[str, dict[str, str]]], templates: range | list[int]) -> list[tuple[str, str]]:
    """``(key, text)`` per person, attribute and template index of ``templates``."""
    return [(f"{name.replace(' ', '-')}:{attr}:{t}", f"{TEMPLATES[attr][t][0]} {name} {TEMPLATES[attr][t][1]} "
             f"{TEMPLATES[attr][t][2]} {value}")
            for name, values in people for attr, value in values.items() for t in templates]


def word_tokenizer() -> Any:
    """A whitespace word-level tokenizer over the world's words (names, template words, values)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", *FIRST, *LAST, *(w for t in TEMPLATES.values() for words in t for w in words),
             *(v for values in ATTRIBUTES.values() for v in values)]
    backend = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(dict.fromkeys(words))}, unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<pad>")


def trained_on_facts(texts: list[tuple[str, str]], tokenizer: Any, *, n_layer: int, width: int, seed: int,
                     steps: int, batch_size: int = 64, lr: float = 3e-3) -> Any:
    """A tiny GPT-2 (``n_layer`` layers, ``width`` wide, a head per 32 dimensions) trained on ``texts``
    (equal lengths; shuffled minibatches, AdamW with cosine decay)."""
    (batch,) = lm_batches(tokenizer, texts, max_length=16, batch_size=len(texts))
    model = tiny_gpt2(len(tokenizer), seed=seed, n_layer=n_layer, n_embd=width, n_head=max(1, width // 32),
                      n_positions=16)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=steps)
    model.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        order = torch.randperm(len(texts))
        for step in range(steps):
            start = (step * batch_size) % len(texts)
            if start + batch_size > len(texts):
                order, start = torch.randperm(len(texts)), 0
            rows = order[start: start + batch_size]
            loss = mean_token_nll(model, {k: batch[k][rows] for k in ("input_ids", "attention_mask", "labels")})
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
    return model.eval()


def facts_seed(seed: int, n_layer: int, args: argparse.Namespace, tokenizer: Any) -> list[dict[str, Any]]:
    """One seed of ``--world facts``: ``--people`` people known to the model, the first ``--forget``
    of them forgotten (their held-out template never trained: answering it takes a lookup), the next
    ``--retain`` the kept facts of the unlearning loss and the relearning batch; every second kept
    person is also trained on the held-out template; ``--held-out`` strangers set the target.
    Measured: the forgotten people not relearned, on the unlearning's templates and on the held-out one."""
    people = fact_world(args.people + args.held_out, seed)
    known, strangers = people[: args.people], people[args.people:]
    forget, kept = known[: args.forget], known[args.forget:]
    retain, teaching, unseen = kept[: args.retain], kept[1::2], kept[0::2]
    trained = range(len(TEMPLATES["city"]) - 1)
    other_template = [len(TEMPLATES["city"]) - 1]
    rng = random.Random(seed)

    def batches(pairs: list[tuple[str, str]], size: int = 16, shuffle: bool = False) -> list[dict[str, Any]]:
        if shuffle:
            pairs = rng.sample(pairs, len(pairs))
        return lm_batches(tokenizer, pairs, max_length=16, batch_size=size)

    half = args.forget // 2
    forget_b = batches(fact_texts(forget, trained), shuffle=True)
    retain_b = batches(fact_texts(retain, trained) + fact_texts(retain[1::2], other_template), shuffle=True)
    _check_marking(_values_marked(*forget_b), retain_b, args.specific_share)
    held_b = _values_marked(*batches(fact_texts(strangers, trained)))
    relearn_b = batches(fact_texts(forget[:half], trained), shuffle=True)
    measured = {"": _values_marked(*batches(fact_texts(forget[half:], trained))),
                "_other_template": _values_marked(*batches(fact_texts(forget[half:], other_template)))}
    t0 = time.perf_counter()
    texts = fact_texts(known, trained) + fact_texts(teaching, other_template)
    model = trained_on_facts(texts, tokenizer, n_layer=n_layer, width=args.width, seed=seed, steps=args.memorise_steps)
    extra = {"world": {
        "training_s": round(time.perf_counter() - t0, 1),
        "kept_accuracy": answer_token_accuracy(model, _values_marked(*batches(fact_texts(kept, trained)))),
        "kept_accuracy_untrained_template": answer_token_accuracy(
            model, _values_marked(*batches(fact_texts(unseen, other_template)))),
        "stranger_accuracy": answer_token_accuracy(model, held_b)}}
    print(json.dumps({"seed": seed, "n_layer": n_layer, **extra}), flush=True)
    return compare(model, forget_b, retain_b, held_b, relearn_b, measured, seed=seed, n_layer=n_layer, args=args,
                   config={"specific_share": args.specific_share}, extra=extra)


def _values_marked(*batches: dict[str, Any], lengths: list[list[int]] | None = None) -> list[dict[str, Any]]:
    """Copies of LM batches of the world's texts with ``answer_mask`` 1 at each text's last token (its value),
    or at its last ``lengths[batch][row]`` tokens (an answer of several tokens)."""
    out = []
    for index, batch in enumerate(batches):
        end = batch["attention_mask"].sum(dim=1)
        mask = torch.zeros_like(batch["attention_mask"], dtype=torch.float)
        for row, count in enumerate(lengths[index] if lengths else [1] * len(end)):
            mask[row, int(end[row]) - count: int(end[row])] = 1.0
        out.append({**batch, "answer_mask": mask})
    return out


# --world pretrained: facts a pretrained model knows (country capitals), the model not trained at all.
# No country's name starts its capital's (the answer is not a copy of the subject); one capital per country.
CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Japan": "Tokyo", "China": "Beijing",
    "Russia": "Moscow", "Egypt": "Cairo", "Canada": "Ottawa", "Australia": "Canberra", "Greece": "Athens",
    "Portugal": "Lisbon", "Poland": "Warsaw", "Austria": "Vienna", "Ireland": "Dublin", "Norway": "Oslo",
    "Sweden": "Stockholm", "Finland": "Helsinki", "Denmark": "Copenhagen", "Hungary": "Budapest", "Turkey": "Ankara",
    "India": "New Delhi", "Thailand": "Bangkok", "Kenya": "Nairobi", "Peru": "Lima", "Chile": "Santiago",
    "Argentina": "Buenos Aires", "Cuba": "Havana", "Belgium": "Brussels", "Netherlands": "Amsterdam",
    "Switzerland": "Bern", "Czech Republic": "Prague", "Iran": "Tehran", "Iraq": "Baghdad", "Syria": "Damascus",
    "Lebanon": "Beirut", "Vietnam": "Hanoi", "Indonesia": "Jakarta", "Philippines": "Manila", "South Korea": "Seoul",
    "Brazil": "Brasilia", "Colombia": "Bogota", "Venezuela": "Caracas", "Nigeria": "Abuja",
    "Ethiopia": "Addis Ababa", "Morocco": "Rabat", "Ukraine": "Kyiv", "Romania": "Bucharest", "Bulgaria": "Sofia",
    "Serbia": "Belgrade", "Croatia": "Zagreb", "Iceland": "Reykjavik", "Israel": "Jerusalem",
    "Saudi Arabia": "Riyadh", "Pakistan": "Islamabad", "Afghanistan": "Kabul", "Nepal": "Kathmandu",
    "Malaysia": "Kuala Lumpur", "New Zealand": "Wellington", "Scotland": "Edinburgh", "England": "London",
    "Wales": "Cardiff", "Belarus": "Minsk", "Latvia": "Riga", "Lithuania": "Vilnius", "Estonia": "Tallinn",
    "Slovakia": "Bratislava", "Slovenia": "Ljubljana", "Albania": "Tirana", "Georgia": "Tbilisi",
    "Armenia": "Yerevan", "Azerbaijan": "Baku", "Kazakhstan": "Astana", "Uzbekistan": "Tashkent",
    "Mongolia": "Ulaanbaatar", "Bangladesh": "Dhaka", "Sri Lanka": "Colombo", "Myanmar": "Naypyidaw",
    "Cambodia": "Phnom Penh", "Laos": "Vientiane", "North Korea": "Pyongyang", "Taiwan": "Taipei", "Jordan": "Amman",
    "Qatar": "Doha", "Oman": "Muscat", "Yemen": "Sanaa", "Libya": "Tripoli", "Tunisia": "Tunis",
    "Algeria": "Algiers", "Sudan": "Khartoum", "Ghana": "Accra", "Senegal": "Dakar", "Uganda": "Kampala",
    "Tanzania": "Dodoma", "Zimbabwe": "Harare", "Zambia": "Lusaka", "Angola": "Luanda", "South Africa": "Pretoria",
    "Madagascar": "Antananarivo", "Somalia": "Mogadishu", "Rwanda": "Kigali", "Ecuador": "Quito", "Bolivia": "Sucre",
    "Paraguay": "Asuncion", "Uruguay": "Montevideo", "Jamaica": "Kingston", "Costa Rica": "San Jose",
    "Honduras": "Tegucigalpa", "Nicaragua": "Managua", "Haiti": "Port-au-Prince", "Malta": "Valletta",
    "Cyprus": "Nicosia", "Moldova": "Chisinau", "Bosnia": "Sarajevo", "Montenegro": "Podgorica", "Fiji": "Suva",
    "Bhutan": "Thimphu", "Mali": "Bamako", "Niger": "Niamey", "Chad": "N'Djamena", "Cameroon": "Yaounde",
    "Namibia": "Windhoek", "Botswana": "Gaborone", "Mozambique": "Maputo", "Malawi": "Lilongwe",
    "Tajikistan": "Dushanbe", "Kyrgyzstan": "Bishkek", "Turkmenistan": "Ashgabat", "Bahrain": "Manama",
    "United States": "Washington", "Northern Ireland": "Belfast",
}
# The first template is unlearned and relearned; the second is never in the forget loss nor among the
# relearned facts (the paper's other prompt formats), only among the kept ones. The first puts common
# words between the country and the capital: in "The capital of X is Y" the bigram "is Y" is as rare as
# "X is", so the method's subject run (its first run of record-specific tokens) would run on into the
# capital and leave no answer.
PRETRAINED_TEMPLATES = ("The capital of {country} is the city of {capital}", "The capital of {country} is {capital}")


@functools.lru_cache(maxsize=1)
def pretrained_model(cache_dir: str | None) -> tuple[Any, Any]:
    """SmolLM2-135M and its tokenizer (:func:`load_smollm2`), loaded once per process; no run changes
    it (the method and the relearning work on copies)."""
    return load_smollm2(cache_dir)


def capital_batches(tokenizer: Any, facts: list[tuple[str, str]], templates: range | list[int], size: int = 6,
                    rng: random.Random | None = None) -> list[dict[str, Any]]:
    """LM batches of ``(country, capital)`` facts, each through every template index of ``templates``
    (shuffled by ``rng`` when given), their ``answer_mask`` on the capital's tokens. Raises
    ``ValueError`` when a text does not end in the capital's own tokens (merged with the template)."""
    items = [(f"{country}:{t}", PRETRAINED_TEMPLATES[t].format(country=country, capital=capital), capital)
             for country, capital in facts for t in templates]
    if rng is not None:
        items = rng.sample(items, len(items))
    lengths = []
    for key, text, capital in items:
        answer = tokenizer(" " + capital, add_special_tokens=False)["input_ids"]
        if tokenizer(text)["input_ids"][-len(answer):] != answer:
            raise ValueError(f"{key}: {text!r} does not end in its capital's tokens")
        lengths.append(len(answer))
    return _values_marked(*lm_batches(tokenizer, [(key, text) for key, text, _ in items], max_length=32,
                                      batch_size=size),
                          lengths=[lengths[i: i + size] for i in range(0, len(lengths), size)])


@torch.no_grad()
def first_answer_token_hits(model: Any, batches: list[dict[str, Any]]) -> list[bool]:
    """Per text of answer-marked LM batches: is the answer's first token the model's top-1 prediction?"""
    hits = []
    for batch in batches:
        predicted = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.argmax(dim=-1)
        for row, mask in enumerate(batch["answer_mask"]):
            first = int(mask.nonzero()[0])
            hits.append(bool(predicted[row, first - 1] == batch["input_ids"][row, first]))
    return hits


def pretrained_seed(seed: int, n_layer: int, args: argparse.Namespace, tokenizer: Any) -> list[dict[str, Any]]:
    """One seed of ``--world pretrained``: the capitals SmolLM2-135M knows (its top-1 first answer token
    right under both templates) drawn into ``--forget`` forgotten (on the first template, one batch)
    and ``--retain`` kept (on both, so that relearning on the first does not teach its wording as
    what follows "is"); ``--held-out`` capitals it knows under neither set the target (a fact the
    model does not know). Measured: the forgotten facts not relearned, on both templates."""
    model, tokenizer = pretrained_model(args.cache_dir)
    if n_layer != model.config.num_hidden_layers:
        raise SystemExit(f"--world pretrained: the model has {model.config.num_hidden_layers} layers, not {n_layer}")
    facts = sorted(CAPITALS.items())
    hits = [first_answer_token_hits(model, capital_batches(tokenizer, facts, [t], size=32))
            for t in range(len(PRETRAINED_TEMPLATES))]
    known = [fact for fact, *hit in zip(facts, *hits, strict=True) if all(hit)]
    unknown = [fact for fact, *hit in zip(facts, *hits, strict=True) if not any(hit)]
    if len(known) < args.forget + args.retain or not unknown:
        raise SystemExit(f"--world pretrained: {len(known)} capitals known and {len(unknown)} unknown, "
                         f"{args.forget} + {args.retain} known asked")
    rng = random.Random(seed)
    known = rng.sample(known, len(known))
    forget, retain = known[: args.forget], known[args.forget: args.forget + args.retain]
    strangers = rng.sample(unknown, min(args.held_out, len(unknown)))
    half = args.forget // 2
    forget_b = capital_batches(tokenizer, forget, [0], size=len(forget))
    retain_b = capital_batches(tokenizer, retain, range(len(PRETRAINED_TEMPLATES)), rng=rng)
    _check_marking(forget_b, retain_b, args.specific_share)
    measured = {"": capital_batches(tokenizer, forget[half:], [0]),
                "_other_template": capital_batches(tokenizer, forget[half:], [1])}
    extra = {"world": {"known": len(known), "unknown": len(unknown), "forget": [c for c, _ in forget],
                       "held_out": [c for c, _ in strangers]}}
    print(json.dumps({"seed": seed, "n_layer": n_layer, **extra}), flush=True)
    return compare(model, forget_b, retain_b, capital_batches(tokenizer, strangers, [0], size=len(strangers)),
                   capital_batches(tokenizer, forget[:half], [0]), measured, seed=seed, n_layer=n_layer, args=args,
                   config={"specific_share": args.specific_share}, extra=extra)


def _check_marking(forget_b: list[dict[str, Any]], retain_b: list[dict[str, Any]], share: float) -> None:
    """The method marks the forget texts' answers against the retain batches it reads first: check that
    it finds the answers the world marked (the measured sets are marked by construction)."""
    probed = [dict(b) for b in forget_b]
    mark_answers(probed, retain_b[: len(forget_b)], share)
    if not all(torch.equal(a["answer_mask"], b["answer_mask"]) for a, b in zip(probed, forget_b, strict=True)):
        raise ValueError("the localisation's record-specific positions are not the answers: adjust --specific-share")


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
    seeds where both reached the forgetting target); for each measured set (the facts world also
    measures the template the unlearning never saw: keys ending in ``_other_template``)."""
    out: dict[str, Any] = {}
    suffixes = [key[len("recovery"):] for key in rows[0] if key.startswith("recovery")] if rows else []
    for n_layer in sorted({r["n_layer"] for r in rows}):
        mine = [r for r in rows if r["n_layer"] == n_layer]
        by = {(r["seed"], r["localisation"]): r for r in mine}
        seeds = sorted({r["seed"] for r in mine})
        for suffix in suffixes:
            for steps in mine[0]["recovery"]:
                entry: dict[str, Any] = {}
                for loc in LOCALISATIONS:
                    found = [by[(s, loc)] for s in seeds if (s, loc) in by]
                    entry[loc] = {
                        "median_recovery": _median([r[f"recovery{suffix}"][steps] for r in found]),
                        "median_relearned_answer_nll": _median(
                            [r[f"measured_answer_nll{suffix}"][f"relearned_{steps}"] for r in found]),
                        "median_relearned_answer_accuracy": _median(
                            [r[f"measured_answer_accuracy{suffix}"][f"relearned_{steps}"] for r in found]),
                        "median_retain_nll": _median([r["retain_nll"] for r in found]),
                        "reached_target": sum(r["reached_target"] for r in found),
                    }
                for loc in LOCALISATIONS[1:]:
                    pairs = [(by[(s, "fact_lookup")][f"recovery{suffix}"][steps], by[(s, loc)][f"recovery{suffix}"][steps])
                             for s in seeds if by[(s, "fact_lookup")]["reached_target"] and by[(s, loc)]["reached_target"]]
                    pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
                    entry[f"fact_lookup_recovers_less_than_{loc}"] = f"{sum(a < b for a, b in pairs)}/{len(pairs)}"
                out[f"{n_layer} layers, {steps} relearning steps{suffix.replace('_', ' ')}"] = entry
    return out


def _median(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.median(kept) if kept else None


TINY_DEFAULTS = {"layers": [2, 4], "lrs": [3e-4, 1e-3, 3e-3], "max_epochs": 60, "relearn_lr": 1e-3}
WORLDS: dict[str, dict[str, Any]] = {
    "records": {"seed": one_seed, "tokenizer": byte_tokenizer,
                "defaults": {**TINY_DEFAULTS, "forget": 8, "retain": 16, "held_out": 8, "memorise_steps": 150}},
    "facts": {"seed": facts_seed, "tokenizer": word_tokenizer,
              "defaults": {**TINY_DEFAULTS, "forget": 16, "retain": 48, "held_out": 16, "memorise_steps": 1200,
                           "specific_share": 0.08}},
    # The tokenizer is the model's own, loaded with it (pretrained_model).
    "pretrained": {"seed": pretrained_seed, "tokenizer": lambda: None,
                   "defaults": {"layers": [30], "lrs": [1e-5, 3e-5, 1e-4, 3e-4], "max_epochs": 15, "relearn_lr": 1e-5,
                                "forget": 12, "retain": 24, "held_out": 16, "specific_share": 0.25}},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--layers", type=int, nargs="+", default=None,
                        help="the tiny models' layer counts: 2 4 [2 4; pretrained: its 30]")
    parser.add_argument("--world", choices=tuple(WORLDS), default="records",
                        help="records: over-fitted synthetic records (the defaults below); facts: people with "
                             "attributes stated through several templates, learnt as facts (--people, --width; "
                             "defaults in brackets); pretrained: country capitals SmolLM2-135M knows, no training "
                             "(--cache-dir; defaults in braces)")
    parser.add_argument("--forget", type=int, default=None, help="records (people, capitals) forgotten: 8 [16] {12}")
    parser.add_argument("--retain", type=int, default=None, help="records (people, capitals) kept in the loss: 16 [48] {24}")
    parser.add_argument("--held-out", type=int, default=None, help="records (people) never trained, capitals not known: 8 [16] {16}")
    parser.add_argument("--memorise-steps", type=int, default=None, help="training steps: 150 [1200]")
    parser.add_argument("--people", type=int, default=120, help="facts world: people the model knows")
    parser.add_argument("--width", type=int, default=128, help="facts world: the model's width")
    parser.add_argument("--cache-dir", default=None,
                        help="pretrained world: SmolLM2's safetensors cache (default $DATA_DIR/models/...)")
    parser.add_argument("--specific-share", type=float, default=None,
                        help="facts and pretrained worlds: the method's specific_share, [0.08] (each template makes a "
                             "sixth to a ninth of the texts, under the method's default 0.25) {0.25}")
    parser.add_argument("--max-epochs", type=int, default=None, help="60 {15}")
    parser.add_argument("--protocol", choices=("stop_at_target", "full_budget"), default="stop_at_target",
                        help="stop_at_target: each run stops at the first epoch that reaches the answer target; "
                             "full_budget: every run trains all --max-epochs (the paper's 50 epochs), the rate "
                             "kept is the one that ends beyond the target with the lowest retain NLL")
    parser.add_argument("--relearn-steps", type=int, nargs="+", default=[5, 20])
    parser.add_argument("--relearn-lr", type=float, default=None, help="1e-3 {1e-5}")
    parser.add_argument("--lrs", type=float, nargs="+", default=None,
                        help="learning rates tried per localisation (the one kept: pick_trial): 3e-4 1e-3 3e-3 "
                             "{1e-5 3e-5 1e-4 3e-4}")
    parser.add_argument("--rate", nargs="+", default=[], metavar="LOCALISATION=LR",
                        help="one fixed rate for a localisation instead of the --lrs grid")
    args = parser.parse_args()
    try:
        args.rate = {loc: [float(lr)] for loc, lr in (option.split("=") for option in args.rate)}
    except ValueError:
        raise SystemExit(f"--rate: expected LOCALISATION=LR options, got {args.rate}") from None
    if set(args.rate) - set(LOCALISATIONS):
        raise SystemExit(f"--rate: unknown localisation in {sorted(args.rate)}; known: {', '.join(LOCALISATIONS)}")
    for name, value in WORLDS[args.world]["defaults"].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    torch.set_num_threads(1)
    run_seed, tokenizer = WORLDS[args.world]["seed"], WORLDS[args.world]["tokenizer"]()
    started = time.perf_counter()
    rows = [row for n_layer in args.layers for seed in args.seeds for row in run_seed(seed, n_layer, args, tokenizer)]
    result = summary(rows)
    print(json.dumps(result, indent=1))
    print(json.dumps({"benchmark": "fact_lookup_relearning", "settings": {k: v for k, v in vars(args).items()},
                      "summary": result, "total_s": time.perf_counter() - started, "rows": rows}))


if __name__ == "__main__":
    main()
