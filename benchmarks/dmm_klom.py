"""DMM's forget-set KLoM against the retrain floor, over fixture seeds (the repeated runs behind
tests/workers/unlearning/test_dmm.py).

Per seed, the test's fixture (sklearn's digits, 700 records, 20 mislabelled ones that the MLPs
memorise: the forget set; ``--pairs`` complementary shadow pairs, the method reads the lower half;
8 originals, 16 models retrained without the forget set) with ``data_seed = seed`` and
``model_seed = seed + 1`` (the test's fixture is seed 0). Per seed and config, the median over the
forget records of KLoM (5 bins, 8 runs a side) as a multiple of the floor (8 retrained runs against
the 8 others) for:

* ``nothing``: the originals;
* ``dmm``: DMM run on each original with the config;
* ``predicted``: the datamodels' predictions themselves (the targets DMM fine-tunes towards, as if the
  matching reached them exactly): what the datamodels allow, apart from the fine-tune.

Beside them: the held-out linear datamodeling score (LDS, leave-one-pair-out over the method's
shadow models) on the forget records, the RMS distance in nats between the predicted and the
retrained mean margin per forget record (the retrained runs' own spread beside it), and the mean
retain accuracy after DMM.

    python benchmarks/dmm_klom.py --seeds 5
    python benchmarks/dmm_klom.py --seeds 5 --pairs 32 --configs '[{"epochs": 50, "retain_sample": 4096}]'

The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from audits.checks.klom import klom  # noqa: E402
from tests.workers.unlearning.test_dmm import BINS, KLOM_CONFIG, RUNS, Setting, accuracy  # noqa: E402
from workers.unlearning.dmm import datamodel_fit, label_margins  # noqa: E402
from workers.unlearning.references import (  # noqa: E402
    inclusion_masks,
    model_outputs,
    reference_outputs,
    shadow_split,
)


def predicted_margins(setting: Setting, config: dict) -> np.ndarray:
    """(originals, forget records) margins of the datamodels' predictions, computed as DMM computes
    its forget targets (the original's centred logits less the forget records' summed coefficients)."""
    from workers.unlearning.dmm import DatamodelMatchingConfig

    ridge = DatamodelMatchingConfig(**{k: v for k, v in config.items() if k in ("ridge", "shadow_share")})
    split = shadow_split(setting.references, ridge.shadow_share)
    keys = [setting.records.record_keys[i] for i in setting.forget.tolist()]
    inputs, labels = setting.inputs[setting.forget], setting.targets[setting.forget]
    masks = inclusion_masks(split.method, keys)
    outputs = reference_outputs(split.method, inputs, device=torch.device("cpu"))
    effect = datamodel_fit(masks, outputs, ridge=ridge.ridge, self_index=torch.arange(len(keys))).removal_effect()
    return np.stack([label_margins(model_outputs(m, inputs, device=torch.device("cpu")) - effect, labels).numpy()
                     for m in setting.originals])


def one_seed(seed: int, pairs: int, configs: list[dict]) -> dict:
    setting = Setting(data_seed=seed, model_seed=seed + 1, pairs=pairs)
    retrained = setting.forget_margins(setting.retrained[:RUNS])
    reference = setting.forget_margins(setting.retrained[RUNS:])
    floor = klom(retrained, reference, bins=BINS).percentiles["p50"]
    row: dict = {"seed": seed, "pairs": pairs, "floor_p50": floor,
                 "nothing_ratio": klom(setting.forget_margins(setting.originals), reference,
                                       bins=BINS).percentiles["p50"] / floor,
                 "retrained_spread": float(reference.std(axis=0).mean()), "configs": []}
    retain = torch.ones(len(setting.targets), dtype=torch.bool)
    retain[setting.forget] = False
    for config in configs:
        started = time.perf_counter()
        runs = [setting.unlearn("dmm", config, model) for model in setting.originals]
        seconds = (time.perf_counter() - started) / len(runs)
        predicted = predicted_margins(setting, config)
        row["configs"].append({
            "config": config,
            "dmm_ratio": klom(setting.forget_margins([m for m, _ in runs]), reference,
                              bins=BINS).percentiles["p50"] / floor,
            "predicted_ratio": klom(predicted, reference, bins=BINS).percentiles["p50"] / floor,
            "prediction_rms_error": float(np.sqrt(((predicted.mean(axis=0) - reference.mean(axis=0)) ** 2).mean())),
            "lds_forget": runs[0][1]["datamodels"]["lds"]["forget"],
            "retain_accuracy": float(np.mean([accuracy(m, setting.inputs[retain], setting.targets[retain])
                                              for m, _ in runs])),
            "seconds_per_run": seconds,
        })
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--pairs", type=int, default=16, help="shadow pairs (the method reads half of them)")
    parser.add_argument("--configs", default=json.dumps([KLOM_CONFIG]), help="JSON list of DMM configs")
    args = parser.parse_args()
    torch.set_num_threads(1)
    configs = json.loads(args.configs)
    rows = []
    for seed in range(args.seeds):
        rows.append(one_seed(seed, args.pairs, configs))
        print(f"seed {seed} done", file=sys.stderr, flush=True)
    print(f"# DMM forget-set KLoM (median over 20 memorised records, {BINS} bins, {RUNS} runs a side) as a multiple "
          f"of the retrain floor; {args.pairs} shadow pairs ({args.pairs // 2} read by the method)\n")
    print("| seed | floor (nats) | nothing / floor | config | dmm / floor | predicted / floor | prediction RMS error "
          "(retrained spread) | LDS forget | retain acc |")
    print("|---|---|---|---|---|---|---|---|---|")
    summary = {}
    for row in rows:
        for c in row["configs"]:
            print(f"| {row['seed']} | {row['floor_p50']:.2f} | {row['nothing_ratio']:.2f} | {json.dumps(c['config'])} "
                  f"| {c['dmm_ratio']:.2f} | {c['predicted_ratio']:.2f} | {c['prediction_rms_error']:.2f} "
                  f"({row['retrained_spread']:.2f}) | {c['lds_forget']:.3f} | {c['retain_accuracy']:.3f} |")
    for index, config in enumerate(configs):
        ratios = [row["configs"][index]["dmm_ratio"] for row in rows]
        summary[json.dumps(config)] = {"median_dmm_ratio": statistics.median(ratios),
                                       "seeds_within_1_5x": sum(r <= 1.5 for r in ratios),
                                       "seeds_within_2x": sum(r <= 2 for r in ratios)}
    print(json.dumps({"benchmark": "dmm_klom", "seeds": args.seeds, "pairs": args.pairs, "summary": summary,
                      "rows": rows}))


if __name__ == "__main__":
    main()
