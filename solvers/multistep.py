"""Multistep exponential integrators in log-SNR with data prediction: DPM-Solver++(2M)/(3M) and
UniPC (UniP-p predictor + UniC-p corrector).

All take one model call per step and keep (lambda, x0) pairs in `State.history`, newest last;
the first steps use lower orders (warm-up), as in the reference implementations. A warm-up step
of order q' has local error O(h^(q'+1)) and, being taken a fixed number of times, contributes
O(h^(q'+1)) to the global error, so the asymptotic global order is min(q, q'_min + 1) (Hairer,
Norsett & Wanner I, Sec. III.4: the starting values must be accurate to O(h^q)). Where that is below
the nominal order it is declared as `order_cap` (unipc-3: 3; dpmpp-3m[taylor_d2=true]: 2). The
warm-up sits at high noise where its error constants are tiny, so the measured slopes follow the
nominal order over practical ranges (unipc-3: 4.0 on Karras grids up to 1024 steps); the declared
numbers are the theorems, not those slopes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from solvers import citations as cite
from solvers.base import OrderException, Solver, State, coeffs
from solvers.model import Model
from solvers.noise import NoiseSource
from solvers.registry import register


def _phi2(h: float) -> float:
    """phi_2-type weight 1 + expm1(-h) / h of the data-prediction exponential integrator."""
    return 1.0 + math.expm1(-h) / h


@register("dpmpp-2m")
@dataclass
class DPMSolverPP2M(Solver):
    """DPM-Solver++(2M) (Lu et al. 2022b, Alg. 2): x' = (s'/s) x - a' expm1(-h) D with
    D = (1 + 1/(2r)) x0_i - 1/(2r) x0_{i-1}, r = h_{i-1}/h, in lambda = log(alpha/sigma).
    Global order 2 (Lu et al. 2022b, Sec. 4.2 with its convergence proof); the first step is DDIM
    (local error O(h^2)), so the warm-up cap min(2, 1 + 1) = 2 does not lower it.
    1 NFE per step; identical to k-diffusion `sample_dpmpp_2m` and diffusers midpoint 2M."""

    order = 2
    order_source = (f"Lu et al. 2022b (DPM-Solver++) Sec. 4.2, Alg. 2 (second order, convergence proof in "
                    f"its appendix); {cite.EXP_ADAMS} (k = 2)")
    order_note = "Warm-up: the DDIM first step (local O(h^2)) caps at 2 = order, so no cap."
    tags = frozenset({"multistep", "exponential"})
    time_variable = "lambda"
    reference = "Lu et al. 2022b (DPM-Solver++) Algorithm 2"

    def step(self, model: Model, x: Tensor, t: float, t_next: float, state: State,
             noise: NoiseSource) -> Tensor:
        _, s, lam = coeffs(model.schedule, t)
        a1, s1, lam1 = coeffs(model.schedule, t_next)
        x0 = model(x, t).x0
        h = lam1 - lam
        d = x0
        if state.history:
            lam_prev, x0_prev = state.history[-1]
            r = (lam - lam_prev) / h
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev
        state.remember((lam, x0), 1)
        return (s1 / s) * x - a1 * math.expm1(-h) * d


@register("dpmpp-3m")
@dataclass
class DPMSolverPP3M(Solver):
    """DPM-Solver++(3M) (Lu et al. 2022b, App. B multistep; the form of the official code, diffusers
    `multistep_dpm_solver_third_order_update` and k-diffusion `sample_dpmpp_3m_sde` at eta = 0):
    x' = (s'/s) x - a' expm1(-h) x0 + a' (phi2 D1 - phi3 D2), phi2 = 1 + expm1(-h)/h,
    phi3 = phi2/h - 1/2, D1 ~ h x0', D2 = (D1_0 - D1_1)/(r0 + r1) ~ h^2 x0''/2 from the last three x0.
    Warm-up: step 1 is DDIM, step 2 the phi2 (k-diffusion / diffusers "heun") 2nd-order update.
    Order: the exact integral needs -phi3 * h^2 x0'' (int_0^h e^(u-h) u^2/2 du = -h^2 phi3), so the
    peers' D2 is half its Taylor value: local error a' h^3 x0''/12, global order 2 (declared and
    measured, also with an exact warm-up); no convergence theorem gives the shipped update order 3
    (Lu et al. 2022b prove the orders of 2S and 2M). `taylor_d2=True` doubles D2 to its Taylor value (not the
    peers' method): a 3-step exponential Adams method, order 3 (Hochbruck & Ostermann 2011), with
    `order_cap` 2 from the DDIM first step (warm-up rule); measured 3 (gauss-aniso-3d, 64-512 steps;
    3.03 on a bimodal mixture) because that step sits at high noise. 1 NFE per step."""

    taylor_d2: bool = False
    order = 2
    order_source = ("the derivation in DPMSolverPP3M's docstring and shared/REFERENCE.md 'Order caveats' "
                    "(no convergence theorem covers the shipped 3M update of the official code, diffusers "
                    "and k-diffusion; Lu et al. 2022b prove the orders of 2S and 2M): D2 is half its Taylor "
                    f"value, local error ~ alpha h^3 x0''/12, global order 2 by {cite.MULTISTEP}")
    order_note = ("D2 = (D1_0 - D1_1)/(r0 + r1) ~ h^2 x0''/2 while the exact integral needs -h^2 phi_3 x0'': "
                  "local error ~ alpha h^3 x0''/12, order 2; the DDIM / 2nd-order warm-up (local O(h^2), "
                  "O(h^3)) caps at 2 = order.")
    tags = frozenset({"multistep", "exponential"})
    time_variable = "lambda"
    reference = "Lu et al. 2022b (DPM-Solver++) multistep 3rd order, as in diffusers / k-diffusion"

    def __post_init__(self) -> None:
        if self.taylor_d2:
            self.order, self.order_cap = 3, 2
            self.order_exceptions = (OrderException((), 3, cite.WARM_UP_TINY),)
            self.order_source = (f"{cite.EXP_ADAMS} (k = 3): with the doubled D2 the update integrates the "
                                 f"quadratic interpolant of x0 exactly; {cite.MULTISTEP}")
            self.order_note = ("Cap 2: the first step is DDIM (local O(h^2)), taken once; "
                               f"{cite.WARM_UP}. It sits at high noise where its constant is tiny, so "
                               "slopes of 3 are measured up to 512 steps.")

    def step(self, model: Model, x: Tensor, t: float, t_next: float, state: State,
             noise: NoiseSource) -> Tensor:
        _, s, lam = coeffs(model.schedule, t)
        a1, s1, lam1 = coeffs(model.schedule, t_next)
        x0 = model(x, t).x0
        h = lam1 - lam
        out = (s1 / s) * x - a1 * math.expm1(-h) * x0
        hist = state.history
        if len(hist) == 2:
            (lam_2, x0_2), (lam_1, x0_1) = hist
            r0, r1 = (lam - lam_1) / h, (lam_1 - lam_2) / h
            d1_0, d1_1 = (x0 - x0_1) / r0, (x0_1 - x0_2) / r1
            d1 = d1_0 + (d1_0 - d1_1) * (r0 / (r0 + r1))
            d2 = (d1_0 - d1_1) / (r0 + r1) * (2.0 if self.taylor_d2 else 1.0)
            phi2 = _phi2(h)
            out = out + a1 * (phi2 * d1 - (phi2 / h - 0.5) * d2)
        elif len(hist) == 1:
            lam_1, x0_1 = hist[0]
            out = out + a1 * _phi2(h) * (x0 - x0_1) * (h / (lam - lam_1))
        state.remember((lam, x0), 2)
        return out


def _unipc_rhos(rks: list[float], hh: float, b_h: float, n: int) -> Tensor:
    """Solve R rho = b of UniPC (Zhao et al. 2023, Alg. 1/2 B(h) form), R_ij = rk_j^i (i < n),
    b_i = i! phi_{i+1}(hh) hh / B(h); `rks` are the node ratios with the last one 1 when n = len."""
    factorial, h_phi_k, b = 1, math.expm1(hh) / hh - 1, []
    for i in range(1, n + 1):
        b.append(h_phi_k * factorial / b_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    r = torch.tensor(rks[:n], dtype=torch.float64)
    mat = torch.stack([r ** i for i in range(n)])
    return torch.linalg.solve(mat, torch.tensor(b, dtype=torch.float64))


@dataclass
class _UniPC(Solver):
    """UniPC-p with data prediction (Zhao et al. 2023, Alg. 2 / eqs. 8-9 in B(h) form): UniP-p
    predicts x_{i+1} from the last p x0 values; at the next step the model call at the
    predicted point feeds UniC-p, which corrects x_{i+1} before it is used (1 NFE per step).
    variant bh1: B(h) = -h, bh2: B(h) = expm1(-h). Order p+1 with the corrector (Zhao et al. 2023:
    UniC-p raises the order of accuracy of UniP-p by one, for either B(h)); the final step is not
    corrected (local error O(h^(p+1)), order unchanged). Warm-up: step i uses order min(p, i+1), so
    the first step is UniP-1 + UniC-1 with local error O(h^3): by the warm-up rule (Hairer, Norsett
    & Wanner I, Sec. III.4) the asymptotic order is min(p + 1, 3), i.e. `order_cap` 3 for UniPC-3 (no
    cap for p <= 2). At high noise its constant is so small that order 4 is measured up to 1024
    steps on Karras grids. UniP-2 uses rho = 1/2 as the official code."""

    p: ClassVar[int] = 2
    variant: str = "bh2"
    order_source = (f"Zhao et al. 2023 (UniPC) Sec. 3 (UniC-p after UniP-p has order of accuracy p + 1; "
                    f"convergence of order p + 1 proven there for either B(h)); {cite.MULTISTEP}")
    tags = frozenset({"multistep", "exponential"})
    time_variable = "lambda"
    reference = "Zhao et al. 2023 (UniPC) Alg. 2, B(h) variants bh1/bh2"

    def __post_init__(self) -> None:
        if self.variant not in ("bh1", "bh2"):
            raise ValueError(f"variant must be bh1 or bh2, got {self.variant!r}")

    def _b_h(self, hh: float) -> float:
        return hh if self.variant == "bh1" else math.expm1(hh)

    def _update(self, x: Tensor, hist: list, lam_t: float, a_t: float, s_t: float, s_0: float,
                order: int, model_t: Tensor | None) -> Tensor:
        """UniP-order (model_t None) or UniC-order update from the point of hist[-1]."""
        lam_0, m0 = hist[-1]
        h = lam_t - lam_0
        hh = -h
        b_h = self._b_h(hh)
        rks = [(hist[-(k + 1)][0] - lam_0) / h for k in range(1, order)]
        d1s = [(hist[-(k + 1)][1] - m0) / rk for k, rk in zip(range(1, order), rks, strict=True)]
        out = (s_t / s_0) * x - a_t * math.expm1(hh) * m0
        if model_t is None:  # predictor UniP-order
            if order == 1:
                return out
            rhos = [0.5] if order == 2 else _unipc_rhos(rks, hh, b_h, order - 1).tolist()
            res = sum(r * d for r, d in zip(rhos, d1s, strict=True))
            return out - a_t * b_h * res
        rhos = [0.5] if order == 1 else _unipc_rhos(rks + [1.0], hh, b_h, order).tolist()
        res = sum((r * d for r, d in zip(rhos[:-1], d1s, strict=True)), torch.zeros_like(x))
        return out - a_t * b_h * (res + rhos[-1] * (model_t - m0))

    def step(self, model: Model, x: Tensor, t: float, t_next: float, state: State,
             noise: NoiseSource) -> Tensor:
        a, s, lam = coeffs(model.schedule, t)
        a1, s1, lam1 = coeffs(model.schedule, t_next)
        x0 = model(x, t).x0
        if state.history:  # UniC on the point just predicted, with this step's model call
            last_x, last_order, s_prev = state.extra["last"]
            x = self._update(last_x, state.history, lam, a, s, s_prev, last_order, x0)
        state.remember((lam, x0), self.p)
        order = min(self.p, len(state.history))
        state.extra["last"] = (x, order, s)
        return self._update(x, state.history, lam1, a1, s1, s, order, None)


@register("unipc-1")
@dataclass
class UniPC1(_UniPC):
    __doc__ = _UniPC.__doc__
    p = 1
    order = 2


@register("unipc-2")
@dataclass
class UniPC2(_UniPC):
    __doc__ = _UniPC.__doc__
    p = 2
    order = 3
    order_note = "Warm-up: UniP-1 + UniC-1 first step (local O(h^3)) caps at 3 = order, so no cap."


@register("unipc-3")
@dataclass
class UniPC3(_UniPC):
    __doc__ = _UniPC.__doc__
    p = 3
    order = 4
    order_cap = 3
    order_exceptions = (OrderException((), 4, cite.WARM_UP_TINY),)
    order_note = ("Cap 3: the first step is UniP-1 + UniC-1 (local error O(h^3)), taken once; "
                  f"{cite.WARM_UP}. At high noise its constant is tiny: slopes of 4 are measured on Karras "
                  "grids up to 1024 steps (3.5 over 32-256 log-SNR steps).")
