"""``verifier_guard``: the inference-time guard as an unlearning method (class ``suppressed``).

It changes no weight. ``unlearn`` builds the verifier from the forgotten texts, calibrates its
threshold by Learn-then-Test on held-out prompts and returns the model wrapped in a
:class:`GuardedGenerator`. When the calibration cannot certify a bound it raises
:class:`GuardNotCertified` instead of returning a guard that would claim one.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

from workers.unlearning.base import (
    ConfigError,
    MethodConfig,
    ProgressCallback,
    UnlearningMethod,
    UnlearningResult,
    no_progress,
)
from workers.unlearning.guard.calibration import (
    DEFAULT_THRESHOLDS,
    GuardCalibration,
    calibrate_guard,
)
from workers.unlearning.guard.generators import HFGenerator, as_generator, parameters_fingerprint
from workers.unlearning.guard.guarded import GuardedGenerator
from workers.unlearning.guard.verifier import FactOracle, LeakVerifier


class GuardNotCertified(ValueError):
    """The calibration could not support the requested bound; ``calibration`` says why."""

    def __init__(self, calibration: GuardCalibration) -> None:
        super().__init__(calibration.statement())
        self.calibration = calibration


@dataclass
class VerifierGuardConfig(MethodConfig):
    """Target leak rate ``alpha``, error level ``delta``, regeneration budget, verifier and sampling.

    ``thresholds=None`` uses 0.05, 0.10, ..., 0.95. ``oracle_min_ratio`` is the fuzzy-match level of
    the calibration oracle (1.0 = exact matches only).
    """

    alpha: float = 0.01
    delta: float = 0.05
    max_regenerations: int = 3
    thresholds: list[float] | None = None
    ngram_min: int = 3
    ngram_max: int = 5
    oracle_min_ratio: float = 0.9
    max_new_tokens: int = 48
    temperature: float = 1.0
    top_p: float = 1.0
    use_chat_template: bool = False
    # How many calibration prompts the platform's job draws (0: twice the minimum that alpha and
    # delta need); the method itself calibrates on whatever prompts it is given.
    calibration_prompts: int = 0

    def validate(self) -> None:
        super().validate()
        owner = type(self).__name__
        for name in ("alpha", "delta"):
            value = getattr(self, name)
            if not 0 < value < 1:
                raise ConfigError(f"{owner}.{name} must be in (0, 1), got {value}")
        if self.max_regenerations < 0 or self.calibration_prompts < 0:
            raise ConfigError(f"{owner}.max_regenerations and calibration_prompts must be >= 0")
        if not 1 <= self.ngram_min <= self.ngram_max:
            raise ConfigError(f"{owner}: need 1 <= ngram_min <= ngram_max")
        if not 0 < self.oracle_min_ratio <= 1:
            raise ConfigError(f"{owner}.oracle_min_ratio must be in (0, 1]")
        if self.max_new_tokens < 1 or self.temperature <= 0 or not 0 < self.top_p <= 1:
            raise ConfigError(f"{owner}: need max_new_tokens >= 1, temperature > 0, 0 < top_p <= 1")
        if self.thresholds is not None and (
            not isinstance(self.thresholds, list)
            or not self.thresholds
            or not all(isinstance(t, (int, float)) and 0 < t <= 1 for t in self.thresholds)
        ):
            raise ConfigError(f"{owner}.thresholds must be null or a non-empty list in (0, 1]")


class VerifierGuard(UnlearningMethod, name="verifier_guard"):
    config_class: ClassVar[type[MethodConfig]] = VerifierGuardConfig
    config: VerifierGuardConfig

    def unlearn(self, model: Any, forget: Iterable[Any], retain: Iterable[Any], *, device: str = "cpu",
                progress: ProgressCallback = no_progress, **context: Any) -> tuple[GuardedGenerator, UnlearningResult]:
        """Wrap ``model`` in a calibrated guard; the model's parameters are not changed.

        In: ``model`` is a transformers causal LM (needs ``context["tokenizer"]``) or any
        ``prompt -> text`` / ``(prompt, seed) -> text`` callable. ``forget`` yields the forgotten
        texts as strings, ``(record_key, text)`` pairs or LM batches (decoded with the tokenizer).
        ``retain`` is not used. Context keys: ``calibration_prompts`` (required, held out, drawn
        like the prompts the model will serve), ``forget_facts`` (optional short strings the oracle
        looks for; default the forgotten texts), ``tokenizer``, ``verifier_key`` (optional bytes:
        the key the verifier hashes n-grams with, so that a stored guard can keep it apart; random
        when absent). Out: the guarded model and a
        result with the calibration in ``details``. Raises :class:`GuardNotCertified` when no
        bound can be certified.
        """
        started = time.perf_counter()
        cfg = self.config
        prompts = list(context.get("calibration_prompts") or [])
        if not prompts:
            raise ValueError("verifier_guard needs context['calibration_prompts']")
        tokenizer = context.get("tokenizer")
        records = _forgotten_records(forget, tokenizer)
        if not records:
            raise ValueError("verifier_guard: the forget set is empty")
        texts = [text for _, text in records]
        facts = list(context.get("forget_facts") or texts)

        generate = self._generator(model, tokenizer, device)
        verifier = LeakVerifier(texts, ngram_min=cfg.ngram_min, ngram_max=cfg.ngram_max,
                                salt=context.get("verifier_key"))
        oracle = FactOracle(facts, min_ratio=cfg.oracle_min_ratio)
        fingerprint_before = parameters_fingerprint(model)
        calibration = calibrate_guard(
            generate,
            verifier,
            prompts,
            oracle,
            alpha=cfg.alpha,
            delta=cfg.delta,
            thresholds=cfg.thresholds or DEFAULT_THRESHOLDS,
            max_regenerations=cfg.max_regenerations,
            seed=cfg.seed,
            progress=progress,
        )
        fingerprint_after = parameters_fingerprint(model)
        if fingerprint_before != fingerprint_after:
            # Only a generator with side effects on its own weights could cause this.
            raise RuntimeError("the model's parameters changed while the guard was calibrated")
        if not calibration.certified:
            raise GuardNotCertified(calibration)
        guarded = GuardedGenerator(
            generate,
            verifier,
            calibration.threshold,
            max_regenerations=cfg.max_regenerations,
            seed=cfg.seed,
            calibration=calibration,
        )
        result = UnlearningResult(
            method=self.name,
            guarantee_class=self.guarantee_class,
            config=cfg.to_dict(),
            wall_seconds=time.perf_counter() - started,
            device=device,
            details={
                "parameters_changed": False,
                "parameters_sha256": fingerprint_after,
                "forget_records": len(records),
                "forget_record_keys": sorted(key for key, _ in records if key is not None),
                "calibration": calibration.to_dict(),
                "statement": calibration.statement(),
            },
        )
        return guarded, result

    def _generator(self, model: Any, tokenizer: Any, device: str) -> Any:
        if hasattr(model, "generate") and hasattr(model, "state_dict"):
            if tokenizer is None:
                raise ValueError(
                    "verifier_guard needs context['tokenizer'] for a transformers model"
                )
            cfg = self.config
            return HFGenerator(
                model,
                tokenizer,
                max_new_tokens=cfg.max_new_tokens,
                temperature=cfg.temperature,
                top_p=cfg.top_p,
                use_chat_template=cfg.use_chat_template,
                device=device,
            )
        return as_generator(model)


def _forgotten_records(forget: Iterable[Any], tokenizer: Any) -> list[tuple[str | None, str]]:
    """``(record_key or None, text)`` for strings, pairs or LM batches in the forget set."""
    records: list[tuple[str | None, str]] = []
    for item in forget:
        if isinstance(item, str):
            records.append((None, item))
        elif isinstance(item, dict):
            if tokenizer is None:
                raise ValueError("LM batches in the forget set need context['tokenizer']")
            from workers.unlearning.lm.data import batch_texts

            records.extend(batch_texts(tokenizer, item))
        elif isinstance(item, (tuple, list)) and len(item) == 2:
            records.append((str(item[0]), str(item[1])))
        else:
            raise ValueError(f"cannot read a forgotten text from {type(item).__name__}")
    return records
