"""The registry of unlearning method classes. A method's class registers itself when its module is
imported, under the name of its declaration in :mod:`workers.unlearning.catalogue`
(``class Finetune(LossMethod, name="finetune")``, see :class:`UnlearningMethod`)."""

from __future__ import annotations

from foundation.registry import Registry
from workers.unlearning.base import UnlearningMethod
from workers.unlearning.catalogue import METHOD_SPECS

METHODS: Registry[type[UnlearningMethod]] = Registry("unlearning method")


def method_class_register(cls: type[UnlearningMethod], name: str) -> None:
    """Register ``cls`` as the class of the method the catalogue declares as ``name``; the class
    takes its ``name`` and ``guarantee_class`` from that declaration. Raises ``ValueError`` for a
    name the catalogue does not declare, a name registered twice, or a class outside the declared
    module (the loader, which imports the declared modules, would never find it)."""
    spec = METHOD_SPECS.get(name)
    if cls.__module__ != spec.module:
        raise ValueError(f"unlearning method {name!r} is declared in {spec.module}, not in {cls.__module__}")
    cls.name = spec.name
    cls.guarantee_class = spec.guarantee_class
    METHODS.register(name)(cls)
