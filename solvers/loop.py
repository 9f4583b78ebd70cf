"""The one sampling loop: steps a solver along a time grid, counts real model calls, reports
progress, and takes its noise from the caller."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from solvers.model import Model
from solvers.noise import NoiseSource, ZeroNoise
from solvers.sampler import Progress, SampleResult

if TYPE_CHECKING:
    from solvers.base import Solver


def check_grid(solver: Solver, times: Tensor) -> None:
    if times.ndim != 1 or len(times) < 2:
        raise ValueError("the time grid needs at least two times")
    if not bool((times[1:] < times[:-1]).all()):
        raise ValueError("the time grid must be strictly decreasing")
    steps = len(times) - 1
    if steps < solver.min_steps:
        raise ValueError(f"{solver.label} needs at least {solver.min_steps} steps, got {steps}")


def sample(solver: Solver, model: Model, times: Tensor, x: Tensor,
           noise: NoiseSource | None = None, *, denoise_final: bool = False,
           progress: Progress | None = None) -> SampleResult:
    """Integrate from times[0] to times[-1] starting at x (drawn from the prior by the caller).

    `denoise_final` adds one explicit Tweedie step x <- E[x0 | x_{t_min}] (one more model call); the
    output then stands for the data (t_end = 0) and is judged against the data law.
    Stochastic solvers need a noise source; deterministic ones get ZeroNoise.
    """
    check_grid(solver, times)
    if noise is None:
        if solver.stochastic:
            raise ValueError(f"{solver.label} is stochastic and needs a noise source")
        noise = ZeroNoise()
    start_calls = model.calls
    start = time.perf_counter()
    prime = getattr(model.schedule, "prime", None)
    if prime is not None:  # precompute the grid's coefficients (as a scheduler's set_timesteps does)
        prime(times)
    state = solver.init_state(x, times)
    steps = len(times) - 1
    grid = times.tolist()
    with torch.no_grad():
        for i in range(steps):
            state.i = i
            x = solver.step(model, x, grid[i], grid[i + 1], state, noise)
            if progress is not None:
                progress(i + 1, steps)
        if denoise_final:
            x = model(x, grid[-1]).x0
    return SampleResult(x, model.calls - start_calls, steps, time.perf_counter() - start,
                        0.0 if denoise_final else grid[-1], grid[-1], denoise_final)
