"""A subject's group of k records accounted by Opacus' own accountant as one unit (sampled with
1 - (1 - q)^k, noise multiplier sigma / k, the same steps), held to Opacus' numbers computed here
directly; the smaller of it and the generic bound counts, named."""

import pytest

from audits.checks.dp_group import (
    DPTrainingFigures,
    accountant_group_bound,
    dp_group_privacy,
    subject_bound,
)
from audits.checks.result import Verdict


def _opacus(accountant: str, noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """Opacus' accountant called directly on one history entry, as a run's engine fills it."""
    from opacus.accountants import create_accountant

    counted = create_accountant(accountant)
    counted.history = [(noise_multiplier, sample_rate, steps)]
    return counted.get_epsilon(delta=delta)


def _run(accountant: str, *, q=0.1, sigma=1.0, steps=100, delta=1e-5) -> DPTrainingFigures:
    return DPTrainingFigures(accountant=accountant, sample_rate=q, noise_multiplier=sigma, steps=steps, delta=delta,
                             epsilon=_opacus(accountant, sigma, q, steps, delta))


@pytest.mark.parametrize("accountant", ["prv", "rdp"])
def test_one_record_is_the_runs_own_epsilon(accountant):
    figures = _run(accountant)
    bound = accountant_group_bound(figures, 1)
    # (PRV's FFT gives the same epsilon to about 1e-11 between two calls.)
    assert bound.epsilon == pytest.approx(figures.epsilon, rel=1e-9) and bound.delta == figures.delta


@pytest.mark.parametrize("k", [2, 3])
def test_a_group_is_one_unit_sampled_with_one_minus_the_chance_none_is_and_k_times_the_sensitivity(k):
    figures = _run("prv", q=0.05, sigma=2.0, steps=200)
    expected = _opacus("rdp", 2.0 / k, 1 - (1 - 0.05) ** k, 200, 1e-5)
    bound = accountant_group_bound(figures, k)
    assert (bound.k, bound.delta, bound.vacuous) == (k, 1e-5, False)
    assert bound.epsilon == pytest.approx(expected, rel=1e-12)


def test_the_smaller_bound_counts_and_is_named():
    # Epsilon 8 per record, three records: the generic delta is far above 1 (vacuous); the accountant's is not.
    figures = DPTrainingFigures(accountant="rdp", sample_rate=0.1, noise_multiplier=1.0, steps=100, delta=1e-5,
                                epsilon=_opacus("rdp", 1.0, 0.1, 100, 1e-5))
    assert figures.epsilon == pytest.approx(7.9, abs=0.1)
    subject = subject_bound(figures=figures, k=3, max_epsilon=1000.0, max_delta=1e-3)
    assert subject.generic.delta > 1 and subject.generic.vacuous
    assert subject.computed_by == "accountant (rdp)" and subject.bound == subject.accountant
    assert subject.bound.epsilon == pytest.approx(_opacus("rdp", 1.0 / 3, 1 - 0.9 ** 3, 100, 1e-5), rel=1e-12)
    assert subject.within_limits and not subject.vacuous
    # Where the generic bound meets the limits and the accountant's does not, the generic one counts.
    small = _run("rdp", q=0.01, sigma=4.0, steps=50, delta=1e-7)
    subject = subject_bound(figures=small, k=2, max_epsilon=2 * small.epsilon, max_delta=1e-5)
    assert subject.accountant.epsilon > 2 * small.epsilon
    assert subject.computed_by == "generic" and subject.bound == subject.generic and subject.within_limits
    # Beyond every limit: vacuous, and said so.
    beyond = subject_bound(figures=figures, k=3, max_epsilon=10.0, max_delta=1e-5)
    assert beyond.vacuous and not beyond.within_limits


def test_without_an_accountant_the_generic_bound_counts_and_the_check_names_it():
    figures = DPTrainingFigures(accountant="no-such-accountant", sample_rate=0.1, noise_multiplier=1.0, steps=10,
                                delta=1e-5, epsilon=1.0)
    subject = subject_bound(figures=figures, k=1, max_epsilon=10.0, max_delta=1e-3)
    assert subject.computed_by == "generic" and subject.accountant is None
    assert "cannot account a group of 1" in subject.accountant_problem
    accounted = dp_group_privacy(epsilon=7.9, delta=1e-5, k=3, max_epsilon=1000.0, max_delta=1e-3,
                                 figures=_run("rdp"))
    assert accounted.verdict == Verdict.PASS and accounted.computed_by == "accountant (rdp)"
    assert "accounted as one group" in accounted.rule and accounted.generic_bound.vacuous


def test_figures_come_from_a_dp_runs_metrics_or_not_at_all():
    metrics = {"accountant": "prv", "sample_rate": 0.1, "noise_multiplier": 1.0, "steps": 10, "delta": 1e-5,
               "epsilon": 2.0}
    assert DPTrainingFigures.from_metrics(metrics) == DPTrainingFigures("prv", 0.1, 1.0, 10, 1e-5, 2.0)
    assert DPTrainingFigures.from_metrics({"test_accuracy": 0.9}) is None
    assert DPTrainingFigures.from_metrics({**metrics, "noise_multiplier": 0.0}) is None
