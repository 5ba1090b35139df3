"""Exact unlearning methods (guarantee class ``exact``): retrain, sisa, s3t.

Importing this package registers them in :data:`workers.unlearning.registry.METHODS`.
They take and return a :class:`workers.training.base.TrainingRun` (model + membership): an exact
method's output is a new training run whose membership excludes the forgotten records.
"""

from workers.unlearning.exact import retrain, s3t, sisa  # noqa: F401  (register the methods)
