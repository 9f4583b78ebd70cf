"""Stochastic solvers in the schedule's own variable x: the lambda family between PF-ODE and reverse
SDE, DDPM ancestral sampling, DDIM with eta, the SDE exponential integrator and predictor-corrector
Langevin sampling. All randomness comes from the noise source passed to `step`.

Notation for one step t -> s (s < t), with lambda = log(alpha / sigma):
c = 1 - exp(2 (lambda_t - lambda_s)) in [0, 1): the forward transition s -> t has variance
sigma_{t|s}^2 = sigma_t^2 - (alpha_t/alpha_s)^2 sigma_s^2 = c sigma_t^2 (Kingma et al. 2021, eq. 8-9),
which is Ho et al.'s beta_t on a VP schedule and sigma_t^2 - sigma_s^2 on a VE one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor

from solvers import citations as cite
from solvers.base import REVERSE_SDE, OrderException, Solver, State, coeffs
from solvers.first_order import VE_GAUSSIAN
from solvers.model import Model
from solvers.noise import NoiseSource
from solvers.registry import make_solver, register


def _check_unit(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value}")


@register("lambda-sde")
@dataclass
class LambdaSDE(Solver):
    """Euler-Maruyama on the marginal-preserving family dx = [f x - (1 + lam)/2 g^2 score] dt
    + sqrt(lam) g dW, lam in [0, 1]: lam = 0 is the PF-ODE (Euler), lam = 1 the reverse SDE (Zhang &
    Chen 2022, DEIS eq. 3 with their lambda^2 = lam; Karras et al. 2022 eq. 6). Euler-Maruyama on an
    SDE with additive noise: weak order 1 (Kloeden & Platen 1992 Thm 14.1.5), strong order 1 (Kloeden &
    Platen 1992 Sec. 10.3; Clark & Cameron 1980 bound). lam = 1 is `euler-maruyama` and shares its
    proven VE/Gaussian exception; for lam < 1 the variance error does not telescope (the factor
    (1 + lam)^2/4 in front of G^2/a breaks the total derivative), so no exception. 1 NFE per step."""

    lam: float = 0.5
    order = 1
    strong_order = 1
    order_source = f"weak 1: {cite.WEAK_EULER}; strong 1: {cite.STRONG_ADDITIVE}; {cite.CLARK_CAMERON}"
    order_note = cite.STRONG_NOTE
    stochastic = True
    reference = "Zhang & Chen 2022 (DEIS) eq. 3, lambda^2 = lam; Euler-Maruyama"

    def __post_init__(self) -> None:
        _check_unit("lam", self.lam)
        self.order_exceptions = (VE_GAUSSIAN,) if self.lam == 1 else ()

    @property
    def sde_limit(self) -> str | None:
        return REVERSE_SDE if self.lam == 1 else None

    def step(self, model: Model, x: Tensor, t: float, t_next: float, state: State,
             noise: NoiseSource) -> Tensor:
        sched = model.schedule
        f, g2 = float(sched.f(t)), float(sched.g2(t))
        drift = f * x - 0.5 * (1 + self.lam) * g2 * model(x, t).score
        out = x + (t_next - t) * drift
        if self.lam > 0:
            out = out + math.sqrt(self.lam * g2) * noise.increment(t, t_next, x)
        return out


def _transition(schedule, t: float, s: float) -> tuple[float, float, float, float, float]:
    """(alpha_s, sigma_s, sigma_t, c, e) for the step t -> s, with e = exp(lambda_t - lambda_s)."""
    _, sigma_t, lam_t = coeffs(schedule, t)
    alpha_s, sigma_s, lam_s = coeffs(schedule, s)
    c = -math.expm1(2 * (lam_t - lam_s))
    return alpha_s, sigma_s, sigma_t, c, math.exp(lam_t - lam_s)


@register("ddpm")
@dataclass
class DDPM(Solver):
    """Ancestral sampling from the posterior q(x_s | x_t, x0_hat) between consecutive grid times
    (Ho et al. 2020 eq. 6-7, on the continuous schedule: mean (sigma_s/sigma_t) e x_t + alpha_s c x0,
    e = exp(lambda_t - lambda_s)). `variance`: posterior = c sigma_s^2 (beta_tilde, eq. 7) or beta =
    c sigma_t^2 = sigma_{t|s}^2 (Ho et al. §3.2). 1 NFE per step.

    Weak order 1: the step's conditional mean and variance match the reverse SDE's (Song et al. 2021
    eq. 6; ancestral sampling discretises it, their Sec. 4) up to O(h^2) (both variances are
    g^2 h (1 + O(h)): c = 2 (lambda_s - lambda_t) + O(h^2) and g^2 = -2 sigma^2 dlambda/dt), so
    Milstein & Tretyakov 2004 Thm 2.2.1 gives weak order 1. Strong order 1: the noise is the
    normalised Brownian increment of the path over [t, s] times g sqrt(h) (1 + O(h)) (Milstein 1995
    Thm 1.1; at most 1 by Clark & Cameron 1980)."""

    variance: str = "posterior"
    sde_limit = REVERSE_SDE
    order = 1
    strong_order = 1
    order_source = (f"weak 1: {cite.WEAK}, one-step moments of the reverse SDE (Song et al. 2021 eq. 6) "
                    f"matched to O(h^2); {cite.STRONG_ONE}")
    order_note = cite.STRONG_NOTE
    stochastic = True
    time_variable = "lambda"
    tags = frozenset({"singlestep", "exponential"})
    reference = "Ho et al. 2020 (DDPM) eq. 6-7, sigma_t^2 = beta_tilde or beta (§3.2)"

    def __post_init__(self) -> None:
        if self.variance not in ("posterior", "beta"):
            raise ValueError(f"variance must be 'posterior' or 'beta', got {self.variance!r}")

    def step(self, model: Model, x: Tensor, t: float, t_next: float, state: State,
             noise: NoiseSource) -> Tensor:
        alpha_s, sigma_s, sigma_t, c, e = _transition(model.schedule, t, t_next)
        mean = (sigma_s / sigma_t) * e * x + alpha_s * c * model(x, t).x0
        std = math.sqrt(c) * (sigma_s if self.variance == "posterior" else sigma_t)
        return mean + std * noise.normal(t, t_next, x)


@register("ddim-eta")
@dataclass
class DDIMEta(Solver):
    """DDIM with stochasticity eta: x_s = alpha_s x0 + sqrt(sigma_s^2 - s_eta^2) eps + s_eta z with
    s_eta = eta sigma_s sqrt(c) (Song, Meng & Ermon 2021 eq. 12 and 16). eta = 0 is DDIM, eta = 1 is
    DDPM with the posterior variance. 1 NFE per step.

    It discretises the marginal-preserving SDE dx = [f x - (1 + eta^2)/2 g^2 score] dt + eta g dW
    (`lambda-sde` with lam = eta^2): s_eta^2 = eta^2 c sigma_s^2 = eta^2 g^2 h (1 + O(h)) and the mean
    matches that SDE's drift to O(h^2). Weak order 1 (Milstein & Tretyakov 2004 Thm 2.2.1); strong
    order 1, as DDPM (Milstein 1995 Thm 1.1; Clark & Cameron 1980 bound); eta = 0 is DDIM."""

    eta: float = 1.0
    order = 1
    strong_order = 1
    order_source = (f"weak 1: {cite.WEAK}, one-step moments of the SDE with lam = eta^2 (Zhang & Chen 2022 "
                    f"eq. 3; Song, Meng & Ermon 2021 eq. 16) matched to O(h^2); {cite.STRONG_ONE}")
    order_note = cite.STRONG_NOTE
    stochastic = True
    time_variable = "lambda"
    tags = frozenset({"singlestep", "exponential"})
    reference = "Song, Meng & Ermon 2021 (DDIM) eq. 12 and 16"

    def __post_init__(self) -> None:
        _check_unit("eta", self.eta)

    @property
    def sde_limit(self) -> str | None:
        return REVERSE_SDE if self.eta == 1 else None

    def step(self, model: Model, x: Tensor, t: float, t_next: float, state: State,
             noise: NoiseSource) -> Tensor:
        alpha_s, sigma_s, _, c, _ = _transition(model.schedule, t, t_next)
        pred = model(x, t)
        s_eta = self.eta * sigma_s * math.sqrt(c)
        out = alpha_s * pred.x0 + math.sqrt(max(sigma_s**2 - s_eta**2, 0.0)) * pred.eps
        return out + s_eta * noise.normal(t, t_next, x) if self.eta > 0 else out


@register("exp-sde")
@dataclass
class ExpSDE(Solver):
    """First-order exponential integrator of the reverse SDE with the noise prediction frozen over
    the step, linear part and noise variance integrated exactly (SDE-DPM-Solver-1 of Lu et al. 2022b;
    Zhang & Chen 2022): x_s = (alpha_s/alpha_t) x_t - 2 sigma_s (e^h - 1) eps
    + sigma_s sqrt(e^{2h} - 1) z, h = lambda_s - lambda_t. 1 NFE per step. Weak order 1: the linear part
    and the noise variance are exact and eps is frozen over the step, so the one-step moments match
    the reverse SDE's to O(h^2) (Milstein & Tretyakov 2004 Thm 2.2.1); strong order 1: the noise
    sigma_s sqrt(e^{2h} - 1) z = g sqrt(h) (1 + O(h)) z with z the normalised increment of the path
    (Milstein 1995 Thm 1.1; Clark & Cameron 1980 bound).

    In y = x / alpha this is y_s = y - 2 (sigma~_t - sigma~_s) eps + sqrt(sigma~_t^2 - sigma~_s^2) z. On a
    Gaussian target N(m, v) each step's variance error is 2 (dsigma~)^2 (sigma~^2 - v) / (sigma~^2 + v);
    propagated to the end and summed over a grid uniform in lambda it is h times a total derivative,
    d/du [-u / (u + v)^2] with u = sigma~^2, so the O(h) term is only ~ h sigma~_min^2 and the W2 falls
    as N^-2 over any practical range (a proven exception, `order_exceptions`); on other grids (karras)
    the O(h) term is back. On 1-D mixtures the weak slopes are 0.95-1.16 on every grid."""

    order = 1
    strong_order = 1
    order_source = (f"weak 1: {cite.WEAK}, one-step moments of the reverse SDE matched to O(h^2) "
                    f"(SDE-DPM-Solver-1, Lu et al. 2022b); {cite.STRONG_ONE}")
    order_note = cite.STRONG_NOTE
    order_exceptions = (OrderException(
        when=("gaussian", "grid=logsnr"), high=2,
        note="Gaussian target on a grid uniform in lambda: the O(h) variance error summed over the grid is "
             "h times the total derivative d/du [-u/(u + v)^2], u = sigma~^2 (see ExpSDE), so the O(h) "
             "term is only ~ h sigma~_min^2 and W2 falls at ~2 over practical N (slopes ~2 up to ~1e3 "
             "steps, then 1)."),)
    stochastic = True
    time_variable = "lambda"
    tags = frozenset({"singlestep", "exponential"})
    reference = "Lu et al. 2022b (DPM-Solver++) SDE-DPM-Solver-1; Zhang & Chen 2022 (DEIS)"
    sde_limit = REVERSE_SDE

    def step(self, model: Model, x: Tensor, t: float, t_next: float, state: State,
             noise: NoiseSource) -> Tensor:
        alpha_t, _, lam_t = coeffs(model.schedule, t)
        alpha_s, sigma_s, lam_s = coeffs(model.schedule, t_next)
        h = lam_s - lam_t
        out = (alpha_s / alpha_t) * x - 2 * sigma_s * math.expm1(h) * model(x, t).eps
        return out + sigma_s * math.sqrt(math.expm1(2 * h)) * noise.normal(t, t_next, x)


@register("pc-langevin")
@dataclass
class PCLangevin(Solver):
    """Predictor-corrector sampling (Song et al. 2021 Alg. 2/3): one step of the registered solver
    `predictor` t -> s, then `corrector_steps` Langevin steps x += eps score(x, s) + sqrt(2 eps) z at s.

    `step_rule` for eps: `norm` is Song's 2 (snr |z| / |score|)^2 with batch-mean norms (not affine in
    x; Song's VP factor alpha_i = 1 - beta_i -> 1 is dropped); `fixed` is the same rule with expected
    norms, 2 (snr sigma_s)^2 (affine); both keep a step that does not shrink with the grid, so the
    Langevin bias stays and the weak order is 0. `scaled` (default) is 2 (snr sigma_s)^2 |lambda_s -
    lambda_t| = snr^2 g^2 |dt|: the corrector then adds Langevin dynamics at a rate that is O(1) in
    time, which leaves the marginals invariant, so the sampler is consistent with weak order 1.
    NFE per step: the predictor's plus corrector_steps.

    Declared per instance: with the corrector active (corrector_steps > 0 and snr > 0), weak order
    min(predictor, 1) for `scaled` (Lie-Trotter splitting of the predictor with Euler-Maruyama for
    Langevin dynamics at rate snr^2 g^2, which leaves p_t invariant: one-step weak error O(h^2),
    Milstein & Tretyakov 2004 Thm 2.2.1) and 0 for `fixed` / `norm`; strong order 0, since the
    corrector's noise `noise.extra` is independent of the Brownian path and does not vanish
    pathwise. With the corrector inactive the sampler is its predictor and inherits all of its
    declared orders.
    """

    predictor: str = "euler-maruyama"
    corrector_steps: int = 1
    snr: float = 0.16
    step_rule: str = "scaled"
    stochastic = True
    reference = "Song et al. 2021 (score SDE) Alg. 2-3, Langevin corrector"

    def __post_init__(self) -> None:
        if self.step_rule not in ("scaled", "fixed", "norm"):
            raise ValueError(f"step_rule must be scaled, fixed or norm, got {self.step_rule!r}")
        if self.corrector_steps < 0 or self.snr < 0:
            raise ValueError("corrector_steps and snr must be non-negative")
        if self.predictor == "pc-langevin":
            raise ValueError("the predictor cannot itself be pc-langevin")
        self._predictor = make_solver(self.predictor)
        pred = self._predictor
        self.nfe_per_step = pred.nfe_per_step + self.corrector_steps
        self._corrects = self.corrector_steps > 0 and self.snr > 0
        if not self._corrects:  # no Langevin move: the predictor alone
            self.order, self.order_cap = pred.order, pred.order_cap
            self.strong_order = pred.strong_order if pred.stochastic else min(pred.order, 1)
            self.order_note = pred.order_note
            self.order_source = f"the predictor {pred.label}: {pred.order_source}"
            self.order_exceptions = pred.order_exceptions
        else:
            self.order = min(pred.order, 1) if self.step_rule == "scaled" else 0
            self.order_cap = None
            self.strong_order = 0
            self.order_note = ("Strong order 0: the Langevin corrector's noise (noise.extra) is independent "
                               "of the Brownian path and does not vanish pathwise. "
                               + ("Weak order min(predictor, 1): Lie-Trotter splitting with Langevin "
                                  "dynamics at rate snr^2 g^2, which leaves p_t invariant."
                                  if self.step_rule == "scaled" else
                                  "Weak order 0: the Langevin step does not shrink with h, so its "
                                  "O(eps) bias stays."))
            self.order_source = (f"Song et al. 2021 Alg. 2-3 (method); weak: {cite.WEAK} applied to the "
                                 f"splitting (scaled rule); predictor {pred.label}: {pred.order_source}")
            self.order_exceptions = ()
        self.affine = pred.affine and self.step_rule != "norm"
        self.min_steps = pred.min_steps
        self.tags = pred.tags

    def init_state(self, x: Tensor, times: Tensor) -> State:
        return self._predictor.init_state(x, times)

    def nfe(self, steps: int) -> int:
        return self._predictor.nfe(steps) + steps * self.corrector_steps

    @property
    def pathwise(self) -> bool:
        return not self._corrects  # the corrector's noise.extra is independent of the path

    @property
    def sde_limit(self) -> str | None:
        return None if self._corrects else self._predictor.sde_limit

    def step(self, model: Model, x: Tensor, t: float, t_next: float, state: State,
             noise: NoiseSource) -> Tensor:
        x = self._predictor.step(model, x, t, t_next, state, noise)
        _, sigma_s, lam_s = coeffs(model.schedule, t_next)
        base = 2 * (self.snr * sigma_s) ** 2
        if self.step_rule == "scaled":
            base *= abs(lam_s - float(model.schedule.log_snr(t)))
        for k in range(self.corrector_steps):
            score = model(x, t_next).score
            z = noise.extra(t_next, k, x)
            eps = base
            if self.step_rule == "norm":
                z_norm = z.reshape(len(z), -1).norm(dim=-1).mean()
                g_norm = score.reshape(len(score), -1).norm(dim=-1).mean()
                eps = 2 * float(self.snr * z_norm / g_norm) ** 2
            x = x + eps * score + math.sqrt(2 * eps) * z
        return x
