"""Pure statistics of the guard's calibration: binomial tails and Clopper-Pearson bounds.

Each function takes and returns plain numbers so tests can check them against hand-computed values.
All bounds are one-sided: the guard only ever claims an *upper* bound on its leak rate.
"""

from __future__ import annotations

import math

from scipy import stats


def _check_rate(name: str, value: float) -> None:
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be in (0, 1), got {value}")


def _check_counts(leaks: int, n: int) -> None:
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0 <= leaks <= n:
        raise ValueError(f"leaks must be in [0, n={n}], got {leaks}")


def binomial_p_value(leaks: int, n: int, alpha: float) -> float:
    """p-value of ``leaks`` out of ``n`` for H0: leak rate >= ``alpha`` (one-sided, exact).

    Out: ``P(Binomial(n, alpha) <= leaks)``, the chance of seeing this few leaks if the true rate
    were ``alpha``. Small means the data speak for a leak rate below ``alpha``.
    """
    _check_counts(leaks, n)
    _check_rate("alpha", alpha)
    return float(stats.binom.cdf(leaks, n, alpha))


def clopper_pearson_upper(leaks: int, n: int, delta: float) -> float:
    """One-sided Clopper-Pearson upper bound on the leak rate at confidence ``1 - delta``.

    Out: the ``1 - delta`` quantile of ``Beta(leaks + 1, n - leaks)``, or 1.0 when every output
    leaked. It is the largest rate ``p`` with ``P(Binomial(n, p) <= leaks) >= delta``, so
    ``clopper_pearson_upper(k, n, d) <= a`` exactly when ``binomial_p_value(k, n, a) <= d``.
    With no leaks it is ``1 - delta ** (1 / n)``.
    """
    _check_counts(leaks, n)
    _check_rate("delta", delta)
    if leaks == n:
        return 1.0
    return float(stats.beta.ppf(1.0 - delta, leaks + 1, n - leaks))


def minimum_calibration_size(alpha: float, delta: float) -> int:
    """Fewest calibration prompts that can certify a leak rate below ``alpha`` at level ``delta``.

    Even with zero leaks the bound is ``1 - delta ** (1/n)``, which is at most ``alpha`` only when
    ``n >= ln(delta) / ln(1 - alpha)``: 299 prompts for ``alpha = 0.01``, ``delta = 0.05``.
    """
    _check_rate("alpha", alpha)
    _check_rate("delta", delta)
    n = max(1, math.ceil(math.log(delta) / math.log1p(-alpha)))
    # The logarithms round; settle the last step on the bound itself.
    while n > 1 and 1.0 - delta ** (1.0 / (n - 1)) <= alpha:
        n -= 1
    while 1.0 - delta ** (1.0 / n) > alpha:
        n += 1
    return n
