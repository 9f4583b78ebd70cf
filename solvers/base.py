"""The solver protocol: a Sampler (declared order, NFE per step, stochasticity, tags) with one
`step`. Multistep memory lives in an explicit `State`; noise comes from a `NoiseSource`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from solvers.loop import sample
from solvers.model import Model, ScheduleLike
from solvers.noise import NoiseSource, brownian_path
from solvers.sampler import REVERSE_SDE, OrderException, Progress, Sampler, SampleResult

__all__ = ["REVERSE_SDE", "OrderException", "SampleResult", "Sampler", "Solver", "State", "coeffs"]


@dataclass
class State:
    """What a solver may remember between steps. `i` indexes the step t = times[i] -> times[i+1]."""

    times: Tensor
    i: int = 0
    history: list = field(default_factory=list)  # solver-defined, newest last
    extra: dict = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return len(self.times) - 1

    @property
    def steps_left(self) -> int:
        """Steps remaining including the current one."""
        return self.steps - self.i

    def remember(self, item: Any, keep: int) -> None:
        self.history.append(item)
        del self.history[:-keep]


@dataclass
class Solver(Sampler):
    """Our solvers: dataclasses whose fields are the parameters, with one `step` (metadata as in
    Sampler); `run` drives them through the one loop (solvers/loop.py). Multistep memory lives in
    an explicit `State`; stochastic ones draw from the Brownian path of the run's seed."""

    def init_state(self, x: Tensor, times: Tensor) -> State:
        return State(times=times)

    def step(self, model: Model, x: Tensor, t: float, t_next: float, state: State,
             noise: NoiseSource) -> Tensor:
        raise NotImplementedError

    def run(self, model: Model, times: Tensor, x: Tensor, noise: NoiseSource | None = None, *,
            denoise_final: bool = False, progress: Progress | None = None) -> SampleResult:
        """The one loop (solvers.loop.sample) with this solver."""
        return sample(self, model, times, x, noise, denoise_final=denoise_final, progress=progress)

    def noise_source(self, seed: int, t_lo: float, t_hi: float) -> NoiseSource | None:
        """Stochastic ones: the Brownian path of `seed` on [t_lo, t_hi] (shared with references)."""
        return brownian_path(seed, t_lo, t_hi) if self.stochastic else None


def coeffs(schedule: ScheduleLike, t: float) -> tuple[float, float, float]:
    """(alpha, sigma, lambda) at t as Python floats."""
    alpha, sigma, _, _, lam = schedule.scalars(t)
    return alpha, sigma, lam
