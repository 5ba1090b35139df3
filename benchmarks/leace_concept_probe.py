"""LEACE concept erasure on digits (attribute: digit parity): linear and MLP probes before and after.

Per seed: a one-hidden-layer MLP (64 units) is trained on all 1,797 digits to classify them; LEACE is
fitted on the hidden layer's output of ``--fit`` digits and the concept probe
(audits/checks/concept_probe.py: 5-fold out-of-fold AUC, linear and MLP) runs on the other digits,
before and after erasure, with the digit accuracy of the erased classifier. The last stdout line is
one JSON object.

    python benchmarks/leace_concept_probe.py --seeds 5 --fit 1200
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

from audits.checks.concept_probe import concept_probe  # noqa: E402
from workers.unlearning.concept_erasure import Leace, layer_outputs  # noqa: E402


def batches(inputs: torch.Tensor, digits: torch.Tensor) -> list:
    return [([str(i) for i in range(len(digits))], inputs, digits % 2)]


def one_seed(seed: int, fit_count: int) -> dict:
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
    erased, _ = Leace({"layer": "1", "seed": seed}).unlearn(model, batches(inputs[fit], digits[fit]), [])
    before, parity = layer_outputs(model, "1", batches(inputs[held], digits[held]))
    after, _ = layer_outputs(erased, "1", batches(inputs[held], digits[held]))
    probe = concept_probe(representations=after.numpy(), attribute=parity.numpy(),
                          original_representations=before.numpy(), seed=seed)
    with torch.no_grad():
        accuracy = {name: (m(inputs[held]).argmax(1) == digits[held]).float().mean().item()
                    for name, m in (("digit_accuracy_before", model), ("digit_accuracy_after", erased))}
    return {"linear_before": probe.original_linear_auc, "linear_after": probe.linear_auc,
            "mlp_before": probe.original_nonlinear_auc, "mlp_after": probe.nonlinear_auc,
            "verdict": probe.verdict.value, **accuracy}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--fit", type=int, default=1200)
    args = parser.parse_args()
    runs = [one_seed(seed, args.fit) for seed in range(args.seeds)]
    print("| seed | linear AUC before -> after | MLP AUC before -> after | verdict | digit accuracy before -> after |")
    print("|---|---|---|---|---|")
    for seed, r in enumerate(runs):
        print(f"| {seed} | {r['linear_before']:.3f} -> {r['linear_after']:.3f} | {r['mlp_before']:.3f} -> "
              f"{r['mlp_after']:.3f} | {r['verdict']} | {r['digit_accuracy_before']:.3f} -> "
              f"{r['digit_accuracy_after']:.3f} |")
    numeric = [k for k in runs[0] if k != "verdict"]
    print(json.dumps({"benchmark": "concept_erasure", "seeds": args.seeds, "fit_records": args.fit,
                      "mean": {k: mean(r[k] for r in runs) for k in numeric},
                      "verdicts": [r["verdict"] for r in runs]}))


if __name__ == "__main__":
    main()
