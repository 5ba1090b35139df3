"""Load a script of ``benchmarks/`` as a module for tests of its pure functions (the scripts are not a
package: each is run as ``python benchmarks/NAME.py``)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@contextmanager
def loaded_benchmark(name: str) -> Iterator[ModuleType]:
    """``benchmarks/<name>.py`` executed as the module ``<name>_benchmark``, registered in
    ``sys.modules`` while the block runs (dataclasses and pickling look their module up there)."""
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)
