"""Properties every registered solver must have: declared NFE equals counted calls, no NaN in
float32 from 4 to 1024 steps on every built-in problem, metadata complete."""

from __future__ import annotations

import pytest
import torch

from analytic import BUILTIN, get_problem, make_grid
from solvers import IidNoise, resolve, sample
from tests.util import counted_model, prior_sample

ALL = resolve("all")
IDS = [s.label for s in ALL]


@pytest.mark.parametrize("solver", ALL, ids=IDS)
def test_metadata_complete(solver):
    info = solver.describe()
    assert info["name"] and info["reference"], "every solver names its paper"
    assert info["order"] >= 0 and info["nfe_per_step"] >= 1
    assert solver.__doc__ and len(solver.__doc__) > 40


@pytest.mark.parametrize("solver", ALL, ids=IDS)
@pytest.mark.parametrize("steps", [5, 12])
def test_counted_calls_equal_declared_nfe(solver, steps):
    problem = get_problem("mix-2d")
    model, counter = counted_model(problem)
    steps = max(steps, solver.min_steps)
    times = make_grid("logsnr", problem.schedule, steps, problem.t_min, problem.t_max)
    noise = IidNoise(1) if solver.stochastic else None
    result = sample(solver, model, times, prior_sample(problem, 64), noise)
    assert result.nfe == counter.calls == model.calls
    if "adaptive" not in solver.all_tags:
        assert counter.calls == solver.nfe(steps)


@pytest.mark.parametrize("solver", ALL, ids=IDS)
def test_finite_in_float32_on_every_problem(solver):
    for name in BUILTIN:
        problem = get_problem(name)
        model, _ = counted_model(problem)
        x_T = prior_sample(problem, 128, dtype=torch.float32)
        for steps in (4, 1024):
            if steps < solver.min_steps or ("adaptive" in solver.all_tags and steps > 4):
                continue
            times = make_grid("logsnr", problem.schedule, steps, problem.t_min, problem.t_max)
            noise = IidNoise(0) if solver.stochastic else None
            out = sample(solver, model, times, x_T, noise).x
            assert out.dtype == torch.float32
            assert torch.isfinite(out).all(), f"{solver.label} on {name} with {steps} steps"
