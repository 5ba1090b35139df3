"""benchmarks/full_audit_methods.py's cost charge for a method that reads shadow models, on hand-made shadows."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tests.benchmarks.loading import loaded_benchmark
from workers.unlearning.references import ShadowReference

# Four complementary pairs over records a-d; pairs 0 and 1 are the lower half a method reads by default.
MEMBERS = [{"a", "b"}, {"c", "d"}, {"a", "c"}, {"b", "d"}, {"a", "d"}, {"b", "c"}, {"a", "b"}, {"c", "d"}]


@pytest.fixture(scope="module")
def bench():
    with loaded_benchmark("full_audit_methods") as module:
        yield module


def shadows(needed: bool) -> SimpleNamespace:
    references = [ShadowReference.of_model(i, None, sorted(m)) for i, m in enumerate(MEMBERS)]
    return SimpleNamespace(needed=lambda name: needed, references=references, seconds=16.0)  # 2 s a model


def test_a_method_is_charged_the_shadows_it_read_and_the_replacement_of_those_holding_a_record(bench) -> None:
    # Reads models 0-3 (8 s); of them, 0 and 2 trained on "a" and are replaced after the purge (4 s).
    assert bench.shadow_charges(shadows(True), "oracle_matching", {}, ["a"]) == (8.0, 4.0)
    # A quarter of the pairs: models 0 and 1; only model 0 holds "a".
    assert bench.shadow_charges(shadows(True), "oracle_matching", {"shadow_share": 0.25}, ["a"]) == (4.0, 2.0)
    # Two records: every model read holds one of them.
    assert bench.shadow_charges(shadows(True), "oracle_matching", {}, ["a", "d"]) == (8.0, 8.0)


def test_a_method_that_reads_no_shadow_model_is_charged_none(bench) -> None:
    assert bench.shadow_charges(shadows(False), "finetune", {}, ["a"]) == (0.0, 0.0)
