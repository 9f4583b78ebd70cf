"""Time grids for a problem or a model: the named grids of analytic.grids (with the problem's target
for the data-aware ones), `file:PATH` grid files, and `gits`, which needs the model itself
(bench/measure/gits.py). Every study asks for its times here."""

from __future__ import annotations

from torch import Tensor

from analytic.grids import GridError, make_grid, parse_grid_spec
from analytic.problems import Problem
from bench.measure.gits import gits_times
from bench.measure.metrics import exact_samples
from bench.measure.models import analytic_model
from solvers.model import Model

GITS_SAMPLES = 256  # GITS's warm-up trajectories (Chen et al. 2024, gits-main default)
GITS_STREAM = 11  # exact-sample stream of its x_T (independent of every study's)


def problem_grid(spec: str, problem: Problem, steps: int, model: Model | None = None) -> Tensor:
    """`spec` with `steps` steps on the problem's interval; `gits` runs on `model` (default: the exact
    score) from GITS_SAMPLES exact draws of p_{t_max}."""
    name, params = parse_grid_spec(spec)
    if name != "gits":
        return make_grid(spec, problem.schedule, steps, problem.t_min, problem.t_max, target=problem.target)
    n = int(params.pop("samples", GITS_SAMPLES))
    x_T = exact_samples(problem, n, 0, t=problem.t_max, stream=GITS_STREAM)
    return _gits(model or analytic_model(problem), x_T, steps, problem.t_min, problem.t_max, params)


def model_grid(spec: str, model: Model, steps: int, t_min: float, t_max: float, x_T: Tensor) -> Tensor:
    """`spec` for a model without a problem (a learned network): no target, so `ays-gauss` needs its c
    and `tangent` is refused; `gits` runs on the model from x_T."""
    name, params = parse_grid_spec(spec)
    if name != "gits":
        return make_grid(spec, model.schedule, steps, t_min, t_max)
    return _gits(model, x_T[:int(params.pop("samples", GITS_SAMPLES))], steps, t_min, t_max, params)


def _gits(model: Model, x_T: Tensor, steps: int, t_min: float, t_max: float, params: dict) -> Tensor:
    allowed = {"points", "coeff", "substeps"}
    if set(params) - allowed:
        raise GridError(f"gits takes {', '.join(sorted(allowed))}, samples; got {', '.join(sorted(params))}")
    kw = {k: (float(v) if k == "coeff" else int(v)) for k, v in params.items()}
    return gits_times(model, x_T, steps, t_min, t_max, **kw)
