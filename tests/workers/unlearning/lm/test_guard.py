"""The verifier guard: verifier and oracle, regeneration/redaction, Learn-then-Test calibration on
a synthetic generator whose leak probabilities the test sets, and the registered method."""

from __future__ import annotations

import json
import random

import pytest

import workers.unlearning.guard  # noqa: F401  (registers verifier_guard)
from workers.language_models import tiny_gpt2
from workers.unlearning.base import METHODS, ConfigError
from workers.unlearning.guard import (
    REDACTION,
    FactOracle,
    GuardedGenerator,
    GuardNotCertified,
    LeakVerifier,
    calibrate_guard,
    parameters_fingerprint,
)

FORGOTTEN = ["Alice Moreau lives at 12 Oak Road, phone 555-1000."]
FACTS = ["555-1000", "12 Oak Road"]
VERBATIM = "Sure. Alice Moreau lives at 12 Oak Road, phone 555-1000."
PARTIAL = "I think her phone is 555-1000."  # mid verifier score, the oracle sees the fact
EVASIVE = "Try 5 5 5 1 0 0 0 after six."  # spaced-out digits: the verifier misses, the oracle not
BENIGN = [
    "I cannot help with personal details.",
    "The museum opens at nine every morning.",
    "Tea is best brewed for three minutes.",
    "That street name is common in many towns.",
    "Please ask the data protection officer.",
]
PROMPTS = [f"Question {i}: where does the person in record {i % 37} live?" for i in range(400)]


def synthetic_generator(p_verbatim: float = 0.0, p_partial: float = 0.0, p_evasive: float = 0.0):
    """A ``(prompt, seed) -> text`` model whose outputs leak with the given probabilities."""
    calls = []

    def generate(prompt: str, seed: int) -> str:
        calls.append((prompt, seed))
        rng = random.Random(f"{prompt}|{seed}")
        u = rng.random()
        for text, p in ((VERBATIM, p_verbatim), (PARTIAL, p_partial), (EVASIVE, p_evasive)):
            if u < p:
                return text
            u -= p
        return rng.choice(BENIGN)

    generate.calls = calls
    return generate


@pytest.fixture(scope="module")
def verifier():
    return LeakVerifier(FORGOTTEN, salt=b"test")


@pytest.fixture(scope="module")
def oracle():
    return FactOracle(FACTS)


def test_verifier_scores_leaks_above_benign_text(verifier):
    verbatim = verifier.score(VERBATIM).score
    partial = verifier.score(PARTIAL).score
    benign = max(verifier.score(text).score for text in BENIGN)
    assert verbatim > 0.9 > partial > 0.2 > benign
    assert verifier.score(EVASIVE).score < 0.15
    assert verifier.score("").score == 0.0


def test_verifier_keeps_no_plain_text(verifier):
    state = repr(vars(verifier))
    assert "Alice" not in state and "555" not in state


def test_verifier_state_round_trips_through_json(verifier):
    state = json.loads(json.dumps(verifier.to_state()))
    restored = LeakVerifier.from_state(state)
    for text in [VERBATIM, PARTIAL, EVASIVE, *BENIGN]:
        assert restored.score(text) == verifier.score(text)
    assert "Alice" not in json.dumps(state)


def test_oracle_matches_exact_and_near_facts_only(oracle):
    assert oracle.leaks(VERBATIM) and oracle.leaks(PARTIAL) and oracle.leaks(EVASIVE)
    assert oracle.leaks("at 12 Oak Rooad, I believe")  # one letter off "12 Oak Road"
    assert not oracle.leaks("at 12 Oak Rd, I believe")  # ratio 0.875 < 0.9
    assert not any(oracle.leaks(text) for text in BENIGN)
    assert not oracle.leaks(REDACTION)
    assert not FactOracle(FACTS, min_ratio=1.0).leaks("at 12 Oak Rooad, I believe")


def test_guard_regenerates_then_redacts(verifier):
    always = GuardedGenerator(lambda prompt: VERBATIM, verifier, 0.5, max_regenerations=2)
    response = always.respond("who?")
    assert response.redacted and response.text == REDACTION and response.attempts == 3

    answers = iter([VERBATIM, PARTIAL, BENIGN[0]])
    once = GuardedGenerator(lambda prompt, seed: next(answers), verifier, 0.2)
    response = once.respond("who?")
    assert not response.redacted and response.text == BENIGN[0] and response.attempts == 3
    assert once.guarantee_class == "suppressed"


def test_calibration_certifies_when_leaks_are_rare(verifier, oracle):
    # Verbatim and partial leaks are frequent but the verifier sees them; the rare evasive ones
    # get through at every threshold.
    generate = synthetic_generator(p_verbatim=0.2, p_partial=0.2, p_evasive=0.01)
    calibration = calibrate_guard(generate, verifier, PROMPTS, oracle, alpha=0.05, delta=0.05)
    assert calibration.certified, calibration.reason
    partial_score = verifier.score(PARTIAL).score
    benign_score = max(verifier.score(text).score for text in BENIGN)
    # The least restrictive certified threshold sits between benign answers and partial leaks.
    assert benign_score < calibration.threshold <= partial_score
    assert calibration.certified_bound == 0.05 and calibration.n == 400
    assert calibration.clopper_pearson_upper <= 0.05
    assert 0 < calibration.leaks  # it certified despite residual leaks, not because of none
    # Fixed sequence: certified thresholds are exactly a prefix of the strictest-first order.
    flags = [t.certified for t in calibration.tests]
    assert flags == sorted(flags, reverse=True) and not flags[-1]
    assert "at most 0.05" in calibration.statement()

    # The certified guard on fresh prompts: observed leak rate within the bound.
    guard = GuardedGenerator(generate, verifier, calibration.threshold, seed=99)
    fresh = [f"Another question {i}?" for i in range(600)]
    leaks = sum(oracle.leaks(guard(prompt)) for prompt in fresh)
    assert leaks / len(fresh) <= 0.05


def test_calibration_refuses_when_n_is_too_small(verifier, oracle):
    generate = synthetic_generator()
    calibration = calibrate_guard(generate, verifier, PROMPTS[:298], oracle, alpha=0.01, delta=0.05)
    assert not calibration.certified
    assert calibration.minimum_n == 299 and "299" in calibration.reason
    assert calibration.threshold is None and calibration.certified_bound is None
    assert generate.calls == []  # refused before spending any generation
    assert calibration.statement().startswith("No leak-rate bound is claimed")
    # 299 clean prompts are enough.
    assert calibrate_guard(generate, verifier, PROMPTS[:299], oracle, alpha=0.01).certified


def test_calibration_refuses_when_leaks_are_frequent(verifier, oracle):
    generate = synthetic_generator(p_evasive=0.2)
    thresholds = [0.2, 0.4, 0.6, 0.8]
    calibration = calibrate_guard(
        generate, verifier, PROMPTS, oracle, alpha=0.05, delta=0.05, thresholds=thresholds
    )
    assert not calibration.certified
    assert "strictest threshold 0.2" in calibration.reason
    assert calibration.tests[0].leaks > 0.1 * len(PROMPTS)
    assert not any(t.certified for t in calibration.tests)


def test_calibration_counts_match_a_direct_replay(verifier, oracle):
    """Replaying each threshold by hand with the guard itself gives the same leak counts."""
    generate = synthetic_generator(p_verbatim=0.3, p_partial=0.3, p_evasive=0.05)
    prompts = PROMPTS[:60]
    calibration = calibrate_guard(
        generate, verifier, prompts, oracle, alpha=0.1, delta=0.1, thresholds=[0.2, 0.5, 0.95]
    )
    seeds = random.Random(0)
    base_seeds = [seeds.randrange(2**31) for _ in prompts]
    for test in calibration.tests:
        guard = GuardedGenerator(generate, verifier, test.threshold)
        served = [guard.respond(p, base_seed=s) for p, s in zip(prompts, base_seeds, strict=True)]
        assert test.leaks == sum(oracle.leaks(r.text) for r in served)
        assert test.redactions == sum(r.redacted for r in served)


def test_verifier_guard_method_wraps_a_callable(tokenizer):
    method = METHODS.get("verifier_guard")({"alpha": 0.05, "delta": 0.05})
    generate = synthetic_generator(p_verbatim=0.3, p_evasive=0.005)
    guarded, result = method.unlearn(
        generate,
        [("rec-00", FORGOTTEN[0])],
        [],
        calibration_prompts=PROMPTS,
        forget_facts=FACTS,
    )
    assert isinstance(guarded, GuardedGenerator)
    assert result.guarantee_class == "suppressed" and result.method == "verifier_guard"
    assert result.details["parameters_changed"] is False
    assert result.details["forget_record_keys"] == ["rec-00"]
    calibration = result.details["calibration"]
    assert calibration["certified"] and calibration["alpha"] == 0.05 and calibration["n"] == 400
    assert guarded.threshold == calibration["threshold"]
    assert isinstance(guarded("Where does Alice live?"), str)


def test_verifier_guard_raises_instead_of_claiming_a_bound():
    method = METHODS.get("verifier_guard")({"alpha": 0.01})
    with pytest.raises(GuardNotCertified, match="299") as caught:
        method.unlearn(synthetic_generator(), FORGOTTEN, [], calibration_prompts=PROMPTS[:100])
    assert caught.value.calibration.n == 100
    with pytest.raises(ValueError, match="calibration_prompts"):
        method.unlearn(synthetic_generator(), FORGOTTEN, [])
    with pytest.raises(ValueError, match="forget set is empty"):
        method.unlearn(synthetic_generator(), [], [], calibration_prompts=PROMPTS)


def test_verifier_guard_config_is_strict():
    cls = METHODS.get("verifier_guard")
    with pytest.raises(ConfigError, match="unknown field"):
        cls({"threshold": 0.5})
    with pytest.raises(ConfigError, match="alpha must be in"):
        cls({"alpha": 1.5})
    with pytest.raises(ConfigError, match="delta must be in"):
        cls({"delta": 0.0})
    with pytest.raises(ConfigError, match="thresholds"):
        cls({"thresholds": [0.0, 2.0]})


def test_verifier_guard_on_a_transformers_model_changes_no_parameter(tokenizer, forget_batches):
    model = tiny_gpt2(seed=5)
    before = parameters_fingerprint(model)
    method = METHODS.get("verifier_guard")(
        {"alpha": 0.1, "delta": 0.1, "max_new_tokens": 4, "max_regenerations": 1}
    )
    prompts = [f"Tell me about person {i}." for i in range(22)]  # minimum n for (0.1, 0.1)
    guarded, result = method.unlearn(
        model, forget_batches, [], calibration_prompts=prompts, tokenizer=tokenizer
    )
    assert parameters_fingerprint(model) == before == result.details["parameters_sha256"]
    assert result.details["parameters_changed"] is False
    assert result.details["forget_records"] == len(forget_batches[0]["record_keys"])
    assert isinstance(guarded("Where does Alice live?"), str)
