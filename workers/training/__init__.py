"""Training recipes that record lineage: plain, sisa, s3t and dp.

Importing this package registers the recipes in :data:`workers.training.base.RECIPES`
(peft and opacus are imported only when an S3T or DP run needs them).
"""

from workers.training import dp, plain, s3t, sisa  # noqa: F401  (register the recipes)
from workers.training.base import RECIPES, RecipeConfig, TrainingRecipe, TrainingRun
from workers.training.storage import load_run, save_run

__all__ = ["RECIPES", "RecipeConfig", "TrainingRecipe", "TrainingRun", "load_run", "save_run"]
