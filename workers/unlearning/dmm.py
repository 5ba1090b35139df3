"""Datamodel matching (DMM): predict a retrained model's outputs with datamodels, then match them.

Georgiev et al., "Attribute-to-Delete: Machine Unlearning via Datamodel Matching" (arXiv:2410.23232,
2024). A datamodel of an example x is a linear model of x's output as a function of which training
records a model was trained on: f(x; S) ~ b(x) + sum_{j in S} beta_j(x). DMM (a) predicts the
output of a model retrained without the forget set F and (b) fine-tunes the model to match the
predictions on F and a retain sample (:mod:`workers.unlearning.output_matching`).

Here, per target example and per class (centred logits), the datamodel is fitted on the platform's
shadow models, which are the random-subset runs datamodels need (each trained on a random half).
Only the coefficients of the forget records enter the prediction, so only they are fitted: the
regressors are the shadow models' inclusion masks of the forget records. The masks of the other
records are independent of these (shadow.shadow_half hashes each key on its own), so leaving them
out does not bias the forget records' coefficients; it leaves their effect in the residual.
The fit is ridge regression (:func:`datamodel_fit`) whose penalty spares each forget record's
effect on its own output: with fewer shadow models than forget records, plain ridge would spread a
record's effect over every column and shrink it by about models / records, while the self effect is
the large one for a memorised record and the cross effects are small and noisy.

Extrapolation from 50% subsets to "everything but F": the prediction is anchored on the served
model's own outputs, f(x) - sum_{j in F} beta_j(x), the form the paper uses: the datamodel supplies
only the change that removing F makes, not the level. The coefficients are measured at 50% density
and applied at 100% without rescaling; a record's effect in a half-data model is, for ordinary
records, if anything larger than in the full model (less redundancy), so the prediction may overshoot
for them; for memorised records the self-effect dominates and is similar at both densities. The
result reports, on the forget set, the mean margin of the original model, of the prediction and of
the shadow models without the record, so that a reader sees where the prediction lands.

What limits the prediction on memorised forget sets is the forget records' effects on each other,
not the density (measured on the test fixture, ``benchmarks/dmm_klom.py --diagnose 128``, README
"DMM's KLoM over seeds"): every half-data run still holds about half of the other forget records,
and the retrained model none. Over seeds 0-4, eight runs at 50% density that hold no forget record
average within 1.6-2.9 nats RMS of the retrained models' mean margin per record; eight runs without
the record but with half of the others, 3.3-6.1. With tens of runs the cross coefficients are
shrunk towards zero and that joint effect is lost; the prediction's error falls from 4.1 nats RMS
(mean over the seeds) at 16 half-data runs to 2.5 at 128. Denser subsets (40 runs at 80% of the
records, 80 at 90%) did worse (4.3-6.6: fewer out-runs per record, and most other forget records
in each), and a linear density calibration fitted on never-seen digits (slope 1.01-1.14) did not
lower the error (3.5-6.6 against 3.3-6.1). Structured datamodels do not resolve it either
(``--diagnose``, README): adding the count of the other forget records in a run as a regressor
extrapolates that count from about 10 +- 2 to 0 and multiplies the error (about 11 nats RMS); a
prior that the cross effects shrink towards, set by the labels and the input similarity
(``cross_effect_prior="label_similarity"``), measured close to the plain ridge, so the default stays
the plain ridge (``zero``). The details name the prior used.

The datamodels' quality is reported as the linear datamodeling score (LDS, Park et al. 2023): per
target example, the Spearman correlation across held-out shadow models between predicted and actual
outputs, averaged over classes, with each pair of shadow models held out in turn (the audit's
shadows are never read). The datamodel weights are derived from the records: they live in memory
during the job only and are dropped with it, never stored (``details["derived_copies"]``).

Context: ``references`` (required). Details: ``shadow_split``, ``matched``, ``datamodels`` (models,
regressors, regularisation, LDS), ``extrapolation``, ``derived_copies``, ``final_phase_loss``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.stats import rankdata
from torch import Tensor

from workers.unlearning.base import ConfigError
from workers.unlearning.loop import UnlearningRun, require_range
from workers.unlearning.output_matching import (
    MatchingTargets,
    OutputMatchingConfig,
    OutputMatchingMethod,
)
from workers.unlearning.references import ShadowSplit, inclusion_masks, reference_outputs


@dataclass
class DatamodelMatchingConfig(OutputMatchingConfig):
    """``ridge`` times the mean diagonal of the masks' Gram matrix is the penalty on every coefficient
    but a forget record's effect on its own output (:func:`datamodel_fit`). ``min_shadow_models``: the
    fewest shadow models the datamodels may be fitted on.

    The paper fits datamodels on many thousands of subset models (or estimates them with TRAK); the
    platform has tens, fewer than the forget records of a larger request. Plain ridge then spreads
    each record's effect over every column and shrinks it by about models / records; penalising the
    cross effects and not the self effect keeps a memorised record's own effect (the one that
    matters) whole while the noisy cross effects shrink. ``cross_effect_prior``: what the cross
    effects shrink towards (``CROSS_EFFECT_PRIORS``): ``zero`` (the plain ridge above) or
    ``label_similarity`` (:func:`label_similarity_prior`)."""

    ridge: float = 1.0
    min_shadow_models: int = 4
    cross_effect_prior: str = "zero"

    def validate(self) -> None:
        super().validate()
        require_range(self, "ridge", 0.0, 1e6)
        if self.min_shadow_models < 2:
            raise ConfigError(f"DatamodelMatchingConfig.min_shadow_models must be >= 2, got {self.min_shadow_models}")
        if self.cross_effect_prior not in CROSS_EFFECT_PRIORS:
            raise ConfigError(f"DatamodelMatchingConfig.cross_effect_prior must be one of {sorted(CROSS_EFFECT_PRIORS)}, "
                              f"got {self.cross_effect_prior!r}")


@dataclass(frozen=True)
class Datamodels:
    """Linear datamodels of T targets x C classes on F regressors: ``weights`` (F, T, C),
    ``intercept`` (T, C); float64."""

    weights: Tensor
    intercept: Tensor

    def predict(self, masks: Tensor) -> Tensor:
        """(models, T, C) outputs predicted for inclusion ``masks`` (models, F)."""
        return self.intercept + torch.einsum("mf,ftc->mtc", masks.double(), self.weights)

    def removal_effect(self) -> Tensor:
        """(T, C): the predicted output with every regressor included less the output with none."""
        return self.weights.sum(dim=0)


def datamodel_fit(masks: Tensor, outputs: Tensor, *, ridge: float, self_index: Tensor | None = None,
                  prior: Tensor | None = None) -> Datamodels:
    """Ridge regression of ``outputs`` (models, T, C) on inclusion ``masks`` (models, F).

    With X the centred masks and G = X'X, each target's coefficients solve
    (G + ridge * mean(diag G) * P) beta = X'y + ridge * mean(diag G) * P mu, where the penalty P is 1 on
    every regressor except the target's own record (``self_index[t]``, the column of target t, or -1
    for a target that is no regressor), which is not penalised: a record's effect on its own output is
    the one expected to be large, the others' small. The penalised coefficients shrink towards
    ``prior`` mu (F, T, C), or towards zero without one. A regressor that never varies gets weight 0."""
    x = masks.double()
    targets = outputs.shape[1]
    y = outputs.double()
    x_mean, y_mean = x.mean(dim=0), y.mean(dim=0)
    xc, yc = x - x_mean, y - y_mean
    gram = xc.T @ xc
    diagonal = gram.diagonal()
    scale = ridge * (float(diagonal.mean()) if float(diagonal.mean()) > 0 else 1.0)
    moment = torch.einsum("mf,mtc->ftc", xc, yc)  # X'y for every target and class
    varies = diagonal > 0
    weights = torch.zeros(x.shape[1], targets, y.shape[2], dtype=torch.float64)
    own = torch.full((targets,), -1, dtype=torch.long) if self_index is None else self_index.long()
    for column in torch.unique(own).tolist():
        chosen = own == column
        penalty = torch.full((x.shape[1],), scale, dtype=torch.float64)
        if column >= 0:
            penalty[column] = 0.0
        system = (gram + torch.diag(penalty))[varies][:, varies]
        rhs = moment[varies][:, chosen]
        if prior is not None:
            rhs = rhs + penalty[varies].view(-1, 1, 1) * prior.double()[varies][:, chosen]
        rhs = rhs.reshape(int(varies.sum()), -1)
        solved = torch.linalg.lstsq(system, rhs).solution
        weights[varies.nonzero().flatten().unsqueeze(1), chosen.nonzero().flatten()] = solved.reshape(
            int(varies.sum()), int(chosen.sum()), y.shape[2])
    intercept = y_mean - torch.einsum("f,ftc->tc", x_mean, weights)
    return Datamodels(weights=weights, intercept=intercept)


PriorOf = Callable[[Tensor, Tensor], Tensor | None]  # (masks, outputs) of the models fitted on -> prior or None


def cross_validated_predictions(masks: Tensor, outputs: Tensor, groups: Tensor, *, ridge: float,
                                self_index: Tensor | None = None, prior_of: PriorOf | None = None) -> Tensor:
    """(models, T, C): each model's outputs predicted by datamodels fitted without its group (a shadow
    pair: the two models of a pair have complementary masks, so one would reveal the other). A prior
    that is estimated from the models (``prior_of``) is estimated without the held-out group too."""
    predicted = torch.empty_like(outputs, dtype=torch.float64)
    for group in torch.unique(groups):
        held = groups == group
        prior = prior_of(masks[~held], outputs[~held]) if prior_of is not None else None
        fitted = datamodel_fit(masks[~held], outputs[~held], ridge=ridge, self_index=self_index, prior=prior)
        predicted[held] = fitted.predict(masks[held])
    return predicted


def label_similarity_prior(masks: Tensor, outputs: Tensor, labels: Tensor, inputs: Tensor) -> Tensor:
    """(F, T, C) prior mean of the forget records' effects on each other, for :func:`datamodel_fit`.

    ``masks`` (models, F) of the forget records, ``outputs`` (models, T, C) with targets 0..F-1 the
    forget records themselves (the rest, a retain sample, get a zero prior), ``labels`` (F,) their
    labels, ``inputs`` (F, ...) their inputs. Forget record j's effect on forget record t's class c is
    theta1 + theta2 * cos(x_j, x_t) where j and t carry the same label, 0 otherwise (the input cosine of
    the flattened inputs); one theta for the label's logit, one for the other classes, each fitted by
    least squares on all forget targets at once, with every target's intercept and own mask partialled
    out. Why: with tens of models each half-data run holds about half the other forget records, and a
    mislabelled record moves another with the same wrong label, the more the closer their inputs
    (README, "DMM's KLoM over seeds")."""
    x, y = masks.double(), outputs.double()
    records, classes = x.shape[1], y.shape[2]
    flat = inputs[:records].reshape(records, -1).double()
    flat = flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)
    same_label = (labels[:records, None] == labels[None, :records]).double() * (1 - torch.eye(records, dtype=torch.float64))
    features = torch.stack([same_label, same_label * (flat @ flat.T)])  # (2, j, t)
    counted = torch.einsum("mj,kjt->mtk", x, features)  # per model and target: features summed over included j
    is_label = torch.zeros(records, classes, dtype=torch.bool)
    is_label[torch.arange(records), labels[:records].long()] = True
    regressors, responses = [], []
    for t in range(records):
        design = torch.stack([torch.ones(len(x), dtype=torch.float64), x[:, t]], dim=1)
        annihilator = torch.eye(len(x), dtype=torch.float64) - design @ torch.linalg.pinv(design)
        regressors.append(annihilator @ counted[:, t])
        responses.append(annihilator @ y[:, t])
    regressors, responses = torch.stack(regressors), torch.stack(responses)  # (t, m, 2), (t, m, C)
    prior = torch.zeros(records, y.shape[1], classes, dtype=torch.float64)
    for role in (True, False):
        t_index, c_index = (is_label == role).nonzero(as_tuple=True)
        design = regressors[t_index].reshape(-1, 2)
        theta = torch.linalg.lstsq(design, responses[t_index, :, c_index].reshape(-1, 1)).solution.flatten()
        prior[:, t_index, c_index] = torch.einsum("k,kjn->jn", theta, features[:, :, t_index])
    return prior


# What the datamodels' cross effects shrink towards: (masks, outputs, labels, inputs) -> prior or None.
CROSS_EFFECT_PRIORS: dict[str, Callable[[Tensor, Tensor, Tensor, Tensor], Tensor | None]] = {
    "zero": lambda masks, outputs, labels, inputs: None,
    "label_similarity": label_similarity_prior,
}


def linear_datamodeling_score(predicted: Tensor, actual: Tensor) -> np.ndarray:
    """(T,) per target: the Spearman correlation across models between predicted and actual outputs
    (models, T, C), averaged over the classes whose outputs vary; NaN where none does."""
    p = predicted.double().numpy()
    a = actual.double().numpy()
    scores = np.full(p.shape[1], np.nan)
    for t in range(p.shape[1]):
        values = [_spearman(p[:, t, c], a[:, t, c]) for c in range(p.shape[2])]
        values = [v for v in values if np.isfinite(v)]
        if values:
            scores[t] = float(np.mean(values))
    return scores


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    rx, ry = rankdata(x), rankdata(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def label_margins(logits: Tensor, labels: Tensor) -> Tensor:
    """The label's logit less the log-sum-exp of the other classes' logits, per row (KLoM's margin)."""
    rows = torch.arange(len(labels))
    others = logits.double().clone()
    others[rows, labels] = float("-inf")
    return logits.double()[rows, labels] - torch.logsumexp(others, dim=1)


class DatamodelMatching(OutputMatchingMethod, name="dmm"):
    """Targets: the original model's outputs less the forget records' datamodel coefficients."""

    config_class = DatamodelMatchingConfig

    def targets(self, examples: MatchingTargets, original: Tensor, split: ShadowSplit,
                run: UnlearningRun) -> tuple[Tensor, dict[str, Any]]:
        config = self.config
        assert isinstance(config, DatamodelMatchingConfig)
        shadows = list(split.method)
        if len(shadows) < config.min_shadow_models:
            raise ValueError(f"dmm: {len(shadows)} shadow model(s) to fit the datamodels on, fewer than "
                             f"min_shadow_models={config.min_shadow_models}; train more shadow models")
        cut = examples.forget_count
        masks = inclusion_masks(shadows, examples.keys[:cut])
        outputs = reference_outputs(shadows, examples.inputs, device=run.device)
        run.progress("reading the shadow models", 0.0)
        # Forget record t is regressor t: its own effect is not penalised (datamodel_fit).
        own = torch.cat([torch.arange(cut), torch.full((len(examples.keys) - cut,), -1)])
        labels = examples.labels
        prior_form = CROSS_EFFECT_PRIORS[config.cross_effect_prior]

        def prior_of(fit_masks: Tensor, fit_outputs: Tensor) -> Tensor | None:
            return prior_form(fit_masks, fit_outputs, labels, examples.inputs)

        datamodels = datamodel_fit(masks, outputs, ridge=config.ridge, self_index=own,
                                   prior=prior_of(masks, outputs))
        predicted = original - datamodels.removal_effect()
        groups = torch.tensor([r.pair for r in shadows])
        held_out = cross_validated_predictions(masks, outputs, groups, ridge=config.ridge, self_index=own,
                                               prior_of=prior_of)
        lds = linear_datamodeling_score(
            torch.stack([label_margins(held_out[m], labels) for m in range(len(shadows))]).unsqueeze(2),
            torch.stack([label_margins(outputs[m], labels) for m in range(len(shadows))]).unsqueeze(2))
        forget_labels = labels[:cut]
        out_mask = 1 - masks  # (models, forget records): the shadow models without the record
        shadow_margins = torch.stack([label_margins(outputs[m, :cut], forget_labels) for m in range(len(shadows))])
        out_margin = (out_mask * shadow_margins).sum(dim=0) / out_mask.sum(dim=0).clamp_min(1)
        details = {
            "datamodels": {
                "shadow_models": len(shadows), "regressors": cut, "targets": len(examples.keys),
                "classes": int(outputs.shape[2]), "ridge": config.ridge, "self_effect_penalised": False,
                "cross_effect_prior": config.cross_effect_prior,
                "fitted_on": "inclusion masks of the forget records in the method's shadow models (random halves)",
                "lds": {
                    "output": "the label's margin (KLoM's), from the per-class predictions",
                    "forget": _mean(lds[:cut]), "retain_sample": _mean(lds[cut:]),
                    "held_out": "each shadow pair in turn (leave-one-pair-out over the method's shadow models)",
                },
            },
            "extrapolation": {
                "form": "anchored: the original model's outputs less the sum of the forget records' coefficients",
                "density": "coefficients fitted on 50% subsets, applied to the full set without rescaling",
                "forget_mean_margin": {
                    "original": float(label_margins(original[:cut], forget_labels).mean()),
                    "predicted": float(label_margins(predicted[:cut], forget_labels).mean()),
                    "shadow_models_without_the_record": float(out_margin.mean()),
                },
            },
            "derived_copies": {
                "datamodel_weights": {
                    "shape": list(datamodels.weights.shape),
                    "stored": False,
                    "note": ("derived from the forgotten records; held in memory during the job only and dropped "
                             "when it ends: no copy is written, so none is left to purge"),
                },
            },
        }
        del datamodels, held_out
        return predicted, details


def _mean(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else None
