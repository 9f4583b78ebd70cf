"""`bench grid optimize`: the interior times of a solver's grid that minimise an exact error.

Objectives (all deterministic given the seed, so the optimiser sees a smooth function of the times):
  w2-exact   exact W2 of the output law on a Gaussian target (bench/measure/exact_law.py);
  path-rms   RMS distance to the high-accuracy flow of the same x_T (bench/measure/reference.py),
             on a mixture with its exact score or on a learned model against the model's own flow;
  weak-*, mmd  the paired weak errors of bench/measure/paired.py against the same reference.
Parameterisation: log-SNR increments through a softmax, lambda_i = lambda(t_max) + (lambda(t_min) -
lambda(t_max)) cumsum(w)_i with w = (1 - 1e-6) softmax(z) + 1e-6 / N, so every z gives a strictly
decreasing grid with exact end points.
The solvers take float times (their coefficients are the same code that samples), so the gradient in
z is a central difference of the exact objective (float64; the exact law is accurate to ~1e-10), and
L-BFGS-B minimises log(objective) from the best standard grid. Sample-based objectives fit one batch
of x_T (`samples`, `seed`): check the grid on another seed (`bench run --grid file:...`).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.optimize import minimize
from torch import Tensor

from analytic.grids import GridError
from analytic.problems import Problem
from bench.measure import metrics
from bench.measure.grids import problem_grid
from bench.measure.models import analytic_model
from bench.measure.paired import PATH_METRICS, WEAK_METRICS, paired_row
from bench.measure.reference import reference
from solvers import Sampler
from solvers.model import Model

OBJECTIVES = ("w2-exact", *PATH_METRICS, *WEAK_METRICS)
STANDARD_GRIDS = ("uniform", "logsnr", "quadratic", "karras", "ays-gauss", "tangent")
OBJECTIVE_STREAM = 13  # x_T stream of sample-based objectives (held-out: seed + 1)
FD_STEP = 1e-5
FLOOR = 1e-6  # share of the log-SNR range spread evenly, so no increment underflows to zero


class OptimizeError(ValueError):
    """Bad `bench grid optimize` input (one-line message)."""


def times_of(z: np.ndarray, schedule, t_min: float, t_max: float) -> Tensor:
    """The strictly decreasing grid of softmax log-SNR increments z (end points exact)."""
    lo, hi = float(schedule.log_snr(t_max)), float(schedule.log_snr(t_min))
    w = np.exp(z - z.max())
    w = (1 - FLOOR) * w / w.sum() + FLOOR / len(z)
    lam = lo + (hi - lo) * np.concatenate([[0.0], np.cumsum(w)])
    times = schedule.t_of_log_snr(torch.tensor(lam, dtype=torch.float64))
    times[0], times[-1] = t_max, t_min
    return times


def z_of(times: Tensor, schedule) -> np.ndarray:
    """Inverse of `times_of` (up to the softmax's additive constant)."""
    lam = schedule.log_snr(torch.as_tensor(times, dtype=torch.float64)).numpy()
    share = np.diff(lam) / (lam[-1] - lam[0])
    return np.log(np.maximum(share - FLOOR / len(share), 1e-300))


def objective(
    name: str,
    problem: Problem,
    solver: Sampler,
    model: Model | None = None,
    samples: int = 256,
    seed: int = 0,
    model_name: str = "exact",
    reference_method: str | None = None,
    reference_steps: int | None = None,
) -> Callable[[Tensor], float]:
    """times -> the objective `name` for `solver` on `problem` (model: default the exact score; a
    learned one is judged against its own high-accuracy flow, `reference_method` at N and 2N steps)."""
    exact = model is None
    model = analytic_model(problem) if exact else model
    if name == "w2-exact":
        if not (exact and problem.is_gaussian):
            raise OptimizeError("w2-exact needs a Gaussian problem and its exact score")
        return lambda times: metrics.w2_exact(problem, solver, model, times)
    if name not in OBJECTIVES:
        raise OptimizeError(f"unknown objective {name!r}; valid: {', '.join(OBJECTIVES)}")
    if solver.stochastic:
        raise OptimizeError("sample-based objectives here are for ODE solvers (fixed x_T, no noise)")
    x_T = metrics.exact_samples(problem, samples, seed, t=problem.t_max, stream=OBJECTIVE_STREAM)
    with torch.no_grad():
        ref = reference(problem, model, x_T, seed, method=reference_method, steps=reference_steps,
                        model_name=model_name)
    law = problem.marginal(problem.t_min)

    def evaluate(times: Tensor) -> float:
        with torch.no_grad():
            run = solver.run(model, times, x_T.clone())
        if not run.finite:
            return math.inf
        return float(paired_row(name, run.x, ref, law)["value"])

    return evaluate


@dataclass
class Optimized:
    times: Tensor
    value: float
    start: str
    start_value: float
    standard: dict[str, float]
    evaluations: int
    seconds: float
    history: list[float] = field(default_factory=list)

    @property
    def best_standard(self) -> tuple[str, float]:
        """The standard grid with the lowest finite objective, and that objective."""
        finite = {g: v for g, v in self.standard.items() if math.isfinite(v)}
        name = min(finite, key=finite.get)
        return name, finite[name]


def standard_values(
    f: Callable[[Tensor], float], problem: Problem, steps: int, grids: tuple[str, ...] = STANDARD_GRIDS
) -> dict[str, tuple[float, Tensor]]:
    """Objective and times of each standard grid that this problem admits."""
    found = {}
    for g in grids:
        try:
            times = problem_grid(g, problem, steps)
        except GridError:
            continue
        found[g] = (f(times), times)
    return found


def optimize(
    f: Callable[[Tensor], float],
    problem: Problem,
    steps: int,
    *,
    max_iter: int = 200,
    grids: tuple[str, ...] = STANDARD_GRIDS,
    starts: int = 1,
    progress: bool = True,
) -> Optimized:
    """Minimise f over the interior times of a `steps`-step grid from each of the `starts` best of
    `grids` (multi-start: a local minimum near one grid need not be the best); keep the best."""
    if steps < 2:
        raise OptimizeError("a 1-step grid has no interior time to optimise")
    start_clock = time.perf_counter()
    standard = standard_values(f, problem, steps, grids)
    finite = {g: v for g, (v, _) in standard.items() if math.isfinite(v)}
    if not finite:
        raise OptimizeError("the objective is not finite on any standard grid")
    ranked = sorted(finite, key=finite.get)
    sched, t_min, t_max = problem.schedule, problem.t_min, problem.t_max
    calls, history = [0], []

    def loss(z: np.ndarray) -> float:
        calls[0] += 1
        value = f(times_of(z, sched, t_min, t_max))
        return math.log(value) if math.isfinite(value) and value > 0 else 1e3

    def loss_and_grad(z: np.ndarray) -> tuple[float, np.ndarray]:
        value, grad = loss(z), np.zeros_like(z)
        for i in range(len(z)):
            e = np.zeros_like(z)
            e[i] = FD_STEP
            grad[i] = (loss(z + e) - loss(z - e)) / (2 * FD_STEP)
        return value, grad

    best = (finite[ranked[0]], standard[ranked[0]][1], ranked[0])
    for start in ranked[:starts]:
        history.clear()

        def report(z: np.ndarray, start: str = start) -> None:
            history.append(math.exp(loss(z)))
            if progress:
                print(f"\r  from {start} ({finite[start]:.6g}): iteration {len(history)}: {history[-1]:.6g}",
                      end="", file=sys.stderr, flush=True)

        res = minimize(loss_and_grad, z_of(standard[start][1], sched), jac=True, method="L-BFGS-B",
                       callback=report, options={"maxiter": max_iter, "ftol": 1e-12, "gtol": 1e-9})
        if progress:
            print(file=sys.stderr)
        times = times_of(res.x, sched, t_min, t_max)
        value = f(times)
        if value < best[0]:  # never hand back a grid worse than the best standard one
            best = (value, times, start)
    return Optimized(best[1], best[0], best[2], finite[best[2]], {g: v for g, (v, _) in standard.items()},
                     calls[0], time.perf_counter() - start_clock, list(history))
