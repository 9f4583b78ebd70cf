"""Export a harness time grid to the peers' conventions, so a diffusers scheduler or a k-diffusion
sampler can be run on exactly the grid a benchmark cell used.

A grid is a float64 tensor of steps + 1 strictly decreasing times in the schedule's own time t.
- diffusers: the schedule becomes `trained_betas` at KNOTS = 1000 knots t_k = t_min + (t_max - t_min)
  k / 999 (alpha_bar_k = alpha(t_k)^2, as DiffusersSolver hands it over); a grid time becomes the
  nearest knot k (integer timesteps, `set_timesteps(timesteps=...)`), or its sigma~ = sigma / alpha
  (`EulerDiscreteScheduler.set_timesteps(sigmas=...)`), or its flow sigma sigma / (alpha + sigma)
  (`UniPCMultistepScheduler(use_flow_sigmas=True).set_timesteps(sigmas=...)`, the only sigmas= it takes).
  diffusers' tables are variance preserving (sigma_k^2 = 1 - alpha_bar_k), so the diffusers exports
  refuse a schedule with alpha^2 + sigma^2 != 1.
- k-diffusion: sigma~ of each time and a trailing 0, as its `get_sigmas_*` return.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from analytic.schedules import Schedule

KNOTS = 1000
"""Knots of the discrete schedule handed to diffusers (its `num_train_timesteps`)."""
VP_TOL = 1e-9


def knot_time(k: float, t_min: float, t_max: float) -> float:
    """Time t_k of (possibly fractional) diffusers timestep k, as DiffusersSolver maps it."""
    return t_min + (t_max - t_min) * float(k) / (KNOTS - 1)


def time_knot(t: float, t_min: float, t_max: float) -> float:
    """Fractional diffusers timestep of time t (inverse of `knot_time`)."""
    return (float(t) - t_min) * (KNOTS - 1) / (t_max - t_min)


def trained_betas(schedule: Schedule, t_min: float, t_max: float) -> Tensor:
    """The KNOTS float64 betas whose alpha_bar_k = prod_{i <= k} (1 - beta_i) is alpha(t_k)^2."""
    knots = t_min + (t_max - t_min) * torch.arange(KNOTS, dtype=torch.float64) / (KNOTS - 1)
    abar = schedule.alpha(knots) ** 2
    return 1 - abar / torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])


def _grid(times: Tensor) -> Tensor:
    times = torch.as_tensor(times, dtype=torch.float64).reshape(-1)
    if len(times) < 2 or not bool((times[1:] < times[:-1]).all()):
        raise ValueError("a grid is at least two strictly decreasing times")
    return times


def _require_vp(schedule: Schedule, times: Tensor) -> None:
    alpha, sigma = schedule.alpha(times), schedule.sigma(times)
    gap = float((alpha**2 + sigma**2 - 1).abs().max())
    if gap > VP_TOL:
        raise ValueError(f"schedule {schedule.name!r} is not variance preserving (|alpha^2 + sigma^2 - 1| = "
                         f"{gap:.3g} on the grid): diffusers' beta tables assume sigma^2 = 1 - alpha_bar; "
                         "use kdiffusion_sigmas or diffusers_flow_sigmas")


def diffusers_timesteps(schedule: Schedule, times: Tensor, t_min: float | None = None,
                        t_max: float | None = None) -> tuple[list[int], float]:
    """Descending integer timesteps of the grid on the KNOTS-knot schedule of [t_min, t_max] (default:
    the grid's own ends, as DiffusersSolver), each time rounded to the nearest knot; with the largest
    |t - t_k| that rounding made. ValueError when a time falls off the knots or two round alike."""
    times = _grid(times)
    _require_vp(schedule, times)
    t_min = float(times[-1]) if t_min is None else float(t_min)
    t_max = float(times[0]) if t_max is None else float(t_max)
    if not t_max > t_min:
        raise ValueError(f"knot interval needs t_min < t_max, got [{t_min}, {t_max}]")
    steps = [round(time_knot(t, t_min, t_max)) for t in times.tolist()]
    off = [(t, k) for t, k in zip(times.tolist(), steps, strict=True) if not 0 <= k < KNOTS]
    if off:
        raise ValueError(f"time {off[0][0]} lies outside the knot interval [{t_min}, {t_max}]")
    for i in range(len(steps) - 1):
        if steps[i] == steps[i + 1]:
            raise ValueError(
                f"grid too dense for {KNOTS} knots: times[{i}] = {float(times[i])} and times[{i + 1}] = "
                f"{float(times[i + 1])} both round to timestep {steps[i]} (knot spacing "
                f"{(t_max - t_min) / (KNOTS - 1):.3g}); use fewer steps or diffusers_sigmas")
    error = max(abs(t - knot_time(k, t_min, t_max)) for t, k in zip(times.tolist(), steps, strict=True))
    return steps, error


def diffusers_sigmas(schedule: Schedule, times: Tensor) -> list[float]:
    """sigma~ = sigma / alpha of each time: `EulerDiscreteScheduler.set_timesteps(sigmas=...)`, which
    appends nothing (the list's last sigma is where the run ends)."""
    times = _grid(times)
    _require_vp(schedule, times)
    return [float(s) for s in schedule.sigma_tilde(times)]


def diffusers_flow_sigmas(schedule: Schedule, times: Tensor) -> list[float]:
    """sigma / (alpha + sigma) = sigma~ / (1 + sigma~) of each time: the rectified-flow noise level of
    x / (alpha + sigma), what `UniPCMultistepScheduler(use_flow_sigmas=True).set_timesteps(sigmas=...)`
    takes (it appends the final sigma itself). Any schedule."""
    s = schedule.sigma_tilde(_grid(times))
    return [float(v) for v in s / (1 + s)]


def kdiffusion_sigmas(schedule: Schedule, times: Tensor) -> Tensor:
    """float64 sigma~ of each time followed by 0, k-diffusion's `sigmas` (any schedule)."""
    times = _grid(times)
    return torch.cat([schedule.sigma_tilde(times), torch.zeros(1, dtype=torch.float64)])


USAGE = {
    "diffusers_timesteps": (
        "Scheduler(trained_betas=trained_betas(schedule, t_min, t_max)).set_timesteps(timesteps=...) "
        "for DDPM, EulerDiscrete, HeunDiscrete, DPMSolverMultistep (also DPMSolverSinglestep, LCM, TCD): "
        "one model call per timestep (Heun: two from the second on) at time knot_time(k, t_min, t_max); "
        "after the last the library steps to its final sigma (0 by default). Its sigmas come from its "
        "float32 knot table, not from the exact grid."),
    "diffusers_sigmas": (
        "EulerDiscreteScheduler(trained_betas=trained_betas(schedule, t_min, t_max))"
        ".set_timesteps(sigmas=...): len - 1 steps ending at sigma~(t_min) (nothing appended; add 0.0 "
        "for a final denoising step); the model gets fractional timesteps k, at knot_time(k, t_min, t_max)."),
    "diffusers_flow_sigmas": (
        "UniPCMultistepScheduler(use_flow_sigmas=True).set_timesteps(sigmas=numpy.array(...)) (a list "
        "fails; its sigmas= needs flow mode, which ignores trained_betas): the sample is "
        "x / (alpha + sigma), the eps model unchanged; it appends a final 0 and calls the model with "
        "int(1000 s), truncated."),
    "kdiffusion_sigmas": (
        "sample_*(model, x / alpha(t_max), torch.tensor(sigmas)) with model(x~, sigma~) -> x0 at time "
        "t_of_sigma_tilde(sigma~); the trailing 0 is the final denoising step."),
}


def export_payload(schedule: Schedule, times: Tensor, t_min: float, t_max: float) -> dict[str, Any]:
    """The grid in every peer's convention, JSON-serialisable, with a usage line per target."""
    times = _grid(times)
    steps, error = diffusers_timesteps(schedule, times, t_min, t_max)
    return {
        "schedule": schedule.name,
        "t_min": float(t_min),
        "t_max": float(t_max),
        "times": times.tolist(),
        "num_train_timesteps": KNOTS,
        "diffusers_timesteps": steps,
        "max_timestep_rounding": error,
        "diffusers_sigmas": diffusers_sigmas(schedule, times),
        "diffusers_flow_sigmas": diffusers_flow_sigmas(schedule, times),
        "kdiffusion_sigmas": kdiffusion_sigmas(schedule, times).tolist(),
        "usage": dict(USAGE),
    }
