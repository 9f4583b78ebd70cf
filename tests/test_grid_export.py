"""A harness grid exported to diffusers (timesteps, sigmas, flow sigmas) and k-diffusion (sigmas): the
libraries must call the model at exactly the exported points."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from analytic import get_problem, get_schedule, make_grid
from solvers.external.grid_export import (
    KNOTS,
    USAGE,
    diffusers_flow_sigmas,
    diffusers_sigmas,
    diffusers_timesteps,
    export_payload,
    kdiffusion_sigmas,
    knot_time,
    time_knot,
    trained_betas,
)
from tests import peers

PROBLEM = get_problem("gauss-aniso-3d")
SCHED, T_MIN, T_MAX = PROBLEM.schedule, PROBLEM.t_min, PROBLEM.t_max
TIMES = make_grid("logsnr", SCHED, 10, T_MIN, T_MAX)


def _x(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(4, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64).to(dtype)


def _drive(scheduler, x: torch.Tensor) -> list[float]:
    """The diffusers denoising loop with eps = 0.1 x_in; the timesteps the model was called with."""
    calls = []
    extra = {"generator": torch.Generator().manual_seed(1)} if "DDPM" in type(scheduler).__name__ else {}
    x = x * float(scheduler.init_noise_sigma)
    for k in scheduler.timesteps:
        x_in = scheduler.scale_model_input(x, k)
        calls.append(float(k))
        x = scheduler.step(0.1 * x_in, k, x, **extra).prev_sample
    assert torch.isfinite(x).all()
    return calls


def _table(scheduler) -> torch.Tensor:
    """The scheduler's float32 sigma per knot, sqrt((1 - alpha_bar_k) / alpha_bar_k)."""
    return ((1 - scheduler.alphas_cumprod) / scheduler.alphas_cumprod) ** 0.5


def _dedupe(values: list[float]) -> list[float]:
    return [v for i, v in enumerate(values) if i == 0 or v != values[i - 1]]


def test_trained_betas_rebuild_alpha_on_the_knots():
    betas = trained_betas(SCHED, T_MIN, T_MAX)
    assert betas.dtype == torch.float64 and betas.shape == (KNOTS,)
    knots = torch.tensor([knot_time(k, T_MIN, T_MAX) for k in range(KNOTS)], dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0)
    assert torch.allclose(abar, SCHED.alpha(knots) ** 2, rtol=1e-12, atol=0)
    assert knot_time(0, T_MIN, T_MAX) == T_MIN and knot_time(KNOTS - 1, T_MIN, T_MAX) == T_MAX
    assert time_knot(knot_time(417.25, T_MIN, T_MAX), T_MIN, T_MAX) == pytest.approx(417.25, abs=1e-9)


def test_timesteps_round_to_the_nearest_knot_and_report_the_error():
    steps, error = diffusers_timesteps(SCHED, TIMES)
    assert steps[0] == KNOTS - 1 and steps[-1] == 0 and all(isinstance(k, int) for k in steps)
    assert all(a > b for a, b in zip(steps, steps[1:], strict=False))
    errors = [abs(float(t) - knot_time(k, T_MIN, T_MAX)) for t, k in zip(TIMES, steps, strict=True)]
    spacing = (T_MAX - T_MIN) / (KNOTS - 1)
    assert error == max(errors) and 1e-6 * spacing < error <= 0.5 * spacing  # the logsnr grid is off-knot
    for t, k in zip(TIMES.tolist(), steps, strict=True):  # nearest: no neighbouring knot is closer
        neighbours = (abs(t - knot_time(j, T_MIN, T_MAX)) for j in (k - 1, k + 1))
        assert abs(t - knot_time(k, T_MIN, T_MAX)) <= min(neighbours)


def test_too_dense_or_off_interval_grids_and_non_vp_schedules_are_refused():
    dense = make_grid("logsnr", SCHED, 2000, T_MIN, T_MAX)
    with pytest.raises(ValueError, match="too dense for 1000 knots"):
        diffusers_timesteps(SCHED, dense)
    with pytest.raises(ValueError, match="outside the knot interval"):
        diffusers_timesteps(SCHED, TIMES, T_MIN, 0.5)
    edm = get_schedule("edm")
    grid = make_grid("karras", edm, 8, edm.t_min, edm.t_max)
    for export in (lambda: diffusers_timesteps(edm, grid), lambda: diffusers_sigmas(edm, grid)):
        with pytest.raises(ValueError, match="not variance preserving"):
            export()
    assert torch.allclose(kdiffusion_sigmas(edm, grid)[:-1], grid, rtol=1e-12)  # EDM: sigma~ = t


@pytest.mark.parametrize("name", ["EulerDiscreteScheduler", "DPMSolverMultistepScheduler",
                                  "HeunDiscreteScheduler", "DDPMScheduler"])
def test_diffusers_calls_the_model_at_the_exported_timesteps(name):
    lib = peers.diffusers()
    steps, _ = diffusers_timesteps(SCHED, TIMES)
    scheduler = getattr(lib, name)(trained_betas=trained_betas(SCHED, T_MIN, T_MAX).tolist())
    scheduler.set_timesteps(timesteps=steps)
    calls = _drive(scheduler, _x())
    if name == "HeunDiscreteScheduler":  # its second-order correction re-evaluates at the next timestep
        assert calls == [steps[0]] + [k for k in steps[1:] for _ in range(2)]
    else:
        assert calls == steps
    if name == "DDPMScheduler":
        return
    sigmas = _dedupe(scheduler.sigmas.tolist())
    assert len(sigmas) == len(steps) + 1 and sigmas[-1] == 0.0  # the library appends a final sigma 0
    table = _table(scheduler)
    assert sigmas[:-1] == table[steps].tolist()  # the knot sigmas of the exported timesteps, no shift
    exact = SCHED.sigma_tilde(torch.tensor([knot_time(k, T_MIN, T_MAX) for k in steps], dtype=torch.float64))
    assert torch.allclose(torch.tensor(sigmas[:-1], dtype=torch.float64), exact, rtol=1e-3)  # float32 table


def test_euler_takes_the_exported_sigmas_as_given():
    lib = peers.diffusers()
    sigmas = diffusers_sigmas(SCHED, TIMES)
    assert sigmas == SCHED.sigma_tilde(TIMES).tolist()
    euler = lib.EulerDiscreteScheduler(trained_betas=trained_betas(SCHED, T_MIN, T_MAX).tolist())
    euler.set_timesteps(sigmas=sigmas)
    assert len(euler.sigmas) == len(sigmas)  # nothing appended: the run ends at sigma~(t_min)
    assert torch.allclose(euler.sigmas.double(), torch.tensor(sigmas, dtype=torch.float64), rtol=1e-6, atol=0)
    calls = _drive(euler, _x())
    assert calls == euler.timesteps.tolist() and len(calls) == len(TIMES) - 1
    spacing = (T_MAX - T_MIN) / (KNOTS - 1)
    for k, t in zip(calls, TIMES[:-1].tolist(), strict=True):  # fractional timesteps at the grid's times
        assert abs(knot_time(k, T_MIN, T_MAX) - t) < 0.01 * spacing
    euler.set_timesteps(sigmas=[*sigmas, 0.0])
    assert len(_drive(euler, _x())) == len(TIMES) and float(euler.sigmas[-1]) == 0.0


def test_euler_on_the_exported_sigmas_is_our_ddim_on_the_grid():
    lib = peers.diffusers()
    from bench.measure.models import analytic_model
    from solvers import make_solver

    x = PROBLEM.sample_marginal(T_MAX, 8, torch.Generator().manual_seed(0))
    ours = make_solver("ddim").run(analytic_model(PROBLEM), TIMES, x)
    euler = lib.EulerDiscreteScheduler(trained_betas=trained_betas(SCHED, T_MIN, T_MAX).tolist())
    euler.set_timesteps(sigmas=diffusers_sigmas(SCHED, TIMES))
    xt = (x / float(SCHED.alpha(T_MAX))).float()
    for i, k in enumerate(euler.timesteps):
        t = float(TIMES[i])
        eps = PROBLEM.eps(euler.scale_model_input(xt, k).double(), t)  # x~ / sqrt(sigma~^2 + 1) = x
        xt = euler.step(eps.float(), k, xt).prev_sample
    out = xt.double() * float(SCHED.alpha(T_MIN))
    assert float((out - ours.x).norm() / ours.x.norm()) < 1e-5  # float32 in the library


def test_unipc_takes_flow_sigmas_only():
    lib = peers.diffusers()
    betas = trained_betas(SCHED, T_MIN, T_MAX).tolist()
    flow = diffusers_flow_sigmas(SCHED, TIMES)
    with pytest.raises(ValueError, match="use_flow_sigmas"):
        lib.UniPCMultistepScheduler(trained_betas=betas).set_timesteps(sigmas=flow)
    unipc = lib.UniPCMultistepScheduler(trained_betas=betas, use_flow_sigmas=True)
    unipc.set_timesteps(sigmas=np.array(flow))  # a list fails inside (flow_shift * sigmas)
    assert len(unipc.sigmas) == len(flow) + 1 and float(unipc.sigmas[-1]) == 0.0  # appended
    exported = torch.tensor(flow, dtype=torch.float64)
    assert torch.allclose(unipc.sigmas[:-1].double(), exported, rtol=1e-6, atol=0)
    calls = _drive(unipc, _x())
    assert calls == [float(int(1000 * s)) for s in flow]  # the model's timestep: 1000 s truncated


def _recorder(seen: list[float]):
    def denoiser(x: torch.Tensor, sigma: torch.Tensor, **_) -> torch.Tensor:
        assert sigma.dtype == torch.float64
        seen.append(float(sigma.reshape(-1)[0]))
        return 0.9 * x
    return denoiser


@pytest.mark.parametrize("name", ["sample_euler", "sample_dpmpp_2m"])
def test_kdiffusion_calls_the_denoiser_at_the_exported_sigmas(name):
    sampling = peers.kdiffusion_sampling()
    sigmas = kdiffusion_sigmas(SCHED, TIMES)
    assert sigmas.dtype == torch.float64 and float(sigmas[-1]) == 0.0
    assert sigmas[:-1].tolist() == diffusers_sigmas(SCHED, TIMES)
    seen: list[float] = []
    out = getattr(sampling, name)(_recorder(seen), _x(torch.float64) * float(sigmas[0]), sigmas, disable=True)
    assert seen == sigmas[:-1].tolist() and torch.isfinite(out).all()


def test_ddpm_discrete_grid_on_knots_exports_exactly():
    lib = peers.diffusers()
    problem = get_problem("gauss-aniso-3d", "ddpm-discrete")
    sched, t_min, t_max = problem.schedule, problem.t_min, problem.t_max
    assert torch.allclose(trained_betas(sched, t_min, t_max), torch.linspace(1e-4, 0.02, KNOTS,
                                                                             dtype=torch.float64), rtol=1e-10)
    times = make_grid("uniform", sched, 9, t_min, t_max)  # 999 / 9 = 111 knots a step
    steps, error = diffusers_timesteps(sched, times)
    assert steps == list(range(999, -1, -111)) and error < 1e-15
    assert all(abs(time_knot(t, t_min, t_max) - k) < 1e-9 for t, k in zip(times.tolist(), steps, strict=True))
    euler = lib.EulerDiscreteScheduler()  # the library's own linear betas: knot k is the same step k
    euler.set_timesteps(timesteps=steps)
    assert _drive(euler, _x()) == steps
    assert torch.allclose(euler.sigmas[:-1].double(), sched.sigma_tilde(times), rtol=1e-3)


def test_payload_is_json_with_every_target():
    payload = json.loads(json.dumps(export_payload(SCHED, TIMES, T_MIN, T_MAX)))
    steps, error = diffusers_timesteps(SCHED, TIMES, T_MIN, T_MAX)
    assert payload["num_train_timesteps"] == 1000
    assert payload["diffusers_timesteps"] == steps and payload["max_timestep_rounding"] == error
    assert payload["diffusers_sigmas"] == diffusers_sigmas(SCHED, TIMES)
    assert payload["diffusers_flow_sigmas"] == diffusers_flow_sigmas(SCHED, TIMES)
    assert payload["kdiffusion_sigmas"] == kdiffusion_sigmas(SCHED, TIMES).tolist()
    assert payload["times"] == TIMES.tolist()
    assert set(payload["usage"]) == set(USAGE) == {"diffusers_timesteps", "diffusers_sigmas",
                                                   "diffusers_flow_sigmas", "kdiffusion_sigmas"}
