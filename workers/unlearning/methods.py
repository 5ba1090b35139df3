"""Import every declared method's module so that ``METHODS`` is complete.

Kept out of ``workers/unlearning/__init__.py`` on purpose: the web process imports
``workers.unlearning.catalogue`` (the declarations) and must not pay for torch. Worker code calls
:func:`load_all_methods` once before looking a method up.
"""

from __future__ import annotations

import importlib

from workers.unlearning.base import METHODS
from workers.unlearning.catalogue import METHOD_SPECS, method_specs


def load_all_methods() -> list[str]:
    """Import the module of every method the catalogue declares (idempotent) and return the
    registered method names. Raises ``LookupError`` when a declared module registers no class
    under the declared name."""
    for module in dict.fromkeys(spec.module for spec in method_specs()):
        importlib.import_module(module)
    missing = [name for name in METHOD_SPECS if name not in METHODS]
    if missing:
        raise LookupError(f"declared unlearning method(s) {', '.join(missing)} registered no class; "
                          f"see workers/unlearning/ADDING_A_METHOD.md")
    return METHODS.names()
