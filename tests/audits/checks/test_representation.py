"""The representation check on planted cases: scikit-learn digits, an MLP, class 3 forgotten.

A head-only "unlearning" (the last layer re-initialised and trained on the retain set) changes
every output and none of the representation: FAIL. A retrain without the class, a fine-tune of the
original on the retain set (another seed than the controls) and gradient ascent on the class all
move the representation of the forget inputs: not FAILed."""

import copy

import numpy as np
import pytest
import torch
import torch.nn as nn
from sklearn.datasets import load_digits

from audits.checks.representation import linear_cka, representation_retention
from audits.checks.result import Verdict

FORGET = 3


@pytest.fixture(scope="module")
def digits_models():
    torch.set_num_threads(1)
    x, y = load_digits(return_X_y=True)
    x = torch.tensor((x / 16.0).astype(np.float32))
    y = torch.tensor(y)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    train, test = order[:1300], order[1300:]
    xt, yt, xe, ye = x[train], y[train], x[test], y[test]
    keep = yt != FORGET

    def net(seed):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))

    def fit(model, xs, ys, epochs, lr=1e-2, params=None, seed=0, ascend=None):
        opt = torch.optim.Adam(params or model.parameters(), lr=lr)
        g = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            for batch in torch.randperm(len(xs), generator=g).split(64):
                loss = nn.functional.cross_entropy(model(xs[batch]), ys[batch])
                if ascend is not None:  # NegGrad+: ascend on a batch of the forget set
                    f = torch.randint(0, len(ascend[0]), (16,), generator=g)
                    loss = loss - 0.3 * nn.functional.cross_entropy(model(ascend[0][f]), ascend[1][f])
                opt.zero_grad()
                loss.backward()
                opt.step()
        return model

    original = fit(net(1), xt, yt, 30)
    references = [fit(net(10 + s), xt[keep], yt[keep], 30, seed=s) for s in range(3)]
    # The controls: the original fine-tuned on the retain set at the edit's budget (5 epochs, lr 1e-2).
    controls = [fit(copy.deepcopy(original), xt[keep], yt[keep], 5, seed=100 + s) for s in range(3)]
    head = copy.deepcopy(original)
    head[-1].reset_parameters()
    fit(head, xt[keep], yt[keep], 5, params=head[-1].parameters())
    unlearned = {
        "head_only": head,
        "retrain": fit(net(20), xt[keep], yt[keep], 30, seed=7),
        "finetune": fit(copy.deepcopy(original), xt[keep], yt[keep], 5, seed=200),
        "neggrad_plus": fit(copy.deepcopy(original), xt[keep], yt[keep], 5, lr=1e-3, seed=300,
                            ascend=(xt[~keep], yt[~keep])),
    }
    forget_inputs = xe[ye == FORGET]

    @torch.no_grad()
    def rep(model):
        return model[:-1](forget_inputs).numpy()

    with torch.no_grad():
        assert (head(forget_inputs).argmax(1) == FORGET).float().mean() < 0.2  # the outputs did forget
    return {"original": rep(original), "references": [rep(m) for m in references],
            "controls": [rep(m) for m in controls], "unlearned": {k: rep(m) for k, m in unlearned.items()}}


def check(models, name):
    return representation_retention(original=models["original"], unlearned=models["unlearned"][name],
                                    references=models["references"], controls=models["controls"])


def test_a_head_only_edit_fails(digits_models):
    result = check(digits_models, "head_only")
    assert result.verdict == Verdict.FAIL, result.reason
    assert result.unlearned_change < 1e-6


@pytest.mark.parametrize("name", ["retrain", "finetune", "neggrad_plus"])
def test_models_whose_representation_moved_are_not_failed(digits_models, name):
    result = check(digits_models, name)
    assert result.verdict == Verdict.PASS, result.reason


def test_too_few_references_is_not_applicable(digits_models):
    m = digits_models
    result = representation_retention(original=m["original"], unlearned=m["unlearned"]["head_only"],
                                      references=m["references"][:1], controls=m["controls"])
    assert result.verdict == Verdict.NOT_APPLICABLE


def test_linear_cka_is_invariant_to_rotation_and_scale():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 8))
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    assert linear_cka(a, 3.0 * a @ q) == pytest.approx(1.0)
    assert linear_cka(a, rng.normal(size=(50, 8))) < 0.5
