"""What planting canaries costs the demo's MNIST training, and whether the model memorises them.

Trains the demo's MNIST SISA configuration (deletion_platform.demo.MNIST_SISA) on the reference set's
training split twice with the same seed: without canaries and with ``--canaries`` of them (drawn as
the training job draws them: workers.training.canaries from the test split with the run's seed).
Prints the wall time of each, of the draw, and the canaries' accuracy on their own (planted) labels
in the trained model against the accuracy of the model trained without them (what memorisation
adds). No database: the recipe runs on the adapters directly. Last line: JSON.

    .venv/bin/python benchmarks/canary_cost.py [--canaries 10] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from deletion_platform.demo import MNIST_SISA  # noqa: E402
from workers.datasets.reference import load_reference_split, materialise_reference  # noqa: E402
from workers.training import RECIPES  # noqa: E402
from workers.training.canaries import WithCanaries, synthesise_canaries  # noqa: E402
from workers.training.evaluate import accuracy  # noqa: E402


def canary_accuracy(model: torch.nn.Module, canaries) -> tuple[float, float]:
    """The fraction of canaries the model gives their planted label, and the median probability
    it gives that label (a SISA ensemble averages its shards: one shard's memorisation moves it
    without winning the argmax)."""
    model.eval()
    with torch.no_grad():
        logits = model(torch.stack([c.input for c in canaries]))
    labels = torch.tensor([c.label for c in canaries])
    probability = logits.softmax(1)[torch.arange(len(canaries)), labels]
    return float((logits.argmax(1) == labels).float().mean()), round(float(probability.median()), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--canaries", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as root:
        folder = materialise_reference("mnist", root)
        train, test = load_reference_split(folder, "train"), load_reference_split(folder, "test")
        seed = MNIST_SISA["seed"]
        tick = time.perf_counter()
        canaries = synthesise_canaries(test, count=args.canaries, seed=seed, key_prefix="canary-bench")
        draw = time.perf_counter() - tick
        recipe = RECIPES.get("sisa")
        runs = {"without": [], "with": []}
        models = {}
        for _ in range(args.repeats):
            for name, data in (("without", train), ("with", WithCanaries(train, canaries))):
                tick = time.perf_counter()
                models[name] = recipe(dict(MNIST_SISA)).train(data).model
                runs[name].append(time.perf_counter() - tick)
    result = {
        "records": len(train), "canaries": args.canaries, "draw_seconds": round(draw, 3),
        "train_seconds_without": [round(t, 2) for t in runs["without"]],
        "train_seconds_with": [round(t, 2) for t in runs["with"]],
        "extra_seconds_median": round(sorted(runs["with"])[len(runs["with"]) // 2]
                                      - sorted(runs["without"])[len(runs["without"]) // 2], 2),
        "canary_label_accuracy_with": canary_accuracy(models["with"], canaries)[0],
        "canary_label_accuracy_without": canary_accuracy(models["without"], canaries)[0],
        "canary_label_probability_median_with": canary_accuracy(models["with"], canaries)[1],
        "canary_label_probability_median_without": canary_accuracy(models["without"], canaries)[1],
        "test_accuracy_without": round(accuracy(models["without"], test), 4),
        "test_accuracy_with": round(accuracy(models["with"], test), 4),
        "torch_threads": 1,
    }
    print(f"MNIST SISA ({len(train)} records) with {args.canaries} canaries: training "
          f"{result['train_seconds_with']} s vs {result['train_seconds_without']} s without; draw {draw:.3f} s; "
          f"canaries given their planted label: {result['canary_label_accuracy_with']:.2f} "
          f"(without them in training: {result['canary_label_accuracy_without']:.2f}); median probability of the "
          f"planted label {result['canary_label_probability_median_with']} vs "
          f"{result['canary_label_probability_median_without']}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
