"""Import every method module so that ``METHODS`` is complete.

Kept out of ``workers/unlearning/__init__.py`` on purpose: the web process imports
``workers.unlearning.registry`` (names only) and must not pay for torch. Worker code calls
:func:`load_all_methods` once before looking a method up.
"""

from __future__ import annotations

import importlib
import importlib.util

from workers.unlearning.registry import METHODS

# Approximate classifier methods, one module each.
APPROXIMATE_CLASSIFIER_MODULES = (
    "workers.unlearning.finetune",
    "workers.unlearning.neggrad_plus",
    "workers.unlearning.scrub",
    "workers.unlearning.ssd",
    "workers.unlearning.l1_sparse",
    "workers.unlearning.salun",
    "workers.unlearning.influence",
)
# Packages owned by other parts of the library; each registers its methods when imported.
METHOD_PACKAGES = (
    "workers.unlearning.exact",
    "workers.unlearning.lm",
    "workers.unlearning.guard",
)


def load_all_methods() -> list[str]:
    """Import every method module (idempotent) and return the registered method names."""
    for module in APPROXIMATE_CLASSIFIER_MODULES:
        importlib.import_module(module)
    for package in METHOD_PACKAGES:
        # A package that is not written yet is skipped; once it exists its import errors surface.
        if importlib.util.find_spec(package) is not None:
            importlib.import_module(package)
    return METHODS.names()
