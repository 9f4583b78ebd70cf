"""euler, ddim and euler-maruyama converge at order 1 against the closed-form output law."""

from __future__ import annotations

import pytest

from tests.util import observed_order

CASES = [("vp-linear", "logsnr"), ("vp-linear", "uniform"), ("edm", "karras"), ("ve", "logsnr")]


@pytest.mark.parametrize("solver", ["euler", "ddim", "euler-maruyama"])
@pytest.mark.parametrize("schedule,grid", CASES)
def test_first_order_convergence(solver, schedule, grid):
    if solver == "euler-maruyama" and schedule == "ve":
        pytest.skip("covered by test_euler_maruyama_superconverges_on_ve_gaussian")
    order = observed_order(solver, "gauss-aniso-3d", steps=(32, 64, 128, 256), schedule=schedule, grid=grid)
    assert abs(order - 1.0) <= 0.15, order


def test_euler_maruyama_superconverges_on_ve_gaussian():
    """Measured, not theory: on VE (f = 0) with a Gaussian target, Euler-Maruyama's W2 error
    falls at order 2 on a grid uniform in t: the O(h) terms of the mean and covariance recursions
    cancel for this linear SDE, so only the weak order 1 is guaranteed in general."""
    order = observed_order("euler-maruyama", "gauss-aniso-3d", steps=(32, 64, 128, 256), schedule="ve",
                           grid="logsnr")
    assert abs(order - 2.0) <= 0.15, order
