"""asv benchmark suite of diffusion-solver-bench (see asv.conf.json).

Offline, in the current environment: `asv run --python=same --quick` (or `--environment
existing`), then `asv publish` (html in .asv/html). Helpers live here; benchmarks in bench_*.py.
The metrics come from `bench.measure.metrics` when it is importable, else from POT and bench.measure.exact_law
directly (the same definitions: emd2 W2, 200-projection sliced W2, Bures W2 of the exact law).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from analytic import get_problem, make_grid
from analytic.problems import Problem
from bench.measure.exact_law import bures_w2, output_law
from bench.measure.models import analytic_model
from solvers import BrownianTreeNoise, IidNoise, Solver, make_solver, names, sample

try:  # being written in parallel; the fallbacks below compute the same quantities
    from bench import metrics as _metrics
except ImportError:  # pragma: no cover - depends on the checkout
    _metrics = None

ORDER_STEPS = (32, 64, 128, 256)
SW2_PROJECTIONS = 200


def solver_names() -> list[str]:
    return names()


def is_adaptive(solver: Solver) -> bool:
    return "adaptive" in solver.all_tags


def grid_for(solver: Solver, problem: Problem, steps: int) -> Tensor:
    """The logsnr grid with `steps` steps; adaptive solvers get one interval and choose their own."""
    steps = 1 if is_adaptive(solver) else max(steps, solver.min_steps)
    return make_grid("logsnr", problem.schedule, steps, problem.t_min, problem.t_max)


def prior(problem: Problem, n: int, seed: int = 0) -> Tensor:
    return problem.sample_marginal(problem.t_max, n, torch.Generator().manual_seed(seed), torch.float64)


def run_sample(solver: Solver, problem: Problem, times: Tensor, x: Tensor, seed: int = 0) -> Tensor:
    """One full sample; i.i.d. noise (cheapest) for stochastic solvers."""
    noise = IidNoise(seed) if solver.stochastic else None
    return sample(solver, analytic_model(problem), times, x, noise).x


def sample_metric(name: str, x: Tensor, y: Tensor, seed: int = 0) -> float:
    if _metrics is not None:
        return _metrics.sample_metric(name, x, y, seed)
    import ot

    xs, ys = x.double().numpy(), y.double().numpy()
    if name == "w2":
        cost = ot.dist(xs, ys)
        return math.sqrt(float(ot.emd2(np.full(len(xs), 1 / len(xs)), np.full(len(ys), 1 / len(ys)), cost,
                                       numItermax=10**7)))
    if name == "sw2":
        return float(ot.sliced_wasserstein_distance(xs, ys, n_projections=SW2_PROJECTIONS, seed=seed))
    raise NotImplementedError(f"metric {name!r} needs bench.measure.metrics")


def sample_metric_names() -> list[str]:
    if _metrics is not None:
        return list(_metrics.SAMPLE_METRICS)
    return ["w2", "sw2"]


def exact_w2(solver: Solver, problem: Problem, steps: int) -> float:
    """Exact W2 of the solver's output law on a Gaussian problem (no sampling error)."""
    model = analytic_model(problem)
    times = grid_for(solver, problem, steps)
    if _metrics is not None:
        return _metrics.w2_exact(problem, solver, model, times)
    prior_law, target = problem.marginal(problem.t_max), problem.marginal(problem.t_min)
    law = output_law(solver, model, times, prior_law.means[0], prior_law.covs[0])
    return bures_w2(law.mean, law.cov, target.means[0], target.covs[0])


def observed_order(solver: Solver, problem: Problem, steps: tuple[int, ...] = ORDER_STEPS) -> float:
    """Least-squares slope p of log W2-exact against log steps (error ~ C steps^-p)."""
    xs = np.log(np.array(steps, dtype=float))
    ys = np.log(np.array([exact_w2(solver, problem, n) for n in steps]))
    return float(-np.polyfit(xs, ys, 1)[0])


def _reference_path(solver: Solver, problem: Problem, x: Tensor, seed: int) -> Tensor:
    """High-accuracy solution from the same x_T: classical RK4 (torchdiffeq) on 1024 logsnr steps of
    the PF-ODE, or for an SDE solver Euler-Maruyama with 4096 steps on the same Brownian tree
    (strong order 1 for this additive noise)."""
    model = analytic_model(problem)
    if solver.stochastic:
        times = make_grid("logsnr", problem.schedule, 4096, problem.t_min, problem.t_max)
        noise = BrownianTreeNoise(seed, problem.t_min, problem.t_max)
        return sample(make_solver("euler-maruyama"), model, times, x, noise).x
    from torchdiffeq import odeint

    times = make_grid("logsnr", problem.schedule, 1024, problem.t_min, problem.t_max)
    return odeint(lambda t, y: model(y, float(t)).drift, x, times, method="rk4")[-1]


def path_rms(solver: Solver, problem: Problem, steps: int, n: int, seed: int = 0) -> float:
    """RMS distance between the solver's samples and a high-accuracy solution from the same x_T
    (and the same Brownian path for stochastic solvers)."""
    x = prior(problem, n, seed)
    model = analytic_model(problem)
    times = grid_for(solver, problem, steps)
    noise = BrownianTreeNoise(seed, problem.t_min, problem.t_max) if solver.stochastic else None
    out = sample(solver, model, times, x, noise).x
    reference_for = getattr(_metrics, "reference_for", None)
    if reference_for is not None:
        ref = reference_for(problem, model, x, seed, solver, False).x
        return float(_metrics.path_rms(out, ref))
    ref = _reference_path(solver, problem, x, seed)
    return float(((out - ref) ** 2).sum(-1).mean().sqrt())


__all__ = ["exact_w2", "get_problem", "grid_for", "is_adaptive", "make_solver", "observed_order",
           "path_rms", "prior", "run_sample", "sample_metric", "sample_metric_names", "solver_names"]
