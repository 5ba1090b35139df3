"""Exact unlearning methods (guarantee class ``exact``): retrain, sisa, s3t.

Each module registers its method when imported (``workers.unlearning.methods.load_all_methods``
imports the modules the catalogue declares). They take and return a
:class:`workers.training.base.TrainingRun` (model + membership): an exact method's output is a new
training run whose membership excludes the forgotten records.
"""
