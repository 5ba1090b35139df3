"""What a concept erasure costs the model's own task: its accuracy (a regressor's RMSE) before and
after, for the concept audit (audits.concept_audit).

Erasing an attribute from a layer can take the task with it (digit parity from a digits classifier's
hidden layer is half of which digit it is), and nothing in the probe's verdict says so. Measured on
two sets, each model given the same inputs:

* the labelled probe records the model trained on (the ``train`` split): the "retain" figure;
* held-out records: for an eraser that needs no attribute at inference (LEACE), the dataset's held-out
  split; for a class-conditional one (``pef_coupling``), which refuses inputs without their attribute,
  the labelled probe records outside the training split, each given its attribute as its serving
  side must give it.

Both figures go to the registered utility check against the bar the plan declared; the utility role
only warns beside the concept verdict (audits.checks.verdict), which the probe alone decides. Where a
set is empty the check does not run and the section says why.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from models_registry.models import DataRecord, Dataset

# The most held-out records scored per model: enough for an accuracy to about +-0.01.
HELD_OUT_CAP = 2000


def _task_figure(model, batches, *, device: str, attribute_at_inference: bool) -> tuple[float, int, str]:
    """``(figure, records, metric)``: accuracy of a classifier, RMSE of a regressor (real targets), over
    ``(keys, inputs, targets, attribute)`` batches; the attribute goes to class-conditional erasers."""
    import torch

    from audits.runner import task_figure
    from workers.unlearning.concept_coupling import attribute_given

    model = model.to(device).eval()
    outputs, targets = [], []
    with torch.no_grad():
        for _keys, inputs, target, attribute in batches:
            if attribute_at_inference:
                with attribute_given(model, torch.as_tensor(attribute).to(device)):
                    out = model(inputs.to(device))
            else:
                out = model(inputs.to(device))
            outputs.append(out.float().cpu().numpy())
            targets.append(target.numpy())
    if not outputs:
        return float("nan"), 0, "accuracy"
    figure, metric = task_figure(np.concatenate(outputs), np.concatenate(targets))
    return figure, sum(len(t) for t in targets), metric


def _batches(dataset: Dataset, split: str, keys: list[str], labels: dict[str, int]) -> list:
    """``(keys, inputs, task targets, attribute)`` batches of ``keys`` in ``split`` (attribute -1 where
    the record has no label: only passed to a model that needs none)."""
    import torch
    from torch.utils.data import DataLoader

    from workers.data_sources import dataset_split
    from workers.training.membership import collate_records

    data = dataset_split(dataset, split)
    present = sorted(set(keys) & set(data.record_keys))
    return [(k, x, y, torch.tensor([labels.get(key, -1) for key in k]))
            for k, x, y in DataLoader(data.subset(present), batch_size=256, collate_fn=collate_records) if k]


def concept_task_utility(*, original, erased, dataset: Dataset, labels: dict[str, int], probe: list[str],
                         needs_attribute: bool, min_ratio: float, device: str = "cpu") -> tuple[Any, dict]:
    """The utility check (None where a set is empty) and the audit's ``task_utility`` section for a
    concept erasure: ``original`` and ``erased`` (nn.Modules) on the probe records they trained on and
    on held-out records (see the module docstring), ``needs_attribute`` for a class-conditional eraser."""
    from audits.checks.utility import utility

    split_of = dict(DataRecord.objects.filter(dataset=dataset, external_key__in=probe).values_list(
        "external_key", "split"))
    trained = [k for k in probe if split_of.get(k) == "train"]
    if needs_attribute:
        held_out_from = "the labelled probe records outside the training split, each given its attribute"
        outside = [(key, split_of[key]) for key in probe if split_of.get(key, "train") != "train"]
    else:
        held_out_from = f"the dataset's records outside its training split (at most {HELD_OUT_CAP:,})"
        outside = list(DataRecord.objects.filter(dataset=dataset).exclude(split="train").order_by(
            "external_key").values_list("external_key", "split")[:HELD_OUT_CAP])
    held: dict[str, list[str]] = {}
    for key, split in outside:
        held.setdefault(split, []).append(key)
    held_batches = [b for split, keys in sorted(held.items()) for b in _batches(dataset, split, keys, labels)]
    retain_batches = _batches(dataset, "train", trained, labels)
    figures = {}
    for name, batches in (("retain", retain_batches), ("test", held_batches)):
        before, n, metric = _task_figure(original, batches, device=device, attribute_at_inference=needs_attribute)
        after, _, _ = _task_figure(erased, batches, device=device, attribute_at_inference=needs_attribute)
        figures[name] = {"original": before, "erased": after, "records": n, "metric": metric}
    section = {"retain_records": "the labelled probe records the model trained on (the eraser was not fitted on them)",
               "test_records": held_out_from, **figures, "min_ratio": min_ratio}
    empty = [name for name, f in figures.items() if f["records"] == 0]
    if empty:
        section["not_run"] = (f"no {' and no '.join('training' if n == 'retain' else 'held-out' for n in empty)} "
                              "records to measure the task on: the utility check did not run")
        return None, section
    metric = figures["retain"]["metric"]
    check = utility(retain=figures["retain"]["erased"], test=figures["test"]["erased"],
                    original_retain=figures["retain"]["original"], original_test=figures["test"]["original"],
                    metric=metric, min_ratio=min_ratio)
    return check, section
