"""Planted cases of issue 23, audited the way a request's audit is: scikit-learn digits, a small MLP.

One seed is one independent replicate: its own train/held-out split (1,300 / 497 records), its own
50 mislabelled records (canaries the original memorises; 20 of them are the forget set of the
random-record cases), its own forgotten class, its own original, 32 shadow models in complementary
pairs (``shadow_half``, as workers/runners/shadow.py: every record OUT in exactly 16) and its own
planted "unlearned" models. Each case's evidence is assembled as audits/runner.py
``_classifier_evidence`` assembles it (every model's scores standardised on its own held-out
records, the shadow reference fitted with the held-out null, the population attack calibrated per
record against OUT shadows, RMIA's raw confidences, OUT shadows per record, the equivalence margins
the plan declares: the platform default at ``planned_alpha_share``), the family-wise level is split
by ``audits.checks.verdict.with_family_alpha``, and the audit's own code decides: ``run_checks``
(every registered check that applies) and ``final_verdict`` (approximate class). The
representation and relearning figures are measured with the runner's functions
(audits/forget_references.py: ``forget_population``, ``penultimate_features``,
``relearning_recovery``) against 2 references retrained without the class and 2 derived controls
(the platform's defaults, ``AUDIT_FORGET_REFERENCES`` / ``AUDIT_FORGET_CONTROLS``).

The cases (``CASES``, what each must show: ``EXPECTED``): on the 20 canaries, the original presented
as unlearned, a model retrained without them, a 20-epoch fine-tune of the original on the kept
records (an approximate method: the representation check does not apply to random records), and the
retrained model audited with 2 shadow models only; 2 typical records the original did not memorise,
retrained without; on a class, a head-only edit (last layer re-initialised and trained on the rest),
NegGrad+ stopped as soon as the class's accuracy reaches 0, and a fine-tune at the controls' budget
(a sound derived model the representation check must not FAIL). U-LiRA does not run: no platform
job made these versions, as for a model unlearned outside the platform, which the audit then skips
with the reason. The memorised setting (``MEMORISED_CASES``, its own replicate per seed:
``memorised_replicate``) asks whether a model retrained without the records can PASS where the
per-record test has power: 30 uniform-noise canaries with random labels forgotten, a wide MLP trained
to memorisation; its original presented as unlearned must FAIL. Differences from the runner: the retain sample is the first 500 kept records (the
runner draws 500 at random; only the warning-only retain checks read it) and the models are plain
PyTorch, not the platform's recipes.

What is repeated from Django modules, which a test of the check package cannot import:
``shadow_half``, ``SHADOW_FRACTION`` and the shadow count (workers/runners/shadow.py; held to the
originals by tests/audits/test_planted_audit_mirror.py) and the assembly of the evidence
(audits/runner.py ``_classifier_evidence``, step for step).
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from audits.checks.equivalence import DEFAULT_MARGIN, DeclaredMargins
from audits.checks.evidence import (
    ClassifierEvidence,
    ForgetReferenceFigures,
    ShadowProcedure,
    UtilityFigures,
)
from audits.checks.membership import fit_shadow_reference
from audits.checks.population_attack import DEFAULT_SIGNAL, shadow_calibrated_scores
from audits.checks.registry import run_checks
from audits.checks.result import CheckResult
from audits.checks.rmia import MIN_POPULATION as RMIA_MIN_POPULATION
from audits.checks.signals import logit_scaled_confidence
from audits.checks.signals import standardise_on_held_out as standardise
from audits.checks.verdict import (
    FAMILY_WISE_LEVEL,
    FinalVerdict,
    final_verdict,
    planned_alpha_share,
    with_family_alpha,
)
from audits.forget_references import (
    PROBE_OTHERS,
    RELEARNING_EXAMPLES,
    REPRESENTATION_INPUTS,
    forget_population,
    penultimate_features,
    relearning_recovery,
)

# workers/runners/shadow.py SHADOW_FRACTION / SHADOW_COUNT_DEFAULT.
SHADOW_FRACTION = 0.5
SHADOWS = 32
TRAIN_RECORDS = 1300
# Mislabelled records planted in training (the original memorises them); each seed forgets 20 of
# them, so the retrained model, like every shadow, still trains on other mislabelled records.
CANARIES = 50
FORGET_CANARIES = 20
UNPOWERED = 2
EPOCHS = 40
LR = 1e-2
# The derived controls' and the planted edits' budget: a fine-tune at 5 epochs, lr 1e-2; the sound
# approximate method on random records fine-tunes longer (20 epochs), to forget more.
EDIT_EPOCHS = 5
SOUND_EPOCHS = 20
REFERENCES = 2
CONTROLS = 2
# The memorised setting (``memorised_replicate``): its own replicate per seed, in which every forgotten
# record is powered. 80 canaries, each a uniform-noise image with a random label (out of the
# digits' distribution, so each is memorised on its own), of which 30 are forgotten and 50 stay in
# every model's training set; a wide MLP (64 -> 2048 -> 10) trained to memorisation (60 epochs, Adam
# lr 3e-3, no weight decay), the same recipe for the original, the shadows and the retrained model.
MEMORISED_CANARIES = 80
MEMORISED_FORGET = 30
MEMORISED_WIDTH = 2048
MEMORISED_EPOCHS = 60
MEMORISED_LR = 3e-3
MEMORISED_CASES = ("original_memorised", "retrained_memorised")
CASES = ("original_as_unlearned", "retrained", "finetune_random_records", "two_shadows", "unpowered_records",
         "head_only_class", "neggrad_plus_stopped_early", "finetune_class") + MEMORISED_CASES
# What each case must show (``expected``), in words.
EXPECTED = {
    "original_as_unlearned": "FAIL",
    "retrained": "not FAIL (a FAIL is a false FAIL; PASS wanted)",
    "finetune_random_records": "representation check not FAIL (it does not apply to random records)",
    "two_shadows": "INCONCLUSIVE, naming the shortfall of OUT shadow models",
    "unpowered_records": "INCONCLUSIVE, naming the records without power",
    "head_only_class": "FAIL by the representation check",
    "neggrad_plus_stopped_early": "FAIL by relearning or U-LiRA",
    "finetune_class": "representation check not FAIL (a sound derived model)",
    "original_memorised": "FAIL (memorised setting: 30 noise canaries, the original presented as unlearned)",
    "retrained_memorised": "PASS (memorised setting: retrained without the 30 noise canaries)",
}
PROCEDURE = ShadowProcedure(same_as_model=True, shadows="the benchmark's MLP recipe on halves of the training set",
                            model="the benchmark's MLP recipe")


# Where trained models are kept between runs (``use_model_cache``): None, train every time.
_MODEL_CACHE: list[Path | None] = [None]


def use_model_cache(directory: Path | None) -> None:
    """Keep every model a replicate trains under ``directory`` (safetensors, one file per seed and
    model) and load it from there when present, so that a second run re-scores and re-judges the same
    models (a changed check or verdict rule) without training them again; None turns it off."""
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
    _MODEL_CACHE[0] = directory


def _trained(seed: int, name: str, train, build=None) -> nn.Module:
    """``train()``'s model (a :func:`net`, or ``build(0)``'s architecture), or the one kept for
    (``seed``, ``name``) in the cache."""
    from safetensors.torch import load_file, save_file

    directory = _MODEL_CACHE[0]
    path = None if directory is None else directory / f"seed{seed}-{name}.safetensors"
    if path is not None and path.exists():
        model = (build or net)(0)
        model.load_state_dict(load_file(path))
        return model.eval()
    model = train()
    if path is not None:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    return model.eval()


def trained_shadows(seed: int, keys: list[str], shadows: int, train, *, prefix: str = "",
                    build=None) -> tuple[np.ndarray, list[nn.Module]]:
    """The seed's ``shadows`` shadow models in complementary pairs (:func:`shadow_half`), shadow
    ``index`` trained by ``train(rows, index)`` on its half (cached as ``{prefix}shadow{index}``).
    Out: membership (shadows, records) and the models."""
    position = {k: i for i, k in enumerate(keys)}
    members = np.zeros((shadows, len(keys)), dtype=bool)
    models = []
    for index in range(shadows):
        half = [position[k] for k in shadow_half(keys, version_id=seed, index=index)]
        members[index, half] = True
        models.append(_trained(seed, f"{prefix}shadow{index}", lambda half=half, index=index: train(half, index),
                               build))
    return members, models


def shadow_half(keys: list[str], *, version_id: int, index: int) -> list[str]:
    """workers.runners.shadow.shadow_half: complementary pairs (indices 2i and 2i + 1) split the
    keys by a hash of (version, pair, key), one half each."""
    pair, second = divmod(index, 2)

    def first_half(key: str) -> bool:
        return hashlib.sha256(f"shadow:{version_id}:{pair}:{key}".encode()).digest()[0] < 256 * SHADOW_FRACTION

    return sorted(k for k in keys if first_half(k) != bool(second))


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return (x / 16.0).astype(np.float32), y.astype(np.int64)


def net(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, *, seed: int, lr: float = LR,
        params=None) -> nn.Module:
    """Adam on cross-entropy, batches of 64 in a seeded order; the model, trained in place."""
    optimizer = torch.optim.Adam(params if params is not None else model.parameters(), lr=lr)
    order = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(x), generator=order).split(64):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
    return model.eval()


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean()) if len(y) else float("nan")


def scores(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """The runner's LiRA score: logit-scaled confidence of the true class, in eval mode."""
    with torch.no_grad():
        return logit_scaled_confidence(model.eval()(x).numpy(), y.numpy())


@dataclass
class Seed:
    """One replicate's data, original and shadow models (shared by its cases)."""

    seed: int
    x: torch.Tensor
    y: torch.Tensor  # training labels, canaries mislabelled
    xt: torch.Tensor
    yt: torch.Tensor
    keys: list[str]
    canaries: np.ndarray  # training indices
    unpowered: np.ndarray
    forget_class: int
    original: nn.Module
    shadow_members: np.ndarray  # (shadows, train records) bool
    shadows: list[nn.Module] = field(default_factory=list)


def replicate(seed: int, *, shadows: int = SHADOWS, epochs: int = EPOCHS) -> Seed:
    """Split, plant ``CANARIES`` mislabelled records, train the original and the shadow models."""
    torch.set_num_threads(1)
    x_all, y_all = _digits()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x_all))
    train, test = order[:TRAIN_RECORDS], order[TRAIN_RECORDS:]
    y = y_all[train].copy()
    chosen = rng.choice(TRAIN_RECORDS, CANARIES + UNPOWERED, replace=False)
    canaries, typical = chosen[:CANARIES], chosen[CANARIES:]
    y[canaries] = (y[canaries] + rng.integers(1, 10, CANARIES)) % 10
    x, yy = torch.tensor(x_all[train]), torch.tensor(y)
    keys = [f"s{seed}-r{i:04d}" for i in range(TRAIN_RECORDS)]
    original = _trained(seed, "original", lambda: fit(net(seed * 1000), x, yy, epochs, seed=seed * 1000))
    members, models = trained_shadows(seed, keys, shadows, lambda half, index: fit(
        net(seed * 1000 + 1 + index), x[half], yy[half], epochs, seed=seed * 1000 + 1 + index))
    return Seed(seed=seed, x=x, y=yy, xt=torch.tensor(x_all[test]), yt=torch.tensor(y_all[test]), keys=keys,
                canaries=np.sort(canaries[:FORGET_CANARIES]), unpowered=np.sort(typical), forget_class=int(rng.integers(10)),
                original=original, shadow_members=members, shadows=models)


def wide_net(seed: int) -> nn.Sequential:
    """The memorised setting's MLP: 64 -> ``MEMORISED_WIDTH`` -> 10."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, MEMORISED_WIDTH), nn.ReLU(), nn.Linear(MEMORISED_WIDTH, 10))


def memorised_replicate(seed: int, *, shadows: int = SHADOWS) -> Seed:
    """The memorised setting's replicate for ``seed``: the digits split as :func:`replicate` splits
    them, ``MEMORISED_CANARIES`` training records replaced by uniform-noise images with random labels
    (``canaries``: the first ``MEMORISED_FORGET`` of them, the forget set), the original and the
    shadow models (complementary pairs) all :func:`wide_net` trained alike. No class is forgotten
    (``forget_class`` -1) and no typical records are planted (``unpowered`` empty)."""
    torch.set_num_threads(1)
    x_all, y_all = _digits()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x_all))
    train, test = order[:TRAIN_RECORDS], order[TRAIN_RECORDS:]
    x_train, y = x_all[train].copy(), y_all[train].copy()
    canaries = rng.choice(TRAIN_RECORDS, MEMORISED_CANARIES, replace=False)
    x_train[canaries] = rng.uniform(0.0, 1.0, (MEMORISED_CANARIES, x_train.shape[1])).astype(np.float32)
    y[canaries] = rng.integers(0, 10, MEMORISED_CANARIES)
    x, yy = torch.tensor(x_train), torch.tensor(y)
    keys = [f"s{seed}-m{i:04d}" for i in range(TRAIN_RECORDS)]
    s = seed * 1000 + 100_000

    def train_on(index: np.ndarray | list[int], model_seed: int) -> nn.Module:
        return fit(wide_net(model_seed), x[index], yy[index], MEMORISED_EPOCHS, seed=model_seed, lr=MEMORISED_LR)

    every = np.arange(TRAIN_RECORDS)
    original = _trained(seed, "memorised-original", lambda: train_on(every, s), wide_net)
    members, models = trained_shadows(seed, keys, shadows, lambda half, index: train_on(half, s + 1 + index),
                                      prefix="memorised-", build=wide_net)
    return Seed(seed=seed, x=x, y=yy, xt=torch.tensor(x_all[test]), yt=torch.tensor(y_all[test]), keys=keys,
                canaries=np.sort(canaries[:MEMORISED_FORGET]), unpowered=np.zeros(0, dtype=np.int64), forget_class=-1,
                original=original, shadow_members=members, shadows=models)


def memorised_audits(seed: int, cases: tuple[str, ...] = MEMORISED_CASES) -> dict[str, Audit]:
    """Audit each of ``cases`` (of :data:`MEMORISED_CASES`) on the memorised setting's replicate for
    ``seed``: its original presented as unlearned, and a model retrained without the forget set."""
    unknown = set(cases) - set(MEMORISED_CASES)
    if unknown:
        raise ValueError(f"unknown memorised case(s) {sorted(unknown)}; known: {', '.join(MEMORISED_CASES)}")
    if not cases:
        return {}
    rep = memorised_replicate(seed)
    out: dict[str, Audit] = {}
    if "original_memorised" in cases:
        out["original_memorised"] = audit(classifier_evidence(rep, rep.original, rep.canaries))
    if "retrained_memorised" in cases:
        kept = np.setdiff1d(np.arange(TRAIN_RECORDS), rep.canaries)
        model_seed = seed * 1000 + 100_500
        retrained = _trained(seed, "memorised-retrained", lambda: fit(
            wide_net(model_seed), rep.x[kept], rep.y[kept], MEMORISED_EPOCHS, seed=model_seed, lr=MEMORISED_LR),
            wide_net)
        out["retrained_memorised"] = audit(classifier_evidence(rep, retrained, rep.canaries))
    return out


def classifier_evidence(rep: Seed, unlearned: nn.Module, forget: np.ndarray, *, shadow_index: np.ndarray | None = None,
                        forget_references: ForgetReferenceFigures | None = None) -> ClassifierEvidence:
    """The evidence audits/runner.py ``_classifier_evidence`` assembles for ``unlearned`` and the
    forgotten training indices ``forget`` (the shadow models ``shadow_index``, all by default), step
    for step, with each statistical check's share of the family-wise level."""
    shadow_index = np.arange(len(rep.shadows)) if shadow_index is None else shadow_index
    keep = np.setdiff1d(np.arange(TRAIN_RECORDS), forget)[:500]
    xf, yf, xr, yr = rep.x[forget], rep.y[forget], rep.x[keep], rep.y[keep]
    f_after, r_after, t_after = (scores(unlearned, a, b) for a, b in ((xf, yf), (xr, yr), (rep.xt, rep.yt)))
    f_before, r_before, t_before = (scores(rep.original, a, b) for a, b in ((xf, yf), (xr, yr), (rep.xt, rep.yt)))
    raw_shadow_scores = np.array([scores(rep.shadows[i], xf, yf) for i in shadow_index])
    shadow_in = rep.shadow_members[shadow_index][:, forget]
    shadow_test = [scores(rep.shadows[i], rep.xt, rep.yt) for i in shadow_index]
    shadow_scores = [standardise(sc, te)[0] for sc, te in zip(raw_shadow_scores, shadow_test, strict=True)]
    shadow_test_z = np.array([standardise(te, te)[0] for te in shadow_test])
    f_after_z, f_before_z = standardise(f_after, t_after)[0], standardise(f_before, t_before)[0]
    t_after_z, t_before_z = standardise(t_after, t_after)[0], standardise(t_before, t_before)[0]
    reference = None
    if len(shadow_index) >= 2 and len(forget):
        reference = fit_shadow_reference(np.array(shadow_scores), shadow_in, nonmember_shadow_scores=shadow_test_z)
    # audits/runner.py _attack_scores
    if len(shadow_test) >= 2:
        forget_out = np.where(shadow_in, np.nan, raw_shadow_scores)
        attacked_forget = shadow_calibrated_scores(f_after, forget_out)
        attacked_test = shadow_calibrated_scores(t_after, np.array(shadow_test))
        attacked_forget, attacked_test = attacked_forget[np.isfinite(attacked_forget)], attacked_test[np.isfinite(attacked_test)]
        signal = "logit-scaled confidence, calibrated per record against OUT shadow models"
    else:
        attacked_forget, attacked_test, signal = f_after, t_after, DEFAULT_SIGNAL
    raw_confidences = None
    if reference is not None and len(t_after) >= RMIA_MIN_POPULATION:
        raw_confidences = {"unlearned_conf": f_after, "original_conf": f_before, "reference_conf": raw_shadow_scores,
                           "population_unlearned_conf": t_after, "population_original_conf": t_before,
                           "population_reference_conf": np.array(shadow_test)}
    # deletion/planning.py declares the margins: the platform default, at the plan's share of the level.
    margins = DeclaredMargins.symmetric(DEFAULT_MARGIN, declared_by="the platform default",
                                        alpha=planned_alpha_share("classifier"))
    return with_family_alpha(ClassifierEvidence(
        record_ids=tuple(rep.keys[i] for i in forget), forget_scores=f_after_z, original_forget_scores=f_before_z,
        shadow_reference=reference, equivalence_margins=margins,
        attack_forget_scores=attacked_forget, attack_nonmember_scores=attacked_test, attack_signal=signal,
        retain_scores=r_after, original_retain_scores=r_before, nonmember_scores=t_after,
        original_nonmember_scores=t_before,
        utility=UtilityFigures(metric="accuracy", retain=accuracy(unlearned, xr, yr), test=accuracy(unlearned, rep.xt, rep.yt),
                               original_retain=accuracy(rep.original, xr, yr),
                               original_test=accuracy(rep.original, rep.xt, rep.yt)),
        nonmember_null_scores=t_after_z, original_nonmember_null_scores=t_before_z, shadow_procedure=PROCEDURE,
        raw_confidences=raw_confidences, out_shadow_counts=(~shadow_in).sum(axis=0),
        shadow_models=len(shadow_index), forget_references=forget_references), level=FAMILY_WISE_LEVEL)


@dataclass(frozen=True)
class Audit:
    """One case's audit: the check results and the verdict the audit's rule gives them."""

    checks: tuple[CheckResult, ...]
    verdict: FinalVerdict

    def check(self, name: str) -> CheckResult | None:
        return next((c for c in self.checks if c.check == name), None)


def audit(evidence: ClassifierEvidence) -> Audit:
    """What the audit runs on the evidence: every registered check that applies, then the verdict."""
    checks = run_checks(evidence)
    return Audit(tuple(checks), final_verdict(guarantee_class="approximate", checks=checks))


def _batches(x: torch.Tensor, y: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x[i:i + 256], y[i:i + 256]) for i in range(0, len(x), 256)]


def forget_reference_figures(rep: Seed, unlearned: nn.Module, forget: np.ndarray, references: list[nn.Module],
                             controls: list[nn.Module]) -> ForgetReferenceFigures:
    """audits/forget_references.py ``forget_reference_figures`` for a class forget set: the
    representation of up to 500 forgotten records and 200 held-out records of other labels, and the
    recovery after fine-tuning on 5 held-out records of the label; NOT_APPLICABLE for random records."""
    population = forget_population(forget_labels=rep.y[forget].tolist(), member_labels=rep.y.tolist())
    if population.kind == "records":
        return ForgetReferenceFigures(not_applicable=f"Not a class or sub-population: {population.statement}.")
    rng = np.random.default_rng(rep.seed)
    forgotten = _batches(rep.x[forget[:REPRESENTATION_INPUTS]], rep.y[forget[:REPRESENTATION_INPUTS]])
    others = np.flatnonzero(rep.yt.numpy() != population.label)
    others = np.sort(rng.choice(others, min(PROBE_OTHERS, len(others)), replace=False))
    inputs = forgotten + _batches(rep.xt[others], rep.yt[others])
    is_forget = np.r_[np.ones(min(len(forget), REPRESENTATION_INPUTS), dtype=bool), np.zeros(len(others), dtype=bool)]

    def features(model):
        return penultimate_features(model, inputs, device="cpu")

    like = np.sort(rng.choice(np.flatnonzero(rep.yt.numpy() == population.label), RELEARNING_EXAMPLES, replace=False))
    examples = (rep.xt[like], rep.yt[like])
    return ForgetReferenceFigures(
        original_representation=features(rep.original), unlearned_representation=features(unlearned),
        reference_representations=tuple(features(m) for m in references),
        control_representations=tuple(features(m) for m in controls), is_forget=is_forget,
        unlearned_recovery=relearning_recovery(unlearned, examples, forgotten, device="cpu"),
        reference_recovery=tuple(relearning_recovery(m, examples, forgotten, device="cpu") for m in references))


def head_only_edit(rep: Seed, keep: np.ndarray) -> nn.Module:
    """The original with its last layer re-initialised and trained on the kept records; the rest unchanged."""
    model = copy.deepcopy(rep.original)
    torch.manual_seed(rep.seed + 7)
    model[-1].reset_parameters()
    return fit(model, rep.x[keep], rep.y[keep], EDIT_EPOCHS, seed=rep.seed + 7, params=model[-1].parameters())


def neggrad_plus_stopped_early(rep: Seed, forget: np.ndarray, keep: np.ndarray, *, max_steps: int = 1000) -> nn.Module:
    """Ascent on the forgotten class, descent on the rest (Adam, lr 1e-3), stopped at the first step
    at which the class's accuracy on the forgotten records is 0 (it hides the class)."""
    model = copy.deepcopy(rep.original).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(rep.seed + 11)
    xf, yf, xr, yr = rep.x[forget], rep.y[forget], rep.x[keep], rep.y[keep]
    for _ in range(max_steps):
        f = torch.randint(0, len(xf), (32,), generator=g)
        r = torch.randint(0, len(xr), (64,), generator=g)
        loss = nn.functional.cross_entropy(model(xr[r]), yr[r]) - nn.functional.cross_entropy(model(xf[f]), yf[f])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if accuracy(model, xf, yf) == 0.0:
            break
    return model.eval()


def planted_audits(rep: Seed, cases: tuple[str, ...] = CASES, *, epochs: int = EPOCHS) -> dict[str, Audit]:
    """Audit each of ``cases`` on the replicate ``rep`` (see the module docstring)."""
    unknown = set(cases) - set(CASES)
    if unknown:
        raise ValueError(f"unknown planted case(s) {sorted(unknown)}; known: {', '.join(CASES)}")
    out: dict[str, Audit] = memorised_audits(rep.seed, tuple(c for c in cases if c in MEMORISED_CASES))
    s = rep.seed * 1000
    every = np.arange(TRAIN_RECORDS)
    canaries = rep.canaries
    if {"retrained", "two_shadows", "unpowered_records"} & set(cases):
        # One retrain without the canaries and the typical records serves the three cases.
        kept = np.setdiff1d(every, np.r_[canaries, rep.unpowered])
        retrained = _trained(rep.seed, "retrained", lambda: fit(net(s + 500), rep.x[kept], rep.y[kept], epochs,
                                                                seed=s + 500))
    if "original_as_unlearned" in cases:
        out["original_as_unlearned"] = audit(classifier_evidence(rep, rep.original, canaries))
    if "retrained" in cases:
        out["retrained"] = audit(classifier_evidence(rep, retrained, canaries))
    if "two_shadows" in cases:
        out["two_shadows"] = audit(classifier_evidence(rep, retrained, canaries, shadow_index=np.arange(2)))
    if "unpowered_records" in cases:
        out["unpowered_records"] = audit(classifier_evidence(rep, retrained, rep.unpowered))
    if "finetune_random_records" in cases:
        kept = np.setdiff1d(every, canaries)
        tuned = _trained(rep.seed, "finetune_random_records", lambda: fit(
            copy.deepcopy(rep.original), rep.x[kept], rep.y[kept], SOUND_EPOCHS, seed=s + 600))
        figures = forget_reference_figures(rep, tuned, canaries, [], [])
        out["finetune_random_records"] = audit(classifier_evidence(rep, tuned, canaries, forget_references=figures))
    class_cases = {"head_only_class", "neggrad_plus_stopped_early", "finetune_class"} & set(cases)
    if class_cases:
        forget = np.flatnonzero(rep.y.numpy() == rep.forget_class)
        kept = np.setdiff1d(every, forget)
        references = [_trained(rep.seed, f"reference{i}", lambda i=i: fit(
            net(s + 700 + i), rep.x[kept], rep.y[kept], epochs, seed=s + 700 + i)) for i in range(REFERENCES)]
        controls = [_trained(rep.seed, f"control{i}", lambda i=i: fit(
            copy.deepcopy(rep.original), rep.x[kept], rep.y[kept], EDIT_EPOCHS, seed=s + 800 + i))
            for i in range(CONTROLS)]
        edits = {"head_only_class": lambda: head_only_edit(rep, kept),
                 "neggrad_plus_stopped_early": lambda: neggrad_plus_stopped_early(rep, forget, kept),
                 "finetune_class": lambda: fit(copy.deepcopy(rep.original), rep.x[kept], rep.y[kept], EDIT_EPOCHS,
                                               seed=s + 900)}
        for name in sorted(class_cases):
            model = _trained(rep.seed, name, edits[name])
            figures = forget_reference_figures(rep, model, forget, references, controls)
            out[name] = audit(classifier_evidence(rep, model, forget, forget_references=figures))
    return out


def _failed(result: Audit, *names: str) -> bool:
    return any((c := result.check(name)) is not None and c.verdict.value == "FAIL" for name in names)


def expected(case: str, result: Audit) -> bool:
    """Whether ``result`` shows what ``case`` must show (:data:`EXPECTED`): the verdict the audit's
    rule gives, and for the checks the case is about, that check among its reasons."""
    verdict, reasons = result.verdict.verdict.value, " ".join(result.verdict.reasons)
    if case == "original_as_unlearned":
        return verdict == "FAIL"
    if case == "retrained":
        return verdict != "FAIL"
    if case == "original_memorised":
        return verdict == "FAIL"
    if case == "retrained_memorised":
        return verdict == "PASS"
    if case in ("finetune_random_records", "finetune_class"):
        return not _failed(result, "representation_retention")
    if case == "two_shadows":
        return verdict == "INCONCLUSIVE" and "fewer than 16 OUT shadow models" in reasons
    if case == "unpowered_records":
        return verdict == "INCONCLUSIVE" and "not detected even on the original model" in reasons
    if case == "head_only_class":
        return verdict == "FAIL" and _failed(result, "representation_retention")
    if case == "neggrad_plus_stopped_early":
        return verdict == "FAIL" and _failed(result, "relearning", "unlearning_lira")
    raise ValueError(f"unknown planted case {case!r}; known: {', '.join(CASES)}")
