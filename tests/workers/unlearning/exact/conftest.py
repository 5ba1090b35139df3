"""Plain PyTorch tests: no database, no Django settings (see ``settings`` in data.py), so this
directory also runs with ``-p no:django``."""

from __future__ import annotations

import torch

from tests.workers.training.data import settings  # noqa: F401  (the stand-in fixture)

torch.set_num_threads(1)
