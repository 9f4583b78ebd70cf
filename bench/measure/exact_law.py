"""Exact output law of any solver on a Gaussian target, and the Bures-Wasserstein distance.

With a Gaussian target the exact score is affine in x, so every solver step is affine in the
state and in the injected standard normals: x_out = m + A (x_T - m_T) + sum_j B_j xi_j. Running
the solver once on a batch of probes (the prior mean, the prior mean plus each column of a
square root of the prior covariance, and a unit vector in each injected draw) gives m, A and
B_j exactly, hence the Gaussian law of x_out; the Bures formula then gives W2 with no sampling
error (cf. Pierret & Galerne 2025).

One prober for every Sampler (`output_law`). Samplers of unknown affinity (`affine is None`: the
libraries, whose clipping or thresholding may break it) get mirrored probes (mean - column), which
check that the run is affine; their noise is probed per library call in 'slots' with the covariance
of their `noise_kind` (the Brownian path's min(a, b), or independent per call). Stochastic samplers
drawing their own noise cannot be probed. `end_law` is the exact law a run's output is compared with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from analytic.problems import Problem
from solvers.model import Model
from solvers.noise import NoiseSource
from solvers.sampler import Sampler, SampleResult

AFFINE_TOL = 1e-4  # relative; the libraries' float32 tables leave ~1e-7
FLOAT32_SLACK = 1e-5  # ~100 float32 ulps of the output: rounding accumulated over hundreds of float32 steps


class ProbeError(ValueError):
    """The sampler's exact law cannot be probed (not affine, or it draws its own noise)."""


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
    end: SampleResult | None = None  # the probe run: where its output belongs (see end_law)


def output_law(sampler: Sampler, model: Model, times: Tensor, prior_mean: Tensor, prior_cov: Tensor,
               denoise_final: bool = False) -> GaussianLaw:
    """The exact law of the sampler's output from x_T ~ N(prior_mean, prior_cov), for an affine
    model, computed in float64."""
    if sampler.affine is None:
        return _mirrored_law(sampler, model, times, prior_mean, prior_cov)
    dim = prior_mean.numel()
    mean = prior_mean.to(torch.float64).reshape(1, dim)
    draws = 0
    if sampler.stochastic:
        counter = _CountingNoise()
        sampler.run(model, times, mean.clone(), counter, denoise_final=denoise_final)
        draws = counter.draws
    root = torch.linalg.cholesky(prior_cov.to(torch.float64))
    while True:
        x = mean.repeat(1 + dim + draws * dim, 1)
        x[1:1 + dim] += root.T
        probes = ProbeNoise(dim, 1 + dim, draws)
        end = sampler.run(model, times, x, probes, denoise_final=denoise_final)
        if probes.draws <= draws:
            break
        draws = probes.draws  # adaptive control drew more than the counting run: redo
    out = end.x
    spread = out[1:] - out[0]
    return GaussianLaw(out[0], spread.T @ spread, end)


class _EigenNoise(NoiseSource):
    """Draw j is U 1 (every eigen-direction at once) in batch row `offset + j`, and U r_j in the check
    row `check` (r_j a seeded random vector, kept in `check_coefs`), zero elsewhere."""

    def __init__(self, basis: Tensor, offset: int, slots: int, check: int, seed: int = 1):
        self.basis, self.offset, self.slots, self.check, self.draws = basis, offset, slots, check, 0
        self.gen = torch.Generator().manual_seed(seed)
        self.check_coefs: list[Tensor] = []

    def normal(self, t0: float, t1: float, like: Tensor) -> Tensor:
        z = torch.zeros_like(like).view(len(like), -1)
        j = self.draws
        self.draws += 1
        if j < self.slots:
            z[self.offset + j] = self.basis.sum(1).to(z)
            r = torch.randn(self.basis.shape[1], generator=self.gen, dtype=torch.float64)
            self.check_coefs.append(r)
            z[self.check] = (self.basis @ r).to(z)
        return z.view_as(like)

    def extra(self, t: float, k: int, like: Tensor) -> Tensor:
        return self.normal(t, t, like)


@dataclass
class DiagonalLaw:
    """A Gaussian law N(mean, U diag(variances) U^T) in a known orthonormal basis U."""

    mean: Tensor
    variances: Tensor
    end: SampleResult


def eigen_output_law(sampler: Sampler, model: Model, times: Tensor, prior_mean: Tensor, basis: Tensor,
                     prior_vars: Tensor, denoise_final: bool = False, tol: float = 1e-8) -> DiagonalLaw:
    """`output_law` for a Gaussian target whose covariance is diagonal in the orthonormal `basis` U,
    with the prior N(prior_mean, U diag(prior_vars) U^T).

    A solver that combines states, model outputs and noise with scalar coefficients is then diagonal
    in U: x_out = m + U diag(a) U^T (x_T - m_T) + sum_j U diag(b_j) U^T xi_j, i.e. d independent 1-D
    problems. So 2 + draws probes give every a_i and b_ji at once (x_T - m_T = U sqrt(prior_vars); xi_j
    = U 1), instead of 1 + d (1 + draws); two more probes with random coefficients check the diagonal
    structure (ProbeError if it does not hold to `tol`)."""
    dim = prior_mean.numel()
    mean = prior_mean.to(torch.float64).reshape(1, dim)
    basis = basis.to(torch.float64)
    draws = 0
    if sampler.stochastic:
        counter = _CountingNoise()
        sampler.run(model, times, mean.clone(), counter, denoise_final=denoise_final)
        draws = counter.draws
    std = prior_vars.to(torch.float64).clamp_min(0).sqrt()
    r = torch.randn(dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = mean.repeat(4 + draws, 1)  # rows: 0 mean, 1 U std, 2 U (std r), 3 noise check, 4.. noise draws
    x[1] += basis @ std
    x[2] += basis @ (std * r)
    noise = _EigenNoise(basis, 4, draws, 3)
    end = sampler.run(model, times, x, noise, denoise_final=denoise_final)
    if noise.draws > draws:
        raise ProbeError(f"{sampler.label} drew more noise on the probe run than on its counting run")
    out = end.x.to(torch.float64).reshape(len(x), -1)
    coords = (out[1:] - out[0]) @ basis  # U^T (out_k - out_0)
    gain, noise_gain = coords[0], coords[3:]
    scale = float(coords.abs().max()) + 1e-300
    noise_check = sum((r_j * b for r_j, b in zip(noise.check_coefs, noise_gain, strict=True)),
                      torch.zeros(dim, dtype=torch.float64))
    if (float((coords[1] - gain * r).abs().max()) > tol * scale
            or float((coords[2] - noise_check).abs().max()) > tol * scale):
        raise ProbeError(f"{sampler.label} is not diagonal in the target's eigenbasis")
    return DiagonalLaw(out[0], gain**2 + (noise_gain**2).sum(0), end)


def diagonal_w2(m1: Tensor, v1: Tensor, m2: Tensor, v2: Tensor) -> float:
    """W2 between N(m1, U diag(v1) U^T) and N(m2, U diag(v2) U^T): the covariances commute, so
    W2^2 = |m1 - m2|^2 + sum_i (sqrt v1_i - sqrt v2_i)^2, each term as (v1 - v2)^2 / (sqrt v1 + sqrt v2)^2
    (no cancellation when the variances are close)."""
    v1, v2 = v1.to(torch.float64).clamp_min(0), v2.to(torch.float64).clamp_min(0)
    root_sum = v1.sqrt() + v2.sqrt()
    cov = torch.where(root_sum > 0, (v1 - v2) ** 2 / root_sum.clamp_min(1e-300) ** 2, torch.zeros_like(v1))
    return math.sqrt(float(((m1.to(torch.float64) - m2.to(torch.float64)) ** 2).sum()) + float(cov.sum()))


def end_law(problem: Problem, end: SampleResult) -> tuple[Tensor, Tensor]:
    """(mean, cov) of the exact law at a run's end on a Gaussian target: p_{t_end}; the data law at
    t_end = 0 (sigma = 0, whatever t is there); with `tweedie_law`, the law of E[x0 | x_t] for
    x_t ~ p_t at its last call t = t_last (a library's own final denoise: comparing with the data law
    would add a floor ~sigma_min^2 that no step count removes)."""
    if end.t_end != 0.0:
        law = problem.marginal(end.t_end)
        return law.means[0], law.covs[0]
    mean, cov = problem.target.means[0], problem.target.covs[0]
    if not end.tweedie_law:
        return mean, cov
    alpha, sigma = (float(v) for v in problem.coefficients(end.t_last))
    noised = alpha**2 * cov + sigma**2 * torch.eye(len(mean), dtype=cov.dtype)
    return mean, alpha**2 * cov @ torch.linalg.solve(noised, cov)


def _mirrored_law(sampler: Sampler, model: Model, times: Tensor, prior_mean: Tensor,
                  prior_cov: Tensor) -> GaussianLaw:
    """The law from probes x_T = mean, mean +- each Cholesky column (the mirrored pairs check that
    the run is affine in x_T) and, for a stochastic sampler, its noise slots (`_probe_noise`)."""
    if sampler.stochastic and sampler.noise_kind is None:
        raise ProbeError(f"w2-exact needs a deterministic sampler or one whose noise we supply; "
                         f"{sampler.label} draws its own")
    mean = prior_mean.to(torch.float64)
    chol = torch.linalg.cholesky(prior_cov.to(torch.float64))
    x_probes = torch.cat([mean[None], mean[None] + chol.T, mean[None] - chol.T])
    if sampler.stochastic:
        out, noise_cov, end = _probe_noise(sampler, model, times, x_probes)
    else:
        end = sampler.run(model, times, x_probes)
        out, noise_cov = end.x.to(torch.float64).reshape(len(x_probes), -1), 0.0
    if not bool(torch.isfinite(out).all()):
        inf = torch.full_like(mean, math.inf)
        return GaussianLaw(inf, torch.diag(inf), end)
    d = len(mean)
    spread = out[1:d + 1] - out[0]
    _check_affine(sampler, out[1:d + 1] + out[d + 1:2 * d + 1] - 2 * out[0], spread, "x_T",
                  float(out.abs().max()))
    return GaussianLaw(out[0], spread.T @ spread + noise_cov, end)


def _check_affine(sampler: Sampler, curvature: Tensor, spread: Tensor, what: str, size: float) -> None:
    """Mirrored probes: f(+v) + f(-v) - 2 f(0) vanishes when f is affine (clipping/thresholding breaks
    it), up to the float32 rounding of outputs of magnitude `size` (schedulers that step in float32)."""
    if curvature.numel() == 0:  # no probes (a run that asked for no noise)
        return
    if float(curvature.abs().max()) > AFFINE_TOL * float(spread.abs().max()) + FLOAT32_SLACK * size:
        raise ProbeError(f"w2-exact needs a sampler affine in {what}; {sampler.label} is not "
                         "(clipping or thresholding?); use a sample metric such as w2")


class _Recorder(NoiseSource):
    """Records the (s0, s1) of each draw a library asks for; returns zeros."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, float]] = []

    def normal(self, t0: float, t1: float, like: Tensor) -> Tensor:
        self.calls.append((t0, t1))
        return torch.zeros_like(like)

    def extra(self, t: float, k: int, like: Tensor) -> Tensor:
        raise ProbeError("library samplers draw no extra noise")


class _SlotNoise(NoiseSource):
    """Call i of the probe run: per (slot, coordinate j), +-coef e_j in that slot's two rows."""

    def __init__(self, sampler: Sampler, calls: list[tuple[float, float]], terms: Terms, plus_rows: Tensor,
                 rows: int, dim: int):
        self.sampler, self.calls, self.terms, self.plus_rows = sampler, calls, terms, plus_rows
        self.rows, self.dim, self.seen = rows, dim, 0

    def normal(self, t0: float, t1: float, like: Tensor) -> Tensor:
        if self.seen >= len(self.calls) or self.calls[self.seen] != (t0, t1):
            raise ProbeError(f"{self.sampler.label} asked for different noise on the probe run")
        eye = torch.eye(self.dim, dtype=torch.float64)
        noise = torch.zeros(self.rows, self.dim, dtype=torch.float64)
        for slot, coef in self.terms[self.seen]:
            noise[self.plus_rows[slot]] = coef * eye
            noise[self.plus_rows[slot] + 1] = -coef * eye
        self.seen += 1
        return noise.to(like)

    def extra(self, t: float, k: int, like: Tensor) -> Tensor:
        raise ProbeError("library samplers draw no extra noise")


def _probe_noise(sampler: Sampler, model: Model, times: Tensor,
                 x_probes: Tensor) -> tuple[Tensor, Tensor, SampleResult]:
    """Outputs on the x_T probes with zero noise, the covariance the noise adds, and the probe run.

    On a Gaussian target the sampler is affine in x_T and in the noise it is handed. The noise is
    written in 'slots' with a known covariance: the Brownian path at each time the sampler asks for
    (Cov W(a), W(b) = min(a, b)), or one independent normal per call (iid). A dry run records the
    calls; then one batched run carries, besides the x_T probes, a row per (slot, coordinate, sign)
    with that slot set to +-e_j and the others to 0, so out(slot q = e_j) - out(0) is column j of
    the slot's gain G_q and the noise covariance is sum_{q, r} Cov(q, r) G_q G_r^T.
    """
    d_x = x_probes.shape[1]
    recorder = _Recorder()
    sampler.run(model, times, x_probes[:1], recorder)
    calls = recorder.calls
    terms, gram = _noise_slots(calls, sampler.noise_kind)
    n_slots, base = len(gram), len(x_probes)
    plus_rows = base + 2 * (torch.arange(n_slots)[:, None] * d_x + torch.arange(d_x))  # (slot, j)
    rows = base + 2 * n_slots * d_x
    probe = _SlotNoise(sampler, calls, terms, plus_rows, rows, d_x)
    x_all = torch.cat([x_probes, x_probes[0].expand(rows - base, d_x)])
    end = sampler.run(model, times, x_all, probe)
    out = end.x.to(torch.float64).reshape(rows, -1)
    if probe.seen != len(calls):
        raise ProbeError(f"{sampler.label} asked for different noise on the probe run")
    plus, minus = out[plus_rows] - out[0], out[plus_rows + 1] - out[0]  # (slot, j, i): G_q[i, j]
    _check_affine(sampler, plus + minus, plus, "its noise", float(out.abs().max()))
    return out[:base], torch.einsum("qr,qji,rjk->ik", gram, plus, plus), end


Terms = list[list[tuple[int, float]]]


def _noise_slots(calls: list[tuple[float, float]], kind: str | None) -> tuple[Terms, Tensor]:
    """Per call, the (slot, coefficient) terms of the noise it receives; and the slots' covariance."""
    if kind == "iid":
        return [[(i, 1.0)] for i in range(len(calls))], torch.eye(len(calls), dtype=torch.float64)
    grid = sorted({s for call in calls for s in call})
    index = {s: i for i, s in enumerate(grid)}
    terms = [[(index[s1], 1 / math.sqrt(abs(s1 - s0))), (index[s0], -1 / math.sqrt(abs(s1 - s0)))]
             for s0, s1 in calls]
    points = torch.tensor(grid, dtype=torch.float64)
    return terms, torch.minimum(points[:, None], points[None, :])


def sqrtm_psd(m: Tensor) -> Tensor:
    """The PSD square root of a symmetric matrix (negative rounding eigenvalues clamped to 0)."""
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
        r2 = sqrtm_psd(c2)
        cross = sqrtm_psd(r2 @ c1 @ r2)
        cov_term = float(torch.trace(c1) + torch.trace(c2) - 2 * torch.trace(cross))
    return math.sqrt(max(mean_term + max(cov_term, 0.0), 0.0))
