"""Score error vs discretization error (the seed chapter's split of a sampler's error into its
statistical and its sampling part; cf. Chen et al. 2023, Thm 2: W2/TV <= score term + step term).

For every (solver, steps, seed), from one draw x_T ~ p_T (exact prior), three errors:
  discretization  the solver with the exact score                    (no score error)
  score           the high-accuracy reference with the tested model  (no discretization error)
  both            the solver with the tested model
each measured by sample W2 against exact samples of p_{t_min} (noise floor in `noise_floor`) and by
path-rms against the exact-score reference flow of the same x_T (coupled: no sampling noise). The
study runs on the one engine (bench/sweep/engine.py) and writes the standard results directory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from analytic import get_problem
from analytic.grids import check_grid
from bench.measure import metrics
from bench.measure.grids import problem_grid
from bench.measure.models import analytic_model
from bench.measure.precision import dtype_of, rounded_model
from bench.measure.reference import path_rms, reference
from bench.measure.theory import theory
from bench.studies.perturb import parse_model_spec
from bench.sweep.engine import Cell, Study
from solvers import make_solver, resolve

COMPONENTS = ("discretization", "score", "both")
DEFAULT_SOLVERS = ["ddim", "heun", "dpmpp-2m", "dpm-solver-3"]
DEFAULT_STEPS = [4, 8, 16, 32, 64, 128, 256]
PRIOR_STREAM = 7  # exact-sample stream of x_T (streams 0..2 are the W2 samples and its floor)
METRICS = ("w2", "path-rms")


@dataclass
class DecomposeConfig:
    problem: str = "mix-2d"
    model: str = "exact"  # a checkpoint, perturb:bias=S or perturb:noise=S
    solvers: list[str] = field(default_factory=lambda: list(DEFAULT_SOLVERS))
    steps: list[int] = field(default_factory=lambda: list(DEFAULT_STEPS))
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    samples: int = 500
    schedule: str | None = None
    grid: str = "logsnr"
    dtype: str = "float64"  # the solver runs (model and state); references stay float64


@dataclass
class DecomposeStudy(Study):
    """`bench learned decompose`: per (solver, steps, seed) the three errors of the module doc, as
    rows of the one results format with a `component` column: discretization rows have model
    "exact", score and both rows the tested model; a chain is one seed (its references are shared)."""

    settings: DecomposeConfig
    kind = "decompose"

    def cells(self) -> list[Cell]:
        cfg = self.settings
        if cfg.samples <= 0 or not cfg.seeds:
            raise metrics.MetricError("--samples must be positive and --seeds not empty")
        problem = get_problem(cfg.problem, cfg.schedule)
        parse_model_spec(cfg.model, problem)  # refuse a bad model spec up front
        check_grid(cfg.grid, problem.schedule.name)
        dtype_of(cfg.dtype)
        chosen = resolve(cfg.solvers)
        stochastic = [s.label for s in chosen if not s.fixed_step_ode]
        if stochastic:
            raise metrics.MetricError("the decomposition is for fixed-step ODE solvers; not: "
                                      + ", ".join(stochastic))
        return [Cell(f"{solver.label}|steps={n}|seed={seed}", f"seed={seed}", (solver.label, n, seed))
                for seed in cfg.seeds for solver in chosen for n in cfg.steps if n >= solver.min_steps]

    def run_cell(self, cell: Cell) -> list[dict]:
        cfg = self.settings
        label, n, seed = cell.params
        problem = get_problem(cfg.problem, cfg.schedule)
        solver = make_solver(label)
        exact = analytic_model(problem)
        x_T = metrics.exact_samples(problem, cfg.samples, seed, t=problem.t_max, stream=PRIOR_STREAM)
        y = metrics.exact_samples(problem, cfg.samples, seed)
        floor = metrics.noise_floor("w2", problem, cfg.samples, seed)
        ref_exact = reference(problem, exact, x_T, seed)
        # fresh instances for the reference and the run: a noisy perturbation draws from its own seed
        ref_tested = reference(problem, parse_model_spec(cfg.model, problem), x_T, seed, model_name=cfg.model)
        times = problem_grid(cfg.grid, problem, n, exact)
        dtype = dtype_of(cfg.dtype)
        runs = {"discretization": solver.run(rounded_model(exact, dtype), times, x_T.to(dtype)),
                "both": solver.run(rounded_model(parse_model_spec(cfg.model, problem), dtype), times,
                                   x_T.to(dtype))}
        found = {"score": ref_tested.x, **{k: r.x for k, r in runs.items()}}
        rows = []
        for component in COMPONENTS:
            x = found[component]
            for metric in METRICS:
                th = theory(solver, metric)
                value = (metrics.sample_metric("w2", x.double(), y, seed) if metric == "w2"
                         else path_rms(x, ref_exact.x))
                rows.append({
                    "problem": problem.name, "schedule": problem.schedule.name,
                    "model": "exact" if component == "discretization" else cfg.model,
                    "solver": solver.label, "solver_name": solver.name, "params": str(solver.params),
                    "family": solver.family, "stochastic": False, "theory_order": th.low,
                    "theory_order_max": th.high, "theory_kind": th.kind, "grid": cfg.grid, "steps": n,
                    "nfe": runs["discretization"].nfe, "seed": seed, "metric": metric, "value": value,
                    "noise_floor": floor if metric == "w2" else ref_exact.error, "n_samples": cfg.samples,
                    "dtype": cfg.dtype if component != "score" else "float64",
                    "status": "ok" if math.isfinite(value) else "diverged", "reason": "",
                    "sample_time": runs.get(component, runs["both"]).wall_time, "metric_time": math.nan,
                    "tolerance": math.nan, "component": component})
        return rows

    def cost(self, chain: list[Cell]) -> float:
        return float(sum(c.params[1] for c in chain))


def decompose(problem_name: str, model_spec: str, solvers: list[str] | None = None,
              steps: list[int] | None = None, seeds: int = 3, samples: int = 500,
              schedule: str | None = None, grid: str = "logsnr") -> pd.DataFrame:
    """The rows of a decomposition study run in this process (the engine runs the same cells)."""
    study = DecomposeStudy(DecomposeConfig(problem_name, model_spec, solvers or list(DEFAULT_SOLVERS),
                                           steps or list(DEFAULT_STEPS), list(range(seeds)), samples,
                                           schedule, grid))
    return pd.DataFrame([row for cell in study.cells() for row in study.run_cell(cell)])


def summarize(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean and 95% CI half-width over seeds per (solver, steps, nfe, component, metric)."""
    keys = ["problem", "model", "solver", "steps", "nfe", "metric", "component"]
    grouped = frame.groupby(keys)["value"]
    out = grouped.agg(["mean", "std", "count"]).reset_index()
    out["ci"] = 1.96 * out["std"].fillna(0.0) / out["count"].map(math.sqrt)
    return out.drop(columns="std")


def table(frame: pd.DataFrame, metric: str = "path-rms") -> pd.DataFrame:
    """One row per (solver, steps): the three components side by side, with their CIs."""
    summary = summarize(frame)
    summary = summary[summary["metric"] == metric]
    wide = summary.pivot_table(index=["solver", "steps", "nfe"], columns="component",
                               values=["mean", "ci"])
    wide.columns = [c if m == "mean" else f"{c}_ci" for m, c in wide.columns]
    return wide.reset_index()[["solver", "steps", "nfe", *COMPONENTS, *(f"{c}_ci" for c in COMPONENTS)]]


def crossover(frame: pd.DataFrame, metric: str = "path-rms") -> dict[str, float]:
    """Per solver: the smallest NFE from which on the discretization error stays below the score
    error (beyond it, score error dominates); nan if it never does on the swept NFEs."""
    wide = table(frame, metric)
    out = {}
    for solver, part in wide.groupby("solver"):
        part = part.sort_values("nfe")
        below = (part["discretization"] <= part["score"]).tolist()
        nfe = math.nan
        for i in range(len(below)):
            if all(below[i:]):
                nfe = float(part["nfe"].iloc[i])
                break
        out[str(solver)] = nfe
    return out

