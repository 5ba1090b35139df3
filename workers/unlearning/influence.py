"""Influence removal: one damped Newton step that takes the forget set out of the last layer.

Koh & Liang, "Understanding Black-box Predictions via Influence Functions" (ICML 2017); Guo et al.,
"Certified Data Removal from Machine Learning Models" (ICML 2020). With the features below the last
linear layer held fixed, the retain objective's optimum is approximately

    theta' = theta + (1 / n_retain) * (H_retain + damping * I)^-1 * sum_{i in forget} grad l_i(theta)

where H_retain is the mean Hessian of the retain cross-entropy with respect to the last layer's
weights and bias. For softmax cross-entropy on a linear layer the Hessian equals the Fisher
(Gauss-Newton) matrix: mean over examples of ``(diag(p) - p p^T) kron (h h^T)``, with ``h`` the
layer input plus a constant 1 for the bias. By default it is replaced by its Kronecker-factored
approximation (K-FAC, Martens & Grosse 2015), ``E[diag(p)-pp^T] kron E[hh^T]``; the dense matrix is
available for small layers.

Only the last layer changes: what lower layers memorised stays, which is why this method's
evidence must come from the audits like every other approximate method's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from workers.unlearning.base import ConfigError, MethodConfig
from workers.unlearning.loop import ApproximateMethod, UnlearningRun, require_range

HESSIANS = ("kfac", "exact")


@dataclass
class InfluenceConfig(MethodConfig):
    """``damping`` times the mean of the Hessian's diagonal is added to the diagonal (a confident
    model's Hessian is nearly singular; without damping the step explodes along flat directions).
    ``scale`` multiplies the step (1 is the Newton step). ``hessian``: ``kfac`` or ``exact``
    (dense; refused above ``max_exact_parameters`` last-layer parameters, its cost grows as
    records x parameters^2).

    K-FAC is the default although it approximates: on the reference models the exact Hessian's
    step exploded along its flattest directions unless damped so much that it barely moved
    (digits: retain accuracy 100% -> 38% at relative damping 0.03, where K-FAC keeps 96%).
    """

    damping: float = 0.05
    scale: float = 1.0
    hessian: str = "kfac"
    max_exact_parameters: int = 4096

    def validate(self) -> None:
        super().validate()
        require_range(self, "damping", 0.0, float("inf"), low_open=True)
        require_range(self, "scale", 0.0, float("inf"), low_open=True)
        require_range(self, "max_exact_parameters", 1, 1 << 16)
        if self.hessian not in HESSIANS:
            raise ConfigError(
                f"InfluenceConfig.hessian must be one of {', '.join(HESSIANS)}, got {self.hessian!r}"
            )


def last_linear_layer(model: nn.Module) -> nn.Linear:
    """The model's last ``nn.Linear`` in module order; it must produce the logits (checked later)."""
    layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not layers:
        raise ValueError("influence needs a model whose output layer is a torch.nn.Linear")
    return layers[-1]


@dataclass
class LayerStatistics:
    """Sums over a data set of what the last-layer Hessian and gradient need."""

    count: int
    gradient: Tensor  # (classes, F): summed cross-entropy gradient; F = features (+ 1 for a bias)
    hessian: Tensor | None  # (P, P) with P = classes * F, summed; exact mode only
    output_curvature: Tensor | None  # (classes, classes) summed diag(p) - pp^T; K-FAC only
    input_second_moment: Tensor | None  # (F, F) summed h h^T; K-FAC only


def layer_statistics(
    model: nn.Module,
    layer: nn.Linear,
    batches: Iterable[tuple[Tensor, Tensor]],
    *,
    exact: bool,
    curvature: bool,
) -> LayerStatistics:
    """Run ``model`` over ``batches`` and sum the last layer's gradient (and curvature if asked).

    Raises ``ValueError`` if ``layer``'s output is not the model's output (the step would then be
    computed for the wrong function).
    """
    captured: dict[str, Tensor] = {}

    def capture(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        captured["features"], captured["logits"] = inputs[0].detach(), output.detach()

    handle = layer.register_forward_hook(capture)
    has_bias = layer.bias is not None
    classes, width = layer.out_features, layer.in_features + int(has_bias)
    gradient = torch.zeros(classes, width, dtype=torch.float64)
    hessian = (
        torch.zeros(classes * width, classes * width, dtype=torch.float64)
        if curvature and exact
        else None
    )
    out_curv = (
        torch.zeros(classes, classes, dtype=torch.float64) if curvature and not exact else None
    )
    in_moment = torch.zeros(width, width, dtype=torch.float64) if curvature and not exact else None
    count = 0
    try:
        with torch.no_grad():
            for inputs, targets in batches:
                output = model(inputs)
                if output.dim() != 2 or not torch.equal(output, captured["logits"]):
                    raise ValueError(
                        "influence: the last nn.Linear's output is not the model's output; the method "
                        "needs a classifier whose final module is a Linear layer producing the logits"
                    )
                # float64 on CPU: the solve is small and precision matters near singular curvature.
                features = captured["features"].reshape(len(targets), -1).double().cpu()
                # A constant 1 feature stands for the bias (when the layer has one).
                ones = torch.ones(len(features), int(has_bias), dtype=torch.float64)
                h = torch.cat([features, ones], dim=1)
                p = torch.softmax(output.double().cpu(), dim=1)
                residual = p - nn.functional.one_hot(targets.cpu(), classes).double()
                gradient += residual.T @ h
                if curvature:
                    a = torch.diag_embed(p) - p.unsqueeze(2) * p.unsqueeze(1)  # (n, C, C)
                    if exact:
                        assert hessian is not None
                        block = torch.einsum("ncd,nj,nk->cjdk", a, h, h)
                        hessian += block.reshape(classes * width, classes * width)
                    else:
                        assert out_curv is not None and in_moment is not None
                        out_curv += a.sum(dim=0)
                        in_moment += h.T @ h
                count += len(targets)
    finally:
        handle.remove()
    return LayerStatistics(count, gradient, hessian, out_curv, in_moment)


def newton_step_exact(hessian_mean: Tensor, gradient: Tensor, damping: float) -> Tensor:
    """Solve ``(H + d I) x = gradient`` for a dense H; ``gradient`` is (C, F), so is x.

    ``d = damping * mean(diag(H))``: relative damping, so one setting fits any feature scale.
    """
    shift = damping * hessian_mean.diagonal().mean()
    damped = hessian_mean + shift * torch.eye(hessian_mean.shape[0], dtype=hessian_mean.dtype)
    return torch.linalg.solve(damped, gradient.reshape(-1)).reshape(gradient.shape)


def newton_step_kfac(
    output_curvature: Tensor, input_moment: Tensor, gradient: Tensor, damping: float
) -> Tensor:
    """Solve ``(A kron G + d I) x = gradient`` through the eigenbases of A (C, C) and G (F, F).

    ``d = damping * mean(diag(A kron G))`` as in :func:`newton_step_exact`.
    """
    shift = damping * output_curvature.diagonal().mean() * input_moment.diagonal().mean()
    a_values, a_vectors = torch.linalg.eigh(output_curvature)
    g_values, g_vectors = torch.linalg.eigh(input_moment)
    rotated = a_vectors.T @ gradient @ g_vectors
    rotated = rotated / (
        a_values.clamp_min(0).unsqueeze(1) * g_values.clamp_min(0).unsqueeze(0) + shift
    )
    return a_vectors @ rotated @ g_vectors.T


class Influence(ApproximateMethod, name="influence"):
    """One Newton step on the last linear layer; reads the forget set and the retain set once each."""

    config_class = InfluenceConfig

    def run(self, model: nn.Module, run: UnlearningRun) -> tuple[int, dict[str, Any]]:
        config = self.config
        assert isinstance(config, InfluenceConfig)
        model.eval()
        layer = last_linear_layer(model)
        parameters = layer.out_features * (layer.in_features + int(layer.bias is not None))
        exact = config.hessian == "exact"
        if exact and parameters > config.max_exact_parameters:
            raise ValueError(
                f"influence: the last layer has {parameters} parameters, more than "
                f"max_exact_parameters={config.max_exact_parameters}; use hessian='kfac'"
            )
        forget = layer_statistics(
            model, layer, run.batches(run.forget), exact=exact, curvature=False
        )
        run.progress("forget_gradient", 0.2)
        retain = layer_statistics(
            model, layer, run.batches(run.retain), exact=exact, curvature=True
        )
        run.progress("retain_curvature", 0.8)
        if exact:
            assert retain.hessian is not None
            direction = newton_step_exact(
                retain.hessian / retain.count, forget.gradient, config.damping
            )
        else:
            assert retain.output_curvature is not None and retain.input_second_moment is not None
            direction = newton_step_kfac(
                retain.output_curvature / retain.count,
                retain.input_second_moment / retain.count,
                forget.gradient,
                config.damping,
            )
        step = config.scale * direction / retain.count
        with torch.no_grad():
            weight_step = step[:, : layer.in_features].to(layer.weight.device, layer.weight.dtype)
            layer.weight.add_(weight_step)
            if layer.bias is not None:
                layer.bias.add_(step[:, -1].to(layer.bias.device, layer.bias.dtype))
        run.progress("newton_step", 1.0)
        return 1, {
            "hessian": "exact" if exact else "kfac",
            "last_layer_parameters": parameters,
            "step_norm": float(step.norm()),
        }
