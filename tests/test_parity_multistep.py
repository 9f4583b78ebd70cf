"""Parity of the multistep solvers with k-diffusion and diffusers in float64, same initial noise.

diffusers is driven on our `ddpm-discrete` schedule (1000 linear betas 1e-4..0.02, passed
explicitly), whose knot t = (k+1)/1000 is diffusers' timestep k; its timestep sequence (plus the
final sigma_min point, timestep 0) is mapped to our times. diffusers builds its sigma / alpha_bar
tables in float32; we overwrite them with our float64 values at the same knots so both sides step
on the identical grid. Multistep schedulers run with lower_order_final=False (ours never lower the
order at the end). DPMSolverMultistep casts the sample to float32 inside `step` (upcast comment
notwithstanding), which costs ~1e-7 relative per step: still inside the 1e-6 tolerance.
"""

from __future__ import annotations

import math

import pytest
import torch

from analytic import get_problem
from analytic.problems import Problem
from analytic.schedules import Schedule, TimeLike, _t
from bench.measure.models import analytic_model
from solvers import make_solver, sample
from tests.peers import KDenoiser, diffusers, kdiffusion_sampling
from tests.util import prior_sample

BETAS = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
TOL = 1e-6


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _ours(spec: str, problem: Problem, times: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return sample(make_solver(spec), analytic_model(problem, "eps"), times, x.clone()).x


# ---------------------------------------------------------------- k-diffusion (VP, sigma~ of x/alpha)
def _kdiff(fn_name: str, spec: str, steps: int = 12, **kw) -> tuple[torch.Tensor, torch.Tensor]:
    kd = kdiffusion_sampling()
    problem = get_problem("mix-2d")
    sched = problem.schedule
    from analytic import make_grid
    times = make_grid("logsnr", sched, steps, problem.t_min, problem.t_max)
    x = prior_sample(problem, 32)
    ours = _ours(spec, problem, times, x)
    sigmas = sched.sigma_tilde(times)
    a_max, a_min = float(sched.alpha(problem.t_max)), float(sched.alpha(problem.t_min))
    theirs = getattr(kd, fn_name)(KDenoiser(analytic_model(problem, "eps")), x / a_max, sigmas,
                                  disable=True, **kw) * a_min
    return ours, theirs


def test_lms_matches_kdiffusion_sample_lms():
    ours, theirs = _kdiff("sample_lms", "lms")
    assert _rel(ours, theirs) < TOL


def test_dpmpp_2m_matches_kdiffusion():
    ours, theirs = _kdiff("sample_dpmpp_2m", "dpmpp-2m")
    assert _rel(ours, theirs) < TOL


def test_dpmpp_3m_matches_kdiffusion_3m_sde_at_eta_0():
    ours, theirs = _kdiff("sample_dpmpp_3m_sde", "dpmpp-3m", eta=0.0, noise_sampler=lambda a, b: 0.0)
    assert _rel(ours, theirs) < TOL


# ---------------------------------------------------------------- diffusers on ddpm-discrete
def _ddpm_problem() -> Problem:
    return get_problem("mix-2d", "ddpm-discrete")


def _drive(scheduler, steps: int, problem: Problem, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run a diffusers multistep scheduler whose grid ends at sigma_min; return (output, times)."""
    scheduler.set_timesteps(steps)
    ks = [int(k) for k in scheduler.timesteps] + [0]
    times = torch.tensor([(k + 1) / 1000 for k in ks], dtype=torch.float64)
    assert len(set(ks)) == len(ks), "the mapped grid must be strictly decreasing"
    scheduler.sigmas = problem.schedule.sigma_tilde(times)  # float64, same knots
    model = analytic_model(problem, "eps")
    for k, t in zip(ks[:-1], times[:-1].tolist(), strict=True):
        x = scheduler.step(model.fn(x, torch.tensor(t)), k, x).prev_sample
    return x, times


def _diffusers_case(cls_name: str, spec: str, steps: int, **config) -> float:
    lib = diffusers()
    problem = _ddpm_problem()
    x = prior_sample(problem, 32)
    scheduler = getattr(lib, cls_name)(trained_betas=BETAS.tolist(), **config)
    theirs, times = _drive(scheduler, steps, problem, x.clone())
    return _rel(_ours(spec, problem, times, x), theirs)


@pytest.mark.parametrize("steps", [8, 20])
def test_dpmpp_2m_matches_diffusers(steps):
    err = _diffusers_case("DPMSolverMultistepScheduler", "dpmpp-2m", steps, solver_order=2,
                          algorithm_type="dpmsolver++", solver_type="midpoint", lower_order_final=False,
                          final_sigmas_type="sigma_min")
    assert err < TOL


@pytest.mark.parametrize("steps", [8, 20])
def test_dpmpp_3m_matches_diffusers_order_3(steps):
    """Our 3M warm-up (step 2) is the phi2 form, diffusers' solver_type="heun" (k-diffusion too)."""
    err = _diffusers_case("DPMSolverMultistepScheduler", "dpmpp-3m", steps, solver_order=3,
                          algorithm_type="dpmsolver++", solver_type="heun", lower_order_final=False,
                          final_sigmas_type="sigma_min")
    assert err < TOL


@pytest.mark.parametrize("p", [1, 2, 3])
@pytest.mark.parametrize("variant", ["bh1", "bh2"])
def test_unipc_matches_diffusers(p, variant):
    """final_sigmas_type="sigma_min": diffusers' default "zero" ends at sigma = 0 (NaN with bh1)."""
    err = _diffusers_case("UniPCMultistepScheduler", f"unipc-{p}[variant={variant}]", 12, solver_order=p,
                          solver_type=variant, predict_x0=True, lower_order_final=False,
                          final_sigmas_type="sigma_min")
    assert err < TOL


@pytest.mark.parametrize("q", [1, 2, 3])
def test_deis_logrho_matches_diffusers(q):
    err = _diffusers_case("DEISMultistepScheduler", f"deis-{q}[basis=logrho]", 12, solver_order=q,
                          lower_order_final=False)
    assert err < TOL


@pytest.mark.parametrize("q", [1, 2, 3])
def test_deis_tab_vs_diffusers_logrho(q):
    """diffusers' DEIS fits eps by a polynomial in log sigma~ ("logrho"); DEIS tAB (our default)
    fits it in the schedule time t. Both are order-q integrators of the same ODE, so for q = 1
    (one node: DDIM) they coincide, and for q >= 2 they differ by a global O(h^q) amount. On
    diffusers' grid (uniform in t, stiff near t_min) 100 -> 200 steps is still pre-asymptotic:
    the measured ratios are 2.9 (q = 2) and 13.6 (q = 3); we assert a drop of more than 2^(q-1)."""
    if q == 1:
        assert _diffusers_case("DEISMultistepScheduler", "deis-1", 20, solver_order=1) < TOL
        return
    diffs = [_diffusers_case("DEISMultistepScheduler", f"deis-{q}", n, solver_order=q,
                             lower_order_final=False) for n in (100, 200)]
    assert diffs[0] > 100 * TOL
    assert diffs[0] / diffs[1] > 2 ** (q - 1), diffs


@pytest.mark.parametrize("steps", [10, 20])
def test_pndm_matches_diffusers(steps):
    """F-PNDM. diffusers steps to t - 1000//N, so N must divide 1000, and the PRK midpoint
    t - (1000//N)//2 must be exact (1000//N even). Its timesteps 0, r, ..., (N-1) r give N-1
    intervals (3 PRK + N-4 PLMS; NFE 12 + N - 4 = ours + 1) plus a last PLMS step 0 -> -r onto
    final_alpha_cumprod = alphas_cumprod[0], a no-op that costs one call; we compare after it."""
    lib = diffusers()
    problem = _ddpm_problem()
    x = prior_sample(problem, 32)
    sch = lib.PNDMScheduler(trained_betas=BETAS.tolist(), skip_prk_steps=False, set_alpha_to_one=False)
    sch.set_timesteps(steps)
    alpha_bar = torch.sigmoid(2 * problem.schedule.knots_lam)  # float64, alpha(t_k)^2
    sch.alphas_cumprod, sch.final_alpha_cumprod = alpha_bar, alpha_bar[0]
    model = analytic_model(problem, "eps")
    theirs, calls = x.clone(), 0
    for k in sch.timesteps.tolist():
        theirs = sch.step(model.fn(theirs, torch.tensor((k + 1) / 1000)), k, theirs).prev_sample
        calls += 1
    r = 1000 // steps
    times = torch.tensor([(k + 1) / 1000 for k in range((steps - 1) * r, -1, -r)], dtype=torch.float64)
    assert calls == make_solver("pndm").nfe(len(times) - 1) + 1
    assert _rel(_ours("pndm", problem, times, x), theirs) < TOL


class _AngleSchedule(Schedule):
    """alpha = cos(pi t / 2), sigma = sin(pi t / 2): the v-diffusion schedule of diffusers' IPNDM."""

    name = "angle"

    def alpha(self, t: TimeLike) -> torch.Tensor:
        return torch.cos(_t(t) * math.pi / 2)

    def sigma(self, t: TimeLike) -> torch.Tensor:
        return torch.sin(_t(t) * math.pi / 2)

    def d_alpha(self, t: TimeLike) -> torch.Tensor:
        return -math.pi / 2 * self.sigma(t)

    def d_sigma(self, t: TimeLike) -> torch.Tensor:
        return math.pi / 2 * self.alpha(t)

    def t_of_log_snr(self, lam: TimeLike) -> torch.Tensor:
        return torch.atan(torch.exp(-_t(lam))) * 2 / math.pi


@pytest.mark.parametrize("steps", [12, 30])
def test_ipndm_matches_diffusers(steps):
    """diffusers' IPNDMScheduler is the same method (fixed AB weights on eps, DDIM transfer) on the
    angle schedule with a v-prediction model, on the grid s_k = 1 - k/N from alpha = 0 to sigma = 0.
    We start it at s_1 (set_begin_index(1): alpha(1) = 0 cannot be divided by) and compare after
    its step to s_{N-1}, before the final jump to sigma = 0; its float32 tables are replaced."""
    lib = diffusers()
    sched = _AngleSchedule()
    base = _ddpm_problem().target
    problem = Problem("angle-mix-2d", "mix-2d on the angle schedule", base, sched, 1e-3, 1.0)
    model = analytic_model(problem, "eps")
    s = torch.linspace(1, 0, steps + 1, dtype=torch.float64)
    sch = lib.IPNDMScheduler()
    sch.set_timesteps(steps)
    sch.betas, sch.alphas = sched.sigma(s), sched.alpha(s)
    sch.set_begin_index(1)
    x = problem.sample_marginal(float(s[1]), 32, torch.Generator().manual_seed(0))
    theirs = x.clone()
    for i in range(1, steps - 1):
        t = float(s[i])
        pred = model(theirs, t)
        v = pred.alpha * pred.eps - pred.sigma * pred.x0
        theirs = sch.step(v, sch.timesteps[i], theirs).prev_sample
    assert _rel(_ours("ipndm", problem, s[1:steps], x), theirs) < TOL
