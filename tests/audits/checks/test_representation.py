"""The representation check on planted cases: scikit-learn digits, an MLP, class 3 forgotten.

A head-only "unlearning" (the last layer re-initialised and trained on the retain set) changes
every output and none of the representation: FAIL. A retrain without the class, a fine-tune of the
original on the retain set (another seed than the controls) and gradient ascent on the class all
move the representation of the forget inputs: not FAILed."""

import numpy as np
import pytest
import torch

from audits.checks.representation import linear_cka, representation_retention
from audits.checks.result import Verdict
from tests.audits.checks.digits_models import FORGET, fit, fresh, retrained, split, trained


@pytest.fixture(scope="module")
def digits_models():
    xt, yt, xe, ye, keep = split()
    original, references = trained()
    # The controls: the original fine-tuned on the retain set at the edit's budget (5 epochs, lr 1e-2).
    controls = [fit(fresh(original), xt[keep], yt[keep], 5, seed=100 + s) for s in range(3)]
    head = fresh(original)
    head[-1].reset_parameters()
    fit(head, xt[keep], yt[keep], 5, params=head[-1].parameters())
    unlearned = {
        "head_only": head,
        "retrain": retrained(20),
        "finetune": fit(fresh(original), xt[keep], yt[keep], 5, seed=200),
        "neggrad_plus": fit(fresh(original), xt[keep], yt[keep], 5, lr=1e-3, seed=300, ascend=(xt[~keep], yt[~keep])),
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
