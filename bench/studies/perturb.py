"""Controlled score errors without training: the exact eps prediction plus a known perturbation,
and the parsing of model specs ("exact", "perturb:bias=0.05", "perturb:noise=0.05", a checkpoint).

bias:  eps_hat + size * b(x, t), b a fixed smooth field with E ||b||^2 = O(1) (random Fourier
       features of (x, log-SNR)), so the score error E_t E||eps - eps_hat||^2 ~ size^2 (0.67 size^2
       on mix-2d);
noise: eps_hat + size * xi, xi ~ N(0, I) drawn afresh at every evaluation (seeded): error d size^2.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from analytic.problems import Problem
from bench.measure.models import analytic_model
from bench.studies.learned import CheckpointError, learned_model, load_checkpoint
from solvers.model import Model

N_FEATURES = 16


def smooth_field(dim: int, seed: int = 0) -> Callable[[Tensor, float], Tensor]:
    """b(x, lam) = sqrt(2 / F) A cos(W x + v lam / 4 + c): smooth and bounded."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(N_FEATURES, dim, generator=g, dtype=torch.float64) * 0.7
    v = torch.randn(N_FEATURES, generator=g, dtype=torch.float64)
    c = 2 * math.pi * torch.rand(N_FEATURES, generator=g, dtype=torch.float64)
    a = torch.randn(dim, N_FEATURES, generator=g, dtype=torch.float64) / math.sqrt(dim)

    def field(x: Tensor, lam: float) -> Tensor:
        phase = x.double() @ w.T + v * (lam / 4) + c
        return (math.sqrt(2 / N_FEATURES) * torch.cos(phase) @ a.T).to(x.dtype)

    return field


def perturbed_model(problem: Problem, kind: str, size: float, seed: int = 0) -> Model:
    """The exact eps prediction plus `size` times a smooth bias (kind "bias") or fresh noise ("noise")."""
    if kind not in ("bias", "noise"):
        raise CheckpointError(f"unknown perturbation {kind!r}; valid: bias, noise")
    if not (math.isfinite(size) and size >= 0):
        raise CheckpointError(f"perturbation size must be finite and >= 0, got {size}")
    exact = analytic_model(problem, "eps")
    field = smooth_field(problem.dim, seed)
    g = torch.Generator().manual_seed(seed)

    def predict(x: Tensor, t: Tensor) -> Tensor:
        eps = exact.fn(x, t)
        if kind == "bias":
            return eps + size * field(x, float(problem.schedule.log_snr(t)))
        return eps + size * torch.randn(x.shape, generator=g, dtype=torch.float64).to(x.dtype)

    return Model(predict, "eps", problem.schedule)


def parse_model_spec(spec: str, problem: Problem) -> Model:
    """"exact" | "perturb:bias=S" | "perturb:noise=S" | a checkpoint path from `bench learned train`."""
    if spec == "exact":
        return analytic_model(problem)
    if spec.startswith("perturb:"):
        body = spec.split(":", 1)[1]
        kind, _, size = body.partition("=")
        try:
            value = float(size)
        except ValueError:
            raise CheckpointError(f"bad perturbation {spec!r}; use perturb:bias=0.05 or "
                                  "perturb:noise=0.05") from None
        return perturbed_model(problem, kind, value)
    if not Path(spec).exists():
        raise CheckpointError(f"--model {spec!r} is neither exact, perturb:KIND=SIZE nor a checkpoint file")
    trained = load_checkpoint(spec)
    if trained.config.problem != problem.name:
        raise CheckpointError(f"checkpoint {spec} was trained on {trained.config.problem}, "
                              f"not {problem.name}")
    return learned_model(trained, problem)
