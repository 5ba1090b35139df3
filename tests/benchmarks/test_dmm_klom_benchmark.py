"""benchmarks/dmm_klom.py's error analysis (``--diagnose``): its two pure measures on hand-made numbers."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "dmm_klom.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("dmm_klom_benchmark", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_out_run_means_average_each_record_over_the_runs_without_it(bench) -> None:
    margins = np.array([[1.0, 10.0], [3.0, 20.0], [5.0, 30.0]])  # 3 runs, 2 records
    masks = np.array([[1, 0], [0, 0], [0, 1]])
    assert bench.out_run_means(margins, masks).tolist() == [4.0, 15.0]
    with pytest.raises(ValueError, match="in every run"):
        bench.out_run_means(margins, np.array([[1, 0], [1, 1], [1, 0]]))


def test_rms_distance_is_the_root_mean_square_per_record_difference(bench) -> None:
    assert bench.rms_distance(np.array([0.0, 3.0]), np.array([4.0, 3.0])) == pytest.approx(8**0.5)
    assert bench.rms_distance(np.array([-2.0, 1.0]), np.array([-2.0, 1.0])) == 0.0
