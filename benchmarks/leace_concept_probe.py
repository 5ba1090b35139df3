"""Concept erasure on digits (attribute: digit parity): linear and MLP probes before and after, per method.

Per seed: a one-hidden-layer MLP (64 units) is trained on all 1,797 digits to classify them; each concept
method of ``--methods`` (``leace``, ``pef_coupling``) is fitted on the hidden layer's output of ``--fit``
digits and the concept probe (audits/checks/concept_probe.py: 5-fold out-of-fold AUC, linear and MLP) runs
on the other digits, before and after erasure (with the AUC's spread at chance over 20 shuffles of the
attribute, Hanley-McNeil's figure and the permutation p-value), with the digit accuracy of the erased
classifier (the coupling is given each digit's parity at inference, as it needs). The verdict is the check's as the audit
runs it: the MLP probe decides too for pef_coupling. The last stdout line is one JSON object.

    python benchmarks/leace_concept_probe.py --seeds 5 --fit 1200 --methods leace,pef_coupling
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from statistics import mean

import torch
from sklearn.datasets import load_digits
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from audits.checks.concept_probe import HOLDS_AGAINST, concept_probe  # noqa: E402
from workers.unlearning.base import METHODS  # noqa: E402
from workers.unlearning.catalogue import METHOD_SPECS  # noqa: E402
from workers.unlearning.concept_coupling import attribute_given  # noqa: E402
from workers.unlearning.concept_erasure import layer_outputs  # noqa: E402
from workers.unlearning.pef_coupling import PefCoupling  # noqa: E402, F401  (registers pef_coupling)


def batches(inputs: torch.Tensor, digits: torch.Tensor) -> list:
    return [([str(i) for i in range(len(digits))], inputs, digits % 2)]


def one_seed(seed: int, fit_count: int, method: str = "leace", cells: int = 16) -> dict:
    images, labels = load_digits(return_X_y=True)
    inputs, digits = torch.tensor(images / 16.0, dtype=torch.float32), torch.tensor(labels)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(60):
        optimiser.zero_grad()
        nn.functional.cross_entropy(model(inputs), digits).backward()
        optimiser.step()
    model.eval()
    order = torch.randperm(len(digits), generator=torch.Generator().manual_seed(seed))
    fit, held = order[:fit_count], order[fit_count:]
    config = {"layer": "1", "seed": seed, **({"cells": cells} if method == "pef_coupling" else {})}
    erased, _ = METHODS.get(method)(config).unlearn(model, batches(inputs[fit], digits[fit]), [])
    before, parity = layer_outputs(model, "1", batches(inputs[held], digits[held]))
    after, _ = layer_outputs(erased, "1", batches(inputs[held], digits[held]), attribute_at_inference=True)
    holds = METHOD_SPECS.get(method).holds_against
    probe = concept_probe(representations=after.numpy(), attribute=parity.numpy(),
                          original_representations=before.numpy(), seed=seed,
                          nonlinear_decides=holds != HOLDS_AGAINST, holds_against=holds)
    with torch.no_grad(), attribute_given(erased, digits[held] % 2):
        accuracy = {name: (m(inputs[held]).argmax(1) == digits[held]).float().mean().item()
                    for name, m in (("digit_accuracy_before", model), ("digit_accuracy_after", erased))}
    return {"linear_before": probe.original_linear_auc, "linear_after": probe.linear_auc,
            "mlp_before": probe.original_nonlinear_auc, "mlp_after": probe.nonlinear_auc,
            "chance_rms": probe.chance.rms_distance, "chance_max": probe.chance.max_distance,
            "hanley_mcneil": probe.chance.hanley_mcneil, "p_value": probe.chance.linear_p_value,
            "verdict": probe.verdict.value, **accuracy}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--fit", type=int, default=1200)
    parser.add_argument("--methods", default="leace", help="comma-separated concept methods: leace, pef_coupling")
    parser.add_argument("--cells", type=int, default=16, help="pef_coupling's codebook size")
    args = parser.parse_args()
    methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(methods) - {"leace", "pef_coupling"})
    if unknown:
        parser.error(f"unknown concept method(s) {', '.join(unknown)}; known: leace, pef_coupling")
    runs = {method: [one_seed(seed, args.fit, method, args.cells) for seed in range(args.seeds)] for method in methods}
    print("| method | seed | linear AUC before -> after | MLP AUC before -> after | chance spread: shuffled RMS "
          "(farthest; Hanley-McNeil) | permutation p | verdict | digit accuracy before -> after |")
    print("|---|---|---|---|---|---|---|---|")
    for method, method_runs in runs.items():
        for seed, r in enumerate(method_runs):
            print(f"| {method} | {seed} | {r['linear_before']:.3f} -> {r['linear_after']:.3f} | {r['mlp_before']:.3f} "
                  f"-> {r['mlp_after']:.3f} | {r['chance_rms']:.3f} ({r['chance_max']:.3f}; {r['hanley_mcneil']:.3f}) | "
                  f"{r['p_value']:.3f} | {r['verdict']} | {r['digit_accuracy_before']:.3f} -> "
                  f"{r['digit_accuracy_after']:.3f} |")
    numeric = [k for k in next(iter(runs.values()))[0] if k != "verdict"]
    summary = {method: {"mean": {k: mean(r[k] for r in method_runs) for k in numeric},
                        "min": {k: min(r[k] for r in method_runs) for k in numeric},
                        "max": {k: max(r[k] for r in method_runs) for k in numeric},
                        "verdicts": [r["verdict"] for r in method_runs]} for method, method_runs in runs.items()}
    print(json.dumps({"benchmark": "concept_erasure", "seeds": args.seeds, "fit_records": args.fit, "cells": args.cells,
                      "methods": summary}))


if __name__ == "__main__":
    main()
