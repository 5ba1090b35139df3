"""The LM audit's measurements (audits/lm_evidence.py) on a tiny GPT-2 that memorised half of a set
of records: memorised records are told apart from held-out records of the same format, the guard
path withholds what its verifier flags, and the cached greedy decoding matches plain decoding."""

from __future__ import annotations

import pytest
import torch

from audits.checks.lm_memorisation import lm_memorisation
from audits.checks.result import Verdict
from audits.lm_evidence import LMProbe, held_out_twins, measure_text, reference_measurement

PEOPLE = ["Alice Moreau", "Bruno Keller", "Chloe Novak", "Dmitri Ivanov", "Elena Rossi", "Farid Haddad",
          "Greta Lind", "Hugo Berg", "Ines Duarte", "Jonas Weber", "Kira Sato", "Liam Walsh",
          "Mona Aziz", "Nils Dahl", "Olga Petrov", "Pablo Ruiz"]
RECORDS = {f"rec-{i:02d}": f"Customer {name} lives at {10 + 7 * i} Oak Road, phone 555-{1000 + 137 * i}, "
                           f"account C{3000000 + 7919 * i}." for i, name in enumerate(PEOPLE)}
KEYS = sorted(RECORDS)
TRAINED, HELD_OUT = KEYS[:8], KEYS[8:]


@pytest.fixture(autouse=True)
def _isolated_stores() -> None:
    """No platform storage here (lets this module run with ``-p no:django``)."""


@pytest.fixture(scope="module")
def memorised():
    from workers.language_models import byte_tokenizer, tiny_gpt2
    from workers.unlearning.lm.data import lm_batches
    from workers.unlearning.lm.losses import mean_token_nll

    torch.set_num_threads(1)
    tokenizer = byte_tokenizer()
    (batch,) = lm_batches(tokenizer, [(k, RECORDS[k]) for k in TRAINED], max_length=128, batch_size=8)
    model = tiny_gpt2(seed=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for _ in range(200):
            loss = mean_token_nll(model, batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval(), tokenizer


def _measure(probe, keys):
    return [measure_text(probe, key, RECORDS[key]) for key in keys]


def test_a_memorised_record_is_reproduced_beyond_held_out_records_of_its_format(memorised):
    model, tokenizer = memorised
    probe = LMProbe(model, tokenizer, device="cpu", max_length=128)
    twins = held_out_twins([(k, RECORDS[k]) for k in TRAINED[:2]], [(k, RECORDS[k]) for k in HELD_OUT],
                           per_record=4, seed=0)
    assert all(len(t) == 4 for t in twins.values())
    seen = _measure(probe, TRAINED[:2])
    references = [reference_measurement(key, _measure(probe, [k for k, _ in twins[key]]), len(m.memorisation.facts))
                  for key, m in zip(TRAINED[:2], seen, strict=True)]
    for m, ref in zip(seen, references, strict=True):
        assert m.memorisation.exact_memorisation > ref.memorisation.exact_memorisation + 0.2
        assert m.verbatim > ref.verbatim + 0.2
        assert any(f.completed for f in m.memorisation.facts)
        assert not any(f.completed for f in ref.memorisation.facts)
    check = lm_memorisation(unlearned=[m.memorisation for m in seen], reference=[r.memorisation for r in references])
    assert check.verdict == Verdict.FAIL and set(check.flagged_ids) == set(TRAINED[:2])
    # A record the model never saw, against others it never saw: nothing to flag.
    unseen = _measure(probe, HELD_OUT[:1])[0]
    others = _measure(probe, HELD_OUT[1:5])
    ref = reference_measurement(HELD_OUT[0], others, len(unseen.memorisation.facts))
    assert lm_memorisation(unlearned=[unseen.memorisation], reference=[ref.memorisation]).verdict == Verdict.PASS


def test_through_the_guard_flagged_answers_reproduce_nothing(memorised):
    from workers.unlearning.guard.verifier import LeakVerifier

    model, tokenizer = memorised
    key = TRAINED[0]
    verifier = LeakVerifier([RECORDS[key]], salt=b"k" * 16)
    raw = measure_text(LMProbe(model, tokenizer, device="cpu", max_length=128), key, RECORDS[key])
    strict = LMProbe(model, tokenizer, device="cpu", max_length=128, guard=(verifier, 0.05), answer_tokens=16)
    guarded = measure_text(strict, key, RECORDS[key])
    assert raw.verbatim > 0.5 and guarded.verbatim == 0.0
    assert guarded.memorisation.exact_memorisation < raw.memorisation.exact_memorisation - 0.3
    assert not any(f.completed for f in guarded.memorisation.facts)
    # A guard that never flags (scores are at most 1) changes nothing.
    lax = LMProbe(model, tokenizer, device="cpu", max_length=128, guard=(verifier, 1.01), answer_tokens=16)
    assert measure_text(lax, key, RECORDS[key]) == raw


def test_known_heads_the_cache_and_batching_give_plain_greedy_decoding(memorised):
    from audits.checks.lm_memorisation import greedy_continuation, teacher_forced_predictions
    from audits.lm_evidence import _followed

    model, tokenizer = memorised
    probe = LMProbe(model, tokenizer, device="cpu", max_length=128)
    ids = probe.ids(RECORDS[TRAINED[1]])

    def uncached(prefix):
        return probe.sequence_logits(prefix)[-1]

    predictions = teacher_forced_predictions(ids, sequence_logits=probe.sequence_logits)
    starts = (3, 20, 40)
    plain = [greedy_continuation(ids[:start], uncached, 12) for start in starts]
    for start, expected in zip(starts, plain, strict=True):
        assert probe.continuation(ids[:start], 12) == expected
        assert probe.continuation(ids[:start], 12, known=_followed(predictions, ids, start - 1)) == expected
    # Left-padded together in one batch (prefixes of different lengths): the same tokens.
    assert probe.continuations([(ids[:start], 12, ()) for start in starts]) == plain
    other = probe.ids(RECORDS[HELD_OUT[0]])
    assert probe.continuations([(other[:5], 30, ()), (ids[:40], 12, ())])[1] == plain[2]
