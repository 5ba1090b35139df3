"""DP-SGD through Opacus: per-sample clipping, Gaussian noise, Poisson sampling, and the
accountant's (epsilon, delta).

Batches are drawn by Opacus' Poisson sampler (each record independently with probability
``batch_size / n`` per step) from an explicit generator, and the noise comes from another, so a
run is reproducible from its seed (not ``secure_mode``: a production deployment that needs
cryptographic randomness sets ``secure_mode`` and gives up bit-for-bit reproducibility).
A record that was never sampled never reached the model and is not in the membership.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from workers.datasets.base import RecordDataset
from workers.training.architectures import build_model, has_running_stats
from workers.training.base import (
    RecipeConfig,
    Timer,
    TrainingRecipe,
    TrainingRun,
    make_optimizer,
    sorted_by_key,
)
from workers.training.device import derive_seed, deterministic
from workers.training.membership import MembershipSink, RecordingLoader, collate_records
from workers.training.plain import SingleModelStorage
from workers.unlearning.base import ConfigError, ProgressCallback, no_progress


@dataclass
class DPConfig(RecipeConfig):
    """``target_epsilon`` > 0 makes Opacus choose the noise multiplier for that budget;
    otherwise ``noise_multiplier`` is used. ``delta`` 0 means 1 / (10 n)."""

    optimizer: str = "sgd"
    lr: float = 0.1
    noise_multiplier: float = 1.0
    max_grad_norm: float = 1.0
    delta: float = 0.0
    target_epsilon: float = 0.0
    accountant: str = "prv"
    # The ML engineer's declaration of what happened before the recipe (None: not declared): True when
    # no statistic fitted on the records (a scaler, a vocabulary, an embedding model) prepared the
    # features, False when one did. The group-privacy bound of a deletion holds only if True.
    declared_preprocessing_private: bool | None = None

    def validate(self) -> None:
        super().validate()
        if self.noise_multiplier < 0 or self.max_grad_norm <= 0:
            raise ConfigError("DPConfig.noise_multiplier must be >= 0 and max_grad_norm > 0")
        if not 0 <= self.delta < 1 or self.target_epsilon < 0:
            raise ConfigError("DPConfig.delta must be in [0, 1) and target_epsilon >= 0")
        if self.accountant not in ("prv", "rdp", "gdp"):
            raise ConfigError("DPConfig.accountant must be prv, rdp or gdp")
        if not isinstance(self.declared_preprocessing_private, bool | None):
            raise ConfigError("DPConfig.declared_preprocessing_private must be true, false or null")


@contextmanager
def opacus_failures_refused() -> Iterator[None]:
    """An error raised inside Opacus itself while it records a batch for per-record gradients
    (its samplers do not handle the layer: a LayerNorm without a bias, as in ModernBERT; a layer
    called with a non-tensor argument, as OPT's position embeddings are) becomes a ConfigError
    naming it; any other error passes unchanged."""
    try:
        yield
    except (AttributeError, TypeError, ValueError, RuntimeError, NotImplementedError) as exc:
        import opacus

        innermost = exc.__traceback__
        while innermost is not None and innermost.tb_next is not None:
            innermost = innermost.tb_next
        where = Path(innermost.tb_frame.f_code.co_filename) if innermost is not None else Path()
        if Path(opacus.__file__).parent not in where.parents:
            raise
        raise ConfigError(f"dp cannot train this module: Opacus {opacus.__version__} cannot compute its per-record "
                          f"gradients ({type(exc).__name__} in {where.name}: {exc})") from exc


def check_per_record_gradients(model: torch.nn.Module, batch_size: int) -> None:
    """After each of Opacus' backward passes, before the step: every trained parameter has one
    gradient per record of the batch. A layer fed an input shared by the whole batch (position ids without the batch
    dimension) gets the batch's summed gradient instead, which no clipping bounds per record:
    ConfigError naming it (a batch of one cannot show it)."""
    if batch_size < 2:
        return
    for name, parameter in model.named_parameters():
        grad_sample = getattr(parameter, "grad_sample", None)
        if parameter.requires_grad and isinstance(grad_sample, torch.Tensor) and len(grad_sample) != batch_size:
            raise ConfigError(f"dp cannot train this module: Opacus computed the gradient of {name} for the whole "
                              f"batch ({len(grad_sample)} row(s) for {batch_size} records), not per record, so no "
                              "record's influence can be clipped (the layer reads an input the batch shares, such "
                              "as position ids without a batch dimension)")


def empty_batch_grad_samples(model: torch.nn.Module) -> None:
    """Give every trained parameter a per-record gradient of zero records, so that Opacus'
    DPOptimizer takes the step of an empty Poisson batch: its clipping sums nothing (Opacus 1.6's
    ``clip_and_accumulate`` has an empty-batch branch for this) and it adds the Gaussian noise and
    counts the step like any other. (With no per-record gradient at all, Opacus 1.6 refuses the
    step: "Per sample gradient is not initialized".)"""
    for parameter in model.parameters():
        if parameter.requires_grad:
            parameter.grad_sample = parameter.new_zeros((0, *parameter.shape))


# Architectures whose preprocessing the recipe knows: nothing in them is fitted on the records
# (the MLP's input norm is a fixed asinh or none; BatchNorm is refused), their vocabulary is fixed
# (text_bag and transformers read the platform's byte tokens) and their weights start at random.
_KNOWN_ARCHITECTURES = {
    "mlp": "no vocabulary (numeric features)",
    "small_cnn": "no vocabulary (images)",
    "text_bag": "the fixed byte vocabulary (257 ids), not fitted on any data",
    "transformers": "the fixed byte vocabulary, not fitted on any data",
}
DECLARED = "declared by the ML engineer"
UNKNOWN = "unknown: not recorded by the recipe, and not declared"


def dp_pipeline_conditions(config: DPConfig, *, steps: int, empty_steps: int) -> dict:
    """What of the training pipeline was private, as far as this recipe knows, for the version's
    metrics: a deletion's group-privacy bound holds only if everything that saw the records went
    through DP-SGD. Out: ``{"whole_pipeline_private": True | False | None, "conditions": {name:
    {"holds": True | False | None, "known_by": ..., "detail": ...}}}``: ``holds`` True when that part
    was private; ``known_by`` "recipe", "declared by the ML engineer" or "unknown: ..."; the whole is
    True only when every condition holds, None when one is unknown. What happened before the dataset
    reached the recipe (a scaler, vocabulary or embedding fitted on the records) only the ML engineer
    can declare (``DPConfig.declared_preprocessing_private``); the company's own architectures
    (entry points) the recipe cannot see into."""
    architecture = config.architecture.get("name")
    known = architecture in _KNOWN_ARCHITECTURES
    norm = (config.architecture.get("config") or {}).get("input_norm", "asinh") if architecture == "mlp" else None

    def condition(holds: bool | None, known_by: str, detail: str) -> dict:
        return {"holds": holds, "known_by": known_by, "detail": detail}

    inside = f"the {architecture} architecture is the company's own: the recipe cannot see inside it"
    declared = config.declared_preprocessing_private
    conditions = {
        "dp_sgd": condition(True, "recipe", f"Opacus DP-SGD trained every weight: per-record clipping at "
                                            f"{config.max_grad_norm}, Gaussian noise, Poisson sampling, "
                                            f"{config.accountant} accountant"),
        "noise_on_every_step": condition(True, "recipe", f"{steps} Poisson steps, each noised ({empty_steps} on an "
                                                         "empty batch: noise only)"),
        "no_normalisation_fitted_outside_dp": condition(True, "recipe", (
            f"input normalisation {norm!r}: fixed, nothing fitted" if norm else "no normalisation fitted on data"))
        if known else condition(None, UNKNOWN, inside),
        "no_vocabulary_fitted_outside_dp": condition(True, "recipe", _KNOWN_ARCHITECTURES[architecture])
        if known else condition(None, UNKNOWN, inside),
        "not_pretrained_on_records": condition(True, "recipe", "the weights start at random (seeded), not from "
                                                               "pretrained weights") if known else
        condition(None, UNKNOWN, inside),
        "no_preprocessing_fitted_outside_dp": (
            condition(None, UNKNOWN, "how the dataset's features were made before training (a scaler, a "
                                     "vocabulary or an embedding fitted on the records) is not known to the recipe")
            if declared is None else
            condition(declared, DECLARED, "the ML engineer declared that nothing fitted on the records prepared the "
                                          "features" if declared else
                      "the ML engineer declared that statistics fitted on the records, outside DP, prepared the "
                      "features")),
    }
    holds = [c["holds"] for c in conditions.values()]
    whole = False if False in holds else None if None in holds else True
    return {"whole_pipeline_private": whole, "conditions": conditions}


class DPRecipe(SingleModelStorage, TrainingRecipe, name="dp"):
    config_class = DPConfig

    def train(self, dataset: RecordDataset, *, device: str | torch.device = "cpu",
              progress: ProgressCallback = no_progress) -> TrainingRun:
        from opacus import PrivacyEngine
        from opacus.utils.uniform_sampler import UniformWithReplacementSampler

        config: DPConfig = self.config
        device = torch.device(device)
        timer = Timer()
        data = sorted_by_key(dataset)
        n = len(data)
        if n < 2:
            raise ValueError("DP training needs at least two records")
        delta = config.delta or 1.0 / (10 * n)
        steps_per_epoch = max(n // config.batch_size, 1)
        sink = MembershipSink()
        with deterministic(derive_seed(config.seed, "init", 0)):
            model = build_model(config.architecture).to(device)
            if has_running_stats(model):
                raise ConfigError("dp needs an architecture without BatchNorm (per-sample "
                                  "gradients are undefined for it)")
            optimizer = make_optimizer(model.parameters(), config)
            sampler = UniformWithReplacementSampler(
                num_samples=n, sample_rate=1.0 / steps_per_epoch,
                generator=torch.Generator().manual_seed(derive_seed(config.seed, "poisson")),
            )
            loader = DataLoader(data, batch_sampler=sampler, collate_fn=collate_records)
            noise = torch.Generator(device=device).manual_seed(derive_seed(config.seed, "noise"))
            common = dict(module=model, optimizer=optimizer, data_loader=loader,
                          max_grad_norm=config.max_grad_norm, poisson_sampling=False,
                          noise_generator=noise)
            with warnings.catch_warnings():
                # Opacus warns about the non-secure RNG; reproducibility is the point here.
                warnings.filterwarnings("ignore", message="Secure RNG turned off")
                engine = PrivacyEngine(accountant=config.accountant)
                if config.target_epsilon > 0:
                    private_model, private_optimizer, private_loader = engine.make_private_with_epsilon(
                        target_epsilon=config.target_epsilon, target_delta=delta,
                        epochs=config.epochs, **common)
                else:
                    private_model, private_optimizer, private_loader = engine.make_private(
                        noise_multiplier=config.noise_multiplier, **common)
            steps = empty_steps = 0
            private_model.train()
            with warnings.catch_warnings():
                # Inputs never require grad, so torch warns that Opacus' full backward hooks
                # fire on outputs only; that is all they need.
                warnings.filterwarnings("ignore", message="Full backward hook is firing")
                for epoch in range(config.epochs):
                    for keys, inputs, targets in RecordingLoader(private_loader, sink):
                        private_optimizer.zero_grad(set_to_none=True)
                        if not keys:
                            # An empty Poisson batch is still a step: noise only. Skipping it would
                            # release fewer, unnoised steps than the accountant counts.
                            empty_batch_grad_samples(private_model)
                            empty_steps += 1
                        else:
                            inputs, targets = inputs.to(device), targets.to(device)
                            with opacus_failures_refused():
                                F.cross_entropy(private_model(inputs), targets).backward()
                            check_per_record_gradients(model, len(keys))
                        private_optimizer.step()
                        steps += 1
                    progress("train", (epoch + 1) / config.epochs)
            epsilon = float(engine.get_epsilon(delta))
        # Hand back the plain module: without Opacus' hooks and per-sample gradient buffers,
        # so later fine-tuning (approximate unlearning) sees an ordinary model.
        private_model.remove_hooks()
        model = private_model._module
        for parameter in model.parameters():
            for attribute in ("grad_sample", "summed_grad"):
                if hasattr(parameter, attribute):
                    delattr(parameter, attribute)
            parameter.grad = None
        model.eval()
        return TrainingRun(
            recipe=self.name, config=config.to_dict(), model=model, membership=sink.rows(),
            metrics={"wall_seconds": timer.seconds, "steps": steps, "empty_steps": empty_steps, "epsilon": epsilon,
                     "delta": delta, "noise_multiplier": float(private_optimizer.noise_multiplier),
                     "max_grad_norm": config.max_grad_norm,
                     "sample_rate": 1.0 / steps_per_epoch, "accountant": config.accountant,
                     "records_yielded": len(sink.keys()), "records_given": n,
                     "dp_pipeline": dp_pipeline_conditions(config, steps=steps, empty_steps=empty_steps),
                     "device": str(device)},
        )

