"""Sweep cells for external solvers (diffusers:, kdiff:): one library-driven trajectory per cell.

Errors are measured against what an exact integrator would return on the library's own final
point: the exact law at `Run.t_end`, or, when the library ends at sigma = 0 (most defaults), the
law of the Tweedie denoise E[x0 | x] of exact samples at its last model call (its last step is
that denoise; comparing with the data law would add a floor ~sigma_min^2).
`w2-exact`: a deterministic external sampler is affine in x_T on a Gaussian target, so
running it on the prior mean and mean + each column of the prior covariance's Cholesky factor
gives its exact Gaussian output law; the mirrored probes (mean - column) check that it is affine
(diffusers' DDIM/DDPM default clip_sample=True is not). Stochastic or non-affine ones: the row is
skipped with the reason; use a sample metric (w2, sw2, ...).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from torch import Tensor

from analytic.problems import Problem
from bench import metrics
from bench.exact_law import bures_w2
from bench.sweep import metric_rows
from solvers.external import ExternalSolver, Run
from solvers.model import Model

AFFINE_TOL = 1e-4  # relative; the libraries' float32 tables leave ~1e-7

def external_w2(problem: Problem, solver: ExternalSolver, model: Model, times: Tensor, seed: int,
                prior: tuple[Tensor, Tensor] | None, dtype: torch.dtype) -> float:
    """Exact W2 between the external sampler's output law and the exact law at its final time."""
    if not problem.is_gaussian:
        raise metrics.MetricError(f"w2-exact needs a Gaussian target; {problem.name} is not")
    if solver.stochastic:
        raise metrics.MetricError(f"w2-exact needs a deterministic sampler; {solver.label} injects noise")
    if prior is None:
        law = problem.marginal(float(times[0]))
        prior = (law.means[0], law.covs[0])
    mean, cov = prior
    chol = torch.linalg.cholesky(cov.to(torch.float64))
    probes = torch.cat([mean[None], mean[None] + chol.T, mean[None] - chol.T]).to(dtype)
    run = solver.run(model, problem, len(times) - 1, probes, seed, times)
    out = run.x.to(torch.float64).reshape(len(probes), -1)
    if not bool(torch.isfinite(out).all()):
        return math.inf
    d = len(mean)
    spread = out[1:d + 1] - out[0]
    curvature = float((out[1:d + 1] + out[d + 1:] - 2 * out[0]).abs().max())
    if curvature > AFFINE_TOL * (float(spread.abs().max()) + 1e-300):  # e.g. clip_sample, thresholding
        raise metrics.MetricError(f"w2-exact needs a sampler affine in x_T; {solver.label} is not "
                                  "(clipping or thresholding?); use a sample metric such as w2")
    return bures_w2(out[0], spread.T @ spread, *_reference_law(problem, run))


def _reference_law(problem: Problem, run: Run) -> tuple[Tensor, Tensor]:
    """(mean, cov) of p_{t_end}, or of E[x0 | x_t] for x_t ~ p_t at t = t_last when t_end = 0."""
    if run.t_end != 0.0:
        law = problem.marginal(run.t_end)
        return law.means[0], law.covs[0]
    alpha, sigma = (float(v) for v in problem.coefficients(run.t_last))
    mean, cov = problem.target.means[0], problem.target.covs[0]
    noised = alpha**2 * cov + sigma**2 * torch.eye(len(mean), dtype=cov.dtype)
    return mean, alpha**2 * cov @ torch.linalg.solve(noised, cov)


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
        elif name == "path-rms":
            raise metrics.MetricError("path-rms is not available for external solvers")
        else:
            if run.t_end == 0.0:  # Tweedie denoise of exact samples at the last call
                exact = metrics.exact_samples(problem, len(x_T), seed, dtype=torch.float64, t=run.t_last)
                exact = problem.denoise(exact, run.t_last)
            else:
                exact = metrics.exact_samples(problem, len(x_T), seed, dtype=torch.float64, t=run.t_end)
            row["value"] = metrics.sample_metric(name, run.x.cpu().double(), exact, seed)
            row["noise_floor"] = metrics.noise_floor(name, problem, len(x_T), seed)

    return metric_rows(metric_names, {**row0, "steps": steps, "nfe": run.nfe, "sample_time": wall}, evaluate)
