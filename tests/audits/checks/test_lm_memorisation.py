import numpy as np
import pytest

from audits.checks.lm_memorisation import (
    exact_memorisation,
    extraction_strength,
    fact_similarity,
    lm_memorisation,
    measure_record,
    suffix_reproduction,
    teacher_forced_predictions,
)
from audits.checks.result import Verdict

VOCAB = 10
TEXT = [1, 2, 3, 4, 5, 6]


def bigram_model(table: dict[int, int]):
    """A toy LM that predicts table[last token] (token 0 when it has no entry)."""

    def next_token_logits(ids):
        logits = np.zeros(VOCAB)
        logits[table.get(ids[-1], 0)] = 1.0
        return logits

    return next_token_logits


MEMORISED = bigram_model({1: 2, 2: 3, 3: 4, 4: 5, 5: 6})
FORGOT_THE_END = bigram_model({1: 2, 2: 3, 3: 4, 4: 5})  # cannot produce the last token
KNOWS_ONLY_THE_END = bigram_model({4: 5, 5: 6})  # reproduces the suffix from token 4 on


def test_teacher_forced_predictions_both_protocols_agree():
    preds = teacher_forced_predictions(TEXT, next_token_logits=MEMORISED)
    assert list(preds) == [2, 3, 4, 5, 6]

    def sequence_logits(ids):
        return np.stack([MEMORISED(ids[: t + 1]) for t in range(len(ids))])

    assert list(teacher_forced_predictions(TEXT, sequence_logits=sequence_logits)) == list(preds)
    with pytest.raises(ValueError):
        teacher_forced_predictions(TEXT)


def test_exact_memorisation_and_extraction_strength_by_hand():
    full = teacher_forced_predictions(TEXT, next_token_logits=MEMORISED)
    assert exact_memorisation(full, TEXT) == 1.0
    assert extraction_strength(full, TEXT) == 1.0

    no_end = teacher_forced_predictions(TEXT, next_token_logits=FORGOT_THE_END)
    assert exact_memorisation(no_end, TEXT) == pytest.approx(4 / 5)
    assert extraction_strength(no_end, TEXT) == 0.0  # the last token is never reproduced

    tail = teacher_forced_predictions(TEXT, next_token_logits=KNOWS_ONLY_THE_END)
    # Predictions [0, 0, 0, 5, 6]: right from target index 3 on, so k = 3 of m = 5.
    assert exact_memorisation(tail, TEXT) == pytest.approx(2 / 5)
    assert extraction_strength(tail, TEXT) == pytest.approx(1 - 3 / 5)


def test_suffix_reproduction_from_increasing_prefixes():
    curve = suffix_reproduction(TEXT, KNOWS_ONLY_THE_END, [1, 3, 4])
    # From [1]: generates 0s (no match); from [1, 2, 3]: 0, 0, 0 vs 4, 5, 6; from 4 tokens: 5, 6.
    assert curve == {1: 0.0, 3: 0.0, 4: 1.0}
    assert suffix_reproduction(TEXT, MEMORISED, [1])[1] == 1.0


def test_fuzzy_fact_matching():
    assert fact_similarity("Jan. 5, 1990", "She was born on jan 5 1990 in Lyon") == 1.0
    assert fact_similarity("Zoë Müller", "the patient zoe muller was admitted") == 1.0
    assert fact_similarity("Jan 5 1990", "born on Jan 6 1990") > 0.85  # one edit
    assert fact_similarity("Jan 5 1990", "born in the spring of 1975") < 0.6


def test_check_compares_with_a_reference_model():
    def generate_leaky(prompt):
        return "Her account number is 4417-1234."

    def generate_clean(prompt):
        return "I don't know."

    facts = [("Her account number is", "4417-1234")]
    leaky = measure_record(
        "r1", TEXT, next_token_logits=MEMORISED, facts=facts, generate=generate_leaky
    )
    clean = measure_record(
        "r1", TEXT, next_token_logits=FORGOT_THE_END, facts=facts, generate=generate_clean
    )
    failed = lm_memorisation(unlearned=[leaky], reference=[clean])
    assert failed.verdict == Verdict.FAIL and failed.flagged_ids == ("r1",)
    assert "fact probe(s) 0" in failed.reason
    assert "4417" not in failed.to_json()  # the erased data never reach the report
    passed = lm_memorisation(unlearned=[clean], reference=[clean])
    assert passed.verdict == Verdict.PASS
    # A fact the reference also completes (common knowledge) is not a leak.
    both = lm_memorisation(
        unlearned=[
            measure_record(
                "r1", TEXT, next_token_logits=FORGOT_THE_END, facts=facts, generate=generate_leaky
            )
        ],
        reference=[
            measure_record(
                "r1", TEXT, next_token_logits=FORGOT_THE_END, facts=facts, generate=generate_leaky
            )
        ],
    )
    assert both.verdict == Verdict.PASS
    assert lm_memorisation(unlearned=[], reference=[]).verdict == Verdict.NOT_APPLICABLE
