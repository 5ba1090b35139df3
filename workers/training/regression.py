"""The plain regression recipe: one PyTorch module predicting one real number per record, trained
with mean squared error on every record (shard 0, slice 0), like the plain recipe in all else.

The module gives one output per input (an mlp with ``num_classes`` 1; its ``output_scale`` and
``output_shift`` name the target's unit) and the dataset's targets are real numbers (the
reference set ``diabetes``). Retraining (the exact method) reruns this recipe; Blindspot
(workers.unlearning.blindspot) is its approximate method.
"""

from __future__ import annotations

import torch
from torch import Tensor

from workers.training.plain import PlainRecipe


def regression_loss(outputs: Tensor, targets: Tensor) -> Tensor:
    """Mean squared error of ``outputs`` ``[B, 1]`` (or ``[B]``) against real ``targets`` ``[B]``;
    ValueError when the module gives more than one output per input or the targets are class labels."""
    flat = outputs.reshape(len(outputs), -1)
    if flat.shape[1] != 1:
        raise ValueError(f"the plain_regression recipe trains a module with one output per input; this one gives "
                         f"{flat.shape[1]} (set the architecture's num_classes to 1)")
    if not torch.is_floating_point(targets):
        raise ValueError(f"the plain_regression recipe needs real-valued targets; the dataset's are {targets.dtype} "
                         "(class labels: train a classification model)")
    return torch.nn.functional.mse_loss(flat[:, 0], targets.to(flat.dtype).reshape(-1))


class RegressionRecipe(PlainRecipe, name="plain_regression"):
    loss_fn = staticmethod(regression_loss)
