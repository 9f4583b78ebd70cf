"""The conformance study (`bench conformance`): any sampler on exact problems along four axes, as cells
of the one engine; bench/report/conformance.py turns its rows into one card per sampler.

- dense: every step count N in `dense` (2..100) plus the `ladder` (128..1024) on a Gaussian target inside
  the image range: the exact W2 of the output law (bench/measure/exact_law.py; a Gaussian fit to samples
  with its noise floor where the law cannot be probed), the counted NFE beside the declared one, and
  how each run ended (a raise before the first model call is a refusal of N, a raise after it or a
  non-finite output a failure).
- precision: in the same cells, the run from the same x_T and noise in float32, bfloat16 and float16
  (bench/measure/precision.py): its RMS distance to the float64 run and the bound W2 + that distance.
- order: the weak order from the dense rows at powers of two; the strong order from path-rms on a
  mixture (the `bench run` cells, bench/studies/analytic.py) at `order_steps`.
- guidance: exact classifier guidance on the mixture (bench/studies/guidance.py) at scales w, path-rms
  against the same guided dynamics solved to high accuracy, at NFE 10 and 20, beside first-order DDIM's
  on the same grid and NFE (the baseline that shows whether a high order survives guidance).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import torch

from analytic import get_problem
from analytic.grids import GridError, check_grid
from analytic.problems import Problem
from bench.measure import metrics
from bench.measure.exact_law import bures_w2, end_law
from bench.measure.grids import problem_grid
from bench.measure.models import analytic_model
from bench.measure.precision import DTYPES, PrecisionError, dtype_of, rounded_model, rounding_rms
from bench.measure.reference import path_rms, reference
from bench.measure.theory import conditions, theory
from bench.studies import analytic
from bench.studies.guidance import guided_model, model_name
from bench.sweep.engine import Cell, Study
from solvers import Sampler, make_solver, resolve
from solvers.base import Solver
from solvers.model import Model
from solvers.noise import _mix

DENSE = list(range(2, 101))
LADDER = [128, 256, 512, 1024]
ORDER_STEPS = [4, 8, 16, 32, 64, 128, 256]
SCALES = [0.0, 1.0, 2.0, 4.0, 8.0]
GUIDANCE_NFE = [10, 20]
BASELINE = "ddim"  # first order: what a high-order sampler is compared with under guidance
FIT_SAMPLES = 1024  # the Gaussian fit where the exact law cannot be probed


class ConformanceError(ValueError):
    """Bad conformance input; the message is one line for the user."""


@dataclass
class ConformanceConfig:
    samplers: list[str] = field(default_factory=lambda: ["all"])
    gauss_problem: str = "gauss-unit-3d"
    mixture_problem: str = "mix-unit-2d"
    schedule: str | None = None
    grid: str = "logsnr"
    dense: list[int] = field(default_factory=lambda: list(DENSE))
    ladder: list[int] = field(default_factory=lambda: list(LADDER))
    dtypes: list[str] = field(default_factory=lambda: list(DTYPES))
    samples: int = 64  # x_T per dense cell (the precision axis' rounding RMS)
    order_steps: list[int] = field(default_factory=lambda: list(ORDER_STEPS))
    order_seeds: list[int] = field(default_factory=lambda: [0, 1])
    order_samples: int = 200
    scales: list[float] = field(default_factory=lambda: list(SCALES))
    guidance_nfe: list[int] = field(default_factory=lambda: list(GUIDANCE_NFE))
    guidance_samples: int = 200
    label: int = 0
    seed: int = 0


def step_counts(cfg: ConformanceConfig) -> list[int]:
    return sorted(set(cfg.dense) | set(cfg.ladder))


def validate(cfg: ConformanceConfig) -> tuple[Problem, Problem, list[Sampler]]:
    """Check every input up front; raise ConformanceError with one line on the first problem found."""
    try:
        gauss = get_problem(cfg.gauss_problem, cfg.schedule)
        mixture = get_problem(cfg.mixture_problem, cfg.schedule)
        samplers = resolve(cfg.samplers)
        check_grid(cfg.grid, gauss.schedule.name)
        for name in cfg.dtypes:
            dtype_of(name)
    except (KeyError, ValueError, GridError, PrecisionError) as exc:
        raise ConformanceError(str(exc).strip("'\"")) from None
    if not gauss.is_gaussian:
        raise ConformanceError(f"the dense axis needs a Gaussian target; {gauss.name} is not")
    if "float64" not in cfg.dtypes:
        raise ConformanceError("--dtypes must include float64 (the other dtypes are judged against it)")
    counts = step_counts(cfg) + list(cfg.order_steps) + list(cfg.guidance_nfe)
    if not step_counts(cfg) or min(counts) <= 0:
        raise ConformanceError("step counts and NFE must be positive integers")
    if min(cfg.samples, cfg.order_samples, cfg.guidance_samples) <= 1:
        raise ConformanceError("sample counts must be at least 2")
    if any(not math.isfinite(w) or w < 0 for w in cfg.scales):
        raise ConformanceError(f"guidance scales must be finite and >= 0, got {cfg.scales}")
    if cfg.scales:
        guided_model(mixture, cfg.label, 0.0)  # refuses a label no component carries
    return gauss, mixture, samplers


def power_of_two(n: float) -> bool:
    if not math.isfinite(n):
        return False
    n = int(n)
    return n > 0 and n & (n - 1) == 0


def order_rows(frame):
    """The rows orders.csv fits: the dense axis' float64 errors at powers of two (the weak order) and
    the order axis (path-rms: the strong order)."""
    dense = (frame["axis"] == "dense") & frame["metric"].isin(["w2-exact", "w2-fit"])
    dense &= frame["steps"].map(power_of_two)
    return frame[dense | (frame["axis"] == "order")]


def _seed(seed: int, *parts: str) -> int:
    return _mix(seed, *(ord(c) for c in "/".join(parts))) % (2**62)


@dataclass
class ConformanceStudy(Study):
    """`bench conformance`: a chain per sampler (its references are computed once in its worker)."""

    settings: ConformanceConfig
    kind = "conformance"

    def cells(self) -> list[Cell]:
        cfg = self.settings
        _, _, samplers = validate(cfg)
        out = []
        for s in samplers:
            out += [Cell(f"{s.label}|dense|N={n}", s.label, ("dense", s.label, n)) for n in step_counts(cfg)]
            out += [Cell(f"{s.label}|order|seed={seed}|N={n}", s.label, ("order", s.label, n, seed))
                    for seed in cfg.order_seeds for n in self._order_targets(s)]
            out += [Cell(f"{s.label}|guidance|w={w:g}", s.label, ("guidance", s.label, w))
                    for w in cfg.scales]
        return out

    def _order_targets(self, sampler: Sampler) -> list[float]:
        if "adaptive" in sampler.all_tags:
            return list(analytic.DEFAULT_TOLERANCES)
        return list(self.settings.order_steps)

    def run_cell(self, cell: Cell) -> list[dict]:
        axis, label, *rest = cell.params
        sampler = make_solver(label)
        run = {"dense": self._dense, "order": self._order, "guidance": self._guidance}[axis]
        return [{**row, "axis": axis} for row in run(sampler, *rest)]

    def cost(self, chain: list[Cell]) -> float:
        sampler = make_solver(chain[0].params[1])
        steps = sum(float(c.params[2]) for c in chain if c.params[0] != "guidance")
        return steps * sampler.nfe_per_step * (4 if sampler.stochastic else 1)

    def order_rows(self, frame):
        return order_rows(frame)

    # --- the axes -------------------------------------------------------------------------------------

    def _base(self, sampler: Sampler, problem: Problem, **extra) -> dict:
        return {"problem": problem.name, "schedule": problem.schedule.name, "model": "exact",
                "solver": sampler.label, "solver_name": sampler.name,
                "params": json.dumps(sampler.params, default=str), "family": sampler.family,
                "stochastic": sampler.stochastic, "grid": self.settings.grid, "seed": self.settings.seed,
                "reason": "", "stderr": math.nan, "noise_floor": math.nan, "value": math.nan,
                "sample_time": math.nan, "metric_time": math.nan, "tolerance": math.nan,
                "nfe_budget": math.nan, **extra}

    def _dense(self, sampler: Sampler, n: int) -> list[dict]:
        """Every dtype's run of N steps from one x_T (and noise); the float64 law's exact W2."""
        cfg = self.settings
        problem = analytic.cached_problem(cfg.gauss_problem, cfg.schedule)
        model = analytic_model(problem)
        th = theory(sampler, "w2-exact", conditions(True, cfg.grid, problem.schedule.name))
        base = self._base(sampler, problem, steps=n, n_samples=cfg.samples, theory_order=th.low,
                          theory_order_max=th.high, theory_kind=th.kind, declared_nfe=math.nan, nfe=math.nan)

        def rows(status: str, reason: str, dtypes: list[str], **more) -> list[dict]:
            return [{**base, "dtype": d, "metric": m, "status": status, "reason": reason, **more}
                    for d in dtypes for m in (["w2-exact", "w2-bound"] if d == "float64"
                                              else ["rounding-rms", "w2-bound"])]

        if "adaptive" in sampler.all_tags:
            return rows("skipped", "adaptive: step counts do not apply", cfg.dtypes)
        if n < sampler.min_steps:
            return rows("skipped", f"needs at least {sampler.min_steps} steps", cfg.dtypes)
        try:
            times = problem_grid(cfg.grid, problem, n, model)
        except GridError as exc:
            return rows("skipped", str(exc), cfg.dtypes)
        x_T = metrics.exact_samples(problem, cfg.samples, cfg.seed, t=problem.t_max, stream=11)
        base["declared_nfe"] = sampler.nfe(n)
        outputs, out = {}, []
        for name in ["float64", *(d for d in cfg.dtypes if d != "float64")]:
            status, reason, result = _attempt(sampler, rounded_model(model, dtype_of(name)), times, x_T,
                                              _seed(cfg.seed, "noise"), problem, name)
            if status != "ok":
                out += rows(status, reason, [name], nfe=math.nan if result is None else result.nfe)
                if name == "float64":
                    return out + rows("skipped", "the float64 run failed",
                                      [d for d in cfg.dtypes if d != "float64"])
                continue
            outputs[name] = result
        first = outputs["float64"]
        unpaired = sampler.stochastic and sampler.noise_kind is None and not isinstance(sampler, Solver)
        w2_row = {**base, "dtype": "float64", "status": "ok", "nfe": first.nfe,
                  "sample_time": first.wall_time}
        metric, value, floor = _law_error(problem, sampler, model, times, first, cfg)
        # a fit's sampling error: the same statistic of exact draws (its floor) is its typical size
        w2_row.update(metric=metric, value=value, noise_floor=floor, stderr=floor if floor else math.nan)
        if not math.isfinite(value):
            w2_row.update(status="diverged", reason="non-finite exact law", value=math.nan)
        out.append(w2_row)
        for name, result in outputs.items():
            row = {**base, "dtype": name, "nfe": result.nfe, "sample_time": result.wall_time, "status": "ok"}
            rms, se = (0.0, 0.0) if name == "float64" else rounding_rms(result.x, first.x)
            if name != "float64" and unpaired:  # its own noise follows the dtype: no paired float64 run
                why = "draws its own noise in the run's dtype: no float64 run on the same noise"
                out += [{**row, "metric": m, "status": "skipped", "reason": why}
                        for m in ("rounding-rms", "w2-bound")]
                continue
            if name != "float64":
                out.append({**row, "metric": "rounding-rms", "value": rms, "stderr": se})
            bound = {**row, "metric": "w2-bound", "value": value + rms, "stderr": se, "noise_floor": floor}
            if w2_row["status"] != "ok":
                bound.update(status=w2_row["status"], reason=w2_row["reason"], value=math.nan)
            out.append(bound)
        return out

    def _order(self, sampler: Sampler, target: float, seed: int) -> list[dict]:
        """A `bench run` cell: path-rms on the mixture (the strong order; for ODE samplers their order)."""
        cfg = self.settings
        mode = "tol" if "adaptive" in sampler.all_tags else "steps"
        sweep = analytic.SweepConfig(problems=[cfg.mixture_problem], solvers=[sampler.label],
                                     steps=list(cfg.order_steps), metrics=["path-rms"],
                                     samples=cfg.order_samples, seeds=list(cfg.order_seeds), grid=cfg.grid,
                                     schedule=cfg.schedule)
        cell = analytic.Cell(cfg.mixture_problem, sampler.label, mode, target, seed, sampler.stochastic)
        return [{**row, "declared_nfe": math.nan} for row in analytic.run_cell(sweep, cell)]

    def _guidance(self, sampler: Sampler, scale: float) -> list[dict]:
        """path-rms to the guided flow (or, for a stochastic Solver, the guided reverse SDE on the same
        Brownian path) at each NFE, beside the first-order baseline's on the same grid."""
        cfg = self.settings
        problem = analytic.cached_problem(cfg.mixture_problem, cfg.schedule)
        name = model_name("classifier", cfg.label, scale)
        th = theory(sampler, "path-rms")
        base = self._base(sampler, problem, model=name, metric="path-rms", dtype="float64", scale=scale,
                          n_samples=cfg.guidance_samples, theory_order=th.low, theory_order_max=th.high,
                          theory_kind=th.kind, declared_nfe=math.nan, baseline=math.nan)
        pathwise = isinstance(sampler, Solver) and sampler.stochastic and sampler.pathwise
        if not (sampler.fixed_step_ode or pathwise):
            why = ("adaptive: NFE is not set" if "adaptive" in sampler.all_tags else
                   "a stochastic library sampler draws its own noise: no pathwise reference of the "
                   "guided SDE")
            return [{**base, "nfe_budget": b, "steps": 0, "nfe": math.nan, "status": "skipped", "reason": why}
                    for b in cfg.guidance_nfe]
        model = guided_model(problem, cfg.label, scale)
        x_T = metrics.exact_samples(problem, cfg.guidance_samples, cfg.seed, t=problem.t_max, stream=7)
        noise_seed = _seed(cfg.seed, "guided-noise")
        ref = reference(problem, model, x_T, cfg.seed, sampler if pathwise else None, model_name=name,
                        noise_seed=noise_seed, steps=analytic.SDE_REFERENCE_STEPS if pathwise else None)
        ddim_ref = ref if not pathwise else reference(problem, model, x_T, cfg.seed, model_name=name)
        baseline = make_solver(BASELINE)
        out = []
        for budget in cfg.guidance_nfe:
            steps = sampler.steps_for_nfe(budget)
            row = {**base, "nfe_budget": budget, "steps": steps or 0, "noise_floor": ref.error}
            if steps is None:
                out.append({**row, "nfe": math.nan, "status": "skipped",
                            "reason": f"needs at least {sampler.nfe(sampler.min_steps)} NFE"})
                continue
            row["declared_nfe"] = sampler.nfe(steps)
            times = problem_grid(cfg.grid, problem, steps, model)
            status, reason, result = _attempt(sampler, model, times, x_T, noise_seed, problem, "float64")
            ddim = baseline.run(model, problem_grid(cfg.grid, problem, budget, model), x_T.clone())
            row["baseline"] = path_rms(ddim.x, ddim_ref.x)
            if status != "ok":
                out.append({**row, "nfe": math.nan if result is None else result.nfe, "status": status,
                            "reason": reason})
                continue
            out.append({**row, "nfe": result.nfe, "value": path_rms(result.x, ref.x), "status": "ok",
                        "sample_time": result.wall_time})
        return out


def _attempt(sampler: Sampler, model: Model, times: torch.Tensor, x_T: torch.Tensor, noise_seed: int,
             problem: Problem, dtype: str):
    """(status, reason, result) of one run in `dtype`: a raise before the first model call is a refusal
    of the input ("skipped"), one after it or a non-finite output a failure ("diverged")."""
    noise = sampler.noise_source(noise_seed, problem.t_min, problem.t_max)
    before = model.calls
    try:
        result = sampler.run(model, times, x_T.to(dtype_of(dtype)), noise)
    except sampler.failures as exc:
        what = f"{type(exc).__name__}: {exc}".splitlines()[0][:160]
        if model.calls == before:
            return "skipped", f"refused before any model call: {what}", None
        return "diverged", f"raised after {model.calls - before} model calls ({dtype}): {what}", None
    if not result.finite:
        return "diverged", f"non-finite output ({dtype})", result
    return "ok", "", result


def _law_error(problem: Problem, sampler: Sampler, model: Model, times: torch.Tensor, result,
               cfg: ConformanceConfig) -> tuple[str, float, float]:
    """(metric, value, noise floor): exact W2 of the output law where it can be probed (floor 0), else
    the W2 between a Gaussian fit to FIT_SAMPLES outputs and the exact law, with the same statistic of
    FIT_SAMPLES exact draws as its floor."""
    try:
        return "w2-exact", metrics.w2_exact(problem, sampler, model, times), 0.0
    except metrics.MetricError:
        pass
    x_T = metrics.exact_samples(problem, FIT_SAMPLES, cfg.seed, t=problem.t_max, stream=12)
    status, _, fit = _attempt(sampler, model, times, x_T, _seed(cfg.seed, "fit"), problem, "float64")
    if status != "ok":
        return "w2-fit", math.nan, math.nan
    mean, cov = end_law(problem, fit)
    g = torch.Generator().manual_seed(_seed(cfg.seed, "fit-floor"))
    z = torch.randn(FIT_SAMPLES, len(mean), generator=g, dtype=torch.float64)
    exact = mean + z @ torch.linalg.cholesky(cov).T
    return "w2-fit", _fit_w2(fit.x, mean, cov), _fit_w2(exact, mean, cov)


def _fit_w2(x: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> float:
    x = x.to(torch.float64)
    return bures_w2(x.mean(0), torch.cov(x.T).reshape(len(mean), len(mean)), mean, cov)


__all__ = ["ConformanceConfig", "ConformanceError", "ConformanceStudy", "order_rows", "power_of_two"]
