"""w2-exact against closed-form per-eigendirection recursions, and bures_w2 against sqrtm."""

from __future__ import annotations

import math

import mpmath
import pytest
import scipy.linalg
import torch

from analytic import get_problem, make_grid
from bench.measure.exact_law import bures_w2
from bench.measure.metrics import w2_exact
from bench.measure.models import analytic_model
from solvers import make_solver


def _recursion_w2(solver: str, problem, times: torch.Tensor) -> float:
    """Exact W2 from scalar mean/variance recursions in the target covariance's eigenbasis, written
    from the update formulas (not the solver code): each step is y' = a y + b (+ noise)."""
    sched, target = problem.schedule, problem.target
    lam, u = torch.linalg.eigh(target.covs[0])
    m = u.T @ target.means[0]

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


@pytest.mark.parametrize("solver", ["euler", "ddim", "euler-maruyama"])
@pytest.mark.parametrize("grid,steps", [("logsnr", 8), ("uniform", 37), ("karras", 100)])
def test_w2_exact_matches_recursion(solver, grid, steps):
    problem = get_problem("gauss-aniso-3d")
    times = make_grid(grid, problem.schedule, steps, problem.t_min, problem.t_max)
    got = w2_exact(problem, make_solver(solver), analytic_model(problem), times)
    want = _recursion_w2(solver, problem, times)
    assert got == pytest.approx(want, rel=1e-8)


def _random_spd(d: int, g: torch.Generator, cond: float = 100.0) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    evals = torch.exp(torch.rand(d, generator=g, dtype=torch.float64) * math.log(cond)) / 10
    return q @ torch.diag(evals) @ q.T


def _scipy_w2(m1, c1, m2, c2) -> float:
    c1, c2 = c1.numpy(), c2.numpy()
    r2 = scipy.linalg.sqrtm(c2).real
    cross = scipy.linalg.sqrtm(r2 @ c1 @ r2).real
    return math.sqrt(float(((m1 - m2) ** 2).sum()) + max(float((c1 + c2 - 2 * cross).trace()), 0.0))


@pytest.mark.parametrize("d", [1, 2, 5, 12])
def test_bures_matches_scipy_on_random_pairs(d):
    g = torch.Generator().manual_seed(d)
    for _ in range(5):
        c1, c2 = _random_spd(d, g), _random_spd(d, g)
        m1, m2 = (torch.randn(d, generator=g, dtype=torch.float64) for _ in range(2))
        assert bures_w2(m1, c1, m2, c2) == pytest.approx(_scipy_w2(m1, c1, m2, c2), rel=1e-8)
        zero = torch.zeros(d, dtype=torch.float64)
        assert bures_w2(zero, c1, zero, c2) == pytest.approx(_scipy_w2(zero, c1, zero, c2), rel=1e-8)


@pytest.mark.parametrize("eps", [1e-3, 1e-6, 1e-9])
def test_bures_nearly_equal_commuting_pairs_keep_relative_accuracy(eps):
    """Same eigenvectors: W2^2 = sum (a_i - b_i)^2 / (sqrt a_i + sqrt b_i)^2, evaluated stably."""
    g = torch.Generator().manual_seed(7)
    q, _ = torch.linalg.qr(torch.randn(4, 4, generator=g, dtype=torch.float64))
    a = torch.tensor([2.0, 0.5, 0.1, 0.02], dtype=torch.float64)
    b = a * (1 + eps * torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64))
    c1, c2 = q @ torch.diag(a) @ q.T, q @ torch.diag(b) @ q.T
    want = math.sqrt(float((((a - b) / (a.sqrt() + b.sqrt())) ** 2).sum()))
    zero = torch.zeros(4, dtype=torch.float64)
    assert bures_w2(zero, c1, zero, c2) == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("eps", [1e-4, 1e-8])
def test_bures_nearly_equal_general_pairs_against_mpmath(eps):
    """Non-commuting nearly equal pair: 40-digit mpmath sqrtm is the reference (scipy's float64
    formula cancels catastrophically here)."""
    g = torch.Generator().manual_seed(11)
    c2 = _random_spd(3, g)
    sym = torch.randn(3, 3, generator=g, dtype=torch.float64)
    c1 = c2 + eps * (sym + sym.T)
    zero = torch.zeros(3, dtype=torch.float64)
    with mpmath.workdps(40):
        m1, m2 = mpmath.matrix(c1.tolist()), mpmath.matrix(c2.tolist())
        r2 = mpmath.sqrtm(m2)
        cross = mpmath.sqrtm(r2 * m1 * r2)
        tr = sum((m1 + m2 - 2 * cross)[i, i] for i in range(3))
        want = float(mpmath.sqrt(mpmath.re(tr)))
    assert bures_w2(zero, c1, zero, c2) == pytest.approx(want, rel=1e-6)
