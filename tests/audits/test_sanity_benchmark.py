"""benchmarks/exact_sanity_false_alarm.py repeats what it cannot import without Django (the
shadow halves and count, the audit's held-out sample size); these hold the copies to the
originals, and the rest (the held-out standardisation, the test) to the audit's own functions, so
the measured figures in audits/checks/sanity_rates.py stay figures of the audit."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from audits import runner
from audits.checks import membership, signals
from workers.runners import shadow

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "exact_sanity_false_alarm.py"


def _benchmark(monkeypatch):
    spec = importlib.util.spec_from_file_location("exact_sanity_false_alarm", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_benchmark_builds_shadows_and_samples_as_the_platform_does(monkeypatch):
    bench = _benchmark(monkeypatch)
    assert bench.SHADOW_COUNT_DEFAULT == shadow.SHADOW_COUNT_DEFAULT
    assert bench.SHADOW_FRACTION == shadow.SHADOW_FRACTION
    assert bench.TEST_SAMPLE == runner.TEST_SAMPLE
    keys = [f"bc-{i:04d}" for i in range(300)]
    for version_id, index in [(1, 0), (2, 7), (41, 15)]:
        assert (bench.shadow_half(keys, version_id=version_id, index=index)
                == shadow.shadow_half(keys, version_id=version_id, index=index))


def test_the_benchmark_standardises_and_tests_with_the_audits_functions(monkeypatch):
    bench = _benchmark(monkeypatch)
    assert bench.standardise_on_held_out is signals.standardise_on_held_out
    assert bench.membership_test is membership.membership_test
    assert bench.fit_shadow_reference is membership.fit_shadow_reference
    assert "standardise_on_held_out as standardise" in Path(runner.__file__).read_text()
