"""Localised unlearning of fact-lookup MLPs (Guo, Syed et al. 2024, "Mechanistic Unlearning",
arXiv 2410.12949).

The paper finds that unlearning is more robust (less relearned, more resistant to other prompt
formats) when only the components of the *fact lookup* mechanism are trained: the early MLPs that
enrich the subject's tokens with its attributes, found by path patching to the attention layers that
later extract the attribute, rather than the components that output tracing (causal tracing,
attribution patching on the output) selects. This method trains only the MLP layers that such a
localisation selects, with the paper's loss, and keeps the other weights fixed.

Localisation, per request, on the forget texts (no gradients; 2 forward passes per decoder layer):

1. Positions. An LM batch names no subject, so it is derived from the tokens: a position is
   *record-specific* when the token bigram ending there occurs in at most ``specific_share`` of the
   texts given (forget and retain); template words are shared by most records, names and numbers are
   not. The subject is a text's first run of record-specific positions (every template of the
   synthetic records starts with the person's name; the run ends one token after the name, whose last
   token and the next template token make a rare bigram too), the answer every later record-specific
   position (numbers, addresses, e-mail addresses). :func:`specific_positions`, :func:`subject_and_answer`.
2. Corruption. The subject's input embeddings are replaced by the mean embedding of every subject
   token of the forget texts (Nanda et al. 2023, as in the paper's localisation code), so no
   corrupted run can know whose record it reads.
3. Where extraction happens. The clean residual stream at the subject positions is patched into the
   corrupted run at the input of each decoder layer ``e``; the share of the answer's log-probability
   it restores, ``r(e)``, is 1 at layer 0 and falls once attention has moved the subject's attributes
   to later positions. The extraction layer ``E`` is the first with ``r(e) < extraction_share``
   (the paper: the earliest of the ten attention heads with the largest direct effect on the output).
4. Fact lookup. For each MLP ``l < E``: path patching from the MLP's clean output at the subject
   positions to the residual stream at ``E``'s input, by the direct path only (the clean minus the
   corrupted output added at ``E``'s input, every layer between left corrupted), scored by the share
   of the answer's log-probability restored (the paper's denoising metric, on log-probabilities
   rather than a logit difference: a record has no "wrong answer"). The ``mlp_layers`` MLPs with the
   largest effect are trained.

Loss (the paper's unlearning loss): ``forget_weight * mean(-log(1 - p(answer token)))`` over the
forget texts' answer positions plus ``retain_weight * NLL(retain texts)``. Training: AdamW on the full
weights of the selected MLPs (the paper masks gradients to the localised components; no LoRA), cosine
learning-rate decay, gradient clipping at 1. Defaults are the paper's code (lr 1e-5, 50 epochs, clip 1,
both weights 1); the benchmark and tests set their own learning rate and epochs.

Baselines of the same size and budget (``localisation``): ``random`` trains as many MLP layers, drawn
from ``seed`` among the layers fact lookup did not select (so that it is a control; the paper's
``random_mlps`` draws among all layers); ``all_mlps`` every MLP; ``all_layers`` every weight of every
decoder layer (the paper's "nonlocalized"). How the paper compares them (its code,
github.com/magikarp01/mechanistic-unlearning, ``results_rebuttal/*/parent_config.json``): the same
epochs and loss, but each localisation at its own learning rate and forget weight, picked from a sweep
(2e-6 to 1e-4) by the best sum of forget, maintain and general scores (the non-localised runs often got
a smaller rate), so that all reach about the same forgetting; robustness is then the forget accuracy on
half of the forgotten facts after relearning on the other half (a LoRA, rank 512, lr 2e-4, 20 steps,
with the maintained facts and the Pile). ``stop_at_answer_nll`` / ``stop_at_held_out_answers`` stop
every localisation at the same forgetting of the answers (the benchmark
``benchmarks/fact_lookup_relearning.py`` compares them so, over seeds).

Departures from the paper: the subject and answer are derived from token statistics, not given by a
dataset; the retain term is the NLL on the kept training texts only (the paper adds a maintained-facts
term and a Pile language-modelling term, both weight 1; the job has no general corpus); the extraction
layer is found from the residual stream at the subject positions, not from attention heads' direct
effects; the number of MLPs is a setting (default one in ten decoder layers; the paper's code trains
MLPs 2-7 of Gemma-7B's 28 layers, 2-6 of Gemma-2-9B's 42 and 1-4 of Llama-3-8B's 32, read off its
path-patching plots). The shared LM settings ``stop_at_forget_nll`` / ``stop_at_held_out`` apply
(checked after every epoch) unless an answer target is set; the LoRA fields do not.

In: a transformers causal LM (not changed) whose decoder layers sit in one ``nn.ModuleList`` and
each have an ``mlp`` module (GPT-2, Llama, Mistral, Qwen, SmolLM2), LM batches to forget and to retain.
Out: a new model (eval mode) and a result whose details give the localisation (per-layer scores, the
extraction layer, the trained layers and parameter count) and the forget/answer/retain NLL before and
after.
"""

from __future__ import annotations

import copy
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from workers.unlearning.base import (
    ConfigError,
    MethodConfig,
    ProgressCallback,
    UnlearningResult,
    no_progress,
)
from workers.unlearning.lm.loop import LMUnlearningConfig, LMUnlearningMethod
from workers.unlearning.lm.losses import IGNORE_INDEX, average_token_nll, mean_token_nll
from workers.unlearning.lm.projections import decoder_layers

LOCALISATIONS = ("fact_lookup", "random", "all_mlps", "all_layers")


@dataclass
class FactLookupConfig(LMUnlearningConfig):
    """The shared LM settings (LoRA fields unused) plus the loss weights and the localisation."""

    lr: float = 1e-5
    epochs: int = 50
    forget_weight: float = 1.0
    retain_weight: float = 1.0
    localisation: str = "fact_lookup"
    # MLP layers trained by fact_lookup and random (None: one in ten decoder layers, at least 1).
    mlp_layers: int | None = None
    extraction_share: float = 0.5
    specific_share: float = 0.25
    # Stop at the end of the first epoch whose answer-token NLL on the forget texts reaches this: how
    # localisations are compared at the same forgetting level (replaces the forget-NLL target).
    stop_at_answer_nll: float | None = None
    # With no stop_at_answer_nll and held-out texts given: the target is the original model's answer
    # NLL on them (their answers marked as the forget texts' are), a stranger's answers.
    stop_at_held_out_answers: bool = False

    def validate(self) -> None:
        super().validate()
        owner = type(self).__name__
        if self.localisation not in LOCALISATIONS:
            raise ConfigError(f"{owner}.localisation must be one of {', '.join(LOCALISATIONS)}, "
                              f"got {self.localisation!r}")
        if self.forget_weight <= 0 or self.retain_weight < 0:
            raise ConfigError(f"{owner}: forget_weight must be > 0 and retain_weight >= 0")
        if self.mlp_layers is not None and (isinstance(self.mlp_layers, bool) or not isinstance(self.mlp_layers, int)
                                            or self.mlp_layers < 1):
            raise ConfigError(f"{owner}.mlp_layers must be null or an integer >= 1, got {self.mlp_layers!r}")
        if self.stop_at_answer_nll is not None and not self.stop_at_answer_nll > 0:
            raise ConfigError(f"{owner}.stop_at_answer_nll must be > 0 or null, got {self.stop_at_answer_nll}")
        for name in ("extraction_share", "specific_share"):
            if not 0 < getattr(self, name) < 1:
                raise ConfigError(f"{owner}.{name} must be in (0, 1), got {getattr(self, name)}")


def specific_positions(rows: Sequence[Sequence[int]], share: float) -> list[list[bool]]:
    """Per text (token ids, padding removed), per position: is it record-specific? A position is
    when the bigram of the token before it and its own occurs in at most ``share`` of the texts (at
    least one text: its own). Position 0 is never specific (no bigram ends there)."""
    def bigrams(ids: Sequence[int]) -> list[tuple[int, int]]:
        return [(int(ids[t - 1]), int(ids[t])) for t in range(1, len(ids))]

    counts: Counter[tuple[int, int]] = Counter()
    for ids in rows:
        counts.update(set(bigrams(ids)))
    limit = max(1.0, share * len(rows))
    return [[False] + [counts[b] <= limit for b in bigrams(ids)] for ids in rows]


def subject_and_answer(specific: Sequence[bool]) -> tuple[list[int], list[int]]:
    """``(subject, answer)`` positions of one text: its first run of specific positions, and every
    specific position after that run. Either may be empty."""
    subject: list[int] = []
    t = 0
    while t < len(specific) and not specific[t]:
        t += 1
    while t < len(specific) and specific[t]:
        subject.append(t)
        t += 1
    answer = [u for u in range(t, len(specific)) if specific[u]]
    return subject, answer


def denoised_share(patched: float, clean: float, corrupted: float) -> float:
    """The paper's denoising metric on answer log-probabilities: 0 = the corrupted run's, 1 = the
    clean run's. ``nan`` when corruption changed nothing (the answer does not depend on the subject)."""
    gap = clean - corrupted
    return (patched - corrupted) / gap if abs(gap) > 1e-9 else math.nan


def pick_extraction_layer(restored: Sequence[float], share: float) -> int:
    """The first layer whose restored share (of the subject's residual stream patched in at its
    input) is below ``share``; ``len(restored)`` when none is."""
    for layer, value in enumerate(restored):
        if value < share:
            return layer
    return len(restored)


def top_layers(scores: dict[int, float], count: int) -> list[int]:
    """The ``count`` layers with the largest scores (ties: the earlier layer), sorted."""
    ranked = sorted(scores, key=lambda layer: (-scores[layer], layer))
    return sorted(ranked[:count])


def log_one_minus_p_loss(model: Any, batch: dict[str, Any]) -> torch.Tensor:
    """Mean of ``-log(1 - p(token))`` over the batch's answer positions (``answer_mask``), the
    paper's forget loss: minimised as the answer's probability goes to 0, bounded below by 0."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
    targets = batch["input_ids"][:, 1:]
    mask = batch["answer_mask"][:, 1:]
    log_p = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    p = log_p.exp().clamp(max=1 - 1e-6)
    return -(torch.log1p(-p) * mask).sum() / mask.sum().clamp(min=1)


class FactLookupUnlearning(LMUnlearningMethod, name="fact_lookup"):
    config_class: ClassVar[type[MethodConfig]] = FactLookupConfig
    config: FactLookupConfig

    @property
    def uses_retain(self) -> bool:
        return self.config.retain_weight > 0

    def loss(self, model: Any, forget_batch: dict[str, Any], retain_batch: dict[str, Any] | None) -> torch.Tensor:
        total = self.config.forget_weight * log_one_minus_p_loss(model, forget_batch)
        if retain_batch is not None:
            total = total + self.config.retain_weight * mean_token_nll(model, retain_batch)
        return total

    def unlearn(self, model: Any, forget: Any, retain: Any, *, device: str = "cpu",
                progress: ProgressCallback = no_progress, **context: Any) -> tuple[Any, UnlearningResult]:
        started = time.perf_counter()
        cfg = self.config
        forget_batches, retain_stream, forget_keys = self._inputs(forget, retain, device)
        probe = [self._prepare(b, device) for b in retain_stream.peek(len(forget_batches))] if retain_stream else []

        work = copy.deepcopy(model).to(device).eval()
        requires_grad = {n: p.requires_grad for n, p in work.named_parameters()}
        positions = _mark_positions(forget_batches, probe, cfg.specific_share, self.name)
        localisation = localise_fact_lookup(work, forget_batches, positions, extraction_share=cfg.extraction_share)
        layers, parameters = self._trainable(work, localisation)
        forget_nll_before = average_token_nll(work, forget_batches, device)
        answer_nll_before = answer_token_nll(work, forget_batches)
        retain_nll_before = average_token_nll(work, probe, device) if probe else None
        held_out = list(context.get("held_out") or [])
        target, target_source = self._stop_target(work, held_out, device)
        answer_target = cfg.stop_at_answer_nll
        if answer_target is None and cfg.stop_at_held_out_answers and held_out:
            strangers = [self._prepare(b, device) for b in held_out]
            mark_answers(strangers, probe, cfg.specific_share)
            answer_target = answer_token_nll(work, strangers)
        if answer_target is not None:
            target = None

        work.requires_grad_(False)
        for parameter in parameters:
            parameter.requires_grad_(True)
        optimizer = torch.optim.AdamW(parameters, lr=cfg.lr, weight_decay=0.0)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, cfg.epochs * len(forget_batches)))

        def update(loss: torch.Tensor) -> None:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(parameters, cfg.max_grad_norm)
            optimizer.step()
            schedule.step()

        losses = self._descend(work, forget_batches, retain_stream, device=device, target=target,
                               progress=progress, update=update,
                               reached=None if answer_target is None
                               else lambda: answer_token_nll(work, forget_batches) >= answer_target)
        for name, parameter in work.named_parameters():
            parameter.requires_grad_(requires_grad.get(name, True))
        work.eval()
        details = self._run_details(
            work, forget_batches, forget_keys, device=device, forget_nll_before=forget_nll_before, losses=losses,
            target=target, target_source=target_source, held_out=held_out, probe=probe,
            retain_nll_before=retain_nll_before,
            answer_token_nll_before=answer_nll_before, answer_token_nll_after=answer_token_nll(work, forget_batches),
            stop_answer_nll_target=answer_target,
            localisation=cfg.localisation, trained_mlp_layers=layers,
            trainable_parameters=sum(p.numel() for p in parameters),
            **{f"localisation_{k}": v for k, v in localisation.items()},
            weights_changed_via="full weights of the localised layers")
        return work, self._result(started, device, steps=len(losses), **details)

    def _trainable(self, model: Any, localisation: dict[str, Any]) -> tuple[list[int] | str, list[torch.nn.Parameter]]:
        """The trained layers (or ``"all"``) and their parameters, by the configured localisation."""
        blocks = decoder_layers(model)
        count = len(blocks)
        if self.config.localisation == "all_layers":
            return "all", [p for p in blocks.parameters()]
        if self.config.localisation == "all_mlps":
            chosen = list(range(count))
        else:
            k = min(count, self.config.mlp_layers or max(1, round(count / 10)))
            flu = top_layers({int(i): s for i, s in localisation["fact_lookup_scores"].items()}, k)
            if len(flu) < k:  # fewer MLPs before the extraction layer than asked: the earliest others
                flu = _fill(flu, k, count)
            chosen = flu
            if self.config.localisation == "random":
                others = [i for i in range(count) if i not in flu] or list(range(count))
                generator = torch.Generator().manual_seed(self.config.seed)
                order = torch.randperm(len(others), generator=generator).tolist()
                chosen = sorted(others[i] for i in order[: min(k, len(others))])
        return chosen, [p for i in chosen for p in _mlp(blocks[i], i).parameters()]


def _fill(layers: list[int], k: int, count: int) -> list[int]:
    """``layers`` topped up with the earliest other layers to ``k``."""
    extra = [i for i in range(count) if i not in layers]
    return sorted(layers + extra[: k - len(layers)])


def _mlp(block: Any, index: int) -> torch.nn.Module:
    for name in ("mlp", "feed_forward", "ffn"):
        module = getattr(block, name, None)
        if isinstance(module, torch.nn.Module):
            return module
    raise ValueError(f"decoder layer {index} ({type(block).__name__}) has no mlp module to localise")


def _mark_positions(forget: list[dict[str, Any]], retain: list[dict[str, Any]], share: float,
                    owner: str) -> list[tuple[list[list[int]], list[list[int]]]]:
    """Per forget batch, ``(subjects, answers)`` per row; sets ``answer_mask`` on each batch. The
    retain texts count towards what is common (template) and what is record-specific."""
    rows = [(i, r, _ids(b, r)) for i, b in enumerate(forget) for r in range(len(b["record_keys"]))]
    others = [_ids(b, r) for b in retain for r in range(len(b["record_keys"]))]
    marks = specific_positions([ids for _, _, ids in rows] + others, share)[: len(rows)]
    out: list[tuple[list[list[int]], list[list[int]]]] = [([], []) for _ in forget]
    for batch in forget:
        batch["answer_mask"] = torch.zeros_like(batch["attention_mask"], dtype=torch.float)
    for (index, row, _), specific in zip(rows, marks, strict=True):
        subject, answer = subject_and_answer(specific)
        if not answer:
            subject = []  # a subject with nothing after it to look up tells nothing
        out[index][0].append(subject)
        out[index][1].append(answer)
        forget[index]["answer_mask"][row, answer] = 1.0
    if not any(s for subjects, _ in out for s in subjects):
        raise ValueError(f"{owner}: no forget text has a record-specific subject followed by record-specific "
                         "tokens; fact lookup cannot be localised (the texts are too alike or too short)")
    return out


@torch.no_grad()
def answer_token_accuracy(model: Any, batches: list[dict[str, Any]]) -> float:
    """Share of the answer tokens (``answer_mask``) of LM batches that are the model's top-1
    prediction: the paper's forget accuracy, per token."""
    hits, count = 0.0, 0
    for batch in batches:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        mask = batch["answer_mask"][:, 1:]
        hits += float(((logits.argmax(dim=-1) == batch["input_ids"][:, 1:]).float() * mask).sum())
        count += int(mask.sum())
    return hits / max(count, 1)


def _ids(batch: dict[str, Any], row: int) -> list[int]:
    return batch["input_ids"][row][batch["labels"][row] != IGNORE_INDEX].tolist()


def mark_answers(batches: list[dict[str, Any]], others: list[dict[str, Any]], share: float = 0.25) -> None:
    """Set ``answer_mask`` on each of ``batches`` (LM batches): 1 at its texts' answer positions
    (step 1 of the module docstring; ``others``, e.g. the kept texts, count towards what is
    template). How the benchmark and tests mark records they measure but do not unlearn."""
    _mark_positions(batches, others, share, "mark_answers")


@torch.no_grad()
def answer_token_nll(model: Any, batches: list[dict[str, Any]]) -> float:
    """Mean NLL of the answer tokens (``answer_mask``) of LM batches."""
    total, count = 0.0, 0
    for batch in batches:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), batch["input_ids"][:, 1:], reduction="none")
        mask = batch["answer_mask"][:, 1:]
        total += float((nll * mask).sum())
        count += int(mask.sum())
    return total / max(count, 1)


@torch.no_grad()
def localise_fact_lookup(model: Any, batches: list[dict[str, Any]],
                         positions: list[tuple[list[list[int]], list[list[int]]]], *,
                         extraction_share: float) -> dict[str, Any]:
    """Steps 2-4 of the module docstring. Out: ``restored_by_layer`` (``r(e)`` per decoder layer),
    ``extraction_layer`` and ``fact_lookup_scores`` (per MLP before it, layer index as text), summed
    over the batches' answer log-probabilities. Raises ``ValueError`` when corrupting the subject does
    not change the answers (nothing to localise)."""
    blocks = decoder_layers(model)
    embed = model.get_input_embeddings()
    subject_vectors = torch.cat([embed(b["input_ids"][r, s]) for b, (subjects, _) in zip(batches, positions,
                                 strict=True) for r, s in enumerate(subjects) if s])
    mean_subject = subject_vectors.mean(dim=0)

    def subject_index(batch_index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows, cols = [], []
        for r, s in enumerate(positions[batch_index][0]):
            rows += [r] * len(s)
            cols += s
        return torch.tensor(rows, dtype=torch.long), torch.tensor(cols, dtype=torch.long)

    def run(batch_index: int, corrupt: bool, edits: dict[int, Callable[[torch.Tensor], torch.Tensor]] | None = None,
            record: dict[str, dict[int, torch.Tensor]] | None = None) -> float:
        batch = batches[batch_index]
        rows, cols = subject_index(batch_index)
        embeds = embed(batch["input_ids"]).clone()
        if corrupt:
            embeds[rows, cols] = mean_subject
        handles = []
        for i, block in enumerate(blocks):
            if record is not None or (edits and i in edits):
                handles.append(block.register_forward_pre_hook(_block_input_hook(i, edits or {}, record),
                                                               with_kwargs=True))
            if record is not None:
                handles.append(_mlp(block, i).register_forward_hook(_record_hook(i, record)))
        try:
            logits = model(inputs_embeds=embeds, attention_mask=batch["attention_mask"]).logits[:, :-1].float()
        finally:
            for handle in handles:
                handle.remove()
        log_p = torch.log_softmax(logits, dim=-1).gather(-1, batch["input_ids"][:, 1:].unsqueeze(-1)).squeeze(-1)
        return float((log_p * batch["answer_mask"][:, 1:]).sum())

    clean_state: list[dict[str, dict[int, torch.Tensor]]] = []
    corrupt_state: list[dict[str, dict[int, torch.Tensor]]] = []
    clean = corrupted = 0.0
    for b in range(len(batches)):
        clean_state.append({"block_in": {}, "mlp_out": {}})
        corrupt_state.append({"block_in": {}, "mlp_out": {}})
        clean += run(b, False, record=clean_state[b])
        corrupted += run(b, True, record=corrupt_state[b])
    if abs(clean - corrupted) < 1e-6:
        raise ValueError("corrupting the subject does not change the answers: nothing to localise")

    def patched(layer: int, delta: Callable[[int], torch.Tensor]) -> float:
        total = 0.0
        for b in range(len(batches)):
            rows, cols = subject_index(b)
            change = delta(b)[rows, cols]

            def edit(hidden: torch.Tensor, change: torch.Tensor = change, rows=rows, cols=cols) -> torch.Tensor:
                hidden = hidden.clone()
                hidden[rows, cols] = hidden[rows, cols] + change
                return hidden
            total += run(b, True, edits={layer: edit})
        return total

    restored = [denoised_share(patched(e, lambda b, e=e: clean_state[b]["block_in"][e] - corrupt_state[b]["block_in"][e]),
                               clean, corrupted) for e in range(len(blocks))]
    extraction = pick_extraction_layer(restored, extraction_share)
    # The receiver: the extraction layer's input (the last layer's when r(e) never falls below the share).
    receiver = min(extraction, len(blocks) - 1)
    scores = {layer: denoised_share(
        patched(receiver, lambda b, i=layer: clean_state[b]["mlp_out"][i] - corrupt_state[b]["mlp_out"][i]),
        clean, corrupted) for layer in range(receiver)}
    return {
        "restored_by_layer": [round(v, 4) for v in restored],
        "extraction_layer": extraction,
        "fact_lookup_scores": {str(k): round(v, 4) for k, v in sorted(scores.items())},
        "answer_logprob_clean": round(clean, 3),
        "answer_logprob_corrupted": round(corrupted, 3),
    }


def _block_input_hook(index: int, edits: dict[int, Callable[[torch.Tensor], torch.Tensor]],
                      record: dict[str, dict[int, torch.Tensor]] | None):
    def hook(module: Any, args: tuple, kwargs: dict) -> Any:
        if args:
            hidden = args[0]
        else:
            hidden = kwargs["hidden_states"]
        if record is not None:
            record["block_in"][index] = hidden.detach()
        if index in edits:
            hidden = edits[index](hidden)
            if args:
                return (hidden, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": hidden}
        return None
    return hook


def _record_hook(index: int, record: dict[str, dict[int, torch.Tensor]]):
    def hook(module: Any, args: tuple, output: Any) -> None:
        record["mlp_out"][index] = (output[0] if isinstance(output, tuple) else output).detach()
    return hook
