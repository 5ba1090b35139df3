"""Model families: how a model trained outside the platform enters it.

A family knows one kind of model a company has (the platform's own architectures, a Hugging Face
transformer, a PyTorch module from the company's installed package, a scikit-learn estimator):
how an uploaded file of that kind is checked without executing anything, and how it is stored so
that every later job (unlearning, shadow models, audits) loads it like a version the platform
trained. One module per family, registered in :data:`FAMILIES` by naming it in the class
statement (``class Builtin(ModelFamily, name="builtin")``); a registered model says its family
through its architecture spec (:func:`family_of`).
"""

from __future__ import annotations

from workers.model_families.base import (
    FAMILIES,
    CheckedUpload,
    ModelFamily,
    family_of,
    load_families,
)

__all__ = ["FAMILIES", "CheckedUpload", "ModelFamily", "family_of", "load_families"]
