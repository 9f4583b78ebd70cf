"""The rectified-flow path (alpha = 1 - t, sigma = t) runs through the same ODE solvers, with a
velocity-parameterized model, at their theory orders (exact W2 on gauss-aniso-3d, log-SNR grid).
On a grid uniform in t the exponential integrators are still pre-asymptotic at these step counts:
lambda = log((1 - t)/t) moves fastest near t_max = 0.999."""

from __future__ import annotations

import pytest

from tests.util import observed_order


@pytest.mark.parametrize("solver,order", [("euler", 1), ("heun", 2), ("dpmpp-2m", 2), ("dpm-solver-3", 3),
                                          ("unipc-2", 3)])
def test_rectified_flow_orders(solver, order):
    measured = observed_order(solver, "gauss-aniso-3d", steps=(32, 64, 128, 256), schedule="rectified-flow",
                              grid="logsnr", parameterization="velocity")
    assert abs(measured - order) <= 0.15, measured
