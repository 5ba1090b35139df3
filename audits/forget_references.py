"""Retrained references and derived controls for the representation and relearning checks, for an
approximate result whose forget set is a class or a sub-population (worker side; torch is imported
inside the functions, as in the audit runner).

Which forget sets: a check that compares how a model represents, or relearns, "the forgotten data"
needs the forgotten data to be something a model learns as a whole. The audit recognises it from the
labels (:func:`forget_population`):

* a class: at least ``MIN_FORGET_RECORDS`` records, all of one label, and at least ``CLASS_SHARE``
  of that label's records in the model's training set;
* a sub-population: the same, between ``SUB_POPULATION_SHARE`` and ``CLASS_SHARE`` of the label
  (random records are this concentrated by chance with a probability far below any test level:
  10 random MNIST records share one label with p ~ 1e-9, 29 random breast-cancer records ~ 1e-6);
* declared by the audit job's plan (``"forget_references": {"population": "class"}`` or
  ``"sub_population"``) where the request says so: then ``DECLARED_LABEL_SHARE`` of the records
  must share the label that the forget-like examples are drawn from;
* anything else is random records: both checks are NOT_APPLICABLE and say why. A sound method on
  random records leaves every class's representation where it was and relearns nothing that a
  retrained model would not, so these checks cannot tell it from anything: they are not asked to.

What the audit builds, per request and only for that audit (kept in memory, never stored: they never
saw the forgotten records, so they are not copies of them, and there is nothing to purge):

* ``references``: models retrained without the forget set from the model's own recipe and its
  recorded configuration (the family's recipe for a model trained outside, as for the shadow
  models), each a full training run at the recipe's budget, with their own seeds;
* ``controls``: the original fine-tuned on the retain set at the budget of the method that made the
  version (its epochs, learning rate and optimizer; the fine-tune method's defaults where the method
  has no epoch budget or no platform job made the version), each with its own data order.

Then the representation of the forget inputs (the input of the last linear layer, of each member's
for an ensemble) of the original, the unlearned model, the references and the controls goes to
``representation_retention``; and the unlearned model and each reference are fine-tuned at the same
small budgets on a few held-out records of the forgotten label (never the forgotten records, nor
records of the same people), the accuracy on the forgotten records after each going to
``relearning``. The numbers of references and controls are settings (``AUDIT_FORGET_REFERENCES``,
``AUDIT_FORGET_CONTROLS``) or the audit job's config: each costs a training (an unlearning) run.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from audits.checks.evidence import ForgetReferenceFigures
from audits.checks.representation import MIN_INPUTS
from audits.checks.result import fmt

MIN_FORGET_RECORDS = MIN_INPUTS
CLASS_SHARE = 0.5
SUB_POPULATION_SHARE = 0.1
DECLARED_LABEL_SHARE = 0.9
POPULATIONS = ("class", "sub_population")
# Inputs whose representation is compared: up to this many forgotten records, and held-out records
# of other labels for the k-NN probe reported beside the check.
REPRESENTATION_INPUTS = 500
PROBE_OTHERS = 200
# The relearning grid of issue 23 (Adam, full batch on the forget-like examples).
RELEARNING_EXAMPLES = 5
RELEARNING_BUDGETS: tuple[tuple[str, int, float], ...] = (
    ("10 steps at lr 0.001", 10, 1e-3), ("30 steps at lr 0.001", 30, 1e-3), ("10 steps at lr 0.01", 10, 1e-2))
REFERENCE_SEED = 20_000
CONTROL_SEED = 30_000
BUDGET_FIELDS = ("epochs", "lr", "optimizer", "momentum", "weight_decay", "max_grad_norm")
STORAGE = ("kept in memory for this audit only, none stored: they never saw the forgotten records, so they are "
           "no copies of them and there is nothing to purge")
LAYER = "the input of the model's last linear layer (of each member's, for an ensemble)"
SCORING_BATCH = 256


@dataclass(frozen=True)
class ForgetPopulation:
    """What the forget set is: ``kind`` "class", "sub_population" or "records" (random records),
    the label it shares (None for random records), how many records, how many records of that label
    the model trained on (the forgotten ones included), their share, and the finding in words."""

    kind: str
    label: int | None
    records: int
    label_records: int
    share: float
    statement: str


def forget_population(*, forget_labels: Sequence[int], member_labels: Sequence[int],
                      declared: str | None = None) -> ForgetPopulation:
    """Whether the forgotten records are a class, a sub-population or random records (see the
    module docstring for the rule). In: the forgotten records' labels, the labels of every record
    the model trained on (the forgotten ones included), and the population the audit job declares
    (or None). Out: :class:`ForgetPopulation`."""
    forget = np.asarray(forget_labels, dtype=np.int64)
    members = np.asarray(member_labels, dtype=np.int64)
    n = len(forget)
    if declared is not None and declared not in POPULATIONS:
        raise ValueError(f"forget_references.population must be one of {POPULATIONS}, got {declared!r}")
    if n == 0:
        return ForgetPopulation("records", None, 0, 0, 0.0, "no forgotten record was scored")
    values, counts = np.unique(forget, return_counts=True)
    label, of_label = int(values[np.argmax(counts)]), int(counts.max())
    label_records = int((members == label).sum())
    share = of_label / max(label_records, 1)
    spread = (f"the {n} forgotten records are {of_label} of label {label}"
              + (f" and {n - of_label} of {len(values) - 1} other label(s)" if of_label < n else "")
              + f"; label {label} has {label_records} records in the model's training set ({share:.0%} of them forgotten)")
    if n < MIN_FORGET_RECORDS:
        return ForgetPopulation("records", None, n, label_records, share,
                                f"{spread}: fewer than {MIN_FORGET_RECORDS} records, too few to be a class or "
                                "sub-population whose representation can be compared")
    if declared is not None:
        if of_label / n < DECLARED_LABEL_SHARE:
            return ForgetPopulation("records", None, n, label_records, share,
                                    f"{spread}: declared a {declared.replace('_', '-')}, but fewer than "
                                    f"{DECLARED_LABEL_SHARE:.0%} share one label, so no held-out records are "
                                    "like them")
        return ForgetPopulation(declared, label, n, label_records, share,
                                f"{spread}: a {declared.replace('_', '-')}, as the audit's plan declares")
    if of_label < n or share < SUB_POPULATION_SHARE:
        return ForgetPopulation("records", None, n, label_records, share,
                                f"{spread}: random records, not a class or sub-population (the rule: all of one "
                                f"label and at least {SUB_POPULATION_SHARE:.0%} of it). A model represents and "
                                "relearns a class, not scattered records, so these checks cannot tell a sound "
                                "deletion of them from an unsound one")
    kind = "class" if share >= CLASS_SHARE else "sub_population"
    return ForgetPopulation(kind, label, n, label_records, share,
                            f"{spread}: {'the class' if kind == 'class' else 'a sub-population of the class'} "
                            f"(all of one label and at least {(CLASS_SHARE if kind == 'class' else SUB_POPULATION_SHARE):.0%} of it)")


def penultimate_features(model, batches: Sequence, *, device: str) -> np.ndarray | None:
    """The representation ``model`` gives each input of ``batches`` (a list of ``(inputs, targets)``):
    the input of its last linear layer, found with forward hooks: the linear layers called whose
    output is as wide as the logits and after which no linear layer of the same parent module runs
    (one per member of an ensemble, concatenated). Out: (inputs, features), or None when the model
    has no such layer."""
    import torch

    from workers.training.architectures import linear_layer_types

    model = model.to(device).eval()
    names = {module: name for name, module in model.named_modules() if isinstance(module, linear_layer_types())}
    calls: list[tuple[str, torch.Tensor, int]] = []

    def record(module, args, output):
        calls.append((names[module], args[0].detach(), int(output.shape[-1])))

    handles = [module.register_forward_hook(record) for module in names]
    features = []
    try:
        with torch.no_grad():
            for inputs, _targets in batches:
                calls.clear()
                width = int(model(inputs.to(device)).shape[-1])

                def parent(name: str) -> str:
                    return name.rpartition(".")[0]

                heads = [x for i, (name, x, out) in enumerate(calls) if out == width
                         and not any(parent(later) == parent(name) for later, _, _ in calls[i + 1:])]
                if not heads:
                    return None
                features.append(torch.cat([x.flatten(1).float().cpu() for x in heads], dim=1).numpy())
    finally:
        for handle in handles:
            handle.remove()
    return np.concatenate(features) if features else None


def _accuracy(model, batches: Sequence, device: str) -> float:
    import torch

    right = total = 0
    with torch.no_grad():
        for inputs, targets in batches:
            right += int((model(inputs.to(device)).argmax(-1).cpu() == targets).sum())
            total += len(targets)
    return right / total if total else float("nan")


def relearning_recovery(model, examples: tuple, forgotten: Sequence, *, device: str,
                        budgets: Sequence[tuple[str, int, float]] = RELEARNING_BUDGETS) -> dict[str, float]:
    """Fine-tune a copy of ``model`` on ``examples`` (``(inputs, targets)``, one full batch) with Adam
    for each budget ``(name, steps, lr)`` and return budget name -> accuracy on ``forgotten`` (a list
    of ``(inputs, targets)``). In eval mode: normalisation statistics stay those of training, so five
    examples of one label do not rewrite them (the same for every model compared)."""
    import copy

    import torch

    inputs, targets = examples[0].to(device), examples[1].to(device)
    recovered = {}
    for name, steps, lr in budgets:
        tuned = copy.deepcopy(model).to(device).eval()
        parameters = [p.requires_grad_(True) for p in tuned.parameters()]
        optimizer = torch.optim.Adam(parameters, lr=lr)
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(tuned(inputs), targets).backward()
            optimizer.step()
        recovered[name] = _accuracy(tuned.eval(), forgotten, device)
    return recovered


def _batches(dataset, keys: Sequence[str]) -> list[tuple]:
    """``(inputs, targets)`` batches of the records ``keys`` of ``dataset``, in memory."""
    from torch.utils.data import DataLoader

    from workers.training.membership import collate_records

    if not keys:
        return []
    loader = DataLoader(dataset.subset(keys), batch_size=SCORING_BATCH, collate_fn=collate_records)
    return [(inputs, targets) for _keys, inputs, targets in loader if inputs is not None]


def _labels(dataset) -> dict[str, int]:
    """Record key -> label of every record of ``dataset`` (targets read through the adapter)."""
    from torch.utils.data import DataLoader

    from workers.training.membership import collate_records

    labels: dict[str, int] = {}
    for keys, _inputs, targets in DataLoader(dataset, batch_size=SCORING_BATCH, collate_fn=collate_records):
        labels.update(zip(keys, (int(t) for t in targets.reshape(len(keys), -1)[:, 0]), strict=True))
    return labels


def control_budget(new) -> tuple[dict[str, Any], str]:
    """The fine-tuning budget of the derived controls: that of the approximate method whose job made
    ``new`` (its epochs, learning rate and optimizer), or the fine-tune method's defaults where the
    method has no epoch budget (a one-shot method) or no platform job made the version. Returns the
    fine-tune config's fields and the choice in words."""
    from workers.models import Job, JobKind
    from workers.unlearning.base import METHODS
    from workers.unlearning.finetune import FinetuneConfig
    from workers.unlearning.methods import load_all_methods

    load_all_methods()
    producer = Job.objects.filter(result_version=new, kind=JobKind.UNLEARN).first()
    config = None
    if producer is not None and producer.method in METHODS:
        config = METHODS.get(producer.method)(producer.config or None).config
    if config is not None and all(hasattr(config, f) for f in BUDGET_FIELDS):
        budget = {f: getattr(config, f) for f in BUDGET_FIELDS}
        source = f"the budget of the method that made this version ({producer.method})"
    else:
        budget = {f: getattr(FinetuneConfig(), f) for f in BUDGET_FIELDS}
        why = ("no unlearning job of the platform made this version" if producer is None
               else f"the method {producer.method!r} has no epoch budget")
        source = f"the fine-tune method's defaults ({why})"
    return budget, (f"{source}: {budget['epochs']} epoch(s) over the retain set at lr {fmt(budget['lr'])} "
                    f"({budget['optimizer']}), all layers")


def _not_applicable(section: dict, why: str) -> tuple[ForgetReferenceFigures, dict]:
    return ForgetReferenceFigures(not_applicable=why), {**section, "applies": False, "why_not": why}


def _reference_recipe(source) -> tuple[str, dict, str] | None:
    """The recipe and configuration a retrain of ``source`` uses (the family's recipe with the
    recorded configuration for a model trained outside the platform, as for the shadow models)."""
    from models_registry.selectors import lineage_root

    run = source.training_run
    if run is None:
        return None
    uploaded = (lineage_root(source).metrics or {}).get("uploaded_recipe")
    if uploaded:
        return (uploaded["name"], dict(uploaded["config"]),
                f"the platform's {uploaded['name']} recipe with the configuration the training run recorded")
    config = {k: v for k, v in run.config.items() if k not in ("shadow_of", "shadow_index")}
    return run.recipe, config, f"the model's own {run.recipe} recipe with the run's configuration"


def forget_reference_figures(job, *, source, new, original, unlearned, train, test, forget_keys: Sequence[str],
                             device: str, progress) -> tuple[ForgetReferenceFigures | None, dict | None]:
    """For the audit ``job`` of an approximate result: recognise the forget set; for a class or
    sub-population, train the references and controls and measure what the representation and
    relearning checks compare. In: the versions and their loaded runs (``original``: ``source``'s,
    ``unlearned``: ``new``'s), the dataset's train and test splits, the forgotten records' keys.
    Out: ``(figures for the checks, the audit's ``forget_references`` section)``; ``(None, None)``
    for another guarantee class (the checks do not run)."""
    import torch
    from django.conf import settings

    from audits.runner import _sample, derived_version
    from models_registry.models import DataRecord
    from models_registry.selectors import version_membership

    if job.guarantee_class != "approximate" or not forget_keys or not isinstance(original.model, torch.nn.Module):
        return None, None
    started = time.perf_counter()
    asked = (job.config or {}).get("forget_references") or {}
    n_references = int(asked.get("references", settings.AUDIT_FORGET_REFERENCES))
    n_controls = int(asked.get("controls", settings.AUDIT_FORGET_CONTROLS))
    forget_labels = _labels(train.subset(forget_keys))
    member_keys = sorted({row[0] for row in version_membership(version=source)} & set(train.record_keys))
    member_labels = _labels(train.subset(member_keys)) if member_keys else {}
    population = forget_population(forget_labels=list(forget_labels.values()),
                                   member_labels=list(member_labels.values()), declared=asked.get("population"))
    section: dict[str, Any] = {"population": asdict(population), "storage": STORAGE}
    if population.kind == "records":
        return _not_applicable(section, f"Not a class or sub-population: {population.statement}.")
    if n_references == 0:
        return _not_applicable(section, "Turned off: the audit is configured to retrain no reference model "
                                        "(AUDIT_FORGET_REFERENCES or the audit job's forget_references).")
    if derived_version(source):
        return _not_applicable(section, "A derived model: a model retrained from its recipe would learn from the "
                                        "same parent, which held the records, so no reference that never saw them "
                                        "exists.")
    recipe = _reference_recipe(source)
    if recipe is None:
        return _not_applicable(section, "The version records no training run, so there is no recipe to retrain "
                                        "references from.")
    recipe_name, recipe_config, recipe_words = recipe
    retain_keys = sorted(set(member_keys) - set(forget_keys))
    retain = train.subset(retain_keys)
    phase = progress.scaled(70, 5) if hasattr(progress, "scaled") else progress
    total = n_references + n_controls + 1

    from workers.training.base import RECIPES

    references, timings = [], {}
    for i in range(n_references):
        def report(stage: str, fraction: float, i: int = i) -> None:
            phase(f"reference model {i + 1} of {n_references} (retrained without the forget set): {stage}",
                  (i + fraction) / total)

        run = RECIPES.get(recipe_name)({**recipe_config, "seed": REFERENCE_SEED + i}).train(
            retain, device=device, progress=report)
        references.append(run.model.eval())
    timings["references"] = round(time.perf_counter() - started, 2)
    budget, budget_words = control_budget(new)
    controls = _derived_controls(original.model, train.subset(forget_keys), retain, budget=budget, count=n_controls,
                                 device=device, progress=lambda s, f: phase(f"derived controls: {s}",
                                                                            (n_references + f) / total))
    timings["controls"] = round(time.perf_counter() - started - timings["references"], 2)
    phase("representation and relearning", (total - 1) / total)
    label = population.label
    test_labels = _labels(test)
    forgotten = _batches(train, _sample(forget_keys, REPRESENTATION_INPUTS, seed=new.id))
    others = _batches(test, _sample([k for k, y in test_labels.items() if y != label], PROBE_OTHERS, seed=new.id))
    inputs = forgotten + others
    is_forget = np.r_[np.ones(sum(len(t) for _, t in forgotten), dtype=bool),
                      np.zeros(sum(len(t) for _, t in others), dtype=bool)]
    models = {"original": original.model, "unlearned": unlearned.model}
    representation = {name: penultimate_features(m, inputs, device=device) for name, m in models.items()}
    reference_reps = [penultimate_features(m, inputs, device=device) for m in references]
    control_reps = [penultimate_features(m, inputs, device=device) for m in controls]
    section.update({
        "applies": True, "why_not": None, "references": n_references, "reference_recipe": recipe_words,
        "reference_seeds": [REFERENCE_SEED + i for i in range(n_references)], "retain_records": len(retain_keys),
        "controls": n_controls, "control_budget": budget_words,
        "representation": {"layer": LAYER, "forgotten_records": int(is_forget.sum()),
                           "other_records": int((~is_forget).sum())},
    })
    rep_missing = None
    if any(r is None for r in [*representation.values(), *reference_reps, *control_reps]):
        rep_missing = "The model has no linear output layer whose input could be read as its representation."

    # Forget-like examples: held-out records of the label, never the forgotten records nor other
    # records of the same people (those are their data too).
    dataset = source.training_run.datasets.get()
    subjects = set(DataRecord.objects.filter(dataset=dataset, external_key__in=forget_keys, subject__isnull=False)
                   .values_list("subject_id", flat=True))
    theirs = set(DataRecord.objects.filter(dataset=dataset, subject_id__in=subjects)
                 .values_list("external_key", flat=True))
    candidates = [k for k, y in test_labels.items() if y == label and k not in theirs]
    relearning_why, recovery, reference_recovery = None, None, ()
    if len(candidates) < RELEARNING_EXAMPLES:
        relearning_why = (f"Only {len(candidates)} held-out record(s) of label {label} (not of the same people) to "
                          f"fine-tune on; the check needs {RELEARNING_EXAMPLES}.")
        section["relearning"] = {"why_not": relearning_why}
    else:
        chosen = _batches(test, _sample(candidates, RELEARNING_EXAMPLES, seed=new.id))
        examples = (torch.cat([x for x, _ in chosen]), torch.cat([y for _, y in chosen]))
        recovery = relearning_recovery(unlearned.model, examples, forgotten, device=device)
        reference_recovery = tuple(relearning_recovery(m, examples, forgotten, device=device) for m in references)
        section["relearning"] = {
            "examples": RELEARNING_EXAMPLES, "examples_from": f"held-out records of label {label}",
            "budgets": [{"name": name, "steps": steps, "lr": lr, "optimizer": "adam"}
                        for name, steps, lr in RELEARNING_BUDGETS],
            "forgotten_records_scored": int(is_forget.sum()),
            "before": {"unlearned": _accuracy(unlearned.model, forgotten, device),
                       "references": [_accuracy(m, forgotten, device) for m in references]},
        }
    timings["total"] = round(time.perf_counter() - started, 2)
    section["seconds"] = timings
    figures = ForgetReferenceFigures(
        not_applicable=rep_missing, relearning_not_applicable=relearning_why,
        original_representation=representation["original"], unlearned_representation=representation["unlearned"],
        reference_representations=tuple(reference_reps), control_representations=tuple(control_reps),
        is_forget=is_forget, unlearned_recovery=recovery, reference_recovery=reference_recovery)
    return figures, section


def _derived_controls(model, forget, retain, *, budget: dict, count: int, device: str, progress) -> list:
    """``count`` copies of ``model`` fine-tuned on ``retain`` at ``budget`` (the fine-tune method,
    all layers), each with its own seed and data order."""
    import torch
    from torch.utils.data import DataLoader

    from workers.runners.unlearning import LOADER_BATCH
    from workers.training.membership import collate_records
    from workers.unlearning.base import METHODS

    forget_loader = DataLoader(forget, batch_size=LOADER_BATCH, collate_fn=collate_records)
    controls = []
    for i in range(count):
        seed = CONTROL_SEED + i
        order = torch.Generator().manual_seed(seed)
        retain_loader = DataLoader(retain, batch_size=LOADER_BATCH, shuffle=True, generator=order,
                                   collate_fn=collate_records)
        tuned, _ = METHODS.get("finetune")({**budget, "seed": seed}).unlearn(
            model, forget_loader, retain_loader, device=device,
            progress=lambda stage, fraction, i=i: progress(stage, (i + fraction) / max(count, 1)))
        controls.append(tuned.eval())
    return controls


def forget_references_report(audit: dict) -> dict | None:
    """The report's account of the representation and relearning checks in plain words, from the
    audit's ``forget_references`` section and the two checks' results: ``{"statement", "findings"}``,
    None where the audit measured nothing for them."""
    section = audit.get("forget_references")
    if not section:
        return None
    checks = {c.get("check"): c for c in audit.get("checks", [])}
    population = section["population"]
    if not section.get("applies"):
        return {"statement": ("Representation and relearning checks (for a forgotten class or sub-population) did "
                              f"not apply. {section['why_not']}"), "findings": []}
    statement = (f"What was erased: {population['statement']}. The audit retrained {section['references']} "
                 f"model(s) without them ({section['reference_recipe']}, on {section['retain_records']} kept "
                 f"records) and fine-tuned the old model {section['controls']} time(s) on the kept records at "
                 f"{section['control_budget']}; these models were {section['storage']}. Their time: "
                 f"{section['seconds']['total']} s.")
    findings = []
    representation = checks.get("representation_retention")
    if representation:
        findings.append(f"Representation ({section['representation']['layer']}, on "
                        f"{section['representation']['forgotten_records']} erased records): "
                        f"{representation['verdict']}. {representation['reason']}")
    relearning = checks.get("relearning")
    if relearning:
        if relearning["verdict"] == "NOT_APPLICABLE":
            findings.append(f"Relearning: NOT_APPLICABLE. {relearning['reason']}")
        else:
            details = section["relearning"]
            budgets = "; ".join(
                f"after {b}: the new model {fmt(relearning['unlearned'][b])}, models retrained without them "
                f"{', '.join(fmt(v) for v in relearning['references'][b])} (margin {fmt(relearning['margins'][b])})"
                for b in relearning["budgets"])
            findings.append(f"Relearning ({relearning['verdict']}): share of the erased records the model gets right "
                            f"after a little fine-tuning on {details['examples']} {details['examples_from']} (never "
                            f"the erased records). Before any: the new model {fmt(details['before']['unlearned'])}, "
                            f"retrained models {', '.join(fmt(v) for v in details['before']['references'])}; "
                            f"{budgets}. {relearning['reason']}")
    return {"statement": statement, "findings": findings}
