"""Adams-Bashforth-type multistep solvers on eps for the scaled variable y = x / alpha, whose ODE
is dy = eps d(sigma~) with sigma~ = sigma / alpha = exp(-lambda): DEIS tAB, iPNDM, k-diffusion LMS
and PNDM. One model call per step (PNDM: 4 in each of its 3 pseudo Runge-Kutta warm-up steps).

Warm-up: step i uses min(q, i+1) points, so the first step is DDIM (local error O(h^2)); a fixed
number of warm-up steps of order q' contributes O(h^(q'+1)) globally (Hairer, Norsett & Wanner I,
Sec. III.4: starting values must be accurate to O(h^q)), so a DDIM start bounds the asymptotic
global order by 2. The nominal q is declared as `order` and the bound as `order_cap` (deis-3, lms,
ipndm). The DDIM step sits at high noise where its error constant is tiny: the measured slopes keep
rising towards q up to 512 steps (DEIS-3, LMS; see the tests), but the declared numbers are the
theorems, not those slopes.

Fixed Adams-Bashforth weights (ipndm, pndm) are exact only on grids uniform in sigma~: with step
ratios h_{n-1}/h_n = 1 + O(h) on a smooth grid, the AB-k combination of eps differs from the
variable-step one by O(h) eps' h, a local error O(h^3) and global order 2 on any other grid
(karras, log-SNR, time-uniform on VP).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from solvers import citations as cite
from solvers.base import OrderException, Solver, State, coeffs
from solvers.model import Model
from solvers.noise import NoiseSource
from solvers.registry import register

SIGMA_UNIFORM = ("schedule=edm", "grid=uniform")  # sigma~ = t: the one built-in grid uniform in sigma~

_AB = {1: (1.0,), 2: (1.5, -0.5), 3: (23 / 12, -16 / 12, 5 / 12),
       4: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}  # fixed-step Adams-Bashforth weights, newest first


@lru_cache(maxsize=8)
def _gauss_legendre(n: int) -> tuple[Tensor, Tensor]:
    nodes, weights = np.polynomial.legendre.leggauss(n)
    return torch.from_numpy(nodes), torch.from_numpy(weights)


def _lagrange(nodes: list[float], u: Tensor) -> Tensor:
    """Lagrange basis polynomials of `nodes` evaluated at u: shape (len(nodes), len(u))."""
    rows = []
    for j, uj in enumerate(nodes):
        row = torch.ones_like(u)
        for k, uk in enumerate(nodes):
            if k != j:
                row = row * (u - uk) / (uj - uk)
        rows.append(row)
    return torch.stack(rows)


def _combine(weights: list[float] | Tensor, values: list[Tensor]) -> Tensor:
    return sum((float(w) * v for w, v in zip(weights, values, strict=True)), torch.zeros_like(values[0]))


def _ddim_transfer(x: Tensor, eps: Tensor, a: float, s: float, a1: float, s1: float) -> Tensor:
    """y' = y + (sigma~' - sigma~) eps with y = x / alpha (DDIM, Song et al. 2021 eq. 12)."""
    return a1 * (x / a + (s1 / a1 - s / a) * eps)


@dataclass
class _DEIS(Solver):
    """DEIS (Zhang & Chen 2022, eq. 14, tAB): exponential integrator y' = y + sum_j C_j eps_{i-j}
    with C_j = int_t^t' (d sigma~/d tau) L_j(tau) d tau, L_j the Lagrange basis through the last
    q times (polynomial extrapolation of eps). deis-q uses q points (diffusers solver_order q;
    the paper's tAB(q-1)). The integral is taken in lambda by 32-node Gauss-Legendre in float64.
    `basis`: "t" (tAB, polynomial in the schedule time) or "logrho" (polynomial in
    log sigma~ = -lambda, diffusers' DEISMultistepScheduler). Order q (an exponential Adams method
    with q nodes, variable steps: Hochbruck & Ostermann 2011); the DDIM first step caps the
    asymptotic order at 2 (`order_cap` for q = 3; module docstring) with a negligible constant.
    1 NFE per step."""

    q: ClassVar[int] = 1
    basis: str = "t"
    order_source = (f"Zhang & Chen 2022 (DEIS) Sec. 4, eq. 14 (tAB: exponential Adams-Bashforth with q-point "
                    f"Lagrange extrapolation of eps); order q: {cite.EXP_ADAMS}; {cite.MULTISTEP}")
    tags = frozenset({"multistep", "exponential"})
    time_variable = "t"
    reference = "Zhang & Chen 2022 (DEIS) eq. 14, tAB; logrho basis as diffusers DEISMultistep"

    def __post_init__(self) -> None:
        if self.basis not in ("t", "logrho"):
            raise ValueError(f"basis must be t or logrho, got {self.basis!r}")

    def step(self, model: Model, x: Tensor, t: float, t_next: float, state: State,
             noise: NoiseSource) -> Tensor:
        sched = model.schedule
        a, s, lam = coeffs(sched, t)
        a1, s1, lam1 = coeffs(sched, t_next)
        eps = model(x, t).eps
        state.remember((t, lam, eps), self.q)
        hist = state.history[::-1]  # newest first
        if len(hist) == 1:
            return _ddim_transfer(x, eps, a, s, a1, s1)
        nodes, weights = _gauss_legendre(32)
        half = 0.5 * (lam1 - lam)
        lam_q = lam + half * (nodes + 1)
        dsig = -torch.exp(-lam_q) * weights * half  # d sigma~ = -exp(-lambda) d lambda
        if self.basis == "t":
            u, knots = sched.t_of_log_snr(lam_q), [h[0] for h in hist]
        else:
            u, knots = lam_q, [h[1] for h in hist]
        c = _lagrange(knots, u) @ dsig
        return a1 * (x / a + _combine(c, [h[2] for h in hist]))


@register("deis-1")
@dataclass
class DEIS1(_DEIS):
    """DEIS with one point: the exponential Euler step in t, i.e. DDIM (Zhang & Chen 2022,
    eq. 14 with r = 0). Order 1 (Lu et al. 2022 Thm 3.2, k = 1), 1 NFE per step; `basis` has no
    effect."""

    q = 1
    order = 1
    order_source = "Lu et al. 2022 (DPM-Solver) Thm 3.2 with k = 1 (DDIM = DPM-Solver-1 = DEIS with r = 0)"


@register("deis-2")
@dataclass
class DEIS2(_DEIS):
    __doc__ = _DEIS.__doc__
    q = 2
    order = 2
    order_note = "Warm-up: the DDIM first step (local O(h^2)) caps at 2 = order, so no cap."


@register("deis-3")
@dataclass
class DEIS3(_DEIS):
    __doc__ = _DEIS.__doc__
    q = 3
    order = 3
    order_cap = 2
    order_exceptions = (OrderException((), 3, cite.WARM_UP_TINY),)
    order_note = ("Cap 2: the first step is DDIM (local O(h^2)), taken once; "
                  f"{cite.WARM_UP}. At high noise its constant is tiny: slopes of ~3 are measured up to 512 "
                  "steps.")


@register("ipndm")
@dataclass
class IPNDM(Solver):
    """iPNDM (Zhang & Chen 2022, DEIS paper eq. 9; zju-pi diff-sampler `ipndm`): the DDIM
    transfer y' = y + (sigma~' - sigma~) e with e the FIXED-step Adams-Bashforth combination of
    the last `max_order` eps (weights 1; 3/2,-1/2; 23/12,...; 55/24,...), warm-up with lower
    orders. 1 NFE per step.

    Order (declared per instance): `max_order` k, the order of constant-step AB-k (Bashforth & Adams
    1883; Hairer, Norsett & Wanner I, Sec. III.1 and III.4) on grids uniform in sigma~, with
    `order_cap` 2 for k > 2 for two reasons: (i) fixed weights on a grid not uniform in sigma~
    (karras, log-SNR, time-uniform on VP) leave a local error ~ (h_{n-1}/h_n - 1) h^2 eps'/2 = O(h^3),
    global order 2; (ii) on every grid the DDIM first step (local O(h^2)), taken once, adds O(h^2)
    (warm-up rule). The warm-up sits at high noise where its constant is tiny, so on a grid uniform
    in sigma~ slopes well above 2 are measured (edm / uniform, gauss-aniso-3d: 3.5 at 512 -> 1024
    steps, the same to 3 digits as lms and pndm, whose warm-ups differ), while on karras and log-SNR
    grids they are 2."""

    max_order: int = 4
    order = 4
    order_cap = 2
    order_source = ("Zhang & Chen 2022 (DEIS) eq. 9 (iPNDM): the DDIM transfer driven by constant-step "
                    "Adams-Bashforth-k in sigma~, order k on grids uniform in sigma~ (Bashforth & Adams "
                    f"1883; HNW I Sec. III.1); {cite.MULTISTEP}")
    order_note = ("Cap 2: fixed AB weights on grids not uniform in sigma~ (karras, log-SNR, time-uniform) "
                  "leave a local error O(h^3); on every grid the DDIM first step (local O(h^2)) adds "
                  "O(h^2). On grids uniform in sigma~ the warm-up constant is tiny and slopes well above 2 "
                  "are measured (edm/uniform: 3.5 at 512 -> 1024 steps).")
    tags = frozenset({"multistep"})
    time_variable = "sigma_tilde"
    reference = "Zhang & Chen 2022 (DEIS) eq. 9 (iPNDM); zju-pi/diff-sampler ipndm"

    def __post_init__(self) -> None:
        if self.max_order not in _AB:
            raise ValueError(f"max_order must be 1..4, got {self.max_order}")
        self.order = self.max_order
        self.order_cap = 2 if self.max_order > 2 else None
        exact_weights = ("on a grid uniform in sigma~ the AB weights are exact and only the warm-up caps "
                         "the order: " + cite.WARM_UP_TINY)
        self.order_exceptions = (OrderException(SIGMA_UNIFORM, self.max_order, exact_weights),) \
            if self.max_order > 2 else ()
        if self.max_order <= 2:
            self.order_note = ("max_order <= 2: the DDIM warm-up (local O(h^2)) and fixed AB weights on "
                               "non-uniform sigma~ grids (local O(h^3)) do not lower the order.")

    def step(self, model: Model, x: Tensor, t: float, t_next: float, state: State,
             noise: NoiseSource) -> Tensor:
        a, s, _ = coeffs(model.schedule, t)
        a1, s1, _ = coeffs(model.schedule, t_next)
        state.remember(model(x, t).eps, self.max_order)
        hist = state.history[::-1]
        return _ddim_transfer(x, _combine(_AB[len(hist)], hist), a, s, a1, s1)


@register("lms")
@dataclass
class LMS(Solver):
    """k-diffusion `sample_lms`: variable-step Adams-Bashforth in sigma~ for y = x / alpha,
    y' = y + sum_j c_j eps_{i-j}, c_j = int L_j(sigma) d sigma over the last `max_order` sigma~
    (Lagrange basis, integrated exactly by Gauss-Legendre). Order `max_order` k (the variable-step
    k-step Adams-Bashforth method, Hairer, Norsett & Wanner I, Sec. III.5), declared per instance,
    with `order_cap` 2 for k > 2: the Euler (= DDIM) first step (local O(h^2)), taken once, adds
    O(h^2) (warm-up rule, Sec. III.4). Its constant is tiny at high noise: on gauss-aniso-3d the local
    slope rises to 3.85 at 256 -> 512 steps and falls to 3.65-3.75 at 512 -> 1024, as the warm-up
    terms take over. 1 NFE per step."""

    max_order: int = 4
    order = 4
    order_cap = 2
    order_source = ("Crowson, k-diffusion sample_lms: variable-step Adams-Bashforth with k = max_order "
                    "nodes for dy/dsigma~ = eps, order k on any smooth grid (HNW I Sec. III.5); "
                    f"{cite.MULTISTEP}")
    order_note = ("Cap 2: the first step is Euler (= DDIM, local O(h^2)), taken once; "
                  f"{cite.WARM_UP}. Measured: local slope 3.85 at 256 -> 512 steps, then falling.")
    tags = frozenset({"multistep", "kdiff"})
    time_variable = "sigma_tilde"
    reference = "Crowson, k-diffusion sample_lms (linear multistep in sigma)"

    def __post_init__(self) -> None:
        if self.max_order < 1:
            raise ValueError(f"max_order must be >= 1, got {self.max_order}")
        self.order = self.max_order
        self.order_cap = 2 if self.max_order > 2 else None
        self.order_exceptions = (OrderException((), self.max_order, cite.WARM_UP_TINY),) \
            if self.max_order > 2 else ()
        if self.max_order <= 2:
            self.order_note = "max_order <= 2: the Euler first step (local O(h^2)) does not lower the order."

    def step(self, model: Model, x: Tensor, t: float, t_next: float, state: State,
             noise: NoiseSource) -> Tensor:
        a, s, _ = coeffs(model.schedule, t)
        a1, s1, _ = coeffs(model.schedule, t_next)
        sig, sig1 = s / a, s1 / a1
        state.remember((sig, model(x, t).eps), self.max_order)
        hist = state.history[::-1]
        nodes, weights = _gauss_legendre(max(len(hist), 1))
        half = 0.5 * (sig1 - sig)
        c = _lagrange([h[0] for h in hist], sig + half * (nodes + 1)) @ (weights * half)
        return a1 * (x / a + _combine(c, [h[1] for h in hist]))


@register("pndm")
@dataclass
class PNDM(Solver):
    """F-PNDM (Liu et al. 2022, ICLR, eqs. 9-13): the DDIM transfer phi(x, e, t, t') driven by a
    pseudo linear multistep e' = (55 e_i - 59 e_{i-1} + 37 e_{i-2} - 9 e_{i-3}) / 24 (fixed
    weights, lower orders before 4 values exist); the first 3 steps are pseudo Runge-Kutta
    (e1..e4 at t, the t-midpoint twice and t', e' = (e1 + 2 e2 + 2 e3 + e4) / 6; 4 NFE each).
    NFE = steps + 9 (steps >= 3).

    Order 4 (declared) is that of its parts on a grid uniform in sigma~ with sigma~ affine in t: the
    pseudo Runge-Kutta steps are then classical RK4 in sigma~ (Kutta 1901) and the pseudo linear
    multistep step constant-step AB4 (Bashforth & Adams 1883), Liu et al. 2022 Sec. 3. `order_cap` 2:
    (i) the fixed AB4 weights on a grid not uniform in sigma~ (karras, log-SNR, time-uniform on VP)
    leave a local error O(h^3), global order 2; (ii) the pseudo-RK stages sit at the t-midpoint, whose
    sigma~ is the sigma~-midpoint only up to O(h^2), so RK4's node c = 1/2 becomes 1/2 + O(h) and
    sum b_i c_i = 1/2 + O(h): local error O(h^3), taken 3 times (warm-up rule): cap 3 on grids uniform
    in sigma~ unless sigma~ is affine in t (edm, uniform grid: order 4)."""

    order = 4
    order_cap = 2
    order_exceptions = (OrderException(SIGMA_UNIFORM, 4, "edm with a uniform grid: sigma~ = t is uniform and "
                                       "affine in t, the pseudo-RK steps are RK4 and the AB4 weights exact"),)
    order_source = ("Liu et al. 2022 (PNDM) Sec. 3, eqs. 9-13 (F-PNDM): the DDIM transfer with classical RK4 "
                    "(Kutta 1901, HNW I Table II.1.2) for 3 steps, then constant-step AB4 (Bashforth & Adams "
                    f"1883, HNW I Sec. III.1), order 4 on grids uniform in sigma~; {cite.MULTISTEP}")
    order_note = ("Cap 2: fixed AB4 weights on grids not uniform in sigma~ leave a local error O(h^3). On "
                  "grids uniform in sigma~ the pseudo-RK warm-up, with stages at the t-midpoint (node "
                  "1/2 + O(h)), has local error O(h^3) (cap 3) unless sigma~ is affine in t (edm: order 4).")
    tags = frozenset({"multistep"})
    time_variable = "t"
    reference = "Liu et al. 2022 (PNDM) eqs. 9-13, F-PNDM"

    def nfe(self, steps: int) -> int:
        return 4 * min(steps, 3) + max(steps - 3, 0)

    def step(self, model: Model, x: Tensor, t: float, t_next: float, state: State,
             noise: NoiseSource) -> Tensor:
        sched = model.schedule
        a, s, _ = coeffs(sched, t)
        a1, s1, _ = coeffs(sched, t_next)
        e1 = model(x, t).eps
        if state.i >= 3:
            state.remember(e1, 4)
            hist = state.history[::-1]
            return _ddim_transfer(x, _combine(_AB[len(hist)], hist), a, s, a1, s1)
        state.remember(e1, 4)
        t_mid = 0.5 * (t + t_next)
        am, sm, _ = coeffs(sched, t_mid)
        e2 = model(_ddim_transfer(x, e1, a, s, am, sm), t_mid).eps
        e3 = model(_ddim_transfer(x, e2, a, s, am, sm), t_mid).eps
        e4 = model(_ddim_transfer(x, e3, a, s, a1, s1), t_next).eps
        return _ddim_transfer(x, (e1 + 2 * e2 + 2 * e3 + e4) / 6, a, s, a1, s1)

