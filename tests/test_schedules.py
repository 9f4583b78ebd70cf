"""Noise schedules: inverse round trips, derivatives, and the forward SDE's marginals."""

from __future__ import annotations

import math

import pytest
import torch

from analytic.schedules import SCHEDULES, DiscreteDDPM, get_schedule

NAMES = list(SCHEDULES)


def interior_times(schedule, n=57):
    lo, hi = schedule.t_min, schedule.t_max
    lo = lo if lo > 0 else 1e-4 * hi
    return torch.linspace(lo, hi, n, dtype=torch.float64)[1:-1]


@pytest.mark.parametrize("name", NAMES)
def test_log_snr_inverse_round_trips(name):
    sched = get_schedule(name)
    t = interior_times(sched)
    back = sched.t_of_log_snr(sched.log_snr(t))
    torch.testing.assert_close(back, t, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(sched.t_of_sigma_tilde(sched.sigma_tilde(t)), t, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_log_snr_is_log_alpha_over_sigma_and_decreasing(name):
    sched = get_schedule(name)
    t = interior_times(sched)
    torch.testing.assert_close(sched.log_snr(t), torch.log(sched.alpha(t) / sched.sigma(t)))
    assert (torch.diff(sched.log_snr(t)) < 0).all()


@pytest.mark.parametrize("name", NAMES)
def test_derivatives_match_finite_differences(name):
    sched = get_schedule(name)
    t = interior_times(sched)
    if isinstance(sched, DiscreteDDPM):  # piecewise linear in log-SNR: stay inside one segment
        t = (torch.floor(t * 1000) + 0.5) / 1000
    h = 1e-6 * max(1.0, sched.t_max)
    for value, deriv in ((sched.alpha, sched.d_alpha), (sched.sigma, sched.d_sigma)):
        fd = (value(t + h) - value(t - h)) / (2 * h)
        torch.testing.assert_close(deriv(t), fd, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", NAMES)
def test_g2_is_dsigma2_minus_2f_sigma2(name):
    sched = get_schedule(name)
    t = interior_times(sched)
    if isinstance(sched, DiscreteDDPM):
        t = (torch.floor(t * 1000) + 0.5) / 1000
    h = 1e-6 * max(1.0, sched.t_max)
    dsigma2 = (sched.sigma(t + h) ** 2 - sched.sigma(t - h) ** 2) / (2 * h)
    dlog_alpha = (torch.log(sched.alpha(t + h)) - torch.log(sched.alpha(t - h))) / (2 * h)
    torch.testing.assert_close(sched.f(t), dlog_alpha, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(sched.g2(t), dsigma2 - 2 * sched.f(t) * sched.sigma(t) ** 2,
                               rtol=1e-5, atol=1e-7)
    assert (sched.g2(t) > 0).all()


@pytest.mark.parametrize("name", NAMES)
def test_forward_sde_moments_match_alpha_and_sigma(name):
    """dm/dt = f m and dv/dt = 2 f v + g^2 (moments of dx = f x dt + g dW), integrated with RK4
    from t0, reproduce m = alpha(t)/alpha(t0) m0 and v = alpha(t)^2 sigma0^2/alpha0^2 ... i.e. the
    schedule's own alpha and sigma when started from the data (m0 = alpha(t0), v0 = sigma(t0)^2)."""
    sched = get_schedule(name)
    t0 = sched.t_min if sched.t_min > 0 else 1e-3
    t1 = sched.t_max
    n = 4000

    def rhs(t, y):
        f, g2 = float(sched.f(t)), float(sched.g2(t))
        return torch.stack([f * y[0], 2 * f * y[1] + g2])

    y = torch.tensor([float(sched.alpha(t0)), float(sched.sigma(t0)) ** 2], dtype=torch.float64)
    ts = torch.linspace(t0, t1, n + 1, dtype=torch.float64).tolist()
    for a, b in zip(ts[:-1], ts[1:], strict=True):
        h = b - a
        k1 = rhs(a, y)
        k2 = rhs(a + h / 2, y + h / 2 * k1)
        k3 = rhs(a + h / 2, y + h / 2 * k2)
        k4 = rhs(b, y + h * k3)
        y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    expected = torch.tensor([float(sched.alpha(t1)), float(sched.sigma(t1)) ** 2], dtype=torch.float64)
    rtol = 2e-3 if isinstance(sched, DiscreteDDPM) else 1e-6  # piecewise-constant slopes for RK4
    torch.testing.assert_close(y, expected, rtol=rtol, atol=1e-8)


def test_forward_sde_monte_carlo_variance():
    """Euler-Maruyama on the forward VP SDE from x0 = 1: sample mean and variance at T match."""
    sched = get_schedule("vp-linear")
    g = torch.Generator().manual_seed(0)
    x = torch.ones(200_000, dtype=torch.float64)
    ts = torch.linspace(0, 1, 1001, dtype=torch.float64).tolist()
    for a, b in zip(ts[:-1], ts[1:], strict=True):
        x = x + float(sched.f(a)) * x * (b - a) + math.sqrt(float(sched.g2(a)) * (b - a)) * torch.randn(
            x.shape, generator=g, dtype=torch.float64)
    assert abs(float(x.mean()) - float(sched.alpha(1.0))) < 0.01
    assert abs(float(x.var()) - float(sched.sigma(1.0)) ** 2) < 0.01


def test_discrete_ddpm_matches_its_table_at_knots():
    sched = get_schedule("ddpm-discrete")
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    alpha_bar = torch.cumprod(1 - betas, 0)
    k = torch.tensor([0, 1, 10, 499, 998, 999])
    t = (k.double() + 1) / 1000.0
    torch.testing.assert_close(sched.alpha(t) ** 2, alpha_bar[k], rtol=1e-12, atol=1e-14)
    mid = (torch.tensor([10.5, 500.5]) + 1) / 1000
    assert torch.isfinite(sched.alpha(mid)).all()


def test_unknown_schedule_names_valid_ones():
    with pytest.raises(KeyError, match="vp-linear"):
        get_schedule("nope")


@pytest.mark.parametrize("name", ["vp-linear", "vp-const", "vp-cosine", "ddpm-discrete", "ve", "edm",
                                  "rectified-flow"])
def test_memoized_scalars_are_exactly_the_five_functions(name):
    """`scalars` (one log alpha for VP schedules) and `scaled` return bit for bit what alpha, sigma,
    d_alpha, d_sigma, log_snr and sigma_tilde return."""
    from analytic import get_schedule

    s = get_schedule(name)
    for t in torch.linspace(s.t_min, s.t_max, 29, dtype=torch.float64).tolist():
        expected = tuple(float(f(t)) for f in (s.alpha, s.sigma, s.d_alpha, s.d_sigma, s.log_snr))
        assert s.scalars(t) == expected and s.scaled(t) == (expected[0], float(s.sigma_tilde(t)))
