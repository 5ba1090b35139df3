import math

import pytest

from audits.checks.result import Verdict
from audits.checks.utility import perplexity, utility


def test_accuracy_ratios():
    result = utility(retain=0.90, test=0.80, original_retain=0.95, original_test=0.82)
    assert result.retain_ratio == pytest.approx(0.90 / 0.95)
    assert result.test_ratio == pytest.approx(0.80 / 0.82)
    assert result.verdict == Verdict.FAIL  # 0.947 < 0.95
    assert utility(retain=0.94, test=0.80, original_retain=0.95, original_test=0.82).verdict == (
        Verdict.PASS
    )


def test_perplexity_ratio_is_original_over_unlearned():
    assert perplexity([math.log(4.0)] * 3) == pytest.approx(4.0)
    result = utility(
        retain=12.0, test=20.0, original_retain=10.0, original_test=20.0, metric="perplexity"
    )
    assert result.retain_ratio == pytest.approx(10 / 12)
    assert result.test_ratio == pytest.approx(1.0)
    assert result.verdict == Verdict.FAIL


def test_bad_values_raise():
    with pytest.raises(ValueError):
        utility(retain=1.2, test=0.5, original_retain=0.9, original_test=0.5)
    with pytest.raises(ValueError):
        utility(retain=0.5, test=0.5, original_retain=0.0, original_test=0.5)
