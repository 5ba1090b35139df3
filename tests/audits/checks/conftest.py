"""The audit checks are pure NumPy/SciPy: their tests need neither Django nor the stores.

The root conftest's autouse fixture asks for pytest-django's ``settings``; overriding it here
lets this directory run with ``-p no:django``.
"""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolated_stores() -> None:
    """No stores to isolate: the checks read nothing from disk."""
