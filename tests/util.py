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


def eigen_recursion_w2(solver: str, lam: torch.Tensor, m: torch.Tensor, sched, times: torch.Tensor) -> float:
    """Exact W2 of `solver` (euler, euler-maruyama or ddim) on the Gaussian target whose covariance has
    eigenvalues `lam` and whose mean is `m` in its eigenbasis: d independent scalar mean/variance
    recursions written from the update formulas (not the solver code), each step y' = a y + b (+ noise)."""

    def coef(t: float) -> tuple[float, float]:
        return float(sched.alpha(t)), float(sched.sigma(t))

    a0, s0 = coef(float(times[0]))
    mean, var = a0 * m, a0**2 * lam + s0**2
    for t, t1 in zip(times[:-1].tolist(), times[1:].tolist(), strict=True):
        al, sg = coef(t)
        v = al**2 * lam + sg**2  # marginal variance at t per direction
        h, f, g2 = t1 - t, float(sched.f(t)), float(sched.g2(t))
        extra = torch.zeros_like(var)
        if solver == "euler":  # y' = y + h (f y + g^2/2 (y - al m) / v)
            a, b = 1 + h * (f + g2 / (2 * v)), -h * g2 * al * m / (2 * v)
        elif solver == "euler-maruyama":  # y' = y + h (f y + g^2 (y - al m) / v) + g dW
            a, b = 1 + h * (f + g2 / v), -h * g2 * al * m / v
            extra = torch.full_like(var, g2 * abs(h))
        else:  # ddim: y' = al1 x0 + sg1 eps, eps = sg (y - al m) / v, x0 = (y - sg eps) / al
            al1, sg1 = coef(t1)
            c = sg1 - al1 * sg / al
            a, b = al1 / al + c * sg / v, -c * sg * al * m / v
        mean, var = a * mean + b, a * a * var + extra
    a_end, s_end = coef(float(times[-1]))
    mean_ref, var_ref = a_end * m, a_end**2 * lam + s_end**2
    root_gap = (var - var_ref) / (var.sqrt() + var_ref.sqrt())
    return math.sqrt(float(((mean - mean_ref) ** 2).sum() + (root_gap**2).sum()))
