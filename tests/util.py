"""Shared test helpers: exact W2 error of a solver on a Gaussian problem, observed orders."""

from __future__ import annotations

import math

import torch

from analytic import get_problem, make_grid
from analytic.problems import Problem
from bench.measure.exact_law import bures_w2, output_law
from bench.measure.models import analytic_model
from bench.measure.theory import conditions, theory
from solvers import Model, make_solver


def exact_error(solver_spec: str, problem: str | Problem, steps: int, grid: str = "logsnr",
                schedule: str | None = None, parameterization: str = "eps",
                **grid_params: float) -> float:
    """W2 between the solver's exact output law and p_{t_min} on a Gaussian problem (float64)."""
    if isinstance(problem, str):
        problem = get_problem(problem, schedule)
    solver = make_solver(solver_spec)
    model = analytic_model(problem, parameterization)
    times = make_grid(grid, problem.schedule, steps, problem.t_min, problem.t_max, **grid_params)
    prior, target = problem.marginal(problem.t_max), problem.marginal(problem.t_min)
    law = output_law(solver, model, times, prior.means[0], prior.covs[0])
    return bures_w2(law.mean, law.cov, target.means[0], target.covs[0])


def slope(steps: list[int], errors: list[float]) -> float:
    """Least-squares order p in error ~ C steps^-p."""
    xs = [math.log(s) for s in steps]
    ys = [math.log(e) for e in errors]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return -sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)


def observed_order(solver_spec: str, problem: str = "gauss-aniso-3d", steps=(32, 64, 128, 256),
                   **kw) -> float:
    return slope(list(steps), [exact_error(solver_spec, problem, n, **kw) for n in steps])


class CountingFn:
    """Wraps a predictor function and counts its real calls (independently of Model.calls)."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, x, t):
        self.calls += 1
        return self.fn(x, t)


def counted_model(problem: Problem, parameterization: str = "eps") -> tuple[Model, CountingFn]:
    inner = analytic_model(problem, parameterization)
    counter = CountingFn(inner.fn)
    return Model(counter, parameterization, problem.schedule), counter


def prior_sample(problem: Problem, n: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return problem.sample_marginal(problem.t_max, n, g, dtype)


def within_theory(spec: str, observed: float, schedule: str, grid: str, tol: float, metric: str = "w2-exact",
                  gaussian: bool = True) -> bool:
    """Whether a measured slope lies in the proven interval [low - tol, high + tol] that the harness
    compares it with (bench/measure/theory.py: the implementation's cap, raised by the proven exceptions that
    apply on this problem, grid and schedule)."""
    th = theory(make_solver(spec), metric, conditions(gaussian, grid, schedule))
    return th.low - tol <= observed <= th.high + tol
