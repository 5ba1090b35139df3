"""Shared fixtures for the LM unlearning methods and the verifier guard.

Plain PyTorch: the root conftest's autouse fixture asks for pytest-django's ``settings``;
overriding it here lets this directory run with ``-p no:django``.

The cast: a tiny GPT-2 (2 layers, 64 wide, byte tokenizer) over-fitted on 4 forget and 8 retain
records; 4 held-out records it never saw give the loss a model that never knew a record has.
"""

from __future__ import annotations

import pytest
import torch

from workers.language_models import byte_tokenizer, tiny_gpt2
from workers.unlearning.lm.data import lm_batches
from workers.unlearning.lm.losses import average_token_nll, mean_token_nll

torch.set_num_threads(1)

_PEOPLE = [
    "Alice Moreau", "Bruno Keller", "Chloe Novak", "Dmitri Ivanov",
    "Elena Rossi", "Farid Haddad", "Greta Lind", "Hugo Berg",
    "Ines Duarte", "Jonas Weber", "Kira Sato", "Liam Walsh",
    "Mona Aziz", "Nils Dahl", "Olga Petrov", "Pablo Ruiz",
]  # fmt: skip
RECORDS = {
    f"rec-{i:02d}": f"{name} lives at {10 + 7 * i} Oak Road, phone 555-{1000 + 137 * i}."
    for i, name in enumerate(_PEOPLE)
}
KEYS = sorted(RECORDS)
FORGET_KEYS, RETAIN_KEYS, HELDOUT_KEYS = KEYS[:4], KEYS[4:12], KEYS[12:]
MEMORISE_STEPS = 100


@pytest.fixture(autouse=True)
def _isolated_stores() -> None:
    """No stores to isolate: these tests read and write no platform storage."""


@pytest.fixture(scope="session")
def tokenizer():
    return byte_tokenizer()


def _batches(tokenizer, keys, batch_size):
    return lm_batches(
        tokenizer, [(k, RECORDS[k]) for k in keys], max_length=64, batch_size=batch_size
    )


@pytest.fixture(scope="session")
def forget_batches(tokenizer):
    return _batches(tokenizer, FORGET_KEYS, 4)


@pytest.fixture(scope="session")
def retain_batches(tokenizer):
    return _batches(tokenizer, RETAIN_KEYS, 8)


@pytest.fixture(scope="session")
def heldout_batches(tokenizer):
    return _batches(tokenizer, HELDOUT_KEYS, 4)


@pytest.fixture(scope="session")
def memorised_model(tokenizer):
    """The tiny GPT-2 after full-parameter over-fitting on the forget and retain records."""
    (train,) = _batches(tokenizer, FORGET_KEYS + RETAIN_KEYS, 12)
    model = tiny_gpt2(seed=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for _ in range(MEMORISE_STEPS):
            loss = mean_token_nll(model, train)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


@pytest.fixture(scope="session")
def baseline(memorised_model, forget_batches, retain_batches, heldout_batches):
    """Token NLL of the memorised model on each set; the memorisation must have worked."""
    losses = {
        "forget": average_token_nll(memorised_model, forget_batches),
        "retain": average_token_nll(memorised_model, retain_batches),
        "heldout": average_token_nll(memorised_model, heldout_batches),
    }
    assert losses["forget"] < 0.2 and losses["retain"] < 0.2, losses
    assert losses["heldout"] > 1.0, losses
    return losses
