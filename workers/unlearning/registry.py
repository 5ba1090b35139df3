"""The registry of unlearning methods. Modules register themselves on import."""

from __future__ import annotations

from foundation.registry import Registry
from workers.unlearning.base import UnlearningMethod

METHODS: Registry[type[UnlearningMethod]] = Registry("unlearning method")
register_method = METHODS.register
