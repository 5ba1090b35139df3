"""What the guard wraps: a generator ``(prompt, seed) -> text``.

Any callable works; :func:`as_generator` adapts a plain ``prompt -> text`` callable, and
:class:`HFGenerator` adapts a transformers causal LM with its tokenizer (sampling seeded per call,
so a regeneration with another seed gives another sample). The guard only calls the model: it
never changes its parameters.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable
from typing import Any

Generator = Callable[[str, int], str]


def as_generator(model: Callable[..., str]) -> Generator:
    """``model`` as a ``(prompt, seed) -> text`` callable.

    A callable that takes one argument is wrapped and the seed ignored (a regeneration then
    just calls it again); one that takes two is returned as it is.
    """
    if not callable(model):
        raise TypeError(f"the guard needs a callable generator, got {type(model).__name__}")
    try:
        parameters = inspect.signature(model).parameters.values()
    except (TypeError, ValueError):
        return model
    positional = [
        p
        for p in parameters
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    if len(positional) == 1 and not any(p.kind is p.VAR_POSITIONAL for p in parameters):
        return lambda prompt, seed: model(prompt)
    return model


class HFGenerator:
    """A transformers causal LM + tokenizer as a guard generator (sampling, eval mode, no grad).

    In: the model, its tokenizer, the sampling settings; ``use_chat_template`` formats the prompt
    as one user turn (for instruct models such as SmolLM2-Instruct). ``__call__(prompt, seed)``
    returns only the newly generated text.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_new_tokens: int = 48,
        temperature: float = 1.0,
        top_p: float = 1.0,
        use_chat_template: bool = False,
        device: str = "cpu",
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.use_chat_template = use_chat_template
        self.device = device

    def __call__(self, prompt: str, seed: int) -> str:
        import torch

        if self.use_chat_template:
            text = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
            )
        else:
            text = prompt
        encoded = self.tokenizer(text, return_tensors="pt").to(self.device)
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            pad_id = self.tokenizer.eos_token_id
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(seed)
            output = self.model.generate(
                **encoded,
                do_sample=True,
                temperature=self.temperature,
                top_p=self.top_p,
                max_new_tokens=self.max_new_tokens,
                pad_token_id=pad_id,
            )
        new_tokens = output[0, encoded["input_ids"].shape[1] :]
        return self.tokenizer.decode(new_tokens, skip_special_tokens=True)


def parameters_fingerprint(model: Any) -> str | None:
    """sha256 over a torch module's parameters and buffers (names, dtypes, shapes, bytes).

    Out: a hex digest, or None for something that is not a torch module. The guard records it
    before and after calibration to show the weights were not touched.
    """
    state_dict = getattr(model, "state_dict", None)
    if state_dict is None:
        return None
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(state_dict().items()):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}|".encode())
        # Raw bytes through a uint8 view: works for every dtype numpy lacks (bfloat16).
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
