"""Turn texts with record keys into LM batches.

An LM batch is ``{"input_ids", "attention_mask", "labels", "record_keys"}``: right-padded
``long`` tensors, with ``labels`` equal to ``input_ids`` except ``-100`` on padding so padding is
never scored. Padding is done here rather than by the tokenizer so the result does not depend on
tokenizer settings (GPT-2's tokenizer has no pad token at all).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from workers.unlearning.lm.losses import IGNORE_INDEX

LMBatch = dict[str, Any]


def lm_batches(
    tokenizer: Any,
    records: Mapping[str, str] | Iterable[tuple[str, str]],
    *,
    max_length: int = 256,
    batch_size: int = 8,
) -> list[LMBatch]:
    """Tokenise ``(record_key, text)`` pairs (or a key -> text mapping) into LM batches.

    In: a transformers tokenizer (anything callable as ``tokenizer(text, truncation=True,
    max_length=...)`` returning ``input_ids``), records, the maximum tokens per text and the batch
    size. Out: a list of batches in the records' order, so iterating it twice gives the same data.
    Raises ``ValueError`` for an empty record set, a duplicate key or a text with no tokens.
    """
    if max_length < 2:
        raise ValueError(
            f"max_length must be >= 2 (a causal LM scores next tokens), got {max_length}"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    pairs = list(records.items() if isinstance(records, Mapping) else records)
    if not pairs:
        raise ValueError("no records to tokenise")
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate record keys")
    pad_id = _pad_token_id(tokenizer)
    encoded: list[tuple[str, list[int]]] = []
    for key, text in pairs:
        ids = list(tokenizer(text, truncation=True, max_length=max_length)["input_ids"])
        if not ids:
            raise ValueError(f"record {key!r} has no tokens")
        encoded.append((key, ids))
    return [_pad(encoded[i : i + batch_size], pad_id) for i in range(0, len(encoded), batch_size)]


def batch_texts(tokenizer: Any, batch: LMBatch) -> list[tuple[str, str]]:
    """Recover ``(record_key, text)`` pairs from an LM batch (the scored tokens, decoded)."""
    out = []
    for key, ids, labels in zip(
        batch["record_keys"], batch["input_ids"], batch["labels"], strict=True
    ):
        kept = ids[labels != IGNORE_INDEX].tolist()
        out.append((key, tokenizer.decode(kept, skip_special_tokens=True)))
    return out


def _pad_token_id(tokenizer: Any) -> int:
    for name in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if isinstance(value, int):
            return value
    return 0


def _pad(items: list[tuple[str, list[int]]], pad_id: int) -> LMBatch:
    width = max(len(ids) for _, ids in items)
    input_ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(items), width), dtype=torch.long)
    for row, (_, ids) in enumerate(items):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
    labels = input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": labels,
        "record_keys": [key for key, _ in items],
    }
