"""Sweep cells for external solvers (diffusers:, kdiff:): one library-driven trajectory per cell.

Errors are measured against what an exact integrator would return on the library's own final
point: the exact law at `Run.t_end` (the data law when it integrates down to sigma = 0, as
k-diffusion's LMS does). When its output is the x0 prediction of its last model call (a final
Tweedie denoise: most samplers ending at sigma = 0, detected from the run itself), the reference
is the law of E[x0 | x] of exact samples at that call; comparing with the data law would add a
floor ~sigma_min^2 that no step count removes.
`w2-exact`: a deterministic external sampler is affine in x_T on a Gaussian target, so
running it on the prior mean and mean + each column of the prior covariance's Cholesky factor
gives its exact Gaussian output law; the mirrored probes (mean - column) check that it is affine
(diffusers' DDIM/DDPM default clip_sample=True is not). A stochastic sampler whose noise we hand
it (k-diffusion's noise_sampler) is affine in that noise too: probing each noise slot the same way
gives the covariance it adds (`_probe_noise`). Samplers drawing their own noise (diffusers) or not
affine: the row is skipped with the reason; use a sample metric (w2, sw2, ...).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from torch import Tensor

from analytic.problems import Problem
from analytic.targets import GaussianMixture
from bench.measure import metrics
from bench.measure.exact_law import bures_w2
from bench.measure.metrics import metric_rows
from bench.measure.paired import PATH_METRICS, WEAK_METRICS, paired_row
from bench.measure.reference import Reference, reference
from solvers.external import ExternalSolver, Run
from solvers.model import Model

AFFINE_TOL = 1e-4  # relative; the libraries' float32 tables leave ~1e-7
FLOAT32_SLACK = 1e-5  # ~100 float32 ulps of the output: rounding accumulated over hundreds of float32 steps

def external_w2(problem: Problem, solver: ExternalSolver, model: Model, times: Tensor, seed: int,
                prior: tuple[Tensor, Tensor] | None, dtype: torch.dtype) -> float:
    """Exact W2 between the external sampler's output law and the exact law at its final time."""
    if not problem.is_gaussian:
        raise metrics.MetricError(f"w2-exact needs a Gaussian target; {problem.name} is not")
    if solver.stochastic and solver.noise_kind is None:
        raise metrics.MetricError(f"w2-exact needs a deterministic sampler or one whose noise we supply; "
                                  f"{solver.label} draws its own")
    if prior is None:
        law = problem.marginal(float(times[0]))
        prior = (law.means[0], law.covs[0])
    mean, cov = prior
    chol = torch.linalg.cholesky(cov.to(torch.float64))
    x_probes = torch.cat([mean[None], mean[None] + chol.T, mean[None] - chol.T])
    steps = len(times) - 1
    if solver.stochastic:
        out, noise_cov, run = _probe_noise(problem, solver, model, times, seed, x_probes, dtype)
    else:
        run = solver.run(model, problem, steps, x_probes.to(dtype), seed, times)
        out, noise_cov = run.x.to(torch.float64).reshape(len(x_probes), -1), 0.0
    if not bool(torch.isfinite(out).all()):
        return math.inf
    d = len(mean)
    spread = out[1:d + 1] - out[0]
    _check_affine(solver, out[1:d + 1] + out[d + 1:2 * d + 1] - 2 * out[0], spread, "x_T",
                  float(out.abs().max()))
    return bures_w2(out[0], spread.T @ spread + noise_cov, *_reference_law(problem, run))


def _check_affine(solver: ExternalSolver, curvature: Tensor, spread: Tensor, what: str, size: float) -> None:
    """Mirrored probes: f(+v) + f(-v) - 2 f(0) vanishes when f is affine (clipping/thresholding breaks
    it), up to the float32 rounding of outputs of magnitude `size` (schedulers that step in float32)."""
    if curvature.numel() == 0:  # no probes (a run that asked for no noise)
        return
    if float(curvature.abs().max()) > AFFINE_TOL * float(spread.abs().max()) + FLOAT32_SLACK * size:
        raise metrics.MetricError(f"w2-exact needs a sampler affine in {what}; {solver.label} is not "
                                  "(clipping or thresholding?); use a sample metric such as w2")


def _probe_noise(problem: Problem, solver: ExternalSolver, model: Model, times: Tensor, seed: int,
                 x_probes: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor, Run]:
    """Outputs on the x_T probes with zero noise, and the covariance the noise adds.

    On a Gaussian target the sampler is affine in x_T and in the noise it is handed. The noise is
    written in 'slots' with a known covariance: the Brownian path at each time the sampler asks for
    (Cov W(a), W(b) = min(a, b)), or one independent normal per call (iid). A dry run records the
    calls; then one batched run carries, besides the x_T probes, a row per (slot, coordinate, sign)
    with that slot set to +-e_j and the others to 0, so out(slot q = e_j) - out(0) is column j of
    the slot's gain G_q and the noise covariance is sum_{q, r} Cov(q, r) G_q G_r^T.
    """
    steps, d_x = len(times) - 1, x_probes.shape[1]
    calls: list[tuple[float, float]] = []

    def record(s0: float, s1: float, like: Tensor) -> Tensor:
        calls.append((s0, s1))
        return torch.zeros_like(like)

    solver.run(model, problem, steps, x_probes[:1].to(dtype), seed, times, noise=record)
    terms, gram = _noise_slots(calls, solver.noise_kind)
    n_slots, base = len(gram), len(x_probes)
    eye = torch.eye(d_x, dtype=torch.float64)
    plus_rows = base + 2 * (torch.arange(n_slots)[:, None] * d_x + torch.arange(d_x))  # (slot, j)
    rows = base + 2 * n_slots * d_x
    seen: list[tuple[float, float]] = []

    def probe(s0: float, s1: float, like: Tensor) -> Tensor:
        if len(seen) >= len(calls) or calls[len(seen)] != (s0, s1):
            raise metrics.MetricError(f"{solver.label} asked for different noise on the probe run")
        noise = torch.zeros(rows, d_x, dtype=torch.float64)
        for slot, coef in terms[len(seen)]:
            noise[plus_rows[slot]] = coef * eye
            noise[plus_rows[slot] + 1] = -coef * eye
        seen.append((s0, s1))
        return noise.to(like)

    x_all = torch.cat([x_probes, x_probes[0].expand(rows - base, d_x)]).to(dtype)
    run = solver.run(model, problem, steps, x_all, seed, times, noise=probe)
    out = run.x.to(torch.float64).reshape(rows, -1)
    if len(seen) != len(calls):
        raise metrics.MetricError(f"{solver.label} asked for different noise on the probe run")
    plus, minus = out[plus_rows] - out[0], out[plus_rows + 1] - out[0]  # (slot, j, i): G_q[i, j]
    _check_affine(solver, plus + minus, plus, "its noise", float(out.abs().max()))
    return out[:base], torch.einsum("qr,qji,rjk->ik", gram, plus, plus), run


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


def _reference_law(problem: Problem, run: Run) -> tuple[Tensor, Tensor]:
    """(mean, cov) of the exact law at the library's end point: p_{t_end}, the data law when it
    integrates down to sigma = 0, or, when its output is a final Tweedie denoise, the law of
    E[x0 | x_t] for x_t ~ p_t at its last call t = t_last."""
    if run.t_end == 0.0 and not run.final_denoise:  # sigma = 0 is the data, whatever t is there
        return problem.target.means[0], problem.target.covs[0]
    if run.t_end != 0.0:
        law = problem.marginal(run.t_end)
        return law.means[0], law.covs[0]
    alpha, sigma = (float(v) for v in problem.coefficients(run.t_last))
    mean, cov = problem.target.means[0], problem.target.covs[0]
    noised = alpha**2 * cov + sigma**2 * torch.eye(len(mean), dtype=cov.dtype)
    return mean, alpha**2 * cov @ torch.linalg.solve(noised, cov)


def _paired_reference(metric: str, problem: Problem, solver: ExternalSolver, model: Model, x_T: Tensor,
                      seed: int, run: Run) -> tuple[Reference, GaussianMixture]:
    """The shared ODE reference from the same x_T and the exact law it is judged against, for a
    deterministic sampler that stops at the problem's t_min or ends with a Tweedie denoise from there
    (k-diffusion on the harness grid)."""
    if solver.stochastic:
        raise metrics.MetricError(f"{metric} of {solver.label} would need its own fine run on the same "
                                  "noise; use w2-exact (Gaussian targets) or a sample metric")
    at_t_min = math.isclose(run.t_last if run.t_end == 0.0 else run.t_end, problem.t_min, rel_tol=1e-6)
    if not at_t_min or (run.t_end == 0.0 and not run.final_denoise):
        raise metrics.MetricError(f"{metric} of {solver.label} needs it to end at t_min (or denoise "
                                  "from there); it ends elsewhere")
    denoise = run.t_end == 0.0
    ref = reference(problem, model, x_T, seed, None, denoise_final=denoise)
    return ref, problem.target if denoise else problem.marginal(problem.t_min)


def external_rows(problem: Problem, solver: ExternalSolver, model: Model, times: Tensor, x_T: Tensor,
                  seed: int, noise_seed: int, metric_names: list[str], row0: dict,
                  rows: Callable[..., list[dict]], prior: tuple[Tensor, Tensor] | None) -> list[dict]:
    """The result rows of one external cell (same columns and statuses as run_cell's)."""
    steps = len(times) - 1
    start = time.perf_counter()
    try:
        run = solver.run(model, problem, steps, x_T, noise_seed, times)
    except (RuntimeError, ValueError, ArithmeticError, IndexError, TypeError) as exc:
        return rows("diverged", f"{type(exc).__name__}: {exc}".splitlines()[0], steps)
    wall = time.perf_counter() - start
    if not bool(torch.isfinite(run.x).all()):
        return rows("diverged", "non-finite samples", steps, run.nfe)

    def evaluate(name: str, row: dict) -> None:
        if name == "w2-exact":
            row["value"] = external_w2(problem, solver, model, times, noise_seed, prior, x_T.dtype)
        elif name in (*WEAK_METRICS, *PATH_METRICS):
            ref, law = _paired_reference(name, problem, solver, model, x_T, seed, run)
            row.update(paired_row(name, run.x, ref, law))
        else:
            if run.t_end == 0.0 and run.final_denoise:  # Tweedie denoise of exact samples at the last call
                exact = metrics.exact_samples(problem, len(x_T), seed, dtype=torch.float64, t=run.t_last)
                exact = problem.denoise(exact, run.t_last)
            elif run.t_end == 0.0:  # the data
                generator = torch.Generator().manual_seed(metrics.exact_seed(seed, 0))
                exact = problem.target.sample(len(x_T), generator, dtype=torch.float64)
            else:
                exact = metrics.exact_samples(problem, len(x_T), seed, dtype=torch.float64, t=run.t_end)
            row["value"] = metrics.sample_metric(name, run.x.cpu().double(), exact, seed)
            row["noise_floor"] = metrics.noise_floor(name, problem, len(x_T), seed)

    return metric_rows(metric_names, {**row0, "steps": steps, "nfe": run.nfe, "sample_time": wall}, evaluate)
