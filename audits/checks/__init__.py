"""Audit checks: pure NumPy/SciPy functions that turn model outputs into numbers and a verdict.

No Django and no torch here (a check that must run a model takes a callable). Every check
returns a :class:`~audits.checks.result.CheckResult` subclass with the verdict and the rule that
produced it; :func:`~audits.checks.verdict.final_verdict` combines them per guarantee class.

Importing this package imports every check module, which registers it in
:data:`~audits.checks.registry.CHECKS`.

Adding a check: one module here with a pure function (or small class) and a result dataclass
deriving from ``CheckResult`` whose ``rule`` prints the decision rule with its numbers;
decorate the entry point with ``@register_check("name")``; import the module below; add its
tests under ``tests/audits/checks/`` (hand-checked numbers, and a simulation that shows it can
fail); if its FAIL means "still a member", add its name to ``verdict.FORGET_SIDE_CHECKS``.
"""

from audits.checks import (  # noqa: F401  (imported to register the checks)
    dp_group,
    equivalence,
    forgetting_quality,
    lm_memorisation,
    membership,
    population_attack,
    power,
    retain_privacy,
    utility,
)
from audits.checks.registry import CHECKS
from audits.checks.result import CheckResult, Verdict

__all__ = ["CHECKS", "CheckResult", "Verdict"]
