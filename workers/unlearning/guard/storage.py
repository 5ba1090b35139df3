"""The verifier guard as stored next to its model: safetensors tensors plus JSON, no plain text.

What a guarded artifact keeps of the guard (``to_artifact``/``from_artifact``):

* tensors (the artifact's ``guard`` blob): for the verifier, the keyed 64-bit hashes of the
  forgotten texts' character n-grams (``record.<i>.grams``, uint8 ``[n, 8]``) with their TF-IDF
  weights (``record.<i>.weights``), and the IDF table (``idf.grams``, ``idf.weights``);
* JSON (the manifest's ``extra.guard``): the threshold, the regeneration budget, the redaction
  text, the sampling settings, the n-gram sizes, the Learn-then-Test calibration (alpha, delta,
  n, leaks per threshold, the statement) and ``key_ref``, the name under which the hashing key is
  kept.

The hashing key (the verifier's salt) is not in the artifact: it lives in the platform keystore
under ``key_ref``. Without it the hashes cannot be tested against guesses; with it, short
n-grams can be recovered by enumeration, so the key is as sensitive as the forgotten data and
destroying it disables the guard. The forgotten texts themselves and the calibration's fact list
and prompts are never stored. Plain Python + torch, no Django.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from workers.unlearning.guard.guarded import REDACTION, GuardedGenerator
from workers.unlearning.guard.verifier import LeakVerifier

FORMAT = 1
_DIGEST_BYTES = 8


@dataclass(frozen=True)
class StoredGuard:
    """A calibrated guard as it is stored: the verifier state without its key, and the settings.

    ``verifier_state`` is :meth:`LeakVerifier.to_state` without ``salt``; ``generation`` holds
    ``max_new_tokens``, ``temperature``, ``top_p`` and ``use_chat_template``.
    """

    threshold: float
    max_regenerations: int
    key_ref: str
    verifier_state: dict[str, Any]
    calibration: dict[str, Any]
    generation: dict[str, Any]
    redaction: str = REDACTION
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_guarded(cls, guarded: GuardedGenerator, *, key_ref: str, generation: dict[str, Any],
                     seed: int = 0) -> StoredGuard:
        """What to store of a calibrated :class:`GuardedGenerator` (its key stays out)."""
        if guarded.calibration is None:
            raise ValueError("only a calibrated guard can be stored")
        state = guarded.verifier.to_state()
        state.pop("salt")
        return cls(threshold=float(guarded.threshold), max_regenerations=guarded.max_regenerations,
                   key_ref=key_ref, verifier_state=state, calibration=guarded.calibration.to_dict(),
                   generation=dict(generation), redaction=guarded.redaction, seed=seed)

    def verifier(self, key: bytes) -> LeakVerifier:
        """The verifier, rebuilt with its hashing key (from the keystore)."""
        return LeakVerifier.from_state({**self.verifier_state, "salt": key.hex()})

    def guarded(self, generate: Any, key: bytes) -> GuardedGenerator:
        """The guard around ``generate`` (``(prompt, seed) -> text``), as calibrated."""
        return GuardedGenerator(generate, self.verifier(key), self.threshold,
                                max_regenerations=self.max_regenerations, redaction=self.redaction,
                                seed=self.seed)

    def guarded_model(self, model: Any, tokenizer: Any, key: bytes, *, device: str = "cpu") -> GuardedGenerator:
        """What the serving side runs: the transformers model sampled with the calibrated settings
        (those the bound was established for), behind the guard."""
        from workers.unlearning.guard.generators import HFGenerator

        return self.guarded(HFGenerator(model.to(device), tokenizer, device=device, **self.generation), key)

    @property
    def records(self) -> int:
        return len(self.verifier_state["records"])

    # -- (de)serialisation

    def to_artifact(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """``(JSON metadata for the manifest, tensors for the guard blob)``."""
        state = self.verifier_state
        tensors = {}
        idf = sorted(state["idf"].items())
        tensors["idf.grams"] = _grams_tensor([g for g, _ in idf])
        tensors["idf.weights"] = torch.tensor([w for _, w in idf], dtype=torch.float64)
        for index, record in enumerate(state["records"]):
            grams = sorted(record["grams"])
            tensors[f"record.{index}.grams"] = _grams_tensor(grams)
            tensors[f"record.{index}.weights"] = torch.tensor([record["vector"][g] for g in grams],
                                                              dtype=torch.float64)
        meta = {
            "format": FORMAT, "threshold": self.threshold, "max_regenerations": self.max_regenerations,
            "key_ref": self.key_ref, "redaction": self.redaction, "seed": self.seed,
            "generation": self.generation, "calibration": self.calibration,
            "ngram_min": state["ngram_min"], "ngram_max": state["ngram_max"],
            "records": len(state["records"]), "extra": self.extra,
        }
        return meta, tensors

    @classmethod
    def from_artifact(cls, meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> StoredGuard:
        if meta.get("format") != FORMAT:
            raise ValueError(f"unknown guard format {meta.get('format')!r}")
        idf_grams = _grams_hex(tensors["idf.grams"])
        state: dict[str, Any] = {
            "ngram_min": meta["ngram_min"], "ngram_max": meta["ngram_max"],
            "idf": dict(zip(idf_grams, tensors["idf.weights"].tolist(), strict=True)),
            "records": [],
        }
        for index in range(int(meta["records"])):
            grams = _grams_hex(tensors[f"record.{index}.grams"])
            weights = tensors[f"record.{index}.weights"].tolist()
            state["records"].append({"grams": grams, "vector": dict(zip(grams, weights, strict=True))})
        return cls(threshold=float(meta["threshold"]), max_regenerations=int(meta["max_regenerations"]),
                   key_ref=meta["key_ref"], verifier_state=state, calibration=meta["calibration"],
                   generation=dict(meta["generation"]), redaction=meta["redaction"], seed=int(meta["seed"]),
                   extra=dict(meta.get("extra") or {}))


def _grams_tensor(hex_grams: list[str]) -> torch.Tensor:
    data = bytes.fromhex("".join(hex_grams))
    if len(data) != _DIGEST_BYTES * len(hex_grams):
        raise ValueError(f"verifier n-gram hashes must be {_DIGEST_BYTES} bytes each")
    if not data:
        return torch.zeros((0, _DIGEST_BYTES), dtype=torch.uint8)
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).reshape(-1, _DIGEST_BYTES).clone()


def _grams_hex(tensor: torch.Tensor) -> list[str]:
    if tensor.dtype != torch.uint8 or tensor.ndim != 2 or tensor.shape[1] != _DIGEST_BYTES:
        raise ValueError(f"a guard n-gram table must be uint8 [n, {_DIGEST_BYTES}]")
    return [bytes(row).hex() for row in tensor.tolist()]
