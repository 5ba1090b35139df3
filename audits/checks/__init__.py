"""Audit checks: pure NumPy/SciPy functions that turn model outputs into numbers and a verdict.

No Django and no torch here (a check that must run a model takes a callable). Every check
returns a :class:`~audits.checks.result.CheckResult` subclass with the verdict and the rule that
produced it; :func:`~audits.checks.verdict.final_verdict` combines them per guarantee class.

Importing this package imports every module in it, which registers each check, with its facts,
in :data:`~audits.checks.registry.CHECKS`. Adding a check: see ``ADDING_A_CHECK.md`` here.
"""

import importlib
import pkgutil

from audits.checks.registry import CHECKS
from audits.checks.result import CheckResult, Verdict

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["CHECKS", "CheckResult", "Verdict"]
