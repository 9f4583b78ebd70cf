"""The control-variate weak-error estimator (bench/measure/paired.py) against an exact ground truth.

In 1-D, E f(X_N) of a solver's output is computable without Monte Carlo (bench/measure/weak_truth.py:
quadrature over x_T through the deterministic map; backward Kolmogorov recursion through each step's Gaussian
kernel for stochastic single-step solvers). The paired estimator mean[f(x_i) - f(r_i) + c (f(rc_i) -
f(r_i))] must land within 3 standard errors of E f(X_N) - E f(X), and its standard error must be honest:
over repeated seeds the estimates scatter as the stated standard errors say.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from analytic import make_grid
from analytic.problems import problem_from_dict
from bench.measure.models import analytic_model
from bench.measure.paired import Paired, differences
from bench.measure.reference import brownian_noise, reference
from bench.measure.weak_truth import exact_expectation, exact_marginal_expectation
from solvers import make_solver, sample

PROBLEM = problem_from_dict({"weights": [0.6, 0.4], "means": [[-1.0], [1.5]], "vars": [[0.05], [0.2]],
                             "schedule": "vp-linear"}, name="bimodal-1d")
SDE_REFERENCE_STEPS = 256  # 256 vs 512: a coarse reference, so its Richardson correction is exercised


def features_np(x: np.ndarray) -> np.ndarray:
    return np.stack([x, x * x, np.exp(-((x - 0.3) ** 2) / (2 * 0.3**2))], axis=1)


def features(v: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(features_np(v[:, 0].numpy()))


def truth(solver_name: str, steps: int) -> np.ndarray:
    """E f(X_N) - E f(X), X ~ p_{t_min}, exactly."""
    times = make_grid("logsnr", PROBLEM.schedule, steps, PROBLEM.t_min, PROBLEM.t_max)
    solver = make_solver(solver_name)
    return (exact_expectation(PROBLEM, solver, times, features_np)
            - exact_marginal_expectation(PROBLEM, PROBLEM.t_min, features_np))


def paired_terms(solver_name: str, steps: int, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The estimator's per-sample terms d_i (n, 3) and the solver's own f(x_i), from n paired samples."""
    solver = make_solver(solver_name)
    model = analytic_model(PROBLEM)
    times = make_grid("logsnr", PROBLEM.schedule, steps, PROBLEM.t_min, PROBLEM.t_max)
    x_T = PROBLEM.sample_marginal(PROBLEM.t_max, n, torch.Generator().manual_seed(seed))
    noise = brownian_noise(PROBLEM, seed) if solver.stochastic else None
    x = sample(solver, model, times, x_T, noise).x
    ref = reference(PROBLEM, model, x_T, seed, solver,
                    steps=SDE_REFERENCE_STEPS if solver.stochastic else None)
    d, _, fx = differences(features, Paired.of(x, ref.x, ref.coarse, ref.order))
    return d, fx


def _mean_and_se(v: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    return v.mean(0).numpy(), (v.std(0) / math.sqrt(len(v))).numpy()


@pytest.mark.parametrize("solver_name", ["ddim", "heun", "euler-maruyama", "ddpm"])
@pytest.mark.parametrize("steps", [8, 16, 32])
def test_paired_estimate_matches_the_exact_weak_error(solver_name, steps):
    d, fx = paired_terms(solver_name, steps, n=2000, seed=steps)
    (estimate, stderr), (_, plain) = _mean_and_se(d), _mean_and_se(fx)
    exact = truth(solver_name, steps)
    assert np.all(np.abs(estimate - exact) <= 3 * stderr), (estimate, exact, stderr)
    if steps >= 16:  # the control variate helps for the moments once the pathwise error is below the
        assert np.all(stderr[:2] < plain[:2])  # law's spread (at 8 DDPM steps it is not, and does not)


@pytest.mark.parametrize("solver_name", ["ddim", "ddpm"])
def test_standard_error_is_honest_over_seeds(solver_name):
    """Coverage: 24 independent estimates of 400 samples each (one batch of 24 x 400: samples, their
    references and Brownian paths are independent per row), (estimate - truth) / stderr ~ N(0, 1)."""
    steps, n, blocks = 16, 400, 24
    exact = truth(solver_name, steps)
    d, _ = paired_terms(solver_name, steps, n * blocks, seed=100)
    runs = [_mean_and_se(block) for block in d.split(n)]
    z = np.array([(est - exact) / se for est, se in runs])  # (blocks, features)
    inside = np.mean(np.abs(z) <= 1.96)
    assert inside >= 0.85, (inside, z)
    # the scatter of the estimates matches the standard errors they state
    scatter = np.array([est for est, _ in runs]).std(0, ddof=1)
    stated = np.sqrt(np.mean([se**2 for _, se in runs], axis=0))
    assert np.all((scatter / stated > 0.6) & (scatter / stated < 1.5)), (scatter, stated)
