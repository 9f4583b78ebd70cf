"""The model protocol: whatever predicts (an analytic target, a network) is wrapped once into a
`Model` with a declared parameterization; every solver reads the prediction it needs from a
`Prediction`, and the conversions between eps, x0, score and velocity are written here only.

With x = alpha x0 + sigma eps: score = -eps / sigma, and the probability-flow ODE drift is
dx/dt = f x - g^2/2 score = alpha' x0 + sigma' eps (Song et al. 2021 eq. 13; Lipman et al. 2023).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import Literal, Protocol

import torch
from torch import Tensor

Parameterization = Literal["eps", "x0", "score", "velocity"]
PARAMETERIZATIONS: tuple[str, ...] = ("eps", "x0", "score", "velocity")


class ScheduleLike(Protocol):
    """What solvers may ask of a noise schedule (analytic.schedules implements it)."""

    def alpha(self, t) -> Tensor: ...
    def sigma(self, t) -> Tensor: ...
    def d_alpha(self, t) -> Tensor: ...
    def d_sigma(self, t) -> Tensor: ...
    def log_snr(self, t) -> Tensor: ...
    def t_of_log_snr(self, lam) -> Tensor: ...
    def f(self, t) -> Tensor: ...
    def g2(self, t) -> Tensor: ...
    def sigma_tilde(self, t) -> Tensor: ...
    def t_of_sigma_tilde(self, s) -> Tensor: ...
    def scalars(self, t: float) -> tuple[float, float, float, float, float]: ...
    def scaled(self, t: float) -> tuple[float, float]: ...


class Prediction:
    """One model evaluation at (x, t), readable in every parameterization."""

    def __init__(self, x: Tensor, t: float, raw: Tensor, kind: str, schedule: ScheduleLike):
        self.x, self.t, self.raw, self.kind = x, t, raw, kind
        self.alpha, self.sigma, self.d_alpha, self.d_sigma, _ = schedule.scalars(t)

    @cached_property
    def eps(self) -> Tensor:
        if self.kind == "eps":
            return self.raw
        if self.kind == "score":
            return -self.sigma * self.raw
        if self.kind == "x0":
            return (self.x - self.alpha * self.raw) / self.sigma
        det = self.d_sigma * self.alpha - self.sigma * self.d_alpha
        return (self.alpha * self.raw - self.d_alpha * self.x) / det

    @cached_property
    def x0(self) -> Tensor:
        if self.kind == "x0":
            return self.raw
        if self.kind == "velocity":
            det = self.d_sigma * self.alpha - self.sigma * self.d_alpha
            return (self.d_sigma * self.x - self.sigma * self.raw) / det
        return (self.x - self.sigma * self.eps) / self.alpha

    @cached_property
    def score(self) -> Tensor:
        if self.kind == "score":
            return self.raw
        return -self.eps / self.sigma

    @cached_property
    def drift(self) -> Tensor:
        """dx/dt of the probability-flow ODE in the schedule's time."""
        if self.kind == "velocity":
            return self.raw
        return self.d_alpha * self.x0 + self.d_sigma * self.eps


class Model:
    """A predictor fn(x, t) -> tensor with a declared parameterization, tied to a schedule.

    `calls` counts real evaluations of fn; every solver goes through `__call__`.
    """

    def __init__(self, fn: Callable[[Tensor, Tensor], Tensor], parameterization: Parameterization,
                 schedule: ScheduleLike):
        if parameterization not in PARAMETERIZATIONS:
            raise ValueError(f"unknown parameterization {parameterization!r}; "
                             f"valid: {', '.join(PARAMETERIZATIONS)}")
        self.fn, self.parameterization, self.schedule = fn, parameterization, schedule
        self.calls = 0

    def __call__(self, x: Tensor, t: float | Tensor) -> Prediction:
        self.calls += 1
        t = float(t)
        raw = self.fn(x, torch.tensor(t, dtype=torch.float64))
        return Prediction(x, t, raw.to(x.dtype), self.parameterization, self.schedule)
