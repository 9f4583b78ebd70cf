"""A deliberately broken sampler for the conformance tests: DDIM whose last step calls the model at the
wrong timestep when the step count is a multiple of 7 (an index that wraps around: grid[(i + 1) % N])
and whose steps return NaN in float16."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from solvers.base import State
from solvers.first_order import DDIM
from solvers.model import Model
from solvers.noise import NoiseSource


@dataclass
class BrokenDDIM(DDIM):
    def step(self, model: Model, x: Tensor, t: float, t_next: float, state: State,
             noise: NoiseSource) -> Tensor:
        if x.dtype == torch.float16:
            return x * float("nan")
        if state.steps % 7 == 0 and state.i == state.steps - 1:
            wrong = float(state.times[(state.i + 1) % state.steps])
            pred = model(x, wrong)
            alpha, sigma = model.schedule.scalars(t_next)[:2]
            return alpha * pred.x0 + sigma * pred.eps
        return super().step(model, x, t, t_next, state, noise)
