"""The registry of audit checks: name -> check function. Modules register themselves on import.

``import audits.checks`` imports every check module, so ``CHECKS.get(name)`` then finds them all.
An unknown name raises ``ValueError`` listing the registered names; registering a name twice
raises too (the shared strict :class:`foundation.registry.Registry`).
"""

from __future__ import annotations

from collections.abc import Callable

from audits.checks.result import CheckResult
from foundation.registry import Registry

CHECKS: Registry[Callable[..., CheckResult]] = Registry("audit check")
register_check = CHECKS.register
