"""Time grids: pure functions (schedule, steps, t_min, t_max, **params) -> steps + 1 decreasing
times from t_max to t_min (float64), with both end points exact."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from analytic.schedules import Schedule

Grid = Callable[..., Tensor]


def _ramp(steps: int) -> Tensor:
    return torch.linspace(0, 1, steps + 1, dtype=torch.float64)


def _pin(times: Tensor, t_min: float, t_max: float) -> Tensor:
    times[0], times[-1] = t_max, t_min
    return times


def uniform_t(schedule: Schedule, steps: int, t_min: float, t_max: float) -> Tensor:
    """Uniform in the schedule's own time t."""
    return _pin(t_max + _ramp(steps) * (t_min - t_max), t_min, t_max)


def uniform_logsnr(schedule: Schedule, steps: int, t_min: float, t_max: float) -> Tensor:
    """Uniform in log-SNR lambda (DPM-Solver's 'logSNR' skip type, Lu et al. 2022 §3.3)."""
    lo, hi = schedule.log_snr(t_max), schedule.log_snr(t_min)
    return _pin(schedule.t_of_log_snr(lo + _ramp(steps) * (hi - lo)), t_min, t_max)


def quadratic(schedule: Schedule, steps: int, t_min: float, t_max: float) -> Tensor:
    """Quadratic in t, dense near t_min (DDIM's 'quadratic' selection, Song et al. 2021a §D.2)."""
    return _pin(t_min + (t_max - t_min) * (1 - _ramp(steps)) ** 2, t_min, t_max)


def polynomial(schedule: Schedule, steps: int, t_min: float, t_max: float, p: float = 2.0) -> Tensor:
    """t_i = (t_max^(1/p) + i/N (t_min^(1/p) - t_max^(1/p)))^p: DEIS's time-polynomial grid
    (Zhang & Chen 2022, 'time-quadratic' for p = 2, time-uniform for p = 1)."""
    a, b = t_max ** (1 / p), t_min ** (1 / p)
    return _pin((a + _ramp(steps) * (b - a)) ** p, t_min, t_max)


def karras(schedule: Schedule, steps: int, t_min: float, t_max: float, rho: float = 7.0) -> Tensor:
    """Karras et al. 2022 eq. 5 in sigma~ = sigma / alpha of the scaled variable, rho = 7."""
    s_max = float(schedule.sigma_tilde(t_max)) ** (1 / rho)
    s_min = float(schedule.sigma_tilde(t_min)) ** (1 / rho)
    sig = (s_max + _ramp(steps) * (s_min - s_max)) ** rho
    return _pin(schedule.t_of_sigma_tilde(sig), t_min, t_max)


GRIDS: dict[str, tuple[Grid, str]] = {
    "uniform": (uniform_t, "uniform in t"),
    "logsnr": (uniform_logsnr, "uniform in log-SNR"),
    "quadratic": (quadratic, "quadratic in t (DDIM)"),
    "poly": (polynomial, "DEIS time-polynomial, parameter p (default 2)"),
    "karras": (karras, "Karras rho schedule in sigma/alpha, parameter rho (default 7)"),
}


def make_grid(name: str, schedule: Schedule, steps: int, t_min: float, t_max: float,
              **params: float) -> Tensor:
    if name not in GRIDS:
        raise KeyError(f"unknown grid {name!r}; valid: {', '.join(GRIDS)}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    times = GRIDS[name][0](schedule, steps, t_min, t_max, **params)
    if not bool((times[1:] < times[:-1]).all()):
        raise ValueError(f"grid {name!r} is not strictly decreasing on [{t_min}, {t_max}]")
    return times
