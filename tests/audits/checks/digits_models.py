"""Small models on scikit-learn digits for the planted cases of the representation and relearning
checks: an MLP trained on everything (the original) and references retrained without class 3,
trained once per test session."""

from __future__ import annotations

import copy
from functools import lru_cache

import numpy as np
import torch
import torch.nn as nn
from sklearn.datasets import load_digits

FORGET = 3


@lru_cache(maxsize=1)
def split():
    """(train x, train y, test x, test y, keep mask of the training records not of class 3)."""
    x, y = load_digits(return_X_y=True)
    x = torch.tensor((x / 16.0).astype(np.float32))
    y = torch.tensor(y)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    train, test = order[:1300], order[1300:]
    return x[train], y[train], x[test], y[test], y[train] != FORGET


def net(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def fit(model, xs, ys, epochs, *, lr=1e-2, params=None, seed=0, ascend=None):
    """Adam on cross-entropy; ``ascend=(x, y)`` subtracts 0.3 x the loss on a batch of those (NegGrad+)."""
    opt = torch.optim.Adam(params or model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for batch in torch.randperm(len(xs), generator=g).split(64):
            loss = nn.functional.cross_entropy(model(xs[batch]), ys[batch])
            if ascend is not None:
                f = torch.randint(0, len(ascend[0]), (16,), generator=g)
                loss = loss - 0.3 * nn.functional.cross_entropy(model(ascend[0][f]), ascend[1][f])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model


@lru_cache(maxsize=1)
def trained():
    """The original and three references retrained without class 3 (a fresh copy each call is the caller's)."""
    torch.set_num_threads(1)
    xt, yt, _, _, keep = split()
    original = fit(net(1), xt, yt, 30)
    references = tuple(fit(net(10 + s), xt[keep], yt[keep], 30, seed=s) for s in range(3))
    return original, references


def retrained(seed: int):
    xt, yt, _, _, keep = split()
    return fit(net(seed), xt[keep], yt[keep], 30, seed=seed)


def accuracy(model, xs, ys) -> float:
    with torch.no_grad():
        return float((model(xs).argmax(1) == ys).float().mean())


def fresh(model):
    return copy.deepcopy(model)
