"""Parity in float64 with k-diffusion and diffusers on the same grid from the same initial noise.

k-diffusion runs on x~ = x / alpha with sigmas = sigma~(times) (our grids never reach sigma = 0,
so its final Euler branch is never taken); its output is multiplied by alpha(t_min).
"""

from __future__ import annotations

import pytest
import torch

from analytic import get_problem, make_grid
from solvers import State, ZeroNoise, make_solver, sample
from solvers.exponential import DPMSolver2, DPMSolver3, DPMSolverPP2S
from tests.peers import KDenoiser, diffusers, kdiffusion_sampling
from tests.util import counted_model, prior_sample

REL = 1e-6


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _setup(schedule: str, steps: int, grid: str = "karras", n: int = 32):
    problem = get_problem("mix-2d", schedule)
    times = make_grid(grid, problem.schedule, steps, problem.t_min, problem.t_max)
    return problem, times, prior_sample(problem, n, seed=7)


@pytest.mark.parametrize("schedule", ["vp-linear", "edm"])
@pytest.mark.parametrize(("ours", "theirs"), [("edm-euler", "sample_euler"), ("edm-heun", "sample_heun"),
                                              ("dpm2", "sample_dpm_2")])
def test_kdiffusion_fixed_step(ours, theirs, schedule):
    kd = kdiffusion_sampling()
    problem, times, x_T = _setup(schedule, 12)
    model, _ = counted_model(problem)
    mine = sample(make_solver(ours), model, times, x_T)
    sched = problem.schedule
    denoiser = KDenoiser(counted_model(problem)[0])
    sigmas = sched.sigma_tilde(times)
    out = getattr(kd, theirs)(denoiser, x_T / float(sched.alpha(times[0])), sigmas, disable=True)
    out = out * float(sched.alpha(times[-1]))
    assert _rel(mine.x, out) < REL
    assert denoiser.calls == mine.nfe


@pytest.mark.parametrize("schedule", ["vp-linear", "ve"])
@pytest.mark.parametrize("order", [2, 3])
def test_kdiffusion_dpm_adaptive(schedule, order):
    """dpm-adaptive[controller=kdiff] is k-diffusion's sample_dpm_adaptive (I-controller with the
    atan limiter, accept_safety 0.81, h_init 0.05, error on x/alpha). Same accepted/rejected
    sequence, hence the same NFE; the default controller="lu" (Alg. 4: accept iff E <= 1,
    h <- 0.9 h E^(-1/k)) takes a different step sequence, so it agrees only to the tolerance."""
    kd = kdiffusion_sampling()
    problem, times, x_T = _setup(schedule, 1)
    sched = problem.schedule
    rtol, atol = 1e-3, 1e-3
    results = {}
    for controller in ("kdiff", "lu"):
        model, _ = counted_model(problem)
        spec = f"dpm-adaptive[rtol={rtol},atol={atol},order={order},controller={controller}]"
        results[controller] = sample(make_solver(spec), model, times, x_T)
    denoiser = KDenoiser(counted_model(problem)[0])
    s_min, s_max = sched.sigma_tilde(times[-1]), sched.sigma_tilde(times[0])
    out, info = kd.sample_dpm_adaptive(
        denoiser, x_T / float(sched.alpha(times[0])), s_min, s_max, order=order,
        rtol=torch.tensor(rtol, dtype=torch.float64), atol=torch.tensor(atol, dtype=torch.float64),
        disable=True, return_info=True)
    out = out * float(sched.alpha(times[-1]))
    assert _rel(results["kdiff"].x, out) < REL
    assert results["kdiff"].nfe == info["nfe"] == denoiser.calls
    assert results["lu"].nfe != info["nfe"]
    assert _rel(results["lu"].x, out) < 10 * rtol


def _ddpm_betas() -> torch.Tensor:
    return torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)


def _diffusers_singlestep(problem, order: int, steps: int, algorithm: str, x_T: torch.Tensor,
                          switch_u2: bool = False) -> tuple[torch.Tensor, list[int]]:
    """Run DPMSolverSinglestepScheduler for `steps` of order `order` (order * steps timesteps).

    Its tables are float32 (betas, alphas_cumprod, sigmas); sigmas is replaced by the float64
    sigma~ of our ddpm-discrete knots t = (k + 1) / 1000 (the same discrete table computed in
    float64), so only the solver arithmetic is compared. `switch_u2`: use solver_type "heun" for
    the order-2 sub-step (see test_dpm_solver_3_vs_diffusers)."""
    dif = diffusers()
    sched = problem.schedule
    scheduler = dif.DPMSolverSinglestepScheduler(
        trained_betas=_ddpm_betas().numpy(), solver_order=order, algorithm_type=algorithm,
        solver_type="midpoint", final_sigmas_type="sigma_min", lower_order_final=False)
    scheduler.set_timesteps(num_inference_steps=order * steps)
    ks = [int(k) for k in scheduler.timesteps] + [0]
    scheduler.sigmas = torch.exp(-sched.knots_lam[ks])
    assert scheduler.order_list == list(range(1, order + 1)) * steps
    model, _ = counted_model(problem)
    x = x_T.clone()
    for i, k in enumerate(ks[:-1]):
        if switch_u2:
            scheduler.register_to_config(solver_type="heun" if i % order == 1 else "midpoint")
        eps = model(x, (k + 1) / 1000).eps
        x = scheduler.step(eps, scheduler.timesteps[i], x).prev_sample
    return x, ks


def _ours_on_knots(problem, make, order: int, ks: list[int], x_T: torch.Tensor) -> torch.Tensor:
    """Our solver on the outer knots, each step built with the r's of diffusers' inner knots."""
    lam = problem.schedule.knots_lam
    model, _ = counted_model(problem)
    ts = torch.tensor([(k + 1) / 1000 for k in ks], dtype=torch.float64)
    ts[-1] = problem.schedule.t_min
    x = x_T.clone()
    for j in range(0, len(ks) - 1, order):
        h = float(lam[ks[j + order]] - lam[ks[j]])
        rs = [float(lam[ks[j + m]] - lam[ks[j]]) / h for m in range(1, order)]
        x = make(*rs).step(model, x, float(ts[j]), float(ts[j + order]), State(ts), ZeroNoise())
    return x


@pytest.mark.parametrize(("cls", "algorithm"), [(DPMSolver2, "dpmsolver"), (DPMSolverPP2S, "dpmsolver++")])
def test_second_order_vs_diffusers(cls, algorithm):
    """DPM-Solver-2 (noise) and DPM-Solver++(2S) (data) vs diffusers' singlestep order 2, midpoint:
    the same formulas (Lu et al. 2022 Alg. 1; 2022b Alg. 1); diffusers' intermediate point is the
    inner timestep, so r1 = (lambda_inner - lambda_s) / h per step (not exactly 1/2 on its integer
    timesteps): our step is driven with that r1."""
    problem = get_problem("mix-2d", "ddpm-discrete")
    x_T = prior_sample(problem, 32, seed=3)
    theirs, ks = _diffusers_singlestep(problem, 2, 10, algorithm, x_T)
    ours = _ours_on_knots(problem, lambda r1: cls(r1=r1), 2, ks, x_T)
    assert _rel(ours, theirs) < REL


def test_dpm_solver_3_vs_diffusers():
    """Lu et al. 2022 Alg. 2 forms its second stage u2 with the factor ((e^{r2 h} - 1)/(r2 h) - 1)
    r2/r1, i.e. diffusers' order-2 update of type "heun", and its final step with the factor
    ((e^h - 1)/h - 1)/r2, diffusers' order-3 update of type "midpoint". diffusers' order-3 singlestep
    uses one solver_type for both: with "midpoint" u2 gets (e^{r2 h} - 1) r2/(2 r1) instead, which
    differs at O(h^3) in u2 and O(h^4) per step. So: switching the type per sub-step reproduces
    ours to round-off; plain "midpoint" differs by an amount that falls at third order in steps."""
    problem = get_problem("mix-2d", "ddpm-discrete")
    x_T = prior_sample(problem, 32, seed=3)
    gaps = []
    for steps in (8, 16, 32):
        switched, ks = _diffusers_singlestep(problem, 3, steps, "dpmsolver", x_T, switch_u2=True)
        ours = _ours_on_knots(problem, lambda r1, r2: DPMSolver3(r1=r1, r2=r2), 3, ks, x_T)
        assert _rel(ours, switched) < REL
        plain, _ = _diffusers_singlestep(problem, 3, steps, "dpmsolver", x_T)
        gaps.append(_rel(ours, plain))
    assert gaps[0] > 1e-6
    assert all(4 < a / b < 16 for a, b in zip(gaps, gaps[1:], strict=False)), gaps


def test_edm_heun_vs_diffusers_heun():
    """HeunDiscreteScheduler is Karras Alg. 1 (Heun in sigma~ on x~ = x / alpha, eps model), i.e.
    `edm-heun`, not `heun` in t (those coincide only when alpha = 1, sigma = t; see the identity
    test). Its sigma list ends with 0 (a final Euler step); we compare all steps before that one.
    Its float32 sigmas are replaced by our float64 sigma~ grid in its interleaved layout."""
    dif = diffusers()
    problem, times, x_T = _setup("vp-linear", 10)
    sched = problem.schedule
    model, _ = counted_model(problem)
    ours = sample(make_solver("edm-heun"), model, times, x_T).x
    scheduler = dif.HeunDiscreteScheduler(trained_betas=_ddpm_betas().numpy())
    scheduler.set_timesteps(len(times))
    pts = sched.sigma_tilde(times)
    scheduler.sigmas = torch.cat([pts[:1], pts[1:].repeat_interleave(2), pts.new_zeros(1)])
    scheduler.timesteps = torch.arange(2 * len(times) - 1, 0, -1, dtype=torch.float64)
    scheduler.set_begin_index(0)
    x = x_T / float(sched.alpha(times[0]))
    model, _ = counted_model(problem)
    for j in range(2 * (len(times) - 1)):
        t = float(sched.t_of_sigma_tilde(scheduler.sigmas[j]))
        eps = model(float(sched.alpha(t)) * x, t).eps
        x = scheduler.step(eps, scheduler.timesteps[j], x).prev_sample
    assert _rel(ours, x * float(sched.alpha(times[-1]))) < REL
