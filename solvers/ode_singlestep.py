"""Deterministic fixed-step single-step solvers of the probability-flow ODE in sigma~ = sigma / alpha of
the scaled variable x / alpha: the Karras et al. (2022) samplers (Euler, Heun, and k-diffusion's KDPM2).
The Runge-Kutta methods in the schedule's time t (Euler, Heun, RK4, ...) are Butcher tableaus in
solvers/runge_kutta.py."""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor

from solvers import citations as cite
from solvers.base import Solver, State
from solvers.model import Model
from solvers.noise import NoiseSource
from solvers.registry import register


def _scaled(model: Model, t: float) -> tuple[float, float]:
    """(alpha, sigma~) at t: the scale of x and EDM's noise level of x / alpha."""
    return model.schedule.scaled(t)


@register("edm-euler")
@dataclass
class EDMEuler(Solver):
    """Euler in sigma~ on the scaled variable x~ = x / alpha: dx~/dsigma~ = (x~ - D) / sigma~ = eps
    (Karras et al. 2022 eq. 4 and Alg. 1 without the Heun correction; k-diffusion `sample_euler`).
    On VP schedules this is exactly DDIM. Order 1 (HNW I Thm II.3.6), 1 NFE per step."""

    order = 1
    order_source = f"explicit Euler in sigma~ (local error O(h^2)): {cite.ONE_STEP}, p = 1"
    time_variable = "sigma_tilde"
    tags = frozenset({"singlestep", "kdiff"})
    reference = "Karras et al. 2022 (EDM) eq. 4 / Alg. 1, Euler step in sigma of x/alpha"

    def step(self, model: Model, x: Tensor, t: float, t_next: float, state: State,
             noise: NoiseSource) -> Tensor:
        a, s = _scaled(model, t)
        a_next, s_next = _scaled(model, t_next)
        return a_next * (x / a + (s_next - s) * model(x, t).eps)


@register("edm-heun")
@dataclass
class EDMHeun(Solver):
    """Karras et al. 2022 Alg. 1 (deterministic Heun) in sigma~ on x~ = x / alpha, with the
    derivative dx~/dsigma~ = (x~ - D(x~; sigma~)) / sigma~ = eps; k-diffusion `sample_heun` with
    churn 0. The grid never ends at sigma~ = 0 here, so every step is a Heun step. Order 2 (HNW I
    Thm II.3.6 for Heun's method in sigma~), 2 NFE."""

    order = 2
    nfe_per_step = 2
    order_source = (f"Heun's method in sigma~ (Karras et al. 2022 Alg. 1), order conditions HNW I "
                    f"Sec. II.1: {cite.ONE_STEP}, p = 2")
    time_variable = "sigma_tilde"
    tags = frozenset({"singlestep", "kdiff"})
    reference = "Karras et al. 2022 (EDM) Alg. 1, Heun's 2nd order method in sigma of x/alpha"

    def step(self, model: Model, x: Tensor, t: float, t_next: float, state: State,
             noise: NoiseSource) -> Tensor:
        a, s = _scaled(model, t)
        a_next, s_next = _scaled(model, t_next)
        xs, ds = x / a, s_next - s
        d1 = model(x, t).eps
        d2 = model(a_next * (xs + ds * d1), t_next).eps
        return a_next * (xs + 0.5 * ds * (d1 + d2))


@register("dpm2")
@dataclass
class KDPM2(Solver):
    """k-diffusion's `sample_dpm_2` (Crowson 2022; after Lu et al. 2022 DPM-Solver-2 and Karras
    et al. 2022 Alg. 2): Euler half step to the geometric midpoint sigma_mid = sqrt(sigma~ sigma~'),
    then a full step with the derivative there, on x~ = x / alpha. 2 NFE per step.

    Order 2: a two-stage explicit RK in sigma~ with weights b = (0, 1) and node c = (sigma_mid - sigma~) /
    (sigma~' - sigma~) = sqrt(sigma~) / (sqrt(sigma~) + sqrt(sigma~')) = 1/2 + O(h); its local error
    (c - 1/2) h^2 f'f + O(h^3) is O(h^3) (explicit midpoint rule, HNW I Sec. II.1), so HNW I Thm II.3.6
    gives order 2."""

    order = 2
    nfe_per_step = 2
    order_source = (f"explicit midpoint rule in sigma~ with node 1/2 + O(h) (order conditions HNW I "
                    f"Sec. II.1): {cite.ONE_STEP}, p = 2")
    time_variable = "sigma_tilde"
    tags = frozenset({"singlestep", "kdiff"})
    reference = "k-diffusion sample_dpm_2 (KDPM2): midpoint in log sigma, Karras et al. 2022 Alg. 2"

    def step(self, model: Model, x: Tensor, t: float, t_next: float, state: State,
             noise: NoiseSource) -> Tensor:
        a, s = _scaled(model, t)
        a_next, s_next = _scaled(model, t_next)
        s_mid = math.exp(0.5 * (math.log(s) + math.log(s_next)))
        t_mid = float(model.schedule.t_of_sigma_tilde(s_mid))
        a_mid = float(model.schedule.alpha(t_mid))
        xs = x / a
        x_mid = a_mid * (xs + (s_mid - s) * model(x, t).eps)
        return a_next * (xs + (s_next - s) * model(x_mid, t_mid).eps)
