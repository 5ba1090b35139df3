"""Small in-memory data and configs shared by the training and exact-unlearning tests."""

from __future__ import annotations

import types

import pytest
import torch

from workers.datasets.base import RecordDataset
from workers.datasets.memory import TensorRecordDataset

FEATURES = 6
MLP = {"name": "mlp", "config": {"in_features": FEATURES, "num_classes": 2, "hidden": [8],
                                 "input_norm": "none"}}


SKLEARN_ARCHITECTURE = {"name": "sklearn", "config": {"in_features": FEATURES, "num_classes": 2}}


def _scaler_and_logistic_regression() -> str:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from workers.training.sklearn_estimators import template_of

    return template_of(make_pipeline(StandardScaler(), LogisticRegression()))


# The template of the sklearn recipes' configs (a pipeline with preprocessing, unfitted).
SCALER_AND_LOGISTIC_REGRESSION = _scaler_and_logistic_regression()


def blobs(n: int = 72, *, seed: int = 0, prefix: str = "rec") -> TensorRecordDataset:
    """Two Gaussian blobs, keys ``rec-000``..; learnable in a few epochs."""
    generator = torch.Generator().manual_seed(seed)
    targets = torch.randint(0, 2, (n,), generator=generator)
    inputs = torch.randn(n, FEATURES, generator=generator) + (targets[:, None] * 2.0 - 1.0)
    return TensorRecordDataset([f"{prefix}-{i:03d}" for i in range(n)], inputs, targets)


class UnreadableRecords(RecordDataset):
    """Lists every record of ``parent`` but yields ``None`` for ``unreadable`` keys, as an
    adapter does for a record whose content can no longer be decrypted."""

    def __init__(self, parent: RecordDataset, unreadable: set[str]) -> None:
        self.parent = parent
        self.unreadable = set(unreadable)

    @property
    def record_keys(self):
        return self.parent.record_keys

    def __getitem__(self, index: int):
        item = self.parent[index]
        return None if item[0] in self.unreadable else item


def state_dicts_close(a: torch.nn.Module, b: torch.nn.Module, atol: float = 1e-6) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.allclose(sa[k], sb[k], atol=atol) for k in sa)


@pytest.fixture
def settings() -> types.SimpleNamespace:
    """A stand-in for pytest-django's ``settings`` in the pure worker tests.

    The root conftest's autouse fixtures point platform stores at temporary folders by setting
    attributes on ``settings``; these tests use no Django settings, so the attributes land here
    and the tests also run with ``-p no:django``. Imported by the pure tests' conftests."""
    return types.SimpleNamespace()
