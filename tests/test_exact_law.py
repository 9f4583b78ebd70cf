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
from tests.util import eigen_recursion_w2


def _recursion_w2(solver: str, problem, times: torch.Tensor) -> float:
    """eigen_recursion_w2 with the target covariance's eigendecomposition."""
    lam, u = torch.linalg.eigh(problem.target.covs[0])
    return eigen_recursion_w2(solver, lam, u.T @ problem.target.means[0], problem.schedule, times)


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
