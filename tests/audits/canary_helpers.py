"""Canary audits on the reference sets: real models, real shadow models, the real checks.

One :func:`run_canary_audit` call does what the platform's audit stage does, end to end on CPU,
for one reference dataset with mislabelled canaries planted in its training split:

1. ``materialise_reference`` + ``plant_canaries(kind="mislabel")``. A mislabelled canary is a copy
   of a training record with another label. Its source record is left out of every training set
   here: an input present twice with two labels can be fitted at best to p = 0.5 on each, so the
   source would hide the very memorisation the canary is there to show. What remains is the
   classic canary: a record whose label only memorisation can fit.
2. The *original* model (the ``plain`` recipe) trains on the ordinary records and the canaries;
   the *retrained* model on the same records without the canaries (same config and seed, as an
   exact retrain would); ``n_shadow`` shadow models (same config, their own seeds) each on a
   random half of the original's training records, with every record IN for exactly half of
   them, so each canary has ``n_shadow / 2`` IN and OUT shadows (LiRA's balanced design).
3. Scores are the LiRA statistic (``logit_scaled_confidence``) of each canary's own label.
   The non-members for the population attack are the held-out test records relabelled by the
   same rule as the canaries (label + a uniform non-zero shift, mod the number of classes): the
   same kind of record as a canary, which no model trained on. The same attack against the test
   records' true labels is computed too, for the record (see :class:`CanaryAudit`).
4. The checks: ``fit_shadow_reference`` (default variance mode, as the audit stage calls it) with
   the shadow models' scores of the relabelled held-out records, ``membership_test`` on the
   original and on the retrained model, each calibrated on its own scores of those records (the
   audit calibrates on held-out records with their labels; a canary's kind of record is the
   relabelled one), ``membership_power`` with ``source="canaries"`` on the original (calibrated
   the same way), ``population_attack`` on both.

Everything is a function of the spec: training is deterministic on CPU.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from audits.checks.membership import MembershipTestResult, fit_shadow_reference, membership_test
from audits.checks.population_attack import (
    PopulationAttackResult,
    population_attack,
    shadow_calibrated_scores,
)
from audits.checks.power import PowerResult, membership_power
from audits.checks.signals import accuracy, logit_scaled_confidence
from workers.datasets.base import RecordDataset
from workers.datasets.images import ImageArrayDataset
from workers.datasets.reference import (
    dataset_info,
    load_reference_split,
    materialise_reference,
    plant_canaries,
)
from workers.training import RECIPES


class FlattenedImages(RecordDataset):
    """An image adapter's records as flat float vectors in [0, 1], for an MLP on pixels
    (the ``mlp`` architecture has no flatten layer). Converted once: the recipe reads every
    record once per epoch."""

    modality = "image"

    def __init__(self, images: ImageArrayDataset) -> None:
        self._keys = list(images.record_keys)
        self.features = images.images.reshape(len(images), -1).to(torch.float32) / 255.0
        self.targets = images.targets

    @property
    def record_keys(self) -> Sequence[str]:
        return self._keys

    def __getitem__(self, index: int) -> tuple[str, torch.Tensor, torch.Tensor]:
        return self._keys[index], self.features[index], self.targets[index]


@dataclass(frozen=True)
class CanarySpec:
    """One canary audit: the dataset, how many canaries, the training subset and the recipe."""

    dataset: str
    canaries: int
    recipe_config: dict[str, Any]
    n_ordinary: int | None = None  # ordinary training records to sample; None: all of them
    flatten_images: bool = False
    n_shadow: int = 16
    seed: int = 0


@dataclass
class CanaryAudit:
    """What one canary audit measured (scores in ``canary_keys`` order)."""

    spec: CanarySpec
    canary_keys: list[str]
    n_train: int
    n_nonmembers: int
    canary_accuracy_original: float
    test_accuracy_original: float
    test_accuracy_retrained: float
    shadow_in: np.ndarray  # (n_shadow, n_canaries) bool
    original: MembershipTestResult
    retrained: MembershipTestResult
    power: PowerResult
    attack_original: PopulationAttackResult
    attack_retrained: PopulationAttackResult
    attack_original_calibrated: PopulationAttackResult
    attack_retrained_calibrated: PopulationAttackResult
    # The same attack against the held-out records' true labels: reported, not a claim (a
    # memorised mislabelled record is less confident than most correctly classified ones).
    attack_original_true_labels: PopulationAttackResult
    seconds: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        def tpr(result: PopulationAttackResult) -> str:
            figure = figure_named(result, "tpr_at_fpr_0.01")
            if not figure.applicable:
                return "n/a"
            return f"{figure.value:.2f} (95% CI {figure.ci_low:.2f}-{figure.ci_high:.2f})"

        auc = figure_named(self.attack_original, "auc")
        n = len(self.canary_keys)
        return "\n".join(
            [
                f"[canaries] {self.spec.dataset}: {n} mislabelled canaries, {self.n_train} training "
                f"records, {self.n_nonmembers} held-out non-members, {self.spec.n_shadow} shadow models",
                f"  original model: canary accuracy {self.canary_accuracy_original:.2f}, "
                f"test accuracy {self.test_accuracy_original:.3f}; retrained test accuracy "
                f"{self.test_accuracy_retrained:.3f}",
                f"  per-record test, original : {self.original.verdict} "
                f"({self.original.n_detected}/{self.original.n_tested} detected)",
                f"  per-record test, retrained: {self.retrained.verdict} "
                f"({self.retrained.n_detected}/{self.retrained.n_tested} detected, smallest adjusted "
                f"p {np.nanmin(self.retrained.adjusted_p_values):.3f})",
                f"  power check (canaries)    : {self.power.verdict} "
                f"(detected fraction {self.power.detected_fraction:.2f}, "
                f"minimum {self.power.min_detected_fraction:.2f})",
                f"  population attack, original vs relabelled held-out: {self.attack_original.verdict}, "
                f"TPR@1%FPR {tpr(self.attack_original)}, AUC {auc.value:.3f}",
                f"  population attack, retrained vs relabelled held-out: "
                f"{self.attack_retrained.verdict}, TPR@1%FPR {tpr(self.attack_retrained)}",
                f"  calibrated attack (per-record OUT shadows), original: "
                f"{self.attack_original_calibrated.verdict}, TPR@1%FPR {tpr(self.attack_original_calibrated)}, "
                f"AUC {figure_named(self.attack_original_calibrated, 'auc').value:.3f}",
                f"  calibrated attack, retrained: {self.attack_retrained_calibrated.verdict}, "
                f"TPR@1%FPR {tpr(self.attack_retrained_calibrated)}",
                f"  population attack, original vs held-out with true labels (not a claim): "
                f"TPR@1%FPR {tpr(self.attack_original_true_labels)}, AUC "
                f"{figure_named(self.attack_original_true_labels, 'auc').value:.3f}",
                "  time: " + ", ".join(f"{k} {v:.1f}s" for k, v in self.seconds.items()),
            ]
        )


def figure_named(result: PopulationAttackResult, name: str):
    return next(f for f in result.figures if f.name == name)


def canary_sources(directory: Path, canary_keys: Sequence[str]) -> set[str]:
    """The source records of ``canary_keys``, from the marks ``plant_canaries`` writes."""
    wanted, sources = set(canary_keys), set()
    with (directory / "records.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            if row["record_key"] in wanted:
                sources.add(row["canary"]["source_key"])
    return sources


def balanced_halves(n_shadow: int, n_records: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_shadow, n_records)`` bool: each record IN for exactly half of the shadow models."""
    ranks = np.argsort(rng.random((n_records, n_shadow)), axis=1)
    return (ranks < n_shadow // 2).T


def relabel_like_canaries(
    labels: np.ndarray, num_classes: int, rng: np.random.Generator
) -> np.ndarray:
    """Another label for each record, by ``plant_canaries``' rule (a uniform non-zero shift)."""
    return (labels + rng.integers(1, num_classes, size=labels.shape)) % num_classes


def logits_of(model: torch.nn.Module, dataset: RecordDataset, keys: Sequence[str]) -> np.ndarray:
    index = {key: i for i, key in enumerate(dataset.record_keys)}
    inputs = torch.stack([dataset[index[key]][1] for key in keys])
    model.eval()
    with torch.no_grad():
        return model(inputs).to(torch.float64).numpy()


def labels_of(dataset: RecordDataset, keys: Sequence[str]) -> np.ndarray:
    index = {key: i for i, key in enumerate(dataset.record_keys)}
    return np.array([int(dataset[index[key]][2]) for key in keys], dtype=np.int64)


def run_canary_audit(spec: CanarySpec, root: Path) -> CanaryAudit:
    """Plant canaries, train the original, retrained and shadow models, run the checks."""
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    rng = np.random.default_rng([spec.seed, 2024])

    directory = materialise_reference(spec.dataset, root, seed=spec.seed)
    canaries = plant_canaries(directory, kind="mislabel", count=spec.canaries, seed=spec.seed)
    num_classes = int(dataset_info(directory)["num_classes"])
    train: RecordDataset = load_reference_split(directory, "train")
    test: RecordDataset = load_reference_split(directory, "test")
    if spec.flatten_images:
        train, test = FlattenedImages(train), FlattenedImages(test)

    excluded = set(canaries) | canary_sources(directory, canaries)
    ordinary = sorted(k for k in train.record_keys if k not in excluded)
    if spec.n_ordinary is not None and spec.n_ordinary < len(ordinary):
        picked = rng.choice(len(ordinary), size=spec.n_ordinary, replace=False)
        ordinary = sorted(ordinary[i] for i in picked)
    members = sorted(ordinary + list(canaries))

    recipe = RECIPES.get("plain")
    config = {**spec.recipe_config, "seed": spec.seed}
    tick = time.perf_counter()
    original = recipe(config).train(train.subset(members)).model
    retrained = recipe(config).train(train.subset(ordinary)).model
    seconds["original+retrained"] = time.perf_counter() - tick

    shadow_in_all = balanced_halves(spec.n_shadow, len(members), rng)
    canary_columns = [members.index(k) for k in canaries]
    canary_labels = labels_of(train, canaries)
    shadow_scores = []
    test_keys = list(test.record_keys)
    test_labels = labels_of(test, test_keys)
    nonmember_labels = relabel_like_canaries(test_labels, num_classes, rng)
    shadow_test_scores = []
    tick = time.perf_counter()
    for s in range(spec.n_shadow):
        half = [k for k, is_in in zip(members, shadow_in_all[s], strict=True) if is_in]
        shadow = (
            recipe({**config, "seed": 10_000 + spec.seed * 100 + s}).train(train.subset(half)).model
        )
        shadow_scores.append(
            logit_scaled_confidence(logits_of(shadow, train, canaries), canary_labels)
        )
        shadow_test_scores.append(
            logit_scaled_confidence(logits_of(shadow, test, test_keys), nonmember_labels)
        )
    seconds["shadows"] = time.perf_counter() - tick
    shadow_in = shadow_in_all[:, canary_columns]

    original_canary_logits = logits_of(original, train, canaries)
    original_test_logits = logits_of(original, test, test_keys)
    retrained_test_logits = logits_of(retrained, test, test_keys)
    original_scores = logit_scaled_confidence(original_canary_logits, canary_labels)
    retrained_scores = logit_scaled_confidence(logits_of(retrained, train, canaries), canary_labels)

    original_nonmember_scores = logit_scaled_confidence(original_test_logits, nonmember_labels)
    retrained_nonmember_scores = logit_scaled_confidence(retrained_test_logits, nonmember_labels)
    reference = fit_shadow_reference(np.array(shadow_scores), shadow_in,
                                     nonmember_shadow_scores=np.array(shadow_test_scores))
    # OUT scores per record for the calibrated attack: NaN where the shadow trained on it; held-out
    # records are OUT for every shadow.
    canary_out = np.where(shadow_in, np.nan, np.array(shadow_scores))
    test_out = np.array(shadow_test_scores)
    audit = CanaryAudit(
        spec=spec,
        canary_keys=list(canaries),
        n_train=len(members),
        n_nonmembers=len(test_keys),
        canary_accuracy_original=accuracy(original_canary_logits, canary_labels),
        test_accuracy_original=accuracy(original_test_logits, test_labels),
        test_accuracy_retrained=accuracy(retrained_test_logits, test_labels),
        shadow_in=shadow_in,
        original=membership_test(
            record_ids=canaries, unlearned_scores=original_scores, reference=reference,
            nonmember_scores=original_nonmember_scores,
        ),
        retrained=membership_test(
            record_ids=canaries, unlearned_scores=retrained_scores, reference=reference,
            nonmember_scores=retrained_nonmember_scores,
        ),
        power=membership_power(
            record_ids=canaries,
            seen_scores=original_scores,
            reference=reference,
            source="canaries",
            nonmember_scores=original_nonmember_scores,
            n_tests=len(canaries),
        ),
        attack_original=population_attack(
            forget_scores=original_scores, nonmember_scores=original_nonmember_scores,
        ),
        attack_retrained=population_attack(
            forget_scores=retrained_scores, nonmember_scores=retrained_nonmember_scores,
        ),
        attack_original_calibrated=population_attack(
            forget_scores=shadow_calibrated_scores(original_scores, canary_out),
            nonmember_scores=shadow_calibrated_scores(original_nonmember_scores, test_out),
            signal="shadow-calibrated logit-scaled confidence",
        ),
        attack_retrained_calibrated=population_attack(
            forget_scores=shadow_calibrated_scores(retrained_scores, canary_out),
            nonmember_scores=shadow_calibrated_scores(retrained_nonmember_scores, test_out),
            signal="shadow-calibrated logit-scaled confidence",
        ),
        attack_original_true_labels=population_attack(
            forget_scores=original_scores,
            nonmember_scores=logit_scaled_confidence(original_test_logits, test_labels),
        ),
    )
    seconds["total"] = time.perf_counter() - started
    audit.seconds = seconds
    return audit
