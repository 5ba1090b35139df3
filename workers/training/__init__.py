"""Training recipes that record lineage: plain, plain_regression (MSE), sisa, s3t, dp, keep_out_transfer, lora_causal_lm, hf_sequence_classifier
(a transformers sequence classifier), sklearn and sklearn_sisa (scikit-learn estimators), and distill
and finetune (a model derived from another version).

Importing this package registers the recipes in :data:`workers.training.base.RECIPES`
(peft, opacus, transformers, scikit-learn and skops are imported only when a run needs them).
"""

from workers.training import (  # noqa: F401  (register the recipes)
    derived,
    dp,
    keep_out_transfer,
    lm,
    plain,
    regression,
    s3t,
    sequence_classifier,
    sisa,
    sklearn_estimators,
)
from workers.training.base import RECIPES, RecipeConfig, TrainingRecipe, TrainingRun
from workers.training.storage import load_run, save_run

__all__ = ["RECIPES", "RecipeConfig", "TrainingRecipe", "TrainingRun", "load_run", "save_run"]
