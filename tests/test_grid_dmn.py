"""DM-NonUniform (Xue et al. 2024) time steps: the error bound, its optimisation, and the grid."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from analytic import get_problem, get_schedule
from analytic.grid_dmn import dmn, dmn_objective

PROBLEM = get_problem("gauss-aniso-3d")


def _lambdas(schedule, times: torch.Tensor) -> np.ndarray:
    return schedule.log_snr(times).numpy()


def _bound_by_hand(lam: list[float]) -> float:
    """The bound from its definition: step s integrates e^lambda times the Lagrange basis polynomial
    of each of its k past points (Gauss-Legendre quadrature, exact to rounding here); k = 1 at the
    first and last step, 2 next to them, else 3; data errors are weighted by sigma^2 / alpha. Steps
    0..2 add |term| (k = 1) or the l2 norm of their terms; later steps of order > 1 pool each
    point's terms, and |pooled| is added at the end."""
    n = len(lam) - 1
    nodes, gl_weights = np.polynomial.legendre.leggauss(40)
    total, pooled = 0.0, [0.0] * (n + 1)
    for s in range(n):
        k = 1 if s in (0, n - 1) else 2 if s in (1, n - 2) else 3
        points = list(range(s - k + 1, s + 1))
        lo, hi = lam[s], lam[s + 1]
        x = lo + (hi - lo) * (nodes + 1) / 2
        terms = []
        for p in points:
            basis = np.ones_like(x)
            for q in points:
                if q != p:
                    basis *= (x - lam[q]) / (lam[p] - lam[q])
            integral = (hi - lo) / 2 * float(np.sum(gl_weights * np.exp(x) * basis))
            alpha = 1 / math.sqrt(1 + math.exp(-2 * lam[p]))
            sigma = 1 / math.sqrt(1 + math.exp(2 * lam[p]))
            terms.append((p, integral * sigma * sigma / alpha))
        if k == 1:
            total += abs(terms[0][1])
        elif s < 3:
            total += math.sqrt(sum(v * v for _, v in terms))
        else:
            for p, v in terms:
                pooled[p] += v
    return total + sum(abs(v) for v in pooled)


@pytest.mark.parametrize("steps", [1, 2, 3, 4, 8])
def test_objective_matches_a_hand_computation(steps):
    sched = PROBLEM.schedule
    lo, hi = float(sched.log_snr(PROBLEM.t_max)), float(sched.log_snr(PROBLEM.t_min))
    lam = np.linspace(lo, hi, steps + 1)
    if steps == 8:  # non-uniform, so that pooled coefficients do not cancel by symmetry
        lam[1:-1] += 0.3 * np.sin(np.arange(1, steps))
    assert dmn_objective(lam) == pytest.approx(_bound_by_hand(lam.tolist()), rel=1e-12, abs=0)


@pytest.mark.parametrize("steps", [5, 10])
def test_optimisation_lowers_the_bound(steps):
    sched = PROBLEM.schedule
    lam = _lambdas(sched, dmn(sched, steps, PROBLEM.t_min, PROBLEM.t_max))
    init = np.linspace(lam[0], lam[-1], steps + 1)
    assert dmn_objective(lam) < 0.8 * dmn_objective(init)


def test_reproduces_reference_lambdas():
    """The authors' step_optim.py (get_ts_lambdas(5, 1e-3, 'unif') on NoiseScheduleVP('linear'),
    the same VP-linear schedule) gives these lambdas; it converges there, so ours agree closely."""
    theirs = [-5.024978406659204, -2.181826423408905, -1.215822567109845, -0.2577932157006663,
              1.0646307476258172, 4.557714932729866]
    sched = get_schedule("vp-linear")
    lam = _lambdas(sched, dmn(sched, 5, 1e-3, 1.0))
    np.testing.assert_allclose(lam, theirs, rtol=0, atol=1e-6)
    # and their bound at the 4-step 'unif' start, 163.44765479458027 (from float32 start lambdas)
    start = np.linspace(lam[0], lam[-1], 5)
    assert dmn_objective(start) == pytest.approx(163.44765479458027, rel=1e-12)


@pytest.mark.parametrize(("schedule", "steps"), [("problem", 1), ("problem", 2), ("problem", 5),
                                                 ("problem", 10), ("vp-cosine", 3), ("vp-cosine", 7)])
def test_times_strictly_decreasing_with_exact_end_points(schedule, steps):
    if schedule == "problem":  # gauss-aniso-3d's schedule and interval
        schedule, t_min, t_max = PROBLEM.schedule, PROBLEM.t_min, PROBLEM.t_max
    else:
        schedule = get_schedule(schedule)
        t_min, t_max = schedule.t_min, schedule.t_max
    times = dmn(schedule, steps, t_min, t_max)
    assert times.dtype == torch.float64 and times.shape == (steps + 1,)
    assert times[0].item() == t_max and times[-1].item() == t_min
    assert bool((torch.diff(times) < 0).all())


def test_memoised_copy_without_warnings():
    sched = get_schedule("vp-const")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scipy's delta_grad / maxiter warnings stay silenced
        first = dmn(sched, 6, sched.t_min, sched.t_max)
    first[1] = -1.0
    second = dmn(sched, 6, sched.t_min, sched.t_max)
    assert second[1] > second[2] > 0 and torch.equal(second, dmn(sched, 6, sched.t_min, sched.t_max))


def test_rejects_empty_grids():
    with pytest.raises(ValueError):
        dmn(PROBLEM.schedule, 0, PROBLEM.t_min, PROBLEM.t_max)
    with pytest.raises(ValueError):
        dmn_objective(np.array([1.0]))
