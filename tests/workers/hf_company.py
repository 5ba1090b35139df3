"""What a company's own pipeline does before it brings a Hugging Face model to the platform:
build a tiny transformers model from a config (GPT-2-, Llama- or BERT-style; nothing is
downloaded), train it with plain PyTorch on some records of a text dataset, and archive the folder
``save_pretrained`` writes. Shared by tests/workers/test_huggingface_family.py and
benchmarks/byo_huggingface.py (which passes larger sizes)."""

from __future__ import annotations

import io
import tarfile
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

VOCAB = 300


def byte_level_tokenizer(*, bos: str | None = None, eos: str = "<|endoftext|>", pad: str | None = None) -> Any:
    """A byte-level BPE tokenizer (256 byte symbols and the special tokens), built in memory;
    with ``bos`` every text starts with it (Llama-style)."""
    from tokenizers import Tokenizer, decoders, models, processors
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {symbol: i for i, symbol in enumerate(sorted(ByteLevel.alphabet()))}
    for token in dict.fromkeys(t for t in (bos, eos, pad) if t):
        vocab[token] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    if bos:
        backend.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, vocab[bos])])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=bos, eos_token=eos, pad_token=pad or eos)


def wordpiece_tokenizer() -> Any:
    """A BERT-style WordPiece tokenizer over printable ASCII characters ([CLS] text [SEP])."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    characters = [chr(c) for c in range(33, 127) if not chr(c).isupper()]
    vocab = {token: i for i, token in enumerate(specials + characters + [f"##{c}" for c in characters])}
    backend = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


def gpt2_style(*, hidden: int = 32, layers: int = 2, positions: int = 128) -> tuple[Any, Any]:
    """(GPT2LMHeadModel config, its tokenizer): tied output head, Conv1D layers."""
    from transformers import GPT2Config

    tokenizer = byte_level_tokenizer()
    eos = tokenizer.eos_token_id
    return GPT2Config(vocab_size=VOCAB, n_positions=positions, n_embd=hidden, n_layer=layers, n_head=2,
                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=eos, eos_token_id=eos,
                      pad_token_id=eos), tokenizer


def llama_style(*, hidden: int = 32, layers: int = 2, positions: int = 128) -> tuple[Any, Any]:
    """(LlamaForCausalLM config, its tokenizer): RMSNorm, rotary positions, grouped-query
    attention, gated MLP, an untied output head."""
    from transformers import LlamaConfig

    tokenizer = byte_level_tokenizer(bos="<s>", eos="</s>", pad="<pad>")
    return LlamaConfig(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=positions,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False), tokenizer


def bert_style(*, hidden: int = 32, layers: int = 2, positions: int = 128) -> tuple[Any, Any]:
    """(BertForSequenceClassification config with two labels, its WordPiece tokenizer)."""
    from transformers import BertConfig

    tokenizer = wordpiece_tokenizer()
    return BertConfig(vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                      intermediate_size=2 * hidden, max_position_embeddings=positions, num_labels=2,
                      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                      pad_token_id=tokenizer.pad_token_id), tokenizer


def company_trained_causal_lm(config: Any, tokenizer: Any, texts: Sequence[str], *, steps: int = 60,
                              lr: float = 1e-2, seed: int = 0, max_length: int = 96) -> Any:
    """A causal LM trained from scratch on ``texts`` (full fine-tuning, AdamW), eval mode."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    batch = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def company_trained_classifier(config: Any, tokenizer: Any, texts: Sequence[str], labels: Sequence[int], *,
                               epochs: int = 3, lr: float = 2e-3, seed: int = 0, max_length: int = 96) -> Any:
    """A sequence classifier trained from scratch on ``texts`` and ``labels``, eval mode."""
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    order = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for chunk in torch.randperm(len(texts), generator=order).split(16):
            batch = tokenizer([texts[i] for i in chunk], padding=True, truncation=True, max_length=max_length,
                              return_tensors="pt")
            loss = model(**batch, labels=torch.tensor([labels[i] for i in chunk])).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def saved_folder(model: Any, tokenizer: Any, **save_options: Any) -> dict[str, bytes]:
    """The files ``save_pretrained`` writes for the model and its tokenizer, by name."""
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder, **save_options)
        tokenizer.save_pretrained(folder)
        return {path.name: path.read_bytes() for path in sorted(Path(folder).iterdir()) if path.is_file()}


def zip_archive(files: Mapping[str, bytes], *, folder: str = "") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(f"{folder}{name}", content)
    return buffer.getvalue()


def tar_archive(files: Mapping[str, bytes], *, compression: str = "gz", folder: str = "") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=f"w:{compression}") as archive:
        for name, content in files.items():
            info = tarfile.TarInfo(f"{folder}{name}")
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()
