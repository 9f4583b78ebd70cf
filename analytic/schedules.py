"""Noise schedules x_t = alpha(t) x_0 + sigma(t) eps in the schedule's own forward time t.

Each schedule gives alpha, sigma and their time derivatives; everything else (log-SNR,
drift f, diffusion g^2, the scaled noise level sigma/alpha) is derived once in the base class:
f = d log alpha / dt and g^2 = d sigma^2 / dt - 2 f sigma^2 (Song et al. 2021, Kingma et al. 2021).
All functions take floats or tensors and return float64 tensors.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
from torch import Tensor

TimeLike = float | Tensor


def _t(t: TimeLike) -> Tensor:
    return torch.as_tensor(t, dtype=torch.float64)


class Schedule(ABC):
    """A forward noising process; `t_min`/`t_max` are its default integration interval."""

    name: str = ""
    t_min: float = 1e-3
    t_max: float = 1.0

    @abstractmethod
    def alpha(self, t: TimeLike) -> Tensor: ...

    @abstractmethod
    def sigma(self, t: TimeLike) -> Tensor: ...

    @abstractmethod
    def d_alpha(self, t: TimeLike) -> Tensor: ...

    @abstractmethod
    def d_sigma(self, t: TimeLike) -> Tensor: ...

    @abstractmethod
    def t_of_log_snr(self, lam: TimeLike) -> Tensor:
        """Inverse of `log_snr`."""

    def log_snr(self, t: TimeLike) -> Tensor:
        """lambda(t) = log(alpha / sigma)."""
        return torch.log(self.alpha(t)) - torch.log(self.sigma(t))

    def f(self, t: TimeLike) -> Tensor:
        """Drift coefficient of the forward SDE dx = f x dt + g dW."""
        return self.d_alpha(t) / self.alpha(t)

    def g2(self, t: TimeLike) -> Tensor:
        """Squared diffusion coefficient g^2 = d sigma^2/dt - 2 f sigma^2."""
        s = self.sigma(t)
        return 2 * s * self.d_sigma(t) - 2 * self.f(t) * s * s

    def sigma_tilde(self, t: TimeLike) -> Tensor:
        """Noise level of the scaled variable x / alpha (EDM's sigma): exp(-lambda)."""
        return torch.exp(-self.log_snr(t))

    def t_of_sigma_tilde(self, s: TimeLike) -> Tensor:
        return self.t_of_log_snr(-torch.log(_t(s)))

    def _memo(self, name: str, t: float, compute: Callable[[float], tuple]) -> tuple:
        """compute(t), memoized per instance in the dict attribute `name` (cleared at 65536 times)."""
        cache = self.__dict__.setdefault(name, {})
        hit = cache.get(t)
        if hit is None:
            if len(cache) >= 65536:
                cache.clear()
            hit = cache[t] = compute(t)
        return hit

    def scalars(self, t: float) -> tuple[float, float, float, float, float]:
        """(alpha, sigma, d_alpha, d_sigma, log_snr) at a scalar t as floats, memoized per instance
        (a sampler visits each grid time several times; like a scheduler's precomputed tables)."""
        return self._memo("_scalar_cache", float(t),
                          lambda t: tuple(float(v) for v in self._scalar_values(_t(t))))

    def _scalar_values(self, t: Tensor) -> tuple[Tensor, ...]:
        """(alpha, sigma, d_alpha, d_sigma, log_snr) at t; subclasses may share intermediate work
        but must return exactly what the five functions return."""
        return self.alpha(t), self.sigma(t), self.d_alpha(t), self.d_sigma(t), self.log_snr(t)

    def scaled(self, t: float) -> tuple[float, float]:
        """(alpha, sigma~) at a scalar t as floats, memoized per instance: the scale of x and the noise
        level of x / alpha that EDM-style solvers step in."""
        return self._memo("_scaled_cache", float(t),
                          lambda t: (float(self.alpha(t)), float(self.sigma_tilde(t))))

    def prime(self, times: Tensor) -> None:
        """Fill the `scalars` cache for a whole grid with five vectorized evaluations."""
        times = _t(times).reshape(-1)
        cache = self.__dict__.setdefault("_scalar_cache", {})
        functions = (self.alpha, self.sigma, self.d_alpha, self.d_sigma, self.log_snr)
        columns = [f(times).tolist() for f in functions]
        for t, *values in zip(times.tolist(), *columns, strict=True):
            cache[t] = tuple(values)

    def describe(self) -> str:
        return f"{self.name}: t in [{self.t_min:g}, {self.t_max:g}]"


class VariancePreserving(Schedule):
    """alpha^2 + sigma^2 = 1: everything follows from log alpha(t), its derivative and inverse."""

    @abstractmethod
    def log_alpha(self, t: TimeLike) -> Tensor: ...

    @abstractmethod
    def t_of_log_alpha(self, log_alpha: Tensor) -> Tensor: ...

    def alpha(self, t: TimeLike) -> Tensor:
        return torch.exp(self.log_alpha(t))

    def sigma(self, t: TimeLike) -> Tensor:
        return torch.sqrt(-torch.expm1(2 * self.log_alpha(t)))

    def d_sigma(self, t: TimeLike) -> Tensor:
        return -self.alpha(t) * self.d_alpha(t) / self.sigma(t)

    def log_snr(self, t: TimeLike) -> Tensor:
        la = self.log_alpha(t)
        return la - 0.5 * torch.log(-torch.expm1(2 * la))

    def _scalar_values(self, t: Tensor) -> tuple[Tensor, ...]:
        """The five scalars from one log alpha(t) (the same operations as alpha, sigma, d_sigma and
        log_snr apply to it, so the same values)."""
        la = self.log_alpha(t)
        alpha, one_minus = torch.exp(la), -torch.expm1(2 * la)
        sigma, d_alpha = torch.sqrt(one_minus), self.d_alpha(t)
        return alpha, sigma, d_alpha, -alpha * d_alpha / sigma, la - 0.5 * torch.log(one_minus)

    def g2(self, t: TimeLike) -> Tensor:
        """g^2 = -2 f (beta(t) for the linear schedule), finite at t = 0."""
        return -2 * self.f(t)

    def t_of_log_snr(self, lam: TimeLike) -> Tensor:
        return self.t_of_log_alpha(-0.5 * torch.nn.functional.softplus(-2 * _t(lam)))


class VPLinear(VariancePreserving):
    """VP SDE with beta(t) = beta_min + t (beta_max - beta_min) (Song et al. 2021, eq. 11)."""

    def __init__(
        self, beta_min: float = 0.1, beta_max: float = 20.0, t_min: float = 1e-3, t_max: float = 1.0
    ):
        self.beta_min, self.beta_max = beta_min, beta_max
        self.t_min, self.t_max = t_min, t_max
        self.name = "vp-linear"

    def beta(self, t: TimeLike) -> Tensor:
        return self.beta_min + _t(t) * (self.beta_max - self.beta_min)

    def log_alpha(self, t: TimeLike) -> Tensor:
        t = _t(t)
        return -0.25 * t * t * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def d_alpha(self, t: TimeLike) -> Tensor:
        return -0.5 * self.beta(t) * self.alpha(t)

    def t_of_log_alpha(self, log_alpha: Tensor) -> Tensor:
        a, b = 0.25 * (self.beta_max - self.beta_min), 0.5 * self.beta_min
        if a == 0:
            return -log_alpha / b
        return 2 * (-log_alpha) / (b + torch.sqrt(b * b - 4 * a * log_alpha))


class VPConstant(VPLinear):
    """Ornstein-Uhlenbeck process dx = -x/2 dt + dW (VP with constant beta = 1)."""

    def __init__(self, beta: float = 1.0, t_min: float = 1e-3, t_max: float = 10.0):
        super().__init__(beta, beta, t_min, t_max)
        self.name = "vp-const"


class VPCosine(VariancePreserving):
    """Cosine schedule alpha_bar = cos^2((t+s)/(1+s) pi/2) / cos^2(s/(1+s) pi/2) (Nichol & Dhariwal
    2021, eq. 17); t_max = 0.9946 as in DPM-Solver to keep log-SNR finite."""

    def __init__(self, s: float = 0.008, t_min: float = 1e-3, t_max: float = 0.9946):
        self.s, self.t_min, self.t_max = s, t_min, t_max
        self.name = "vp-cosine"
        self._log_cos0 = math.log(math.cos(s / (1 + s) * math.pi / 2))

    def _theta(self, t: TimeLike) -> Tensor:
        return (_t(t) + self.s) / (1 + self.s) * math.pi / 2

    def log_alpha(self, t: TimeLike) -> Tensor:
        return torch.log(torch.cos(self._theta(t))) - self._log_cos0

    def d_alpha(self, t: TimeLike) -> Tensor:
        return -self.alpha(t) * torch.tan(self._theta(t)) * math.pi / (2 * (1 + self.s))

    def t_of_log_alpha(self, log_alpha: Tensor) -> Tensor:
        theta = torch.arccos(torch.exp(log_alpha + self._log_cos0))
        return theta * 2 * (1 + self.s) / math.pi - self.s


class DiscreteDDPM(Schedule):
    """The DDPM schedule (Ho et al. 2020): N linear betas, alpha_bar_k = prod (1 - beta_i).

    Step k (0-based, diffusers' timestep k) sits at t = (k + 1) / N; between knots the log-SNR is
    interpolated linearly in t (and extrapolated with the end slopes), so the continuous schedule
    agrees exactly with the discrete table at every knot.
    """

    def __init__(self, beta_start: float = 1e-4, beta_end: float = 0.02, num_steps: int = 1000):
        betas = torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)
        log_alpha_bar = torch.cumsum(torch.log1p(-betas), 0)
        self.knots_t = torch.arange(1, num_steps + 1, dtype=torch.float64) / num_steps
        self.knots_lam = 0.5 * log_alpha_bar - 0.5 * torch.log(-torch.expm1(log_alpha_bar))
        self.slopes = torch.diff(self.knots_lam) / torch.diff(self.knots_t)
        self.num_steps = num_steps
        self.t_min, self.t_max = 1.0 / num_steps, 1.0
        self.name = "ddpm-discrete"

    def _segment(self, t: Tensor) -> Tensor:
        idx = torch.searchsorted(self.knots_t, t.contiguous(), right=True) - 1
        return idx.clamp(0, self.num_steps - 2)

    def log_snr(self, t: TimeLike) -> Tensor:
        t = _t(t)
        k = self._segment(t)
        return self.knots_lam[k] + self.slopes[k] * (t - self.knots_t[k])

    def _d_log_snr(self, t: TimeLike) -> Tensor:
        return self.slopes[self._segment(_t(t))]

    def alpha(self, t: TimeLike) -> Tensor:
        return torch.sqrt(torch.sigmoid(2 * self.log_snr(t)))

    def sigma(self, t: TimeLike) -> Tensor:
        return torch.sqrt(torch.sigmoid(-2 * self.log_snr(t)))

    def d_alpha(self, t: TimeLike) -> Tensor:
        s = self.sigma(t)
        return self.alpha(t) * s * s * self._d_log_snr(t)

    def d_sigma(self, t: TimeLike) -> Tensor:
        a = self.alpha(t)
        return -self.sigma(t) * a * a * self._d_log_snr(t)

    def g2(self, t: TimeLike) -> Tensor:
        """Variance preserving: g^2 = -2 f (beta(t) for the linear schedule), finite at t = 0."""
        return -2 * self.f(t)

    def t_of_log_snr(self, lam: TimeLike) -> Tensor:
        lam = _t(lam)
        # knots_lam is decreasing: search on the negated (increasing) table.
        k = torch.searchsorted(-self.knots_lam, (-lam).contiguous(), right=True) - 1
        k = k.clamp(0, self.num_steps - 2)
        return self.knots_t[k] + (lam - self.knots_lam[k]) / self.slopes[k]


class VEGeometric(Schedule):
    """VE SDE sigma(t) = sigma_min (sigma_max / sigma_min)^t, alpha = 1 (Song et al. 2021, eq. 9)."""

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, t_min: float = 0.0,
                 t_max: float = 1.0):
        self.sigma_min, self.sigma_max = sigma_min, sigma_max
        self.t_min, self.t_max = t_min, t_max
        self._log_ratio = math.log(sigma_max / sigma_min)
        self.name = "ve"

    def alpha(self, t: TimeLike) -> Tensor:
        return torch.ones_like(_t(t))

    def sigma(self, t: TimeLike) -> Tensor:
        return self.sigma_min * torch.exp(_t(t) * self._log_ratio)

    def d_alpha(self, t: TimeLike) -> Tensor:
        return torch.zeros_like(_t(t))

    def d_sigma(self, t: TimeLike) -> Tensor:
        return self.sigma(t) * self._log_ratio

    def t_of_log_snr(self, lam: TimeLike) -> Tensor:
        return (-_t(lam) - math.log(self.sigma_min)) / self._log_ratio


class EDM(Schedule):
    """Karras et al. 2022: alpha = 1, sigma = t, t in [0.002, 80]."""

    def __init__(self, t_min: float = 0.002, t_max: float = 80.0):
        self.t_min, self.t_max = t_min, t_max
        self.name = "edm"

    def alpha(self, t: TimeLike) -> Tensor:
        return torch.ones_like(_t(t))

    def sigma(self, t: TimeLike) -> Tensor:
        return _t(t).clone()

    def d_alpha(self, t: TimeLike) -> Tensor:
        return torch.zeros_like(_t(t))

    def d_sigma(self, t: TimeLike) -> Tensor:
        return torch.ones_like(_t(t))

    def t_of_log_snr(self, lam: TimeLike) -> Tensor:
        return torch.exp(-_t(lam))


class RectifiedFlow(Schedule):
    """Rectified-flow / flow-matching path alpha = 1 - t, sigma = t (Liu et al. 2023; Lipman et al.
    2023). t_max = 0.999 keeps the log-SNR finite; the prior there is sampled exactly."""

    def __init__(self, t_min: float = 1e-3, t_max: float = 0.999):
        self.t_min, self.t_max = t_min, t_max
        self.name = "rectified-flow"

    def alpha(self, t: TimeLike) -> Tensor:
        return 1 - _t(t)

    def sigma(self, t: TimeLike) -> Tensor:
        return _t(t).clone()

    def d_alpha(self, t: TimeLike) -> Tensor:
        return -torch.ones_like(_t(t))

    def d_sigma(self, t: TimeLike) -> Tensor:
        return torch.ones_like(_t(t))

    def t_of_log_snr(self, lam: TimeLike) -> Tensor:
        return torch.sigmoid(-_t(lam))


SCHEDULES: dict[str, tuple[Callable[[], Schedule], str]] = {
    "vp-linear": (VPLinear, "VP SDE, linear beta 0.1..20, T = 1 (score-SDE default)"),
    "vp-const": (VPConstant, "Ornstein-Uhlenbeck, constant beta = 1, T = 10"),
    "vp-cosine": (VPCosine, "VP cosine schedule (Nichol & Dhariwal), T = 0.9946"),
    "ddpm-discrete": (DiscreteDDPM, "DDPM 1000 linear betas 1e-4..0.02, log-SNR interpolated"),
    "ve": (VEGeometric, "VE SDE, geometric sigma 0.01..50"),
    "edm": (EDM, "EDM: alpha = 1, sigma = t in [0.002, 80]"),
    "rectified-flow": (RectifiedFlow, "rectified flow: alpha = 1 - t, sigma = t"),
}


def get_schedule(name: str) -> Schedule:
    """Build a schedule by name; raises KeyError naming the valid ones."""
    if name not in SCHEDULES:
        raise KeyError(f"unknown schedule {name!r}; valid: {', '.join(SCHEDULES)}")
    return SCHEDULES[name][0]()
