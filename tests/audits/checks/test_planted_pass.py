"""Issue 23's planted case "a model retrained without the records -> PASS", on real models.

The setting benchmarks/audit_memorised_settings.py found (``--inputs mixed --canaries 600 --forget 10
--width 1024 --label-smoothing 0.1``): 600 uniform-noise images with random labels are part of the
digits data set before its random split (so held-out records include noise images), 10 of those in
the training split are forgotten, 32 shadow models in complementary pairs, a 64-1024-10 MLP trained
alike for the original, the shadows and the retrained model. Over seeds 0-19 (README): the retrained
model PASSes in 17 of 20 (the other 3 INCONCLUSIVE: 1-2 records without power on the original), is
FAILed in none, and the original presented as unlearned is FAILed in 20 of 20. Seed 0 is one of the
17. About 34 models of 1,300 records: a minute or more on 2 cores, so marked slow (RUN_SLOW=1)."""

import argparse
import importlib.util
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SETTING = dict(inputs="mixed", canaries=600, forget=10, width=1024, epochs=60, steps=0, lr=3e-3,
               label_smoothing=0.1, weight_decay=0.0, duplicates=1)


def test_a_model_retrained_without_memorised_records_passes_and_the_original_fails():
    path = Path(__file__).resolve().parents[3] / "benchmarks" / "audit_memorised_settings.py"
    spec = importlib.util.spec_from_file_location("audit_memorised_settings", path)
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench
    spec.loader.exec_module(bench)
    bench.planted.use_model_cache(None)
    rep, retrained = bench.replicate(0, argparse.Namespace(**SETTING))
    result = bench.judged(rep, retrained)
    assert result["verdict"] == "PASS", result
    assert result["powered"] == result["records"] == 10 and result["lira_detected"] == 0
    original = bench.judged(rep, rep.original)
    assert original["verdict"] == "FAIL" and original["lira_detected"] >= 5, original
