"""Singlestep exponential integrators in log-SNR lambda: DPM-Solver-1/2/3 with noise prediction
(Lu et al. 2022, NeurIPS) and DPM-Solver++(2S) with data prediction (Lu et al. 2022b).

With h = lambda_next - lambda, the PF-ODE solution is x_t = (alpha_t/alpha_s) x_s
- alpha_t int e^{-lambda} eps dlambda (eq. 3.4); the solvers Taylor-expand eps (or x0) in lambda
and take intermediate points s_k = t_lambda(lambda + r_k h).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor

from solvers import citations as cite
from solvers.base import Solver, State, coeffs
from solvers.model import Model
from solvers.noise import NoiseSource
from solvers.registry import register

_TAGS = frozenset({"singlestep", "exponential"})


def _at(model: Model, lam: float) -> tuple[float, float, float]:
    """(t, alpha, sigma) at log-SNR lam."""
    t = float(model.schedule.t_of_log_snr(lam))
    a, s, _ = coeffs(model.schedule, t)
    return t, a, s


def _check_r(*rs: float) -> None:
    if not all(0 < r < 1 for r in rs) or list(rs) != sorted(set(rs)):
        raise ValueError(f"intermediate fractions must be increasing in (0, 1), got {rs}")


@register("dpm-solver-1")
@dataclass
class DPMSolver1(Solver):
    """DPM-Solver-1 (Lu et al. 2022 eq. 3.7): x_t = (alpha_t/alpha_s) x_s - sigma_t (e^h - 1) eps,
    the first-order exponential integrator (= DDIM). Noise prediction, order 1 (Lu et al. 2022
    Thm 3.2, k = 1), 1 NFE per step."""

    order = 1
    order_source = "Lu et al. 2022 (DPM-Solver) Thm 3.2 (DPM-Solver-k is a k-th order solver), k = 1"
    time_variable = "lambda"
    tags = _TAGS
    reference = "Lu et al. 2022 (DPM-Solver) eq. 3.7"

    def step(self, model: Model, x: Tensor, t: float, t_next: float, state: State,
             noise: NoiseSource) -> Tensor:
        a, _, lam = coeffs(model.schedule, t)
        a_n, s_n, lam_n = coeffs(model.schedule, t_next)
        return (a_n / a) * x - s_n * math.expm1(lam_n - lam) * model(x, t).eps


@register("dpm-solver-2")
@dataclass
class DPMSolver2(Solver):
    """DPM-Solver-2 (Lu et al. 2022 Alg. 1): an exponential Euler step to s1 = t_lambda(lambda +
    r1 h), then x_t = (alpha_t/alpha_s) x - sigma_t (e^h - 1) eps_s - sigma_t/(2 r1) (e^h - 1)
    (eps_s1 - eps_s). Noise prediction, r1 = 1/2 by default; order 2 for every r1 in (0, 1) (Lu et al.
    2022 Thm 3.2: the r1-dependent term is O(h^3)), 2 NFE per step."""

    r1: float = 0.5

    order = 2
    nfe_per_step = 2
    order_source = ("Lu et al. 2022 (DPM-Solver) Thm 3.2 (DPM-Solver-k is a k-th order solver), k = 2, "
                    "Alg. 1 with any r1 in (0, 1)")
    time_variable = "lambda"
    tags = _TAGS
    reference = "Lu et al. 2022 (DPM-Solver) Alg. 1, DPM-Solver-2"

    def __post_init__(self) -> None:
        _check_r(self.r1)

    def step(self, model: Model, x: Tensor, t: float, t_next: float, state: State,
             noise: NoiseSource) -> Tensor:
        a, _, lam = coeffs(model.schedule, t)
        a_n, s_n, lam_n = coeffs(model.schedule, t_next)
        h, r1 = lam_n - lam, self.r1
        t1, a1, s1 = _at(model, lam + r1 * h)
        e0 = model(x, t).eps
        u1 = (a1 / a) * x - s1 * math.expm1(r1 * h) * e0
        e1 = model(u1, t1).eps
        phi = math.expm1(h)
        return (a_n / a) * x - s_n * phi * e0 - s_n / (2 * r1) * phi * (e1 - e0)


@register("dpm-solver-3")
@dataclass
class DPMSolver3(Solver):
    """DPM-Solver-3 (Lu et al. 2022 Alg. 2, r1 = 1/3, r2 = 2/3): two exponential stages at
    lambda + r1 h and lambda + r2 h, then x_t = (alpha_t/alpha_s) x - sigma_t (e^h - 1) eps_s
    - sigma_t / r2 ((e^h - 1)/h - 1) (eps_s2 - eps_s). Noise prediction, 3 NFE per step.

    Order 3 (Lu et al. 2022 Thm 3.2) only when r2 = 2/3: with eps_s2 - eps_s =
    r2 h eps' + (r2 h)^2/2 eps'' + O(h^3), the final update's eps'' coefficient is -sigma_t r2 h^2/2
    ((e^h - 1)/h - 1) ~ -sigma_t r2 h^3/4, while the exact integral needs -sigma_t (e^h - 1 - h - h^2/2)
    ~ -sigma_t h^3/6: equal iff r2 = 2/3 (the eps' term is exact and u2 is second order for any r1).
    Any other r2 leaves a local error ~ sigma_t (r2/4 - 1/6) h^3 eps'': order 2 (declared per instance;
    measured 2.01 for r2 = 1/2 against 3.10 for 2/3)."""

    r1: float = 1 / 3
    r2: float = 2 / 3

    order = 3
    nfe_per_step = 3
    order_source = ("Lu et al. 2022 (DPM-Solver) Thm 3.2 (DPM-Solver-k is a k-th order solver), k = 3, "
                    "Alg. 2 with r2 = 2/3")
    time_variable = "lambda"
    tags = _TAGS
    reference = "Lu et al. 2022 (DPM-Solver) Alg. 2, DPM-Solver-3"

    def __post_init__(self) -> None:
        _check_r(self.r1, self.r2)
        if abs(self.r2 - 2 / 3) > 1e-12:
            self.order = 2
            self.order_source = ("Lu et al. 2022 (DPM-Solver) Thm 3.2 needs r2 = 2/3; for other r2 the eps'' "
                                 "term of the final update is off by sigma_t (r2/4 - 1/6) h^3: local error "
                                 f"O(h^3), {cite.ONE_STEP}, p = 2")
            self.order_note = ("r2 != 2/3: the final update's eps'' coefficient is -sigma_t r2 h^3/4 "
                               "instead of -sigma_t h^3/6, so the method is second order.")

    def step(self, model: Model, x: Tensor, t: float, t_next: float, state: State,
             noise: NoiseSource) -> Tensor:
        a, _, lam = coeffs(model.schedule, t)
        a_n, s_n, lam_n = coeffs(model.schedule, t_next)
        h, r1, r2 = lam_n - lam, self.r1, self.r2
        t1, a1, s1 = _at(model, lam + r1 * h)
        t2, a2, s2 = _at(model, lam + r2 * h)
        e0 = model(x, t).eps
        u1 = (a1 / a) * x - s1 * math.expm1(r1 * h) * e0
        e1 = model(u1, t1).eps
        phi2 = math.expm1(r2 * h)
        u2 = (a2 / a) * x - s2 * phi2 * e0 - s2 * (r2 / r1) * (phi2 / (r2 * h) - 1) * (e1 - e0)
        e2 = model(u2, t2).eps
        phi = math.expm1(h)
        return (a_n / a) * x - s_n * phi * e0 - s_n / r2 * (phi / h - 1) * (e2 - e0)


@register("dpmpp-2s")
@dataclass
class DPMSolverPP2S(Solver):
    """DPM-Solver++(2S) (Lu et al. 2022b Alg. 1): data prediction; u = (sigma_s1/sigma_s) x
    - alpha_s1 (e^{-r1 h} - 1) x0_s, D = (1 - 1/(2 r1)) x0_s + 1/(2 r1) x0(u, s1), and
    x_t = (sigma_t/sigma_s) x - alpha_t (e^{-h} - 1) D. r1 = 1/2; order 2 for any r1 in (0, 1) (Lu et al.
    2022b Sec. 4.1, with its convergence proof), 2 NFE per step."""

    r1: float = 0.5

    order = 2
    nfe_per_step = 2
    order_source = ("Lu et al. 2022b (DPM-Solver++) Sec. 4.1, Alg. 1: DPM-Solver++(2S) is a second-order "
                    "solver (convergence proof in its appendix, the data-prediction analogue of Lu et al. "
                    "2022 Thm 3.2)")
    time_variable = "lambda"
    tags = _TAGS
    reference = "Lu et al. 2022b (DPM-Solver++) Alg. 1, DPM-Solver++(2S)"

    def __post_init__(self) -> None:
        _check_r(self.r1)

    def step(self, model: Model, x: Tensor, t: float, t_next: float, state: State,
             noise: NoiseSource) -> Tensor:
        _, s, lam = coeffs(model.schedule, t)
        a_n, s_n, lam_n = coeffs(model.schedule, t_next)
        h, r1 = lam_n - lam, self.r1
        t1, a1, s1 = _at(model, lam + r1 * h)
        d0 = model(x, t).x0
        u = (s1 / s) * x - a1 * math.expm1(-r1 * h) * d0
        d1 = model(u, t1).x0
        d = (1 - 1 / (2 * r1)) * d0 + 1 / (2 * r1) * d1
        return (s_n / s) * x - a_n * math.expm1(-h) * d
