"""Exact output law of any solver on a Gaussian target, and the Bures-Wasserstein distance.

With a Gaussian target the exact score is affine in x, so every solver step is affine in the
state and in the injected standard normals: x_out = m + A (x_T - m_T) + sum_j B_j xi_j. Running
the solver once on a batch of probes (the prior mean, the prior mean plus each column of a
square root of the prior covariance, and a unit vector in each injected draw) gives m, A and
B_j exactly, hence the Gaussian law of x_out; the Bures formula then gives W2 with no sampling
error (cf. Pierret & Galerne 2025).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from solvers.base import Solver
from solvers.loop import sample
from solvers.model import Model
from solvers.noise import NoiseSource


class _CountingNoise(NoiseSource):
    """Counts the draws a solver makes; returns zeros."""

    def __init__(self) -> None:
        self.draws = 0

    def normal(self, t0: float, t1: float, like: Tensor) -> Tensor:
        self.draws += 1
        return torch.zeros_like(like)

    def extra(self, t: float, k: int, like: Tensor) -> Tensor:
        self.draws += 1
        return torch.zeros_like(like)


class ProbeNoise(NoiseSource):
    """Draw j of a run is the unit vector e_i in batch row `offset + j d + i`, zero elsewhere.

    Each draw is treated as an independent standard normal (the law under i.i.d. noise)."""

    def __init__(self, dim: int, offset: int, slots: int):
        self.dim, self.offset, self.slots, self.draws = dim, offset, slots, 0

    def normal(self, t0: float, t1: float, like: Tensor) -> Tensor:
        z = torch.zeros_like(like)
        j = self.draws
        self.draws += 1
        if j < self.slots:
            rows = self.offset + j * self.dim + torch.arange(self.dim)
            z.view(len(like), -1)[rows, torch.arange(self.dim)] = 1.0
        return z

    def extra(self, t: float, k: int, like: Tensor) -> Tensor:
        return self.normal(t, t, like)


@dataclass
class GaussianLaw:
    mean: Tensor
    cov: Tensor


def output_law(solver: Solver, model: Model, times: Tensor, prior_mean: Tensor, prior_cov: Tensor,
               denoise_final: bool = False) -> GaussianLaw:
    """The exact law of the solver's output from x_T ~ N(prior_mean, prior_cov), for an affine
    model, computed in float64."""
    dim = prior_mean.numel()
    mean = prior_mean.to(torch.float64).reshape(1, dim)
    draws = 0
    if solver.stochastic:
        counter = _CountingNoise()
        sample(solver, model, times, mean.clone(), counter, denoise_final=denoise_final)
        draws = counter.draws
    root = torch.linalg.cholesky(prior_cov.to(torch.float64))
    while True:
        x = mean.repeat(1 + dim + draws * dim, 1)
        x[1:1 + dim] += root.T
        probes = ProbeNoise(dim, 1 + dim, draws)
        out = sample(solver, model, times, x, probes, denoise_final=denoise_final).x
        if probes.draws <= draws:
            break
        draws = probes.draws  # adaptive control drew more than the counting run: redo
    spread = out[1:] - out[0]
    return GaussianLaw(out[0], spread.T @ spread)


def _sqrtm_psd(m: Tensor) -> Tensor:
    vals, vecs = torch.linalg.eigh(0.5 * (m + m.T))
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T


def bures_w2(m1: Tensor, c1: Tensor, m2: Tensor, c2: Tensor) -> float:
    """W2 between N(m1, c1) and N(m2, c2).

    The covariance term tr(c1 + c2 - 2 (c2^1/2 c1 c2^1/2)^1/2) is evaluated as
    tr(D) - 2 tr(X) with D = c1 - c2 and X = (c2^2 + c2^1/2 D c2^1/2)^1/2 - c2 solved by a
    Lyapunov fixed point in c2's eigenbasis, so it keeps relative accuracy when c1 is close to c2.
    """
    m1, m2, c1, c2 = (v.to(torch.float64) for v in (m1, m2, c1, c2))
    mean_term = float(((m1 - m2) ** 2).sum())
    c1, c2 = 0.5 * (c1 + c1.T), 0.5 * (c2 + c2.T)
    s, u = torch.linalg.eigh(c2)
    s = s.clamp_min(0)
    delta = c1 - c2
    e = (u.T @ delta @ u) * torch.sqrt(s)[:, None] * torch.sqrt(s)[None, :]
    denom = s[:, None] + s[None, :]
    small = float(torch.linalg.matrix_norm(delta)) < 1e-2 * float(s.min()) if s.min() > 0 else False
    cov_term = None
    if small:
        x = torch.zeros_like(e)
        for _ in range(100):
            x_new = (e - x @ x) / denom
            if float((x_new - x).abs().max()) <= 1e-15 * float(x_new.abs().max() + 1e-300):
                x = x_new
                break
            x = x_new
        cov_term = float(torch.trace(delta)) - 2 * float(torch.trace(x))
    if cov_term is None:
        r2 = _sqrtm_psd(c2)
        cross = _sqrtm_psd(r2 @ c1 @ r2)
        cov_term = float(torch.trace(c1) + torch.trace(c2) - 2 * torch.trace(cross))
    return math.sqrt(max(mean_term + max(cov_term, 0.0), 0.0))
