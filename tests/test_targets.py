"""Gaussian-mixture targets: closed-form score, Tweedie denoiser and noise prediction."""

from __future__ import annotations

import pytest
import torch

from analytic import BUILTIN, SCHEDULES, get_problem
from analytic.targets import GaussianMixture

PROBLEMS = list(BUILTIN)


@pytest.mark.parametrize("name", PROBLEMS)
@pytest.mark.parametrize("alpha,sigma", [(1.0, 0.0), (0.99, 0.05), (0.6, 0.8), (0.01, 1.0)])
def test_score_equals_autograd_of_log_density(name, alpha, sigma):
    target = get_problem(name).target
    x = target.sample(64, torch.Generator().manual_seed(1), alpha, max(sigma, 0.1))
    x.requires_grad_(True)
    (grad,) = torch.autograd.grad(target.log_prob(x, alpha, sigma).sum(), x)
    torch.testing.assert_close(target.score(x.detach(), alpha, sigma), grad, rtol=1e-9, atol=1e-9)


def test_single_gaussian_matches_closed_form():
    target = get_problem("gauss-aniso-3d").target
    alpha, sigma = 0.7, 0.5
    cov = alpha**2 * target.covs[0] + sigma**2 * torch.eye(3, dtype=torch.float64)
    mean = alpha * target.means[0]
    x = torch.randn(10, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    expected_score = -(x - mean) @ torch.linalg.inv(cov)
    torch.testing.assert_close(target.score(x, alpha, sigma), expected_score)
    dist = torch.distributions.MultivariateNormal(mean, cov)
    torch.testing.assert_close(target.log_prob(x, alpha, sigma), dist.log_prob(x))
    gain = alpha * target.covs[0] @ torch.linalg.inv(cov)  # E[x0|x] = mu + gain (x - alpha mu)
    torch.testing.assert_close(target.denoise(x, alpha, sigma), target.means[0] + (x - mean) @ gain.T)


@pytest.mark.parametrize("name", ["mix-2d", "ring-8", "mix-16d"])
def test_eps_and_denoise_are_consistent(name):
    target = get_problem(name).target
    alpha, sigma = 0.8, 0.6
    x = target.sample(128, torch.Generator().manual_seed(2), alpha, sigma)
    x0, eps = target.denoise(x, alpha, sigma), target.eps(x, alpha, sigma)
    torch.testing.assert_close(alpha * x0 + sigma * eps, x)
    torch.testing.assert_close(eps, -sigma * target.score(x, alpha, sigma))


@pytest.mark.parametrize("name", ["mix-2d", "gauss-aniso-3d"])
def test_tweedie_identity_by_monte_carlo(name):
    """E[(x0 - D(x_t)) h(x_t)] = 0 for h = 1 and h = x_t (D is the conditional mean)."""
    target = get_problem(name).target
    g = torch.Generator().manual_seed(3)
    n, alpha, sigma = 400_000, 0.7, 0.7
    x0 = target.sample(n, g)
    xt = alpha * x0 + sigma * torch.randn(x0.shape, generator=g, dtype=torch.float64)
    resid = x0 - target.denoise(xt, alpha, sigma)
    for h in (torch.ones(n, 1, dtype=torch.float64), xt):
        moments = (resid.unsqueeze(-1) * h.unsqueeze(1)).mean(0)
        stderr = (resid.unsqueeze(-1) * h.unsqueeze(1)).std(0) / n**0.5
        assert (moments.abs() < 5 * stderr + 1e-12).all()
    # and it beats a perturbed denoiser in mean squared error
    mse = (resid**2).sum(-1).mean()
    assert mse < ((x0 - 1.05 * target.denoise(xt, alpha, sigma)) ** 2).sum(-1).mean()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_finite_near_t_zero(dtype, schedule):
    for name in PROBLEMS:
        problem = get_problem(name, schedule)
        t = max(1e-5, problem.schedule.t_min) if schedule == "ddpm-discrete" else 1e-5
        alpha, sigma = problem.coefficients(t)
        x = problem.target.sample(256, torch.Generator().manual_seed(0), alpha, sigma, dtype)
        for value in (problem.target.score(x, alpha, sigma), problem.target.eps(x, alpha, sigma),
                      problem.target.denoise(x, alpha, sigma), problem.target.log_prob(x, alpha, sigma)):
            assert value.dtype == dtype and torch.isfinite(value).all(), (name, schedule)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_score_far_from_every_component(dtype):
    """Where every component's density underflows (x hundreds of standard deviations away) the
    responsibilities are renormalised per point: the score still equals autograd in float64."""
    problem = get_problem("ring-8")
    alpha, sigma = problem.coefficients(1e-3)
    near = problem.target.sample(64, torch.Generator().manual_seed(0), alpha, sigma, torch.float64)
    x = torch.cat([near, torch.tensor([[40.0, -30.0], [-1e3, 2e2], [0.0, 0.0]], dtype=torch.float64)])
    xg = x.clone().requires_grad_(True)
    expected = torch.autograd.grad(problem.target.log_prob(xg, alpha, sigma).sum(), xg)[0]
    got = problem.target.score(x.to(dtype), alpha, sigma).double()
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert torch.allclose(got, expected, rtol=tol, atol=tol * float(expected.abs().max()))


def test_samples_have_the_mixture_moments():
    target = get_problem("mix-2d").target
    x = target.sample(400_000, torch.Generator().manual_seed(4))
    torch.testing.assert_close(x.mean(0), target.mean(), atol=0.01, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), target.cov(), atol=0.02, rtol=0)


def test_noised_law_is_the_marginal():
    target = GaussianMixture([0.3, 0.7], [[0.0], [2.0]], [[[0.5]], [[0.1]]])
    law = target.noised(0.5, 0.3)
    torch.testing.assert_close(law.covs[:, 0, 0], torch.tensor([0.25 * 0.5 + 0.09, 0.25 * 0.1 + 0.09],
                                                               dtype=torch.float64))
