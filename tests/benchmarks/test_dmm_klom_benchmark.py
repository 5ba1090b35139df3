"""benchmarks/dmm_klom.py's error analysis (``--diagnose``): its two pure measures on hand-made numbers."""

from __future__ import annotations

import numpy as np
import pytest

from tests.benchmarks.loading import loaded_benchmark


@pytest.fixture(scope="module")
def bench():
    with loaded_benchmark("dmm_klom") as module:
        yield module


def test_out_run_means_average_each_record_over_the_runs_without_it(bench) -> None:
    margins = np.array([[1.0, 10.0], [3.0, 20.0], [5.0, 30.0]])  # 3 runs, 2 records
    masks = np.array([[1, 0], [0, 0], [0, 1]])
    assert bench.out_run_means(margins, masks).tolist() == [4.0, 15.0]
    with pytest.raises(ValueError, match="in every run"):
        bench.out_run_means(margins, np.array([[1, 0], [1, 1], [1, 0]]))


def test_rms_distance_is_the_root_mean_square_per_record_difference(bench) -> None:
    assert bench.rms_distance(np.array([0.0, 3.0]), np.array([4.0, 3.0])) == pytest.approx(8**0.5)
    assert bench.rms_distance(np.array([-2.0, 1.0]), np.array([-2.0, 1.0])) == 0.0
