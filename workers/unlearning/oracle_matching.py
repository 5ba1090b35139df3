"""Oracle matching: fine-tune the model's outputs onto those of models that never saw the records.

Georgiev et al., "Attribute-to-Delete: Machine Unlearning via Datamodel Matching" (arXiv:2410.23232,
2024), Sec. 3: with an oracle (a model retrained without the forget set) at hand, fine-tuning the
model to match the oracle's outputs on the forget set and a retain sample unlearns well; the paper
uses it as the ideal that datamodel matching approximates. The platform has no retrained model, but
it has shadow models in which each record is absent: the target of a forgotten record is the mean
centred logits of the method's shadow models that did not train on it (one per complementary pair).
A retain record stays in the retrained model's training set, so its target is the original model's
own output (the retrain's nearest stand-in; what the forget set did to it is not corrected here,
which datamodel matching does).

The shadow models were trained on half of the records, so they are somewhat less sure of unseen
records than a retrain on all the others would be; the targets carry that difference. The method
reads the shadow models of the lowest ``shadow_share`` of the pairs (``details["shadow_split"]``);
the audit must judge with the others.

``out_target`` (:class:`OracleMatchingConfig`) says which output of those shadow models a forgotten
record is matched to: ``mean`` (the paper's oracle, the default) or ``sampled``, one of them drawn per
record with the run's seeded generator. A retrained model is one draw from the models without the
record, and a mean of logits is not what any one of them outputs (where they put a memorised noise
image in different classes, the mean is flat). Measured (README, "The full audit in the setting where
a retrained model can PASS"): with ``mean``, U-LiRA on the audit's shadows finds 1-5 of 10 forgotten
noise images more member-like than in models without them on most seeds; with ``sampled`` and 8 shadow
models without each record, on 2 of 9 seeds (one record each); with 2 per record ``sampled`` did not
help.

Context: ``references`` (required). Details: ``shadow_split``, ``matched``, ``out_models_per_record``
(min and max over the forget set), ``out_target``, ``final_phase_loss``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from workers.unlearning.base import ConfigError
from workers.unlearning.loop import UnlearningRun
from workers.unlearning.output_matching import (
    MatchingTargets,
    OutputMatchingConfig,
    OutputMatchingMethod,
)
from workers.unlearning.references import ShadowSplit, inclusion_masks, reference_outputs


def out_model_means(outputs: Tensor, masks: Tensor) -> Tensor:
    """Per record, the mean of ``outputs`` (models, records, classes) over the models whose mask
    (models, records) is 0; ``ValueError`` for a record that every model trained on."""
    out = (1 - masks).to(outputs.dtype)
    counts = out.sum(dim=0)
    if (counts == 0).any():
        raise ValueError(f"{int((counts == 0).sum())} record(s) were trained on by every shadow model the method "
                         "reads: no model to match")
    return (out.unsqueeze(2) * outputs).sum(dim=0) / counts.unsqueeze(1)


OUT_TARGETS = ("mean", "sampled")


@dataclass
class OracleMatchingConfig(OutputMatchingConfig):
    """``out_target``: ``mean`` (the paper's: the mean centred logits of the shadow models without the
    record) or ``sampled`` (one of those models' centred logits, drawn per record with the seeded
    generator)."""

    out_target: str = "mean"

    def validate(self) -> None:
        super().validate()
        if self.out_target not in OUT_TARGETS:
            raise ConfigError(f"OracleMatchingConfig.out_target must be one of {', '.join(OUT_TARGETS)}, "
                              f"got {self.out_target!r}")


def sampled_out_model(outputs: Tensor, masks: Tensor, generator: torch.Generator) -> Tensor:
    """Per record, the ``outputs`` (models, records, classes) of one model whose mask (models,
    records) is 0, drawn uniformly with ``generator``; ``ValueError`` for a record that every model
    trained on."""
    out = masks == 0
    counts = out.sum(dim=0)
    if (counts == 0).any():
        raise ValueError(f"{int((counts == 0).sum())} record(s) were trained on by every shadow model the method "
                         "reads: no model to match")
    # The k-th model without the record, k drawn in [0, count).
    drawn = (torch.rand(len(counts), generator=generator) * counts).long().clamp_max(counts - 1)
    ranks = out.long().cumsum(dim=0) - 1
    chosen = (out & (ranks == drawn.unsqueeze(0))).long().argmax(dim=0)
    return outputs[chosen, torch.arange(outputs.shape[1])]


class OracleMatching(OutputMatchingMethod, name="oracle_matching"):
    """Forget records: the output of the shadow models without them (their mean, or one drawn);
    retain sample: the original's."""

    config_class = OracleMatchingConfig

    def targets(self, examples: MatchingTargets, original: Tensor, split: ShadowSplit,
                run: UnlearningRun) -> tuple[Tensor, dict[str, Any]]:
        cut = examples.forget_count
        forget_keys = examples.keys[:cut]
        masks = inclusion_masks(split.method, forget_keys)
        outputs = reference_outputs(split.method, examples.inputs[:cut], device=run.device)
        run.progress("reading the shadow models", 0.0)
        config = self.config
        assert isinstance(config, OracleMatchingConfig)
        forget_targets = (sampled_out_model(outputs, masks, run.generator) if config.out_target == "sampled"
                          else out_model_means(outputs, masks))
        targets = torch.cat([forget_targets, original[cut:]])
        out_counts = (1 - masks).sum(dim=0)
        return targets, {"out_models_per_record": {"min": int(out_counts.min()), "max": int(out_counts.max())},
                         "out_target": config.out_target}
