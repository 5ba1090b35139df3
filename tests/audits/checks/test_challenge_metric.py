"""The challenge's forgetting score, held to the numbers of the challenge's own ``metric.py``.

The expected numbers come from running google-deepmind/unlearning_evaluation ``metric.py`` (commit
ffae0ff) once on the inputs below, on a CPU: with ``torch.Tensor.cuda`` patched to return the
tensor itself, and its ``assert thr_eps`` (which raises on any array of more than one threshold)
read as ``assert len(thr_eps)``. Nothing else of that file was changed or is used here.
"""

import numpy as np
import pytest
import torch

from audits.checks.challenge_metric import (
    _float32_grid,
    bucket_points,
    challenge_epsilons,
    challenge_forget_score,
    logit_scaled_confidence,
)
from audits.checks.forgetting_quality import per_example_epsilons


def cases():
    rng = np.random.default_rng(20231)
    out = {}
    n = 16  # identical, shifted, far apart, narrower, wider, shifted down
    r = rng.normal(0.0, 1.0, size=(n, 6))
    u = rng.normal(0.0, 1.0, size=(n, 6))
    u[:, 1] += 0.8
    u[:, 2] += 3.0
    u[:, 3] *= 0.2
    u[:, 4] = r[:, 4] * 2.5 + 0.3
    u[:, 5] -= 1.5
    out["n16"] = (u, r)
    n = 32  # shifted, far apart, collapsed (below 1% of the other's range), slightly shifted, identical
    r = rng.normal(1.0, 2.0, size=(n, 5))
    u = rng.normal(1.0, 2.0, size=(n, 5))
    u[:, 0] += 1.0
    u[:, 1] += 10.0
    u[:, 2] *= 0.005
    u[:, 3] -= 0.3
    out["n32"] = (u, r)
    n = 64  # identical, shifted, peaky inside a wide one (the double-threshold family's case), shifted
    r = rng.normal(-2.0, 1.5, size=(n, 4))
    u = rng.normal(-2.0, 1.5, size=(n, 4))
    u[:, 1] += 0.5
    u[:, 2] = rng.normal(-2.0, 0.4, size=n)
    u[:, 3] += 2.0
    out["n64"] = (u, r)
    return out


UPSTREAM = {
    "n16": ([1.9458873271942139, 2.197206735610962, 50.0, 2.484893321990967, 2.397880792617798,
             2.484893321990967], 0.0625),
    "n32": ([2.3978662490844727, 50.0, 50.0, 1.386214256286621, 2.1971888542175293], 0.075),
    "n64": ([1.7916526794433594, 1.9458186626434326, 3.4657158851623535, 3.1780271530151367], 0.0703125),
}


@pytest.mark.parametrize("name", sorted(UPSTREAM))
def test_epsilons_and_score_agree_with_the_challenge_code(name):
    unlearned, retrained = cases()[name]
    expected_eps, expected_score = UPSTREAM[name]
    np.testing.assert_allclose(challenge_epsilons(unlearned, retrained), expected_eps, rtol=0, atol=1e-6)
    result = challenge_forget_score(unlearned, retrained)
    assert result.score == pytest.approx(expected_score, abs=1e-6)
    assert result.models == unlearned.shape[0]
    assert f"N = {unlearned.shape[0]}" in result.summary()


def test_logit_scaled_confidence_agrees_with_the_challenge_code():
    logits = np.array([[2.0, -1.0, 0.5], [0.1, 0.2, 0.3], [-5.0, 7.0, 1.0], [30.0, -30.0, 0.0]])
    p, conf = logit_scaled_confidence(logits, np.array([0, 2, 0, 0]))
    np.testing.assert_allclose(p, [0.7855970345892759, 0.3671654011109255, 6.128982466927776e-06,
                                   0.9999999999999065], rtol=1e-12)
    np.testing.assert_allclose(conf, [1.2985867220172476, -0.5443966600735709, -12.00247568513773,
                                      29.999999999999908], rtol=0, atol=1e-9)


def test_the_platform_variant_is_a_different_score():
    # Its delta (0.01 against 1e-5) and its single threshold family give other epsilons on the
    # same inputs: it must not be presented as the challenge's score.
    unlearned, retrained = cases()["n64"]
    ours = per_example_epsilons(unlearned, retrained, delta=0.01)
    assert np.abs(ours - np.array(UPSTREAM["n64"][0])).max() > 0.05


def test_buckets_follow_the_number_of_runs():
    # ceil(log(15)) = 3: six buckets of 0.5 below 3; ceil(log(511)) = 7 at 512 runs.
    assert bucket_points(16) == [(0.0, 1.0), (0.5, 0.5), (1.0, 0.25), (1.5, 0.125), (2.0, 0.0625), (2.5, 0.03125)]
    assert len(bucket_points(512)) == 14


def test_identical_runs_score_high_and_separated_runs_score_zero():
    rng = np.random.default_rng(3)
    same = rng.normal(size=(64, 3))
    assert challenge_forget_score(same, same + 1e-9).score == 1.0
    far = challenge_forget_score(rng.normal(size=(64, 3)) + 20, rng.normal(size=(64, 3)))
    assert far.score == 0.0 and (far.epsilons == 50).all()


def test_single_threshold_grid_is_torchs_within_an_ulp():
    rng = np.random.default_rng(1)
    for _ in range(50):
        lo, hi = sorted(rng.normal(0, 5, 2))
        n = int(rng.integers(2, 2000))
        torchs = torch.linspace(torch.tensor(lo, dtype=torch.float64), torch.tensor(hi, dtype=torch.float64), n)
        np.testing.assert_allclose(_float32_grid(lo, hi, n), torchs.numpy(), rtol=3e-7, atol=3e-7)


@pytest.mark.parametrize("bad", [np.zeros((4, 2)), np.full((4, 3), np.nan)])
def test_bad_shapes_and_values_are_refused(bad):
    with pytest.raises(ValueError, match="confidences"):
        challenge_epsilons(bad, np.zeros((4, 3)))
