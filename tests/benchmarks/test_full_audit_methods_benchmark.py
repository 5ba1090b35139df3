"""benchmarks/full_audit_methods.py's cost charge for a method that reads shadow models, on hand-made shadows."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from workers.unlearning.references import ShadowReference

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "full_audit_methods.py"
# Four complementary pairs over records a-d; pairs 0 and 1 are the lower half a method reads by default.
MEMBERS = [{"a", "b"}, {"c", "d"}, {"a", "c"}, {"b", "d"}, {"a", "d"}, {"b", "c"}, {"a", "b"}, {"c", "d"}]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("full_audit_methods_benchmark", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


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
