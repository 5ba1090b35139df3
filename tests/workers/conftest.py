"""Fixtures the worker tests share."""

import pytest

from tests.company_sources import company_database  # noqa: F401 (the company's own PostgreSQL database)
from tests.workers.store_backends import store_backend  # noqa: F401 (both store backends)


@pytest.fixture
def one_torch_thread():
    """torch on one thread for the test (small models: threads cost more than they give, and two
    test processes may share the machine's cores)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
