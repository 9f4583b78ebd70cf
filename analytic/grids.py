"""Time grids: steps + 1 strictly decreasing times from t_max to t_min (float64, both end points
exact), named by a spec `name[k=v,...]` or `file:PATH` (a grid file, analytic/grid_files.py).

Grids are pure functions of the schedule, the step count and the interval; the literature's
data-aware grids (`ays-gauss`, `tangent`) also read the target's covariance, and `dmn` runs a
model-free optimisation (analytic/grid_dmn.py). Grids that need a model (GITS) live in bench/.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from analytic.grid_dmn import dmn
from analytic.grid_files import FILE_PREFIX, GridError, file_times, read_grid_file
from analytic.schedules import Schedule

Grid = Callable[..., Tensor]
__all__ = ["FILE_PREFIX", "GRIDS", "GridError", "check_grid", "make_grid", "parse_grid_spec"]


def _ramp(steps: int) -> Tensor:
    return torch.linspace(0, 1, steps + 1, dtype=torch.float64)


def _pin(times: Tensor, t_min: float, t_max: float) -> Tensor:
    times[0], times[-1] = t_max, t_min
    return times


def _sigma_range(schedule: Schedule, t_min: float, t_max: float) -> tuple[float, float]:
    return float(schedule.sigma_tilde(t_max)), float(schedule.sigma_tilde(t_min))


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
    s_max, s_min = (s ** (1 / rho) for s in _sigma_range(schedule, t_min, t_max))
    sig = (s_max + _ramp(steps) * (s_min - s_max)) ** rho
    return _pin(schedule.t_of_sigma_tilde(sig), t_min, t_max)


def data_scale(target) -> float:
    """c with c^2 = tr(Cov)/d: the per-coordinate standard deviation of the data."""
    return math.sqrt(float(torch.diagonal(target.cov()).mean()))


def ays_gauss(schedule: Schedule, steps: int, t_min: float, t_max: float, c: float | None = None,
              target=None) -> Tensor:
    """Align Your Steps, Theorem 3.1 (Sabour, Fidler & Kreis 2024, arXiv 2404.14507): for data
    N(0, c^2 I) and Euler/DDIM the optimal grid in sigma~ is
    sigma_i = c tan((1 - i/N) arctan(sigma_max / c) + (i/N) arctan(sigma_min / c)).
    c defaults to the target's data scale (`data_scale`)."""
    if c is None:
        if target is None:
            raise GridError("ays-gauss needs c (ays-gauss[c=0.5]) or a problem to take it from")
        c = data_scale(target)
    if not c > 0:
        raise GridError(f"ays-gauss: c must be > 0, got {c}")
    s_max, s_min = _sigma_range(schedule, t_min, t_max)
    a, b = math.atan(s_max / c), math.atan(s_min / c)
    sig = c * torch.tan(a + _ramp(steps) * (b - a))
    return _pin(schedule.t_of_sigma_tilde(sig), t_min, t_max)


def _angle(sig: Tensor, roots: Tensor) -> Tensor:
    """mean_k arctan(sigma / sqrt(lambda_k)) for each sigma (zero-variance directions excluded)."""
    return torch.atan(sig[:, None] / roots[None, :]).mean(dim=1)


def tangent(schedule: Schedule, steps: int, t_min: float, t_max: float, target=None) -> Tensor:
    """Covariance-aware tangent law after Sun, Poor & Zhang (arXiv 2601.13602): equidistribute
    phi(sigma~) = mean_k arctan(sigma~ / sqrt(lambda_k)) over the target covariance's non-zero
    eigenvalues lambda_k. For isotropic data (all lambda_k = c^2) it is AYS Theorem 3.1 exactly.
    (Their text was not available offline; this averaged-angle form is our construction.)"""
    if target is None:
        raise GridError("tangent needs a problem (it reads the target covariance's eigenvalues)")
    evals = torch.linalg.eigvalsh(target.cov())
    roots = evals[evals > 1e-12 * float(evals.max().clamp_min(1e-300))].sqrt()
    if roots.numel() == 0:
        raise GridError("tangent: the target covariance is zero")
    s_max, s_min = _sigma_range(schedule, t_min, t_max)
    lo, hi = (torch.full((steps + 1,), math.log(s), dtype=torch.float64) for s in (s_min, s_max))
    ends = _angle(torch.tensor([s_max, s_min], dtype=torch.float64), roots)
    want = ends[0] + _ramp(steps) * (ends[1] - ends[0])
    for _ in range(200):  # bisection in log sigma~: phi is increasing in sigma~
        mid = 0.5 * (lo + hi)
        above = _angle(mid.exp(), roots) > want
        hi, lo = torch.where(above, mid, hi), torch.where(above, lo, mid)
    return _pin(schedule.t_of_sigma_tilde((0.5 * (lo + hi)).exp()), t_min, t_max)


@dataclass(frozen=True)
class GridKind:
    fn: Grid
    description: str
    needs_target: bool = False


GRIDS: dict[str, GridKind] = {
    "uniform": GridKind(uniform_t, "uniform in t"),
    "logsnr": GridKind(uniform_logsnr, "uniform in log-SNR"),
    "quadratic": GridKind(quadratic, "quadratic in t (DDIM)"),
    "poly": GridKind(polynomial, "DEIS time-polynomial, parameter p (default 2)"),
    "karras": GridKind(karras, "Karras rho schedule in sigma/alpha, parameter rho (default 7)"),
    "ays-gauss": GridKind(ays_gauss, "AYS Thm 3.1 tangent law for N(0, c^2 I); c default: the data scale",
                          needs_target=True),
    "tangent": GridKind(tangent, "covariance-aware tangent law of the target's eigenvalues (Sun et al.)",
                        needs_target=True),
    "dmn": GridKind(dmn, "DM-NonUniform: model-free optimised log-SNR grid (Xue et al. 2024)"),
}
"""Named grids. Also: `file:PATH` (a grid file) and, in bench/, `gits` (needs the problem's model)."""

_SPEC = re.compile(r"^([A-Za-z0-9_.-]+)(?:\[(.*)\])?$")


def parse_grid_spec(spec: str) -> tuple[str, dict[str, float]]:
    """'karras[rho=5]' -> ('karras', {'rho': 5.0}); 'file:PATH' -> ('file', {}) (path kept in spec)."""
    if spec.startswith(FILE_PREFIX):
        return "file", {}
    m = _SPEC.match(spec.strip())
    if m is None:
        raise GridError(f"cannot parse grid {spec!r}; expected name or name[k=v,...]")
    params: dict[str, float] = {}
    for item in filter(None, (m.group(2) or "").split(",")):
        key, eq, value = item.partition("=")
        try:
            params[key.strip()] = float(value)
        except ValueError:
            raise GridError(f"grid {spec!r}: parameter {item!r} is not key=number") from None
        if not eq:
            raise GridError(f"grid {spec!r}: parameter {item!r} is not key=number")
    return m.group(1), params


def check_grid(spec: str, schedule_name: str | None = None) -> None:
    """Raise GridError for a spec that can never give times (unknown name, unreadable file, a grid
    file made for another schedule than `schedule_name`, when given)."""
    name, _ = parse_grid_spec(spec)
    if name == "file":
        read_grid_file(spec[len(FILE_PREFIX):], schedule_name)
    elif name not in GRIDS and name != "gits":
        raise GridError(f"unknown grid {name!r}; valid: {', '.join(GRIDS)}, gits, file:PATH")


def make_grid(spec: str, schedule: Schedule, steps: int, t_min: float, t_max: float, *, target=None,
              **params: float) -> Tensor:
    """The grid `spec` (name, name[k=v], or file:PATH) with `steps` steps on [t_min, t_max]."""
    if steps < 1:
        raise GridError(f"steps must be >= 1, got {steps}")
    name, parsed = parse_grid_spec(spec)
    params = {**parsed, **params}
    if name == "file":
        times = file_times(spec[len(FILE_PREFIX):], schedule.name, steps, t_min, t_max)
    elif name not in GRIDS:
        extra = " (gits needs a model: it is resolved in bench.measure.grids)" if name == "gits" else ""
        raise GridError(f"unknown grid {name!r}; valid: {', '.join(GRIDS)}, file:PATH{extra}")
    else:
        kind = GRIDS[name]
        try:
            times = (kind.fn(schedule, steps, t_min, t_max, target=target, **params) if kind.needs_target
                     else kind.fn(schedule, steps, t_min, t_max, **params))
        except TypeError as exc:
            raise GridError(f"grid {spec!r}: {exc}") from None
    if not bool((times[1:] < times[:-1]).all()):
        raise GridError(f"grid {spec!r} is not strictly decreasing on [{t_min}, {t_max}] at {steps} steps")
    return times
