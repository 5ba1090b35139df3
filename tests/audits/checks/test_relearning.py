"""The relearning check on planted cases (scikit-learn digits, class 3 forgotten): NegGrad+ stopped
as soon as the class's accuracy reaches 0 hides the class, and 30 steps on 5 held-out examples of
it bring it back; a model retrained without the class learns little from them."""

import pytest
import torch
import torch.nn as nn

from audits.checks.relearning import relearning
from audits.checks.result import Verdict
from tests.audits.checks.digits_models import FORGET, accuracy, fresh, retrained, split, trained

BUDGETS = {"10 steps at 1e-3": (10, 1e-3), "30 steps at 1e-3": (30, 1e-3), "10 steps at 1e-2": (10, 1e-2)}


def neggrad_plus_stopped_early(original, *, seed=0):
    """Ascent on the class, descent on the rest, stopped at the first step the class is at 0."""
    xt, yt, _, _, keep = split()
    model = fresh(original)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(500):
        f = torch.randint(0, int((~keep).sum()), (32,), generator=g)
        r = torch.randint(0, int(keep.sum()), (64,), generator=g)
        loss = (nn.functional.cross_entropy(model(xt[keep][r]), yt[keep][r])
                - nn.functional.cross_entropy(model(xt[~keep][f]), yt[~keep][f]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if accuracy(model, xt[~keep], yt[~keep]) == 0.0:
            return model
    raise AssertionError("NegGrad+ did not reach 0 on the class")


def recovery(model) -> dict[str, float]:
    """Accuracy on the forgotten training records after fine-tuning on 5 held-out examples of the class."""
    xt, yt, xe, ye, keep = split()
    xs, ys = xe[ye == FORGET][:5], ye[ye == FORGET][:5]
    out = {}
    for name, (steps, lr) in BUDGETS.items():
        m = fresh(model)
        opt = torch.optim.Adam(m.parameters(), lr=lr)
        for _ in range(steps):
            opt.zero_grad()
            nn.functional.cross_entropy(m(xs), ys).backward()
            opt.step()
        out[name] = accuracy(m, xt[~keep], yt[~keep])
    return out


@pytest.fixture(scope="module")
def reference_recovery():
    return [recovery(r) for r in trained()[1]]


def test_neggrad_plus_stopped_early_fails(reference_recovery):
    hidden = neggrad_plus_stopped_early(trained()[0])
    result = relearning(unlearned=recovery(hidden), references=reference_recovery)
    assert result.verdict == Verdict.FAIL, result.reason
    assert result.worst_excess > 0.3


def test_a_retrained_model_passes(reference_recovery):
    result = relearning(unlearned=recovery(retrained(99)), references=reference_recovery)
    assert result.verdict == Verdict.PASS, result.reason


def test_budgets_must_match_and_two_references_are_needed():
    with pytest.raises(ValueError, match="budgets"):
        relearning(unlearned={"a": 0.1}, references=[{"b": 0.0}, {"b": 0.0}])
    assert relearning(unlearned={"a": 0.1}, references=[{"a": 0.0}]).verdict == Verdict.NOT_APPLICABLE
