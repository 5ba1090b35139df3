"""benchmarks/dmm_klom.py's error analysis (``--diagnose``): its pure measures and the datamodel forms it
compares, on hand-made numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.benchmarks.loading import loaded_benchmark
from tests.workers.unlearning.shadow_models import pair_masks
from workers.unlearning.dmm import datamodel_fit


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


def test_aggregate_regressors_count_the_other_forget_records_in_each_run(bench) -> None:
    masks = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]])  # 2 runs, 3 forget records
    aggregates = bench.aggregate_regressors(masks, torch.tensor([0, 0, 1]))
    count, everything = aggregates["count"]
    assert count.tolist() == [[1.0, 1.0, 2.0], [2.0, 1.0, 1.0]] and everything.tolist() == [2.0, 2.0, 2.0]
    same, everything = aggregates["same-label count"]
    assert same.tolist() == [[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]] and everything.tolist() == [1.0, 1.0, 0.0]


def test_structured_fit_is_dmms_without_aggregates_and_recovers_a_count_effect(bench) -> None:
    masks = pair_masks(6, 16, seed=0).double()  # 32 runs, 6 forget records
    noisy = torch.randn(32, 6, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.allclose(bench.structured_removal_effect(masks, noisy, [], ridge=1.0),
                          datamodel_fit(masks, noisy, ridge=1.0, self_index=torch.arange(6)).removal_effect())
    # Each target: 4 for its own record, 0.5 for every other forget record in the run.
    others = masks.sum(dim=1, keepdim=True) - masks
    outputs = (0.5 + 4 * masks + 0.5 * others).unsqueeze(2)
    aggregates = bench.aggregate_regressors(masks, torch.arange(6))
    effect = bench.structured_removal_effect(masks, outputs, [aggregates["count"]], ridge=None)
    assert torch.allclose(effect, torch.full((6, 1), 4 + 0.5 * 5, dtype=torch.float64))


def test_the_split_floor_averages_each_record_before_the_median(bench) -> None:
    rng = np.random.default_rng(0)
    retrained, shifted = rng.normal(0, 1, (16, 5)), rng.normal(3, 1, (8, 5))
    averaged = bench.SplitFloor(retrained, 6)
    floor, against = averaged.floor, bench.klom_over_splits(shifted, retrained, averaged.splits, bins=bench.BINS)
    assert floor.shape == against.shape == (6, 5)
    ratios = averaged.ratios(shifted)
    assert ratios["median_of_means"] == pytest.approx(np.median(against.mean(axis=0)) / np.median(floor.mean(axis=0)))
    assert ratios["mean_of_medians"] == pytest.approx(np.median(against, axis=1).mean() / np.median(floor, axis=1).mean())
    assert ratios["median_of_means"] > 3  # margins 3 standard deviations off sit far above the floor
    assert averaged.to_details()["splits"] == 6
