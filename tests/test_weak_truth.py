"""bench.measure.weak_truth: exact E f(X_N) in 1-D against the closed-form Gaussian output law, resolution
refinement on a bimodal mixture, Monte Carlo, weak convergence of DDIM, and the refusals."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from analytic import get_problem, make_grid
from analytic.problems import problem_from_dict
from bench.measure.exact_law import output_law
from bench.measure.models import analytic_model
from bench.measure.weak_truth import exact_expectation, exact_marginal_expectation
from solvers import IidNoise, Solver, make_solver, sample

SOLVERS = ["ddim", "heun", "euler-maruyama", "ddpm"]
BIMODAL = {"weights": [0.6, 0.4], "means": [[-1.0], [1.5]], "vars": [[0.05], [0.2]], "schedule": "vp-linear"}
REFINED = {"panels": 64, "grid_points": 16001, "hermite_nodes": 64, "tail": 13.0, "rtol": 1e-13}


def moments(x: np.ndarray) -> np.ndarray:
    return np.stack([x, x * x], axis=1)


def three(x: np.ndarray) -> np.ndarray:
    """x, x^2 and a Gaussian bump centred between the modes of BIMODAL."""
    return np.stack([x, x * x, np.exp(-((x - 0.3) ** 2) / (2 * 0.3**2))], axis=1)


def _grid(problem, steps: int) -> torch.Tensor:
    return make_grid("logsnr", problem.schedule, steps, problem.t_min, problem.t_max)


def _law_moments(problem, solver: Solver, times: torch.Tensor) -> tuple[float, float]:
    prior = problem.marginal(problem.t_max)
    law = output_law(solver, analytic_model(problem), times, prior.means[0], prior.covs[0])
    mean = float(law.mean[0])
    return mean, mean * mean + float(law.cov[0, 0])


@pytest.mark.parametrize("steps", [8, 32, 128])
@pytest.mark.parametrize("spec", SOLVERS)
def test_gaussian_moments_match_exact_output_law(spec, steps):
    problem = get_problem("gauss-1d")
    solver, times = make_solver(spec), _grid(problem, steps)
    first, second = exact_expectation(problem, solver, times, moments)
    want_first, want_second = _law_moments(problem, solver, times)
    assert abs(first - want_first) <= 1e-12
    assert abs(second - want_second) <= 1e-12


@pytest.mark.parametrize("spec", ["dpmpp-2m", "euler-ancestral", "exp-sde", "dpm2-ancestral"])
def test_other_solver_kinds_match_exact_output_law(spec):
    """A multistep ODE solver and single-draw samplers with a different step structure."""
    problem = get_problem("gauss-1d")
    solver, times = make_solver(spec), _grid(problem, 16)
    got = exact_expectation(problem, solver, times, moments)
    assert np.abs(got - np.array(_law_moments(problem, solver, times))).max() <= 1e-12


@pytest.mark.parametrize("spec", SOLVERS)
def test_refinement_moves_nothing_on_a_bimodal_mixture(spec):
    """Doubling every resolution (and widening the tails, tightening the quadrature tolerance)
    leaves E f unchanged; the mixture's flow has a real separatrix (the map x_T -> X_N is steep)."""
    problem = problem_from_dict(BIMODAL)
    solver, times = make_solver(spec), _grid(problem, 16)
    coarse = exact_expectation(problem, solver, times, three)
    fine = exact_expectation(problem, solver, times, three, **REFINED)
    assert np.abs(coarse - fine).max() < 1e-10
    assert np.isfinite(coarse).all() and 0.0 < coarse[2] < 1.0


def test_bimodal_mixture_has_a_separatrix():
    """The ODE map sends one prior interval to each mode, steeply in between."""
    problem = problem_from_dict(BIMODAL)
    x = torch.linspace(-1.0, 1.0, 2001, dtype=torch.float64)[:, None]
    out = sample(make_solver("ddim"), analytic_model(problem), _grid(problem, 64), x).x[:, 0]
    assert float(out[0]) < -0.5 and float(out[-1]) > 0.8
    assert float(torch.diff(out).max() / (x[1, 0] - x[0, 0])) > 50


@pytest.mark.parametrize("spec", ["heun", "euler-maruyama"])
def test_monte_carlo_agrees_within_four_standard_errors(spec):
    problem = problem_from_dict(BIMODAL)
    solver, times = make_solver(spec), _grid(problem, 16)
    n = 200_000
    x_t = problem.sample_marginal(problem.t_max, n, torch.Generator().manual_seed(11))
    noise = IidNoise(12) if solver.stochastic else None
    out = sample(solver, analytic_model(problem), times, x_t, noise).x[:, 0].numpy()
    values = three(out)
    stderr = values.std(axis=0, ddof=1) / math.sqrt(n)
    exact = exact_expectation(problem, solver, times, three)
    assert np.all(np.abs(values.mean(axis=0) - exact) <= 4 * stderr), (values.mean(axis=0) - exact) / stderr


def _two_step_brute_force(problem, solver: Solver, times: torch.Tensor, panels: int = 40) -> np.ndarray:
    """E three(X_2) for a two-step chain by a tensor quadrature over (x_T, xi_0), with the last
    draw integrated in closed form: independent of the grids, splines and convolutions."""
    z, w = np.polynomial.legendre.leggauss(16)
    edges = np.linspace(-11.0, 11.0, panels + 1)
    half, mid = np.diff(edges) / 2, (edges[1:] + edges[:-1]) / 2
    z, w = (mid[:, None] + half[:, None] * z).ravel(), (half[:, None] * w).ravel()
    w = w * np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)  # nodes and weights for xi ~ N(0, 1)
    law = problem.marginal(float(times[0]))
    x = (law.means[:, 0].numpy()[:, None] + np.sqrt(law.covs[:, 0, 0].numpy())[:, None] * z).ravel()
    wx = (law.weights.numpy()[:, None] * w).ravel()
    model, grid = analytic_model(problem), times.tolist()

    def step(k: int, x: np.ndarray, value: float) -> np.ndarray:
        xt = torch.from_numpy(x)[:, None]
        noise = IidNoise(0)
        noise.normal = lambda t0, t1, like: torch.full_like(like, value)
        return solver.step(model, xt, grid[k], grid[k + 1], solver.init_state(xt, times), noise)[:, 0].numpy()

    a0 = step(0, x, 0.0)
    b0 = float(step(0, x[:1], 1.0)[0] - a0[0])
    y = (a0[:, None] + b0 * z).ravel()
    a1 = step(1, y, 0.0)
    b1 = float(step(1, y[:1], 1.0)[0] - a1[0])
    width2 = 0.3**2 + b1 * b1
    smoothed = np.stack([a1, a1 * a1 + b1 * b1,
                         0.3 / math.sqrt(width2) * np.exp(-((a1 - 0.3) ** 2) / (2 * width2))], axis=1)
    return (wx[:, None] * w[None]).ravel() @ smoothed


@pytest.mark.parametrize(("spec", "times"), [("euler-maruyama", (0.5, 0.15, 0.02)),
                                             ("ddpm", (0.3, 0.05, 0.001))])
def test_two_step_chain_matches_brute_force_quadrature(spec, times):
    """Large last-step noise (b_1 ~ 0.6 against the bump's 0.3) and a steep skeleton on the mixture."""
    problem = problem_from_dict(BIMODAL)
    solver, times = make_solver(spec), torch.tensor(times, dtype=torch.float64)
    got = exact_expectation(problem, solver, times, three)
    assert np.abs(got - _two_step_brute_force(problem, solver, times)).max() <= 1e-11


def test_exact_marginal_expectation_matches_closed_forms():
    problem = problem_from_dict(BIMODAL)
    for t in (problem.t_min, 0.3, problem.t_max):
        law = problem.marginal(t)
        mean = float(law.mean()[0])
        second = float(law.cov()[0, 0]) + mean * mean
        got = exact_marginal_expectation(problem, t, moments)
        assert abs(got[0] - mean) <= 1e-13 and abs(got[1] - second) <= 1e-13


def test_ddim_converges_weakly_at_first_order():
    problem = problem_from_dict(BIMODAL)
    target = exact_marginal_expectation(problem, problem.t_min, three)
    errors = [exact_expectation(problem, make_solver("ddim"), _grid(problem, n), three) - target
              for n in (128, 256)]
    assert np.abs(errors[1]).max() < 0.02
    ratio = errors[0] / errors[1]
    assert np.all((ratio > 1.8) & (ratio < 2.2)), ratio


@dataclass
class _Remembering(Solver):
    stochastic = True

    def step(self, model, x, t, t_next, state, noise):
        state.remember(x, 1)
        return x + 0.1 * noise.normal(t, t_next, x)


@dataclass
class _SquaredDraw(Solver):
    stochastic = True

    def step(self, model, x, t, t_next, state, noise):
        z = noise.normal(t, t_next, x)
        return x + 0.1 * z + 0.01 * z * z


@dataclass
class _StateDependentNoise(Solver):
    stochastic = True

    def step(self, model, x, t, t_next, state, noise):
        return x + 0.1 * (1 + x * x) * noise.normal(t, t_next, x)


@pytest.mark.parametrize(("solver", "message"), [
    (make_solver("pc-langevin"), "noise.extra"),
    (make_solver("dpmpp-sde"), "2 normals"),
    (make_solver("dpmpp-2m-sde"), "multistep"),
    (make_solver("rk45"), "batch"),
    (_Remembering(), "multistep memory"),
    (_SquaredDraw(), "not affine in its draw"),
    (_StateDependentNoise(), "depends on x"),
], ids=["extra", "two-draws", "multistep-sde", "adaptive", "memory", "non-affine", "b(x)"])
def test_refuses_steps_not_of_the_supported_form(solver, message):
    problem = get_problem("gauss-1d")
    with pytest.raises(ValueError, match=message):
        exact_expectation(problem, solver, _grid(problem, 8), moments)


def test_refuses_problems_beyond_one_dimension():
    problem = get_problem("ring-8")
    with pytest.raises(ValueError, match="1-D"):
        exact_expectation(problem, make_solver("ddim"), _grid(problem, 8), moments)
    with pytest.raises(ValueError, match="1-D"):
        exact_marginal_expectation(problem, problem.t_min, moments)
