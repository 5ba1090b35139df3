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

Context: ``references`` (required). Details: ``shadow_split``, ``matched``, ``out_models_per_record``
(min and max over the forget set), ``final_phase_loss``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

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


class OracleMatching(OutputMatchingMethod, name="oracle_matching"):
    """Forget records: mean output of the shadow models without them; retain sample: the original's."""

    config_class = OutputMatchingConfig

    def targets(self, examples: MatchingTargets, original: Tensor, split: ShadowSplit,
                run: UnlearningRun) -> tuple[Tensor, dict[str, Any]]:
        cut = examples.forget_count
        forget_keys = examples.keys[:cut]
        masks = inclusion_masks(split.method, forget_keys)
        outputs = reference_outputs(split.method, examples.inputs[:cut], device=run.device)
        run.progress("reading the shadow models", 0.0)
        targets = torch.cat([out_model_means(outputs, masks), original[cut:]])
        out_counts = (1 - masks).sum(dim=0)
        return targets, {"out_models_per_record": {"min": int(out_counts.min()), "max": int(out_counts.max())}}
