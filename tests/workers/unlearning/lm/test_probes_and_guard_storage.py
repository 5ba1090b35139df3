"""Fact probes of a record, extraction prompts for the guard's calibration, and the guard as stored
next to its model: no plain text, no key, the same scores after the round trip."""

from __future__ import annotations

import pytest

from workers.unlearning.guard.calibration import calibrate_guard
from workers.unlearning.guard.guarded import GuardedGenerator
from workers.unlearning.guard.storage import StoredGuard
from workers.unlearning.guard.verifier import FactOracle, LeakVerifier
from workers.unlearning.lm.probes import extraction_prompts, fact_probes, fact_spans, text_shape

RECORD = ("Customer Pavel Zielinski (customer id C0300001) lives at 8 Willow Avenue, Stonebury. Contact: "
          "pavel.zielinski.300001@example.org, phone +44 20 7946 0882. Account DE18 9999 9999 0390 7230 74, "
          "balance 75,003 EUR.")
OTHER = ("Loan note, 2024-03-05: Greta Costa, born 1980-01-02, 45 Mill Street, Ashby, asked to raise the "
         "overdraft on DE55 9999 9999 7609 3289 36 to 14,506 EUR. Reference C0300003.")


def test_facts_are_the_identifiers_of_a_record():
    assert [s.text for s in fact_spans(RECORD)] == [
        "C0300001", "pavel.zielinski.300001@example.org", "+44 20 7946 0882", "DE18 9999 9999 0390 7230 74",
        "75,003"]
    # Punctuation ends a fact: the birth date and the house number are not run together.
    assert [s.text for s in fact_spans(OTHER)] == [
        "2024-03-05", "1980-01-02", "DE55 9999 9999 7609 3289 36", "14,506", "C0300003"]
    prompt, fact = fact_probes(RECORD)[3]
    assert prompt.endswith("Account") and fact.startswith("DE18") and RECORD.startswith(prompt)
    assert text_shape(RECORD) == ("Customer", 5) and text_shape("no identifiers here") == ("no", 0)


def test_extraction_prompts_are_seeded_prefixes_that_leave_a_fact_to_reveal():
    prompts = extraction_prompts([RECORD, OTHER], 50, seed=3)
    assert prompts == extraction_prompts([RECORD, OTHER], 50, seed=3)
    assert prompts != extraction_prompts([RECORD, OTHER], 50, seed=4)
    last_facts = {RECORD: fact_spans(RECORD)[-1].start, OTHER: fact_spans(OTHER)[-1].start}
    for prompt in prompts:
        source = RECORD if RECORD.startswith(prompt) else OTHER
        assert source.startswith(prompt) and len(prompt) < last_facts[source] and len(prompt.split()) >= 2
    short = extraction_prompts([RECORD], 20, fits=lambda p: len(p) <= 60)
    assert max(len(p) for p in short) <= 60
    plain = extraction_prompts(["no identifiers in this one"], 10)
    assert set(plain) <= {"no identifiers", "no identifiers in", "no identifiers in this"}
    with pytest.raises(ValueError, match="no forgotten text"):
        extraction_prompts(["one"], 5)


def _calibrated_guard(key: bytes) -> GuardedGenerator:
    verifier = LeakVerifier([RECORD, OTHER], salt=key)
    facts = [s.text for text in (RECORD, OTHER) for s in fact_spans(text)]
    answers = ["The account is DE18 9999 9999 0390 7230 74.", "I cannot say.", "Ashby is a nice town."]

    def generate(prompt: str, seed: int) -> str:
        return answers[seed % len(answers)]

    prompts = extraction_prompts([RECORD, OTHER], 60, seed=1)
    calibration = calibrate_guard(generate, verifier, prompts, FactOracle(facts), alpha=0.1, delta=0.1,
                                  thresholds=[0.1, 0.3, 0.5, 0.9], max_regenerations=2, seed=5)
    assert calibration.certified
    return GuardedGenerator(generate, verifier, calibration.threshold, max_regenerations=2, seed=5,
                            calibration=calibration)


def test_a_stored_guard_holds_no_text_and_no_key_and_scores_the_same():
    key = bytes(range(16))
    guard = _calibrated_guard(key)
    stored = StoredGuard.from_guarded(guard, key_ref="guard:job:7", generation={"max_new_tokens": 16}, seed=5)
    meta, tensors = stored.to_artifact()
    blob = b"".join(t.numpy().tobytes() for t in tensors.values())
    text = repr(meta).encode()
    for needle in ["Zielinski", "0390 7230", "C0300001", "75,003", "Greta", key.hex()]:
        assert needle.encode() not in blob and needle.encode() not in text, needle
    assert key not in blob and meta["key_ref"] == "guard:job:7" and meta["records"] == 2
    back = StoredGuard.from_artifact(meta, tensors)
    rebuilt = back.verifier(key)
    for probe in [RECORD, OTHER, "The account is DE18 9999 9999 0390 7230 74.", "nothing related"]:
        assert rebuilt.score(probe) == guard.verifier.score(probe)
    # Without the right key the stored hashes match nothing.
    assert back.verifier(bytes(16)).score(RECORD).score < 0.2
    assert back.threshold == guard.threshold and back.calibration["n"] == 60
    served = back.guarded(lambda prompt, seed: "The account is DE18 9999 9999 0390 7230 74.", key)
    assert served.respond("Account", base_seed=0).redacted
