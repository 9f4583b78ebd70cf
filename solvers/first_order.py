"""First-order solvers: DDIM on the probability-flow ODE and Euler-Maruyama on the reverse SDE
(explicit Euler on the PF-ODE is a Butcher tableau in solvers/runge_kutta.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor

from solvers import citations as cite
from solvers.base import REVERSE_SDE, OrderException, Solver, State, coeffs
from solvers.model import Model
from solvers.noise import NoiseSource
from solvers.registry import register

VE_GAUSSIAN = OrderException(
    when=("gaussian", "schedule=ve"), high=2,
    note="VE + Gaussian target: the mean stays exact and the O(h) variance error per step, "
         "k^2 (G^2/a - G'/2) in the grid's uniform variable s (u = sigma^2, G = du/ds, a = v + u), "
         "carried by (a_end/a)^2 and summed is the total derivative -(k/2) d[G (a_end/a)^2]: only the "
         "boundary terms (k/2) (G(s_min) - G(s_max) a_end^2/a_max^2) remain, tiny for a small sigma_min "
         "and a large sigma_max, so W2 falls at ~2 over practical N; weak order 1 in general.")


@register("ddim")
@dataclass
class DDIM(Solver):
    """DDIM, eta = 0: x' = alpha' x0_hat + sigma' eps_hat (Song, Meng & Ermon 2021 eq. 12), the
    first-order exponential integrator of the PF-ODE (= DPM-Solver-1). Order 1 (Lu et al. 2022
    Thm 3.2 with k = 1), 1 NFE per step."""

    order = 1
    order_source = "Lu et al. 2022 (DPM-Solver) Thm 3.2 with k = 1 (DDIM is DPM-Solver-1, their Sec. 4.1)"
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
    Song et al. 2021 eq. 6). Weak order 1 (Kloeden & Platen 1992 Thm 14.1.5); strong order 1: the
    noise g(t) dW of the reverse SDE is additive, where Euler-Maruyama is the Milstein scheme
    (Kloeden & Platen 1992 Sec. 10.3, Thm 10.3.5; Milstein 1995 Thm 1.1), and 1 is the most any scheme
    using only W on its grid reaches (Clark & Cameron 1980). 1 NFE per step.

    Proven exception: on VE (f = 0) with a Gaussian target N(m, v), E x = m at every step and, per
    eigen-direction, the variance obeys V' = V (1 - d/a)^2 + d with d = g^2(t) h, a = v + sigma^2(t).
    EM in t on a grid t = phi(s), s uniform with step k, is EM in s, so with u = sigma^2 and G = du/ds
    the local variance error is k^2 (G^2/a - G'/2); carried to the end by (a_end/a)^2 and summed, it is
    k times the integral of a total derivative, -(k/2) [G (a_end/a)^2] between s_min and s_max: only
    boundary terms (k/2) (G(s_min) - G(s_max) a_end^2/a_max^2) remain, tiny for a small sigma_min and a
    large sigma_max, so the W2 error falls at ~2 over practical N (tests/test_first_order.py)."""

    order = 1
    strong_order = 1
    order_source = f"weak 1: {cite.WEAK_EULER}; strong 1: {cite.STRONG_ADDITIVE}; {cite.CLARK_CAMERON}"
    order_note = cite.STRONG_NOTE
    order_exceptions = (VE_GAUSSIAN,)
    stochastic = True
    sde_limit = REVERSE_SDE
    reference = "Song et al. 2021 (score SDE) eq. 6, Euler-Maruyama"

    def step(self, model: Model, x: Tensor, t: float, t_next: float, state: State,
             noise: NoiseSource) -> Tensor:
        sched = model.schedule
        f, g2 = float(sched.f(t)), float(sched.g2(t))
        drift = f * x - g2 * model(x, t).score
        return x + (t_next - t) * drift + math.sqrt(g2) * noise.increment(t, t_next, x)
