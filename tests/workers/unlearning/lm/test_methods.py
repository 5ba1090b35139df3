"""The shared harness for every LM unlearning method: a method joins METHOD_CASES and inherits
the checks (forgetting, retain bound, determinism, plain safetensors model, config errors)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from transformers import GPT2LMHeadModel

import workers.unlearning.lm  # noqa: F401  (registers the methods)
from tests.workers.unlearning.lm.conftest import FORGET_KEYS
from workers.unlearning.base import METHODS, ConfigError, JobCancelled
from workers.unlearning.catalogue import LANGUAGE_MODEL, method_specs
from workers.unlearning.lm.losses import average_token_nll
from workers.unlearning.lm.projections import projection_tensors


@dataclasses.dataclass(frozen=True)
class MethodCase:
    name: str
    config: dict
    # Stated bound: retain NLL after unlearning <= retain NLL before + retain_slack (nats/token);
    # None: + the rise of the forget NLL (for gradient ascent, which has no retain term).
    retain_slack: float | None
    config_class: str
    # False where the seed draws nothing on this model (MRP draws only the layers to project, and
    # the tiny GPT-2 has two: both are taken).
    seed_changes_result: bool = True

    def __str__(self) -> str:
        return self.name


METHOD_CASES = [
    # Gradient ascent has no retain term: on these records, which share one template, raising the
    # forget loss to the unseen level costs the retain loss about as much (measured here: +1.8 to
    # +2.2 nats, the old fixed 1.5-nat bound held on one CPU and not on another). Its stated bound
    # is relative (None): retain rises no more than forget does. It stops once the forget texts
    # are as unlikely as unseen ones (target: the held-out texts' loss, given as the job gives them).
    MethodCase("gradient_ascent", {"lr": 3e-4, "epochs": 100}, None, "GradientAscentConfig"),
    MethodCase(
        "grad_diff", {"lr": 1e-3, "epochs": 20, "retain_weight": 2.0}, 0.5, "GradDiffConfig"
    ),
    MethodCase(
        "npo", {"lr": 5e-3, "epochs": 20, "beta": 0.05, "retain_weight": 2.0}, 0.5, "NPOConfig"
    ),
    # The paper's step (2e-4) is for a 7B model's hidden states; this 64-wide model takes larger
    # steps and 4 directions a layer (2 close 55% of the gap, too near the bound; measured).
    MethodCase("mrp", {"lr": 0.3, "epochs": 30, "rank": 4, "retain_weight": 2.0}, 0.5, "MRPConfig",
               seed_changes_result=False),
    # Full weights of the localised MLP (one of two layers here); the seed draws only the random baseline's layers.
    MethodCase("fact_lookup", {"lr": 3e-3, "epochs": 30}, 0.5, "FactLookupConfig", seed_changes_result=False),
]
# Forgetting must close at least this share of the gap between the forget texts' loss and the
# loss of texts the model never saw.
MIN_GAP_CLOSED = 0.5


def test_every_language_model_method_has_a_case():
    declared = {spec.name for spec in method_specs(kind=LANGUAGE_MODEL)}
    assert declared == {case.name for case in METHOD_CASES}


def _run(case: MethodCase, model, forget, retain, context: dict | None = None, **overrides):
    method = METHODS.get(case.name)({**case.config, **overrides})
    return method.unlearn(model, forget, retain, **(context or {}))


def _same_state(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _same_weights(a, b) -> bool:
    """Same parameters and the same projections of hidden states (MRP's), if any."""
    pa, pb = projection_tensors(a), projection_tensors(b)
    return _same_state(a, b) and pa.keys() == pb.keys() and all(torch.equal(pa[k], pb[k]) for k in pa)


@pytest.fixture(scope="module", params=METHOD_CASES, ids=str)
def run(request, memorised_model, forget_batches, retain_batches, heldout_batches):
    case = request.param
    before = {k: v.clone() for k, v in memorised_model.state_dict().items()}
    model, result = _run(case, memorised_model, forget_batches, retain_batches, _context(case, heldout_batches))
    return case, model, result, before


def _context(case: MethodCase, heldout_batches) -> dict | None:
    """Gradient ascent gets held-out texts, as the unlearning job passes them: their NLL is its stop target."""
    return {"held_out": heldout_batches} if case.name == "gradient_ascent" else None


def test_forget_loss_rises_toward_unseen_and_retain_stays_bounded(
    run, baseline, forget_batches, retain_batches, heldout_batches
):
    case, model, _, _ = run
    forget_after = average_token_nll(model, forget_batches)
    retain_after = average_token_nll(model, retain_batches)
    gap = baseline["heldout"] - baseline["forget"]
    closed = (forget_after - baseline["forget"]) / gap
    assert closed >= MIN_GAP_CLOSED, f"{case.name} closed only {closed:.0%} of the gap"
    slack = case.retain_slack if case.retain_slack is not None else forget_after - baseline["forget"]
    assert retain_after <= baseline["retain"] + slack, (
        f"{case.name}: retain NLL {baseline['retain']:.3f} -> {retain_after:.3f}"
    )


def test_result_describes_the_run(run, baseline, forget_batches):
    case, _, result, _ = run
    assert result.method == case.name
    assert result.guarantee_class == "approximate"
    planned = case.config["epochs"] * len(forget_batches)
    if result.details["stopped_early"]:  # only at the end of an epoch, once the target is reached
        assert result.steps < planned and result.steps % len(forget_batches) == 0
        assert result.details["forget_token_nll_after"] >= baseline["heldout"]
    else:
        assert result.steps == planned
    assert result.config["seed"] == 0 and result.config["lr"] == case.config["lr"]
    details = result.details
    assert details["forget_record_keys"] == sorted(FORGET_KEYS)
    assert details["forget_token_nll_before"] == pytest.approx(baseline["forget"], rel=1e-5)
    assert details["forget_token_nll_after"] > details["forget_token_nll_before"]
    if case.name == "mrp":  # no LoRA: directions projected out of two layers' hidden states
        assert details["projection_layers"] == [0, 1]
        assert details["projection_rank_before"] == {} and details["projection_rank_after"] == {"0": 4, "1": 4}
    elif case.name == "fact_lookup":  # no LoRA: the full weights of the MLP fact-lookup localisation selected
        assert details["trained_mlp_layers"] == [0] and details["localisation_extraction_layer"] == 1
    else:
        assert details["lora_target_modules"] == ["c_attn", "c_fc", "c_proj"]
    if case.name != "gradient_ascent":
        assert details["retain_token_nll_before"] == pytest.approx(baseline["retain"], rel=1e-5)
        assert details["stop_target_nll"] is None and details["stop_target_source"] is None
    else:
        assert details["stop_target_source"] == "held_out" and details["held_out_record_keys"]
        assert details["stop_target_nll"] == pytest.approx(baseline["heldout"], rel=1e-5)
        assert details["stopped_early"]


def test_a_configured_target_wins_over_held_out_texts(memorised_model, forget_batches, heldout_batches, baseline):
    case = METHOD_CASES[0]
    target = baseline["forget"] + 0.5 * (baseline["heldout"] - baseline["forget"])
    _, result = _run(case, memorised_model, forget_batches, [], {"held_out": heldout_batches},
                     stop_at_forget_nll=target, epochs=30)
    assert result.details["stop_target_source"] == "configured" and result.details["stop_target_nll"] == target
    _, unguided = _run(case, memorised_model, forget_batches, [], {"held_out": heldout_batches},
                       stop_at_held_out=False, epochs=2)
    assert unguided.details["stop_target_nll"] is None and not unguided.details["stopped_early"]


def test_returns_a_plain_model_that_saves_as_safetensors(run, memorised_model, tmp_path):
    case, model, _, before = run
    assert type(model) is GPT2LMHeadModel
    assert not any("lora" in name for name in model.state_dict())
    assert all(p.requires_grad for p in model.parameters())
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert not list(tmp_path.glob("*.bin"))
    reloaded = GPT2LMHeadModel.from_pretrained(tmp_path, use_safetensors=True)
    assert _same_state(model, reloaded)
    # MRP changes no weight: its projections go to the store beside them (tests of mrp).
    assert bool(projection_tensors(model)) == (case.name == "mrp")
    # The input model is not touched.
    assert all(torch.equal(before[k], v) for k, v in memorised_model.state_dict().items())


def test_same_seed_same_weights_other_seed_other_weights(
    run, memorised_model, forget_batches, retain_batches, heldout_batches
):
    case, model, _, _ = run
    context = _context(case, heldout_batches)
    again, _ = _run(case, memorised_model, forget_batches, retain_batches, context)
    assert _same_weights(model, again)
    other, _ = _run(case, memorised_model, forget_batches, retain_batches, context, seed=1)
    assert _same_weights(model, other) != case.seed_changes_result


@pytest.mark.parametrize("case", METHOD_CASES, ids=str)
def test_config_class_is_its_own_and_strict(case):
    cls = METHODS.get(case.name)
    assert cls.config_class.__name__ == case.config_class
    assert cls.guarantee_class == "approximate"
    with pytest.raises(ConfigError, match="unknown field.*learning_rat"):
        cls({"learning_rat": 1e-3})
    with pytest.raises(ConfigError, match="lr must be > 0"):
        cls({"lr": -1e-3})
    with pytest.raises(ConfigError, match="lora_r"):
        cls({"lora_r": 0})
    with pytest.raises(ConfigError, match="target_modules"):
        cls({"target_modules": []})
    stored = cls(case.config).config.to_dict()
    assert cls(stored).config == cls(case.config).config


@pytest.mark.parametrize("case", METHOD_CASES, ids=str)
def test_empty_forget_set_is_refused(case, memorised_model, retain_batches):
    with pytest.raises(ValueError, match="forget set is empty"):
        _run(case, memorised_model, [], retain_batches)


def test_npo_beta_must_be_positive():
    with pytest.raises(ConfigError, match="beta"):
        METHODS.get("npo")({"beta": 0.0})


def test_retain_methods_refuse_an_empty_retain_set(memorised_model, forget_batches):
    with pytest.raises(ValueError, match="retain set is empty"):
        METHODS.get("grad_diff")({"epochs": 1}).unlearn(memorised_model, forget_batches, [])
    # retain_weight 0 is plain NPO: no retain set needed.
    _, result = METHODS.get("npo")({"epochs": 1, "retain_weight": 0.0}).unlearn(
        memorised_model, forget_batches, []
    )
    assert "retain_token_nll_before" not in result.details


def test_progress_reports_and_can_cancel(memorised_model, forget_batches, retain_batches):
    seen: list[tuple[str, float]] = []
    METHODS.get("gradient_ascent")({"epochs": 2}).unlearn(
        memorised_model, forget_batches, retain_batches, progress=lambda s, f: seen.append((s, f))
    )
    assert seen[0] == ("unlearning", 0.0) and seen[-1] == ("unlearning", 1.0)

    def cancel(stage: str, fraction: float) -> None:
        if fraction > 0:
            raise JobCancelled

    with pytest.raises(JobCancelled):
        METHODS.get("grad_diff")({"epochs": 5}).unlearn(
            memorised_model, forget_batches, retain_batches, progress=cancel
        )


def test_batches_are_cut_to_max_length(memorised_model, forget_batches):
    _, result = METHODS.get("gradient_ascent")({"epochs": 1, "max_length": 8}).unlearn(
        memorised_model, forget_batches, []
    )
    cut = [{**b, **{k: b[k][:, :8] for k in ("input_ids", "attention_mask", "labels")}}
           for b in forget_batches]  # fmt: skip
    assert result.details["forget_token_nll_before"] == pytest.approx(
        average_token_nll(memorised_model, cut), rel=1e-6
    )


def test_malformed_batch_is_refused(memorised_model):
    with pytest.raises(ValueError, match="lacks labels, record_keys"):
        METHODS.get("gradient_ascent")({}).unlearn(
            memorised_model, [{"input_ids": torch.ones(1, 4, dtype=torch.long),
                               "attention_mask": torch.ones(1, 4, dtype=torch.long)}], []
        )  # fmt: skip
