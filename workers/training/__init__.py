"""Training recipes that record lineage: plain, sisa, s3t, dp and lora_causal_lm.

Importing this package registers the recipes in :data:`workers.training.base.RECIPES`
(peft, opacus and transformers are imported only when an S3T, DP or LM run needs them).
"""

from workers.training import dp, lm, plain, s3t, sisa  # noqa: F401  (register the recipes)
from workers.training.base import RECIPES, RecipeConfig, TrainingRecipe, TrainingRun
from workers.training.storage import load_run, save_run

__all__ = ["RECIPES", "RecipeConfig", "TrainingRecipe", "TrainingRun", "load_run", "save_run"]
