"""GITS (bench.measure.gits): the DP is the exact optimum, the cost matrix is the one-step DDIM defect
in x / alpha, and the chosen grid is a valid subset of the Karras candidates that beats Karras."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from analytic import get_problem
from analytic.grids import karras
from bench.measure import gits
from bench.measure.gits import dp_path, gits_costs, gits_times, path_cost, teacher_trajectory
from bench.measure.metrics import w2_exact
from bench.measure.models import analytic_model
from solvers import make_solver
from solvers.loop import sample


def _brute_force(cost: np.ndarray, steps: int, coeff: float) -> tuple[list[int], float]:
    k = cost.shape[0]
    best = min(([0, *inner, k - 1] for inner in itertools.combinations(range(1, k - 1), steps - 1)),
               key=lambda path: path_cost(cost, path, coeff))
    return best, path_cost(cost, best, coeff)


@pytest.mark.parametrize("coeff", [1.0, 1.15])
def test_dp_path_is_the_brute_force_optimum(coeff):
    rng = np.random.default_rng(7)
    for _ in range(5):
        cost = rng.random((8, 8))
        for steps in range(1, 8):
            path = dp_path(cost, steps, coeff)
            best, value = _brute_force(cost, steps, coeff)
            assert path == best, (steps, path, best)
            assert path_cost(cost, path, coeff) == pytest.approx(value, rel=1e-12)


def test_dp_path_weights_later_steps_by_coeff():
    """Two 2-step paths of equal plain cost: 0 -> 1 -> 3 costs 1 + 2 coeff and 0 -> 2 -> 3 costs
    2 + 1 coeff, so coeff > 1 (late steps count more) picks the second, coeff < 1 the first."""
    cost = np.full((4, 4), 10.0)
    cost[0, 1], cost[1, 3], cost[0, 2], cost[2, 3] = 1.0, 2.0, 2.0, 1.0
    assert dp_path(cost, 2, 1.15) == [0, 2, 3]
    assert dp_path(cost, 2, 0.85) == [0, 1, 3]


def test_dp_path_rejects_bad_input():
    cost = np.ones((5, 5))
    for steps in (0, 5):
        with pytest.raises(ValueError):
            dp_path(cost, steps)
    with pytest.raises(ValueError):
        dp_path(np.ones((4, 5)), 2)
    assert dp_path(cost, 4) == [0, 1, 2, 3, 4]
    assert dp_path(cost, 1) == [0, 4]


def _setup(name: str, n: int = 256):
    problem = get_problem(name)
    model = analytic_model(problem)
    x_T = problem.sample_marginal(problem.t_max, n, torch.Generator().manual_seed(0))
    return problem, model, x_T


def _check_grid(times: torch.Tensor, problem, steps: int, points: int = 61) -> None:
    candidates = karras(problem.schedule, points - 1, problem.t_min, problem.t_max)
    assert times.dtype == torch.float64 and len(times) == steps + 1
    assert times[0] == problem.t_max and times[-1] == problem.t_min
    assert bool((times[1:] < times[:-1]).all())
    assert all(bool((candidates == t).any()) for t in times)


@pytest.mark.parametrize("name", ["gauss-aniso-3d", "mix-2d"])
def test_gits_times_is_a_memoised_subset_of_the_candidates(name):
    problem, model, x_T = _setup(name)
    times = gits_times(model, x_T, 5, problem.t_min, problem.t_max)
    _check_grid(times, problem, 5)
    calls = model.calls
    assert torch.equal(gits_times(model, x_T, 5, problem.t_min, problem.t_max), times)
    _check_grid(gits_times(model, x_T, 10, problem.t_min, problem.t_max), problem, 10)
    assert model.calls == calls  # the teacher runs once for every step count
    # the DP grid (coeff 1.15) has lower plain (coeff 1) cost than the uniform-index subset, which on
    # 61 candidates is the Karras grid itself at 5 and 10 steps
    candidates, cost = gits_costs(model, x_T, problem.t_min, problem.t_max)
    for steps in (5, 10):
        path = dp_path(cost, steps)
        uniform = [i * 60 // steps for i in range(steps + 1)]
        torch.testing.assert_close(candidates[uniform],
                                   karras(problem.schedule, steps, problem.t_min, problem.t_max),
                                   rtol=1e-12, atol=0)
        assert path_cost(cost, path) < path_cost(cost, uniform)


def test_gits_times_grows_the_candidates_for_many_steps():
    problem, model, x_T = _setup("gauss-aniso-3d", n=16)
    times = gits_times(model, x_T, 70, problem.t_min, problem.t_max, substeps=1)
    _check_grid(times, problem, 70, points=71)  # every candidate of the 71


def test_cost_is_the_one_step_ddim_defect_in_x_over_alpha():
    problem, model, x_T = _setup("mix-2d", n=64)
    candidates, cost = gits_costs(model, x_T, problem.t_min, problem.t_max, points=9, substeps=8)
    trajectory = teacher_trajectory(model, x_T, candidates, substeps=8)
    ddim = make_solver("ddim")
    for i, j in [(0, 8), (0, 1), (3, 6), (7, 8)]:
        ti, tj = float(candidates[i]), float(candidates[j])
        step = sample(ddim, model, torch.tensor([ti, tj], dtype=torch.float64), trajectory[i]).x
        alpha_j = float(problem.schedule.alpha(tj))
        expected = ((step - trajectory[j]).norm(dim=1) / alpha_j).mean()
        assert cost[i, j] == pytest.approx(float(expected), rel=1e-9)
    assert np.all(np.triu(cost, 1)[np.triu_indices(9, 1)] > 0) and np.all(np.tril(cost) == 0)


def test_teacher_is_accurate():
    """The teacher's end state agrees with a run of twice as many RK4 steps (the cost matrix measures
    Euler defects of order 1e-2 and up; the teacher's own error must be far below that: 4e-7 observed)."""
    problem, model, x_T = _setup("mix-2d", n=64)
    candidates = karras(problem.schedule, 60, problem.t_min, problem.t_max)
    coarse = teacher_trajectory(model, x_T, candidates, substeps=8)[-1]
    fine = teacher_trajectory(model, x_T, candidates, substeps=16)[-1]
    assert float((coarse - fine).norm(dim=1).max()) < 1e-5


@pytest.mark.parametrize("steps", [5, 10])
def test_ddim_on_gits_beats_karras_in_exact_w2(steps):
    """The paper's claim for few steps, checked on the Gaussian problem with the exact W2: DDIM on the
    GITS grid is closer to p_{t_min} than on the Karras grid it is drawn from (0.41 vs 0.67 at 5 steps,
    0.23 vs 0.37 at 10 steps with this x_T)."""
    problem, model, x_T = _setup("gauss-aniso-3d")
    ddim = make_solver("ddim")
    on_gits = w2_exact(problem, ddim, model, gits_times(model, x_T, steps, problem.t_min, problem.t_max))
    on_karras = w2_exact(problem, ddim, model, karras(problem.schedule, steps, problem.t_min, problem.t_max))
    assert on_gits < 0.8 * on_karras, (on_gits, on_karras)


def test_memo_does_not_outlive_the_model():
    problem, model, x_T = _setup("gauss-aniso-3d", n=16)
    gits_times(model, x_T, 3, problem.t_min, problem.t_max, points=9, substeps=1)
    key = next(k for k in gits._TIMES if k[0] == id(model))
    ref = gits._TIMES[key][0]
    assert ref() is model
    del model
    assert ref() is None  # a later model with the same id misses the memo
