"""First-order solvers: Euler on the probability-flow ODE, DDIM, and Euler-Maruyama on the
reverse SDE."""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor

from solvers.base import Solver, State, coeffs
from solvers.model import Model
from solvers.noise import NoiseSource
from solvers.registry import register


@register("euler")
@dataclass
class Euler(Solver):
    """Explicit Euler on the PF-ODE dx/dt = f x - g^2/2 score in the schedule's time t
    (Song et al. 2021 eq. 13; Karras et al. tutorial eq. 43). Order 1, 1 NFE per step."""

    order = 1
    reference = "Song et al. 2021 (score SDE) eq. 13, explicit Euler"

    def step(self, model: Model, x: Tensor, t: float, t_next: float, state: State,
             noise: NoiseSource) -> Tensor:
        return x + (t_next - t) * model(x, t).drift


@register("ddim")
@dataclass
class DDIM(Solver):
    """DDIM, eta = 0: x' = alpha' x0_hat + sigma' eps_hat (Song, Meng & Ermon 2021 eq. 12), the
    first-order exponential integrator of the PF-ODE (= DPM-Solver-1). Order 1, 1 NFE per step."""

    order = 1
    time_variable = "lambda"
    tags = frozenset({"singlestep", "exponential"})
    reference = "Song, Meng & Ermon 2021 (DDIM) eq. 12 with sigma_t = 0"

    def step(self, model: Model, x: Tensor, t: float, t_next: float, state: State,
             noise: NoiseSource) -> Tensor:
        pred = model(x, t)
        alpha, sigma, _ = coeffs(model.schedule, t_next)
        return alpha * pred.x0 + sigma * pred.eps


@register("euler-maruyama")
@dataclass
class EulerMaruyama(Solver):
    """Euler-Maruyama on the reverse SDE dx = [f x - g^2 score] dt + g dW (Anderson 1982;
    Song et al. 2021 eq. 6). Weak order 1; strong order 1 (additive noise). 1 NFE per step."""

    order = 1
    strong_order = 1
    stochastic = True
    reference = "Song et al. 2021 (score SDE) eq. 6, Euler-Maruyama"

    def step(self, model: Model, x: Tensor, t: float, t_next: float, state: State,
             noise: NoiseSource) -> Tensor:
        sched = model.schedule
        f, g2 = float(sched.f(t)), float(sched.g2(t))
        drift = f * x - g2 * model(x, t).score
        return x + (t_next - t) * drift + math.sqrt(g2) * noise.increment(t, t_next, x)
