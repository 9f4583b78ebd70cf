"""Parity of the stochastic solvers with their peers in float64, on the same grid with the same noise.

k-diffusion runs on y = x / alpha with sigmas = sigma~(times) (no final zero); its noise_sampler
(or a patched torch.randn_like) returns exactly the draws our solver takes from one Brownian-tree
source, with sigma~ mapped back to t. diffusers' DDPMScheduler / DDIMScheduler run on the knots of
`ddpm-discrete` (timestep k <-> t = (k + 1) / 1000) with float64 tables; their last step to
alpha_bar = 1 is not taken (our grids end at t_min)."""

from __future__ import annotations

import math

import pytest
import torch

from analytic import get_problem, make_grid
from bench.measure.models import analytic_model
from solvers import BrownianTreeNoise, make_solver, sample
from tests.peers import KDenoiser, diffusers, kdiffusion_sampling
from tests.util import prior_sample

RTOL = 1e-6


def _rel(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return float((ours - theirs).abs().max() / theirs.abs().max())


def _setup(schedule: str, steps: int, grid: str = "karras", seed: int = 0):
    problem = get_problem("mix-2d", schedule)
    model = analytic_model(problem)
    times = make_grid(grid, problem.schedule, steps, problem.t_min, problem.t_max)
    x = prior_sample(problem, 16, seed=seed)
    noise = BrownianTreeNoise(seed + 1, float(times[-1]), float(times[0]))
    return problem, model, times, x, noise


def _t_of(schedule, times: torch.Tensor, sigma) -> float:
    """t of a sigma~ that k-diffusion passes: the grid time itself when it is a grid point."""
    s = float(sigma)
    grid_sigmas = schedule.sigma_tilde(times)
    close = torch.isclose(grid_sigmas, torch.tensor(s, dtype=torch.float64), rtol=1e-12, atol=0)
    if close.any():
        return float(times[close.nonzero()[0, 0]])
    return float(schedule.t_of_sigma_tilde(s))


def _kdiff_run(name: str, spec: str, schedule: str, steps: int, **kwargs) -> tuple[float, int, int]:
    """(relative difference, our calls, their calls) of solver `spec` against sample_<name>."""
    K = kdiffusion_sampling()
    problem, model, times, x, noise = _setup(schedule, steps)
    sched = problem.schedule
    ours = sample(make_solver(spec), model, times, x, noise).x
    calls = model.calls
    denoiser = KDenoiser(model)

    def noise_sampler(s0, s1):
        return noise.normal(_t_of(sched, times, s0), _t_of(sched, times, s1), x)

    a0, a1 = float(sched.alpha(times[0])), float(sched.alpha(times[-1]))
    sigmas = sched.sigma_tilde(times)
    theirs = getattr(K, f"sample_{name}")(denoiser, x / a0, sigmas, disable=True,
                                          noise_sampler=noise_sampler, **kwargs) * a1
    return _rel(ours, theirs), calls, denoiser.calls


KDIFF = [
    ("euler_ancestral", "euler-ancestral", {}),
    ("euler_ancestral", "euler-ancestral[eta=0.5,s_noise=0.9]", {"eta": 0.5, "s_noise": 0.9}),
    ("dpm_2_ancestral", "dpm2-ancestral", {}),
    ("dpmpp_2s_ancestral", "dpmpp-2s-ancestral", {}),
    ("dpmpp_2s_ancestral", "dpmpp-2s-ancestral[eta=0.7]", {"eta": 0.7}),
    ("dpmpp_sde", "dpmpp-sde", {}),
    ("dpmpp_sde", "dpmpp-sde[eta=0.5,r=0.3]", {"eta": 0.5, "r": 0.3}),
    ("dpmpp_2m_sde", "dpmpp-2m-sde", {}),
    ("dpmpp_2m_sde", "dpmpp-2m-sde[solver_type=heun]", {"solver_type": "heun"}),
    ("dpmpp_2m_sde", "dpmpp-2m-sde[solver_type=heun,eta=0.6]", {"solver_type": "heun", "eta": 0.6}),
    ("dpmpp_3m_sde", "dpmpp-3m-sde", {}),
    ("dpmpp_3m_sde", "dpmpp-3m-sde[eta=0.4]", {"eta": 0.4}),
]


@pytest.mark.parametrize("schedule", ["vp-linear", "edm"])
@pytest.mark.parametrize(("name", "spec", "kwargs"), KDIFF, ids=[s for _, s, _ in KDIFF])
def test_kdiffusion_parity(name, spec, kwargs, schedule):
    rel, ours, theirs = _kdiff_run(name, spec, schedule, steps=12, **kwargs)
    assert ours == theirs, "same number of model calls"
    assert rel < RTOL, f"{spec} vs sample_{name} on {schedule}: relative difference {rel:.2e}"


@pytest.mark.parametrize("schedule", ["vp-linear", "edm"])
@pytest.mark.parametrize(("name", "spec"), [("heun", "edm-stochastic"), ("euler", "edm-stochastic-euler")])
def test_edm_stochastic_parity(name, spec, schedule, monkeypatch):
    """Alg. 2 against sample_heun / sample_euler with s_churn; k-diffusion draws with randn_like
    once per step, patched to return our step's draw."""
    K = kdiffusion_sampling()
    steps = 20
    problem, model, times, x, noise = _setup(schedule, steps)
    sched = problem.schedule
    solver = make_solver(f"{spec}[s_churn=4,s_tmin=0.05,s_tmax=20]")
    ours = sample(solver, model, times, x, noise).x
    calls = model.calls
    sigmas = sched.sigma_tilde(times)
    churned = int(((sigmas >= 0.05) & (sigmas <= 20)).sum())
    assert 0 < churned < steps, "the churn window covers some steps but not all"
    draws = iter(range(steps))

    def randn_like(like):
        i = next(draws)
        return noise.normal(float(times[i]), float(times[i + 1]), x)

    monkeypatch.setattr(K.torch, "randn_like", randn_like)
    denoiser = KDenoiser(model)
    a0, a1 = float(sched.alpha(times[0])), float(sched.alpha(times[-1]))
    theirs = getattr(K, f"sample_{name}")(denoiser, x / a0, sigmas, disable=True, s_churn=4.0,
                                          s_tmin=0.05, s_tmax=20.0, s_noise=1.0) * a1
    assert calls == denoiser.calls
    assert _rel(ours, theirs) < RTOL


def _diffusers_setup(cls_name: str, n: int, **config):
    lib = diffusers()
    problem = get_problem("mix-2d", "ddpm-discrete")
    sched = problem.schedule
    scheduler = getattr(lib, cls_name)(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02,
                                       beta_schedule="linear", clip_sample=False, **config)
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)  # float64 tables
    scheduler.betas, scheduler.alphas = betas, 1 - betas
    scheduler.alphas_cumprod = torch.cumprod(1 - betas, 0)
    scheduler.set_timesteps(n)
    ks = [int(k) for k in scheduler.timesteps]
    assert ks[-1] == 0 and ks[0] - ks[1] == 1000 // n
    times = torch.tensor([(k + 1) / 1000 for k in ks], dtype=torch.float64)
    model = analytic_model(problem, "eps")
    # the prior at t = times[0] < 1: draw from the exact marginal there
    x = problem.sample_marginal(float(times[0]), 16, torch.Generator().manual_seed(3))
    noise = BrownianTreeNoise(7, float(times[-1]), float(times[0]))
    return lib, scheduler, sched, ks, times, model, x, noise


@pytest.mark.parametrize("n", [10, 50])
@pytest.mark.parametrize("variance", ["posterior", "beta"])
def test_ddpm_matches_diffusers(n, variance, monkeypatch):
    kind = "fixed_small" if variance == "posterior" else "fixed_large"
    lib, scheduler, sched, ks, times, model, x, noise = _diffusers_setup("DDPMScheduler", n,
                                                                         variance_type=kind)
    ours = sample(make_solver(f"ddpm[variance={variance}]"), model, times, x, noise).x
    current = {}

    def randn_tensor(shape, generator=None, device=None, dtype=None, layout=None):
        return noise.normal(current["t"], current["t_next"], x)

    import diffusers.schedulers.scheduling_ddpm as ddpm_module
    monkeypatch.setattr(ddpm_module, "randn_tensor", randn_tensor)
    y = x.clone()
    for i, k in enumerate(ks[:-1]):
        current.update(t=float(times[i]), t_next=float(times[i + 1]))
        eps = model.fn(y, times[i])
        y = scheduler.step(eps, k, y).prev_sample
    assert y.dtype == torch.float64
    assert _rel(ours, y) < RTOL


@pytest.mark.parametrize("n", [10, 50])
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_ddim_eta_matches_diffusers(n, eta):
    lib, scheduler, sched, ks, times, model, x, noise = _diffusers_setup("DDIMScheduler", n)
    ours = sample(make_solver(f"ddim-eta[eta={eta}]"), model, times, x, noise).x
    y = x.clone()
    for i, k in enumerate(ks[:-1]):
        eps = model.fn(y, times[i])
        z = noise.normal(float(times[i]), float(times[i + 1]), x)
        y = scheduler.step(eps, k, y, eta=eta, variance_noise=z).prev_sample
    assert _rel(ours, y) < RTOL


def test_ddim_eta_one_is_ddpm_posterior():
    """Song et al. 2021a eq. 16: eta = 1 gives the DDPM posterior step, on every schedule."""
    for schedule in ("vp-linear", "edm"):
        problem, model, times, x, noise = _setup(schedule, 15)
        a = sample(make_solver("ddim-eta[eta=1]"), model, times, x, noise).x
        b = sample(make_solver("ddpm"), model, times, x, noise).x
        assert _rel(a, b) < 1e-10
        assert not math.isclose(float(a.std()), float(x.std()), rel_tol=1e-3)
