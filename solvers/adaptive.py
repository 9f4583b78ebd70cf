"""Adaptive step-size ODE solvers. Each grid interval [t, t_next] is integrated adaptively inside
one `step` (the harness passes a 1-step grid); the step size and the first-same-as-last stage
carry over between intervals in `state.extra`. The error norm is the RMS over all elements of
the batch (as scipy's solve_ivp and k-diffusion), so the whole batch shares one step sequence;
the step sizes depend on the state, hence `affine = False`. NFE is what the loop counts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from solvers import citations as cite
from solvers.base import Solver, State
from solvers.model import Model
from solvers.noise import NoiseSource
from solvers.registry import register

MAX_STEPS = 100_000

# Dormand & Prince 1980, RK5(4)7FM (Hairer-Norsett-Wanner I, Table II.5.2).
_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
# error weights b5 - b4 (b4 = 5179/57600, 0, 7571/16695, 393/640, -92097/339200, 187/2100, 1/40)
_E = (71 / 57600, 0.0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40)


def _rms(v: Tensor) -> float:
    return float(torch.sqrt(torch.mean(v.double() ** 2)))


def _check_tols(rtol: float, atol: float) -> None:
    if not (rtol > 0 and atol >= 0):
        raise ValueError(f"need rtol > 0 and atol >= 0, got rtol={rtol}, atol={atol}")


@register("rk45")
@dataclass
class RK45(Solver):
    """Dormand-Prince 5(4) with FSAL on the PF-ODE in t (Dormand & Prince 1980), local
    extrapolation, error sc = atol + rtol max(|x|, |x_new|), step factor 0.9 err^(-1/5) clipped to
    [0.2, 10] (no growth right after a rejection) and the initial step of Hairer-Norsett-Wanner I,
    Sec. II.4 (one extra NFE). Order 5: the propagated solution is the 5th-order one of the embedded
    pair (the 4th-order one only estimates the error); NFE is counted at run time."""

    rtol: float = 1e-3
    atol: float = 1e-3

    order = 5
    order_source = ("Dormand & Prince 1980 (RK5(4)7FM: the propagated solution has order 5, the embedded "
                    f"one order 4; HNW I Sec. II.5, Table 5.2); {cite.ONE_STEP}, p = 5")
    order_note = ("Adaptive: steps follow the tolerance, so the error scales with rtol/atol rather than as "
                  "a power of a fixed step; `order` is the embedded pair's propagated order.")
    nfe_per_step = 6
    tags = frozenset({"singlestep", "adaptive"})
    affine = False
    reference = "Dormand & Prince 1980 RK5(4)7FM; Hairer-Norsett-Wanner I Sec. II.4 step control"

    def __post_init__(self) -> None:
        _check_tols(self.rtol, self.atol)

    def nfe(self, steps: int) -> None:
        return None

    def _initial_step(self, model: Model, x: Tensor, t: float, f0: Tensor, span: float) -> float:
        """Hairer-Norsett-Wanner I, Sec. II.4 'Starting step size' with p = 4."""
        sc = self.atol + self.rtol * x.abs()
        d0, d1 = _rms(x / sc), _rms(f0 / sc)
        h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
        h0 = min(h0, span)
        direction = -1.0  # reverse time
        f1 = model(x + direction * h0 * f0, t + direction * h0).drift
        d2 = _rms((f1 - f0) / sc) / h0
        dmax = max(d1, d2)
        h1 = max(1e-6, h0 * 1e-3) if dmax <= 1e-15 else (0.01 / dmax) ** (1 / 5)
        return min(100 * h0, h1, span)

    def step(self, model: Model, x: Tensor, t: float, t_next: float, state: State,
             noise: NoiseSource) -> Tensor:
        fsal = state.extra.get("rk45_fsal")
        f0 = fsal[1] if fsal is not None and fsal[0] is x else model(x, t).drift
        h = state.extra.get("rk45_h") or self._initial_step(model, x, t, f0, t - t_next)
        rejected = False
        for _ in range(MAX_STEPS):
            if t <= t_next:
                break
            last = h >= t - t_next
            dt = -(t - t_next if last else h)
            k = [f0]
            for i in range(1, 7):
                xi = x + dt * sum(a * kj for a, kj in zip(_A[i], k, strict=True) if a != 0.0)
                k.append(model(xi, t_next if last and _C[i] == 1.0 else t + _C[i] * dt).drift)
            x_new = xi  # stage 7 is the 5th-order solution (FSAL)
            err_vec = dt * sum(e * kj for e, kj in zip(_E, k, strict=True) if e != 0.0)
            sc = self.atol + self.rtol * torch.maximum(x.abs(), x_new.abs())
            err = _rms(err_vec / sc)
            if not math.isfinite(err):
                raise FloatingPointError(f"rk45: non-finite error estimate at t={t:g}")
            factor = 0.9 * max(err, 1e-10) ** -0.2
            if err <= 1.0:
                t = t_next if last else t + dt
                x, f0 = x_new, k[6]
                h = abs(dt) * min(1.0 if rejected else 10.0, max(0.2, factor))
                rejected = False
            else:
                h = abs(dt) * max(0.2, min(1.0, factor))
                rejected = True
            if h < 1e-14 * max(abs(t), 1.0):
                raise FloatingPointError(f"rk45: step size underflow at t={t:g}")
        else:
            raise RuntimeError(f"rk45: more than {MAX_STEPS} steps")
        state.extra["rk45_h"], state.extra["rk45_fsal"] = h, (x, f0)
        return x


@register("dpm-adaptive")
@dataclass
class DPMAdaptive(Solver):
    """DPM-Solver with adaptive step size in lambda (Lu et al. 2022 Sec. 3.4 / Alg. 4): embedded
    DPM-Solver-1/2 (order 2, r1 = 1/2) or DPM-Solver-2/3 (order 3, r1 = 1/3, r2 = 2/3) sharing
    evaluations, on x~ = x / alpha (as k-diffusion `sample_dpm_adaptive`); delta = max(atol,
    rtol max(|x_low|, |x_prev_low|)), E = RMS((x_high - x_low) / delta). controller="lu" (Alg. 4):
    accept if E <= 1, h <- 0.9 h E^(-1/order); "kdiff": k-diffusion's I-controller, factor
    1 + atan(E^(-1/order) - 1), accept if factor >= 0.81. order NFE per attempt. The propagated
    solution is the higher-order one of the pair, DPM-Solver-`order` (Lu et al. 2022 Thm 3.2, r1 = 1/2
    for order 2; r1 = 1/3, r2 = 2/3 for order 3)."""

    rtol: float = 0.05
    atol: float = 0.0078
    order: int = 3
    h_init: float = 0.05
    controller: str = "lu"

    nfe_per_step = 3
    order_source = ("Lu et al. 2022 (DPM-Solver) Sec. 3.4, Alg. 4 (embedded DPM-Solver-1/2 or -2/3, the "
                    "higher-order solution propagated); its order by Lu et al. 2022 Thm 3.2")
    order_note = ("Adaptive: steps follow the tolerance, so the error scales with rtol/atol rather than as "
                  "a power of a fixed step; `order` is the propagated DPM-Solver's.")
    time_variable = "lambda"
    tags = frozenset({"singlestep", "adaptive", "exponential", "kdiff"})
    affine = False
    reference = "Lu et al. 2022 (DPM-Solver) Alg. 4; k-diffusion sample_dpm_adaptive"

    def __post_init__(self) -> None:
        _check_tols(self.rtol, self.atol)
        if self.order not in (2, 3):
            raise ValueError(f"order must be 2 or 3, got {self.order}")
        if self.controller not in ("lu", "kdiff"):
            raise ValueError(f"controller must be 'lu' or 'kdiff', got {self.controller!r}")
        if not self.h_init > 0:
            raise ValueError(f"h_init must be positive, got {self.h_init}")

    def nfe(self, steps: int) -> None:
        return None

    def _eps(self, model: Model, xs: Tensor, lam: float) -> Tensor:
        t = float(model.schedule.t_of_log_snr(lam))
        return model(float(model.schedule.alpha(t)) * xs, t).eps

    def _pair(self, model: Model, xs: Tensor, lam: float, lam_next: float) -> tuple[Tensor, Tensor]:
        """(lower, higher) order solutions at lam_next on x~ (Lu et al. 2022 Alg. 1-2, x~ form)."""
        h = lam_next - lam
        phi, s_next = math.expm1(h), math.exp(-lam_next)
        e0 = self._eps(model, xs, lam)
        x1 = xs - s_next * phi * e0
        r1 = 0.5 if self.order == 2 else 1 / 3
        u1 = xs - math.exp(-(lam + r1 * h)) * math.expm1(r1 * h) * e0
        e1 = self._eps(model, u1, lam + r1 * h)
        x2 = x1 - s_next / (2 * r1) * phi * (e1 - e0)
        if self.order == 2:
            return x1, x2
        r2 = 2 / 3
        phi2 = math.expm1(r2 * h)
        u2 = xs - math.exp(-(lam + r2 * h)) * phi2 * e0
        u2 = u2 - math.exp(-(lam + r2 * h)) * (r2 / r1) * (phi2 / (r2 * h) - 1) * (e1 - e0)
        e2 = self._eps(model, u2, lam + r2 * h)
        return x2, x1 - s_next / r2 * (phi / h - 1) * (e2 - e0)

    def step(self, model: Model, x: Tensor, t: float, t_next: float, state: State,
             noise: NoiseSource) -> Tensor:
        sched = model.schedule
        lam, lam_end = float(sched.log_snr(t)), float(sched.log_snr(t_next))
        xs = x / float(sched.alpha(t))
        h = state.extra.get("dpm_h", self.h_init)
        x_prev = state.extra.get("dpm_x_prev", xs)
        for _ in range(MAX_STEPS):
            if lam >= lam_end:
                break
            lam_new = min(lam_end, lam + h)
            low, high = self._pair(model, xs, lam, lam_new)
            delta = torch.clamp(self.rtol * torch.maximum(low.abs(), x_prev.abs()), min=self.atol)
            err = _rms((low - high) / delta)
            if not math.isfinite(err):
                raise FloatingPointError(f"dpm-adaptive: non-finite error estimate at lambda={lam:g}")
            if self.controller == "lu":
                accept = err <= 1.0
                h = 0.9 * (lam_new - lam) * (err + 1e-8) ** (-1 / self.order)
            else:
                factor = 1 + math.atan((1 / (err + 1e-8)) ** (1 / self.order) - 1)
                accept = factor >= 0.81
                h *= factor
            if accept:
                lam, xs, x_prev = lam_new, high, low
            if h < 1e-12:
                raise FloatingPointError(f"dpm-adaptive: step size underflow at lambda={lam:g}")
        else:
            raise RuntimeError(f"dpm-adaptive: more than {MAX_STEPS} steps")
        state.extra["dpm_h"], state.extra["dpm_x_prev"] = h, x_prev
        return float(sched.alpha(t_next)) * xs
