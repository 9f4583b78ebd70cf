"""k-diffusion's stochastic samplers (Crowson, k-diffusion 0.1.1 `sampling.py`) and EDM's stochastic
sampler, written as they are there: in the scaled variable y = x / alpha with the noise level
sigma~ = sigma / alpha (EDM's sigma; lambda = -log sigma~), model output read as the denoised x0.

An intermediate model call at sigma~ is made at t = t_of_sigma_tilde(sigma~) on x = alpha(t) y.
Ancestral steps split sigma~_next into sigma_down (deterministic part) and sigma_up (fresh noise):
sigma_up = min(sigma_next, eta sigma_next sqrt(1 - sigma_next^2 / sigma^2)) (`get_ancestral_step`).
Since sigma_down^2 + sigma_up^2 = sigma_next^2, adding N(0, sigma_up^2) maps p_{sigma_down} exactly onto
p_{sigma_next}: an ancestral step is an ODE step sigma -> sigma_down followed by exact forward noising,
so its weak order is the order of the ODE step (1 for Euler, 2 for DPM-Solver-2 / ++(2S)); the same
holds for EDM's churn (noise up to sigma_hat, then the ODE). Proof sketch: the chain "exact ODE flow to
sigma_down, then the exact noise" maps p_sigma to p_sigma_next, so the global weak error telescopes into the
sum of the ODE steps' local errors, each carried to the end by exact (smooth) kernels, as in the proof of
Milstein & Tretyakov 2004 Thm 2.2.1: O(h^(p+1)) per step for an ODE step of order p gives weak order p.
The argument needs a single-step ODE step from the current state; it does not cover multistep updates
whose history lies on other (noisy) paths (dpmpp-2m-sde, dpmpp-3m-sde) nor a substep taken at a noisy
point (dpmpp-sde).

Strong order: every sampler here draws its noise as `noise.normal(t, t_next)` (dpmpp-sde also over
[t, t_r] and [t_r, t_next]): the normalised increments of the noise source's Brownian path, scaled by
g sqrt(h) (1 + O(h)) for eta = 1, s_noise = 1 (the eta-family SDE for other eta); with a consistent drift
this is strong order 1 (Milstein 1995 Thm 1.1; for the multistep ones the O(h^(3/2)) history terms are
martingale differences and add up to O(h)), and 1 is the bound for schemes that use only the path's
values on their grid (Clark & Cameron 1980). With eta = 0 the samplers are deterministic and strong order
1 still holds (as a bound). s_noise != 1 changes the noise variance by an O(1) factor: no order applies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from solvers import citations as cite
from solvers.base import REVERSE_SDE, OrderException, Solver, State
from solvers.model import Model
from solvers.noise import NoiseSource
from solvers.registry import register


def ancestral_step(s_from: float, s_to: float, eta: float) -> tuple[float, float]:
    """(sigma_down, sigma_up) of k-diffusion's get_ancestral_step."""
    if not eta:
        return s_to, 0.0
    up = min(s_to, eta * math.sqrt(s_to**2 * (s_from**2 - s_to**2) / s_from**2))
    return math.sqrt(s_to**2 - up**2), up


def _scaled(model: Model, t: float) -> tuple[float, float]:
    """(alpha, sigma~) at t."""
    return model.schedule.scaled(t)


def _t_of(model: Model, sigma: float) -> float:
    return float(model.schedule.t_of_sigma_tilde(sigma))


def _denoise(model: Model, y: Tensor, sigma: float) -> Tensor:
    """x0_hat at noise level sigma~ for the scaled state y (one model call)."""
    t = _t_of(model, sigma)
    return model(float(model.schedule.alpha(t)) * y, t).x0


@dataclass
class _KDiffusion(Solver):
    """Shared parameters: eta (1 = full ancestral noise, 0 = deterministic) and s_noise."""

    eta: float = 1.0
    s_noise: float = 1.0
    stochastic = True
    strong_order = 1
    order_note = cite.STRONG_NOTE
    time_variable = "sigma_tilde"
    tags = frozenset({"singlestep", "kdiff"})

    def __post_init__(self) -> None:
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"eta must lie in [0, 1], got {self.eta}")

    @property
    def sde_limit(self) -> str | None:
        """eta = s_noise = 1: the noise is g sqrt(h) (1 + O(h)) times the normalised increment and the
        drift the reverse SDE's to first order (module docstring), so the pathwise limit is the
        reverse SDE (tests/test_metrics.py: each converges to the shared exp-sde reference on the
        same path)."""
        return REVERSE_SDE if self.eta == 1 and self.s_noise == 1 else None


@register("euler-ancestral")
@dataclass
class EulerAncestral(_KDiffusion):
    """Euler step in sigma~ to sigma_down, then fresh noise of std sigma_up (k-diffusion
    sample_euler_ancestral; on VP it equals DDPM / DDIM eta = 1 to first order). Weak order 1, the
    Euler step's (module note), strong order 1, 1 NFE per step."""

    order = 1
    order_source = f"weak 1: {cite.ANCESTRAL}; Euler: {cite.ONE_STEP}, p = 1; {cite.STRONG_ONE}"
    reference = "k-diffusion sample_euler_ancestral (Karras et al. 2022 ODE + ancestral noise)"

    def step(self, model: Model, x: Tensor, t: float, t_next: float, state: State,
             noise: NoiseSource) -> Tensor:
        alpha, sigma = _scaled(model, t)
        alpha_n, sigma_n = _scaled(model, t_next)
        y, x0 = x / alpha, model(x, t).x0
        down, up = ancestral_step(sigma, sigma_n, self.eta)
        y = y + (y - x0) / sigma * (down - sigma) + noise.normal(t, t_next, x) * (self.s_noise * up)
        return alpha_n * y


@register("dpm2-ancestral")
@dataclass
class DPM2Ancestral(_KDiffusion):
    """DPM-Solver-2 (midpoint in log sigma~) step to sigma_down, then ancestral noise (k-diffusion
    sample_dpm_2_ancestral; Lu et al. 2022 Alg. 1 in Karras form). Weak order 2 (the ODE step's,
    see the module note; the step is KDPM2's, see `dpm2`), strong order 1, 2 NFE per step."""

    order = 2
    nfe_per_step = 2
    order_source = (f"weak 2: {cite.ANCESTRAL}; the KDPM2 midpoint step (node 1/2 + O(h), see `dpm2`) "
                    f"has local error O(h^3): {cite.ONE_STEP}, p = 2; {cite.STRONG_ONE}")
    reference = "k-diffusion sample_dpm_2_ancestral (Lu et al. 2022 DPM-Solver-2 + ancestral noise)"

    def step(self, model: Model, x: Tensor, t: float, t_next: float, state: State,
             noise: NoiseSource) -> Tensor:
        alpha, sigma = _scaled(model, t)
        alpha_n, sigma_n = _scaled(model, t_next)
        y, x0 = x / alpha, model(x, t).x0
        down, up = ancestral_step(sigma, sigma_n, self.eta)
        mid = math.exp(0.5 * (math.log(sigma) + math.log(down)))
        y_2 = y + (y - x0) / sigma * (mid - sigma)
        d_2 = (y_2 - _denoise(model, y_2, mid)) / mid
        y = y + d_2 * (down - sigma) + noise.normal(t, t_next, x) * (self.s_noise * up)
        return alpha_n * y


@register("dpmpp-2s-ancestral")
@dataclass
class DPMpp2SAncestral(_KDiffusion):
    """DPM-Solver++(2S) (data prediction, midpoint in lambda) step to sigma_down, then ancestral
    noise (Lu et al. 2022b Alg. 1; k-diffusion sample_dpmpp_2s_ancestral). Weak order 2 (the ODE
    step's, see the module note), strong order 1, 2 NFE per step."""

    order = 2
    nfe_per_step = 2
    order_source = (f"weak 2: {cite.ANCESTRAL}; DPM-Solver++(2S) is second order (Lu et al. 2022b, Alg. 1 "
                    f"and its convergence proof); {cite.STRONG_ONE}")
    time_variable = "lambda"
    tags = frozenset({"singlestep", "exponential", "kdiff"})
    reference = "k-diffusion sample_dpmpp_2s_ancestral (Lu et al. 2022b DPM-Solver++(2S))"

    def step(self, model: Model, x: Tensor, t: float, t_next: float, state: State,
             noise: NoiseSource) -> Tensor:
        alpha, sigma = _scaled(model, t)
        alpha_n, sigma_n = _scaled(model, t_next)
        y, x0 = x / alpha, model(x, t).x0
        down, up = ancestral_step(sigma, sigma_n, self.eta)
        h = math.log(sigma) - math.log(down)
        mid = sigma * math.exp(-0.5 * h)
        y_2 = (mid / sigma) * y - math.expm1(-0.5 * h) * x0
        y = (down / sigma) * y - math.expm1(-h) * _denoise(model, y_2, mid)
        return alpha_n * (y + noise.normal(t, t_next, x) * (self.s_noise * up))


def _unproven_step_order(solver: Solver, ode_order: float, ode_source: str) -> None:
    """Orders of a stochastic exponential scheme built on an ODE step of order `ode_order` whose x0
    evaluations lie on the noisy path, so that the ancestral argument (module note) does not apply:
    proven are weak order 1 (one-step moments match to O(h^2)) and strong order 1; the ODE step's
    order is the top of the interval measured slopes are compared with, not a theorem. With eta = 0
    the scheme is that ODE step: its order, proven."""
    if solver.eta == 0:
        solver.order, solver.order_exceptions = ode_order, ()
        solver.order_source = f"eta = 0: the deterministic step, {ode_source}"
        return
    solver.order = 1
    solver.order_source = f"weak 1: {cite.WEAK}, p = 1; {cite.STRONG_ONE}"
    solver.order_exceptions = (OrderException((), ode_order, (
        f"weak order {ode_order:g} is the order of the ODE step ({ode_source}); no theorem proves it for "
        "this stochastic scheme, whose x0 evaluations sit on the noisy path; only weak order 1 is proven")),)


@register("dpmpp-sde")
@dataclass
class DPMppSDE(_KDiffusion):
    """Stochastic DPM-Solver++ (k-diffusion sample_dpmpp_sde): an ancestral data-prediction step to
    lambda + r h, a model call there, and an ancestral step over the whole interval with the blended
    x0 (1 - 1/(2r)) D + 1/(2r) D_2. The two draws are the normalised Brownian increments over
    [t, t_r] and [t, t_next] of one path in the schedule's time t, built from the disjoint draws over
    [t, t_r] and [t_r, t_next] (k-diffusion uses a Brownian tree; with the identity transform its
    time is sigma~, which is t on the edm schedule). The correlation sqrt(r) of the two draws matters:
    with it the exact W2 on Gaussian targets falls as N^-2 (independent draws give order 1; the choice
    of Brownian time changes the correlation only by O(h)). 2 NFE per step.

    Declared weak order 1, the proven one (one-step moments match to O(h^2), Milstein & Tretyakov 2004
    Thm 2.2.1), strong order 1 (module note). Order 2 is that of the deterministic DPM-Solver++(2S)
    step (Lu et al. 2022b); the ancestral argument of the module note does not cover the substep taken
    at a noisy point, so it is not a theorem here: it is the top of the interval measured slopes are
    compared with (`order_exceptions`). eta = 0 is DPM-Solver++(2S), order 2."""

    r: float = 0.5
    order = 1
    order_note = cite.STRONG_NOTE
    nfe_per_step = 2
    time_variable = "lambda"
    tags = frozenset({"singlestep", "exponential", "kdiff"})
    reference = "k-diffusion sample_dpmpp_sde (Lu et al. 2022b, SDE-DPM-Solver++ with r = 1/2)"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.r < 1.0:
            raise ValueError(f"r must lie in (0, 1), got {self.r}")
        _unproven_step_order(self, 2, "DPM-Solver++(2S), Lu et al. 2022b Alg. 1")

    def step(self, model: Model, x: Tensor, t: float, t_next: float, state: State,
             noise: NoiseSource) -> Tensor:
        alpha, sigma = _scaled(model, t)
        alpha_n, sigma_n = _scaled(model, t_next)
        y, x0 = x / alpha, model(x, t).x0
        sigma_r = sigma * math.exp(-self.r * (math.log(sigma) - math.log(sigma_n)))
        t_r = _t_of(model, sigma_r)
        z_1, z_2 = noise.normal(t, t_r, x), noise.normal(t_r, t_next, x)
        z_full = (math.sqrt(t - t_r) * z_1 + math.sqrt(t_r - t_next) * z_2) / math.sqrt(t - t_next)
        down, up = ancestral_step(sigma, sigma_r, self.eta)
        y_2 = (down / sigma) * y + (1 - down / sigma) * x0 + z_1 * (self.s_noise * up)
        fac = 1 / (2 * self.r)
        x0_d = (1 - fac) * x0 + fac * _denoise(model, y_2, sigma_r)
        down, up = ancestral_step(sigma, sigma_n, self.eta)
        y = (down / sigma) * y + (1 - down / sigma) * x0_d + z_full * (self.s_noise * up)
        return alpha_n * y


@register("dpmpp-2m-sde")
@dataclass
class DPMpp2MSDE(_KDiffusion):
    """DPM-Solver++(2M) SDE (Lu et al. 2022b; k-diffusion sample_dpmpp_2m_sde): exact linear part
    of the data-prediction SDE with eta, the previous x0 in a midpoint or heun (exponential-phi)
    correction, noise of std sigma_next sqrt(1 - e^{-2 eta h}). First step without correction. The
    noise is integrated exactly and the x0 extrapolation is second order. 1 NFE per step. With eta = 1
    the deterministic part is the DPM-Solver++ step to sigma_down = sigma_next^2 / sigma and the noise
    the exact ancestral noise, but the x0 history lies on the previous noisy state, so the ancestral
    argument (module note) does not apply.

    Declared weak order 1 and strong order 1, the proven ones (module note); order 2, that of
    DPM-Solver++(2M) (Lu et al. 2022b, Alg. 2), is not a theorem for the SDE variant: it is the top of
    the interval measured slopes are compared with (`order_exceptions`). eta = 0 is DPM-Solver++(2M),
    order 2 (its first step is first order, local O(h^2), which does not lower 2)."""

    solver_type: str = "midpoint"
    order = 1
    order_note = cite.STRONG_NOTE
    time_variable = "lambda"
    tags = frozenset({"multistep", "exponential", "kdiff"})
    reference = "k-diffusion sample_dpmpp_2m_sde (Lu et al. 2022b DPM-Solver++(2M), SDE variant)"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.solver_type not in ("midpoint", "heun"):
            raise ValueError(f"solver_type must be 'midpoint' or 'heun', got {self.solver_type!r}")
        _unproven_step_order(self, 2, "DPM-Solver++(2M), Lu et al. 2022b Alg. 2")

    def step(self, model: Model, x: Tensor, t: float, t_next: float, state: State,
             noise: NoiseSource) -> Tensor:
        alpha, sigma = _scaled(model, t)
        alpha_n, sigma_n = _scaled(model, t_next)
        y, x0 = x / alpha, model(x, t).x0
        h = math.log(sigma) - math.log(sigma_n)
        eta_h = self.eta * h
        phi = -math.expm1(-h - eta_h)
        y = (sigma_n / sigma) * math.exp(-eta_h) * y + phi * x0
        if state.history:
            x0_old, h_old = state.history[-1]
            diff = (h / h_old) * (x0 - x0_old)
            y = y + (0.5 * phi if self.solver_type == "midpoint" else phi / (-h - eta_h) + 1) * diff
        if self.eta:
            std = sigma_n * math.sqrt(-math.expm1(-2 * eta_h)) * self.s_noise
            y = y + std * noise.normal(t, t_next, x)
        state.remember((x0, h), keep=1)
        return alpha_n * y


@register("dpmpp-3m-sde")
@dataclass
class DPMpp3MSDE(_KDiffusion):
    """DPM-Solver++(3M) SDE (k-diffusion sample_dpmpp_3m_sde, after Lu et al. 2022b): exponential
    integrator of the data-prediction SDE with first and second divided differences of the last
    three x0 (phi_2, phi_3 in h (1 + eta)); lower order on the first two steps. 1 NFE per step.

    At eta = 0 it is `dpmpp-3m` (to ~6e-16), whose D2 = (D1_0 - D1_1)/(r0 + r1) ~ h^2 x0''/2 is half
    the Taylor value the exact integral needs (-h^2 phi_3 x0''), leaving a local error ~ alpha h^3
    x0''/12: order 2 (see DPMSolverPP3M). For eta > 0 the declared weak order is 1 and the strong
    order 1, the proven ones (module note); that ODE step's order 2 is the top of the interval measured
    slopes are compared with (`order_exceptions`), not a theorem for the SDE variant."""

    order = 1
    order_note = cite.STRONG_NOTE
    time_variable = "lambda"
    tags = frozenset({"multistep", "exponential", "kdiff"})
    reference = "k-diffusion sample_dpmpp_3m_sde (Lu et al. 2022b DPM-Solver++(3M), SDE variant)"

    def __post_init__(self) -> None:
        super().__post_init__()
        _unproven_step_order(self, 2, "the shipped 3M update with its halved D2, derivation in DPMSolverPP3M "
                                      "(solvers/multistep.py) and shared/REFERENCE.md 'Order caveats'")

    def step(self, model: Model, x: Tensor, t: float, t_next: float, state: State,
             noise: NoiseSource) -> Tensor:
        alpha, sigma = _scaled(model, t)
        alpha_n, sigma_n = _scaled(model, t_next)
        y, x0 = x / alpha, model(x, t).x0
        h = math.log(sigma) - math.log(sigma_n)
        h_eta = h * (self.eta + 1)
        y = math.exp(-h_eta) * y - math.expm1(-h_eta) * x0
        phi_2 = math.expm1(-h_eta) / h_eta + 1
        if len(state.history) == 2:
            (x0_2, h_2), (x0_1, h_1) = state.history
            r0, r1 = h_1 / h, h_2 / h
            d1_0, d1_1 = (x0 - x0_1) / r0, (x0_1 - x0_2) / r1
            d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
            d2 = (d1_0 - d1_1) / (r0 + r1)
            y = y + phi_2 * d1 - (phi_2 / h_eta - 0.5) * d2
        elif state.history:
            x0_1, h_1 = state.history[-1]
            y = y + phi_2 * (x0 - x0_1) * (h / h_1)
        if self.eta:
            std = sigma_n * math.sqrt(-math.expm1(-2 * h * self.eta)) * self.s_noise
            y = y + std * noise.normal(t, t_next, x)
        state.remember((x0, h), keep=2)
        return alpha_n * y


@register("edm-stochastic")
@dataclass
class EDMStochastic(Solver):
    """Karras et al. 2022 Alg. 2: raise sigma~ to sigma_hat = (1 + gamma) sigma~ by adding noise of std
    S_noise sqrt(sigma_hat^2 - sigma~^2), gamma = min(S_churn / N, sqrt 2 - 1) for sigma~ in [S_tmin,
    S_tmax], then a Heun step sigma_hat -> sigma~_next (k-diffusion sample_heun with s_churn).
    Defaults: the paper's CIFAR-10 VP settings (Table 5: S_churn 30, S_tmin 0.01, S_tmax 1) but
    S_noise = 1 (the paper's 1.007 inflates the variance by an amount that does not vanish with N).
    Adding noise maps p_sigma to p_sigma_hat exactly, so the weak order is the Heun ODE step's, 2
    (module note; the ODE step sigma_hat -> sigma_next has length O(h) since gamma <= S_churn / N);
    strong order 1: the churn noise std sigma sqrt((1 + gamma)^2 - 1) = sigma sqrt(2 gamma) (1 + O(h))
    multiplies the normalised increment of the path over the step. 2 NFE per step."""

    s_churn: float = 30.0
    s_tmin: float = 0.01
    s_tmax: float = 1.0
    s_noise: float = 1.0
    order = 2
    strong_order = 1
    order_source = f"weak 2: {cite.ANCESTRAL}; Heun: {cite.ONE_STEP}, p = 2; {cite.STRONG_ONE}"
    order_note = cite.STRONG_NOTE
    nfe_per_step = 2
    stochastic = True
    heun: ClassVar[bool] = True
    time_variable = "sigma_tilde"
    tags = frozenset({"singlestep", "kdiff"})
    reference = "Karras et al. 2022 (EDM) Alg. 2; k-diffusion sample_heun with s_churn"

    @property
    def sde_limit(self) -> str | None:
        """The churn SDE, named by the spec of its fine integrator: Heun and Euler variants with the
        same churn settings add the same noise, sigma~ sqrt(2 S_churn / N) (1 + O(h)) times the normalised
        path increment (a fixed SDE on the path for a fixed grid map), and take consistent ODE steps,
        so both converge to it pathwise (tests/test_metrics.py) and share the Heun variant's fine run."""
        churn = {k: getattr(self, k) for k in ("s_churn", "s_tmin", "s_tmax", "s_noise")}
        changed = ",".join(f"{k}={v}" for k, v in churn.items() if v != getattr(EDMStochastic, k))
        return f"edm-stochastic[{changed}]" if changed else "edm-stochastic"

    def step(self, model: Model, x: Tensor, t: float, t_next: float, state: State,
             noise: NoiseSource) -> Tensor:
        alpha, sigma = _scaled(model, t)
        alpha_n, sigma_n = _scaled(model, t_next)
        y = x / alpha
        in_range = self.s_tmin <= sigma <= self.s_tmax
        gamma = min(self.s_churn / state.steps, math.sqrt(2) - 1) if in_range else 0.0
        sigma_hat = sigma * (gamma + 1)
        if gamma > 0:
            y = y + noise.normal(t, t_next, x) * (self.s_noise * math.sqrt(sigma_hat**2 - sigma**2))
            d = (y - _denoise(model, y, sigma_hat)) / sigma_hat
        else:
            d = (y - model(x, t).x0) / sigma
        dt = sigma_n - sigma_hat
        y_2 = y + d * dt
        if self.heun:
            d_2 = (y_2 - model(alpha_n * y_2, t_next).x0) / sigma_n
            y_2 = y + 0.5 * (d + d_2) * dt
        return alpha_n * y_2


@register("edm-stochastic-euler")
@dataclass
class EDMStochasticEuler(EDMStochastic):
    """Karras et al. 2022 Alg. 2 with the Heun correction left out (k-diffusion sample_euler with
    s_churn): churn noise, then one Euler step sigma_hat -> sigma~_next. Weak order 1 (the Euler step's,
    module note), strong order 1, 1 NFE per step."""

    heun = False
    order = 1
    order_source = f"weak 1: {cite.ANCESTRAL}; Euler: {cite.ONE_STEP}, p = 1; {cite.STRONG_ONE}"
    nfe_per_step = 1
    reference = "Karras et al. 2022 (EDM) Alg. 2 without the 2nd-order correction; k-diffusion sample_euler"
