"""Training recipes that record lineage: plain, sisa, s3t, dp, lora_causal_lm, hf_sequence_classifier
(a transformers sequence classifier), and sklearn and sklearn_sisa (scikit-learn estimators).

Importing this package registers the recipes in :data:`workers.training.base.RECIPES`
(peft, opacus, transformers, scikit-learn and skops are imported only when a run needs them).
"""

from workers.training import dp, lm, plain, s3t, sequence_classifier, sisa, sklearn_estimators  # noqa: F401  (register the recipes)
from workers.training.base import RECIPES, RecipeConfig, TrainingRecipe, TrainingRun
from workers.training.storage import load_run, save_run

__all__ = ["RECIPES", "RecipeConfig", "TrainingRecipe", "TrainingRun", "load_run", "save_run"]
