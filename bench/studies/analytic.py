"""The study on exact problems: problems x solvers x step counts (or NFE budgets, or tolerances) x
seeds -> tidy rows (`bench run`).

A cell is one (problem, solver, grid, step count, seed); it samples once and evaluates every metric on
that sample. Cells sharing problem, solver and seed form a chain (one worker, in order), and so do all
stochastic solvers' cells on one Brownian path (problem and seed), so each reference solution is
computed once and the path's tree is descended once per distinct time. Cells are deterministic given
their seed (bench/sweep/engine.py runs, stores and resumes them).
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from analytic import get_problem
from analytic.grids import GridError, check_grid
from analytic.problems import Problem
from bench.measure import metrics
from bench.measure.grids import problem_grid
from bench.measure.metrics import metric_rows
from bench.measure.models import analytic_model
from bench.measure.paired import PATH_METRICS, WEAK_METRICS, paired_row
from bench.measure.precision import DTYPES, rounded_model, rounding_rms
from bench.measure.reference import shared_limit
from bench.measure.theory import conditions, theory
from bench.studies.defaults import (  # noqa: E402 (torch-free: the CLI reads them)
    DEFAULT_EXTEND_STEPS,
    DEFAULT_GRID,
    DEFAULT_NFE,
    DEFAULT_PROBLEMS,
    DEFAULT_SAMPLES,
    DEFAULT_SEEDS,
    DEFAULT_TOLERANCES,
)
from bench.sweep import engine
from bench.sweep.engine import Progress, Study
from bench.sweep.store import RESULT_COLUMNS
from solvers import Sampler, make_solver, parse_spec, resolve
from solvers.noise import _mix

SDE_REFERENCE_STEPS = 1024  # SDE references: 1024 vs 2048 steps on the same Brownian path (strong order 1:
# the reference's self-checked error, stored as noise_floor, is ~1/8 of the error at 256 steps)


class SweepError(ValueError):
    """Bad sweep input; the message is one line for the user."""


@dataclass
class SweepConfig:
    problems: list[str] = field(default_factory=lambda: list(DEFAULT_PROBLEMS))
    solvers: list[str] = field(default_factory=lambda: ["all"])
    steps: list[int] | None = None  # a step ladder, or
    nfe: list[int] | None = None  # NFE budgets (neither: DEFAULT_NFE)
    # with NFE budgets, also these step counts where they are at least twice the steps of the largest
    # budget (the asymptotic levels an order fit needs for solvers of several NFE per step); None:
    # DEFAULT_EXTEND_STEPS with the default budgets, none otherwise
    extend_steps: list[int] | None = None
    grid: str = DEFAULT_GRID
    schedule: str | None = None
    metrics: list[str] | None = None  # None: w2-exact on Gaussians, w2 + path-rms on mixtures
    samples: int = DEFAULT_SAMPLES
    seeds: list[int] = field(default_factory=lambda: list(DEFAULT_SEEDS))
    dtype: str = "float64"
    device: str = "cpu"
    prior: str = "exact"
    denoise_final: bool = False
    tolerances: list[float] = field(default_factory=lambda: list(DEFAULT_TOLERANCES))

    def __post_init__(self) -> None:
        if self.steps is None and self.nfe is None:
            self.nfe = list(DEFAULT_NFE)
            if self.extend_steps is None:
                self.extend_steps = list(DEFAULT_EXTEND_STEPS)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Cell:
    problem: str
    solver: str  # solver spec (label)
    mode: str  # "steps" | "nfe" | "tol"
    target: float  # step count, NFE budget or tolerance
    seed: int
    on_path: bool = False  # a stochastic solver paired with references on the run's Brownian path

    @property
    def key(self) -> str:
        return f"{self.problem}|{self.solver}|{self.mode}={self.target:g}|seed={self.seed}"

    @property
    def chain(self) -> str:
        """Cells that reuse one reference run in one worker: a deterministic solver's cells (with the
        shared ODE reference), or every stochastic solver's cells on one Brownian path (problem and
        seed) with the SDE references driven by it, so the path's virtual tree is descended once per
        distinct time and each limiting SDE's reference is computed once."""
        who = "brownian-path" if self.on_path else self.solver
        return f"{self.problem}|{who}|seed={self.seed}"


def default_config() -> SweepConfig:
    return SweepConfig()


MIXTURE_METRICS = [*WEAK_METRICS, *PATH_METRICS]


def problem_metrics(config: SweepConfig, problem: Problem) -> list[str]:
    """The metrics of a problem: as asked, else what resolves discretization error there (exact W2
    on Gaussian targets; weak errors with control variates and pathwise errors on mixtures)."""
    if config.metrics:
        return list(config.metrics)
    return ["w2-exact"] if problem.is_gaussian else list(MIXTURE_METRICS)


def validate(config: SweepConfig) -> tuple[list[Problem], list[Sampler]]:
    """Check every input up front; raise SweepError with one line on the first problem found."""
    try:
        problems = [get_problem(p, config.schedule) for p in config.problems]
    except (ValueError, KeyError) as exc:
        raise SweepError(str(exc).strip("'\"")) from None
    try:
        solvers = resolve(config.solvers)
    except (KeyError, ValueError) as exc:
        raise SweepError(str(exc).strip("'\"")) from None
    try:
        for problem in problems:
            check_grid(config.grid, problem.schedule.name)
    except GridError as exc:
        raise SweepError(str(exc)) from None
    for m in config.metrics or []:
        if m not in metrics.METRICS:
            raise SweepError(f"unknown metric {m!r}; valid: {', '.join(metrics.METRICS)}")
    if config.metrics and "w2-exact" in config.metrics:
        bad = [p.name for p in problems if not p.is_gaussian]
        if bad:
            raise SweepError(f"w2-exact needs a Gaussian target; not Gaussian: {', '.join(bad)}")
    if config.samples <= 0:
        raise SweepError(f"--samples must be positive, got {config.samples}")
    if config.nfe is not None and config.steps is not None:
        raise SweepError("give --steps or --nfe, not both")
    counts = config.nfe if config.nfe is not None else config.steps
    if not counts or any(c <= 0 for c in counts):
        raise SweepError("--steps/--nfe need positive integers")
    if config.nfe is None:
        below = [s.label for s in solvers if "adaptive" not in s.all_tags and min(config.steps) < s.min_steps]
        if below and len(config.steps) == 1:
            raise SweepError(f"{config.steps[0]} steps is below the minimum of {', '.join(below)}")
    if not config.seeds:
        raise SweepError("need at least one seed")
    if config.dtype not in DTYPES:
        raise SweepError(f"--dtype must be one of {', '.join(DTYPES)}, got {config.dtype!r}")
    if config.prior not in ("exact", "standard"):
        raise SweepError(f"--prior must be exact or standard, got {config.prior!r}")
    if config.device != "cpu" and not config.device.startswith("cuda"):
        raise SweepError(f"--device must be cpu or cuda[:k], got {config.device!r}")
    if config.device.startswith("cuda") and not torch.cuda.is_available():
        raise SweepError("--device cuda requested but no CUDA device is available")
    return problems, solvers


def plan_cells(config: SweepConfig) -> list[Cell]:
    problems, solvers = validate(config)
    cells = []
    for problem in problems:
        names = problem_metrics(config, problem)
        exact_only = names == ["w2-exact"]
        seeds = config.seeds[:1] if exact_only else config.seeds  # exact law: no sampling error
        paired = any(m in (*WEAK_METRICS, *PATH_METRICS) for m in names)
        for solver in solvers:
            on_path = paired and solver.stochastic
            if "adaptive" in solver.all_tags:
                targets = [("tol", tol) for tol in config.tolerances]
            elif config.nfe is not None:
                targets = [("nfe", b) for b in config.nfe]
                finest = solver.steps_for_nfe(max(config.nfe)) or 0
                beyond = [k for k in config.extend_steps or [] if k >= 2 * finest]
                targets += [("steps", k) for k in beyond]
            else:
                targets = [("steps", s) for s in config.steps]
            for mode, target in targets:
                for seed in seeds:
                    name = config.problems[problems.index(problem)]
                    cells.append(Cell(name, solver.label, mode, target, seed, on_path))
    return cells


def _stream_seed(seed: int, problem: str, stream: str) -> int:
    return _mix(seed, *(ord(c) for c in f"{problem}/{stream}")) % (2**62)


def _steps_for(solver: Sampler, cell: Cell) -> int | None:
    if cell.mode == "steps":
        return int(cell.target)
    if cell.mode == "tol":
        return 1
    return solver.steps_for_nfe(int(cell.target))


def _solver_for(cell: Cell) -> Sampler:
    if cell.mode != "tol":
        return make_solver(cell.solver)
    name, params = parse_spec(cell.solver)
    params.update(rtol=cell.target, atol=cell.target)
    body = ",".join(f"{k}={v}" for k, v in params.items())
    return make_solver(f"{name}[{body}]")


def _prior(problem: Problem, config: SweepConfig, n: int, seed: int, dtype: torch.dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(_stream_seed(seed, problem.name, "prior"))
    if config.prior == "exact":
        return problem.sample_marginal(problem.t_max, n, g, dtype)
    scale = float(problem.schedule.sigma(problem.t_max))
    return scale * torch.randn(n, problem.dim, generator=g, dtype=torch.float64).to(dtype)


def _prior_law(problem: Problem, config: SweepConfig) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The Gaussian law of x_T under --prior standard; None for the exact p_T."""
    if config.prior == "exact":
        return None
    scale = float(problem.schedule.sigma(problem.t_max))
    eye = torch.eye(problem.dim, dtype=torch.float64)
    return torch.zeros(problem.dim, dtype=torch.float64), scale**2 * eye


@functools.lru_cache(maxsize=16)
def cached_problem(name: str, schedule: str | None) -> Problem:
    """One Problem per process and name: its schedule and target memoize per-time coefficients, which
    every cell on the same grid reuses (problems are never mutated after construction)."""
    return get_problem(name, schedule)


def run_cell(config: SweepConfig, cell: Cell) -> list[dict]:
    """Sample one cell and evaluate its metrics; never raises for solver failures (rows record
    status diverged/skipped with the reason)."""
    problem = cached_problem(cell.problem, config.schedule)
    solver = _solver_for(cell)
    base = make_solver(cell.solver)
    dtype = getattr(torch, config.dtype)
    model = analytic_model(problem)
    metric_names = problem_metrics(config, problem)
    row0 = {
        "problem": problem.name, "schedule": problem.schedule.name, "model": "exact",
        "solver": base.label, "solver_name": base.name, "params": json.dumps(base.params, default=str),
        "family": base.family, "stochastic": base.stochastic,
        "grid": config.grid, "seed": cell.seed, "n_samples": config.samples, "dtype": config.dtype,
        "tolerance": cell.target if cell.mode == "tol" else math.nan,
        "nfe_budget": cell.target if cell.mode == "nfe" else math.nan, "noise_floor": math.nan,
        "value": math.nan, "sample_time": math.nan, "metric_time": math.nan, "reason": "",
    }
    facts = conditions(problem.is_gaussian, config.grid, problem.schedule.name)

    def with_theory(row: dict) -> dict:
        th = theory(base, row["metric"], facts)
        return {**row, "theory_order": th.low, "theory_order_max": th.high, "theory_kind": th.kind}

    def rows(status: str, reason: str = "", steps: int = 0, nfe: int = 0) -> list[dict]:
        return [with_theory({**row0, "metric": m, "status": status, "reason": reason, "steps": steps,
                             "nfe": nfe}) for m in metric_names]

    steps = _steps_for(solver, cell)
    if steps is None or steps < solver.min_steps:
        need = solver.nfe(solver.min_steps) if cell.mode == "nfe" else solver.min_steps
        what = "NFE" if cell.mode == "nfe" else "steps"
        return rows("skipped", f"needs at least {need} {what}", int(cell.target) if cell.mode != "tol" else 0)
    try:
        times = problem_grid(config.grid, problem, steps, model)
    except GridError as exc:  # e.g. a grid file made for another step count
        return rows("skipped", str(exc), steps)
    x_T = _prior(problem, config, config.samples, cell.seed, dtype).to(config.device)
    noise_seed = _stream_seed(cell.seed, problem.name, "noise")
    noise = solver.noise_source(noise_seed, problem.t_min, problem.t_max)
    try:  # model and state in the run's dtype (bench/measure/precision.py); the metrics' laws in float64
        result = solver.run(rounded_model(model, dtype), times, x_T, noise,
                            denoise_final=config.denoise_final)
    except solver.failures as exc:
        return rows("diverged", f"{type(exc).__name__}: {exc}".splitlines()[0], steps)
    nfe = result.nfe
    if cell.mode == "tol":
        steps = nfe  # adaptive solvers are placed by counted NFE
    if not result.finite:
        return rows("diverged", "non-finite samples", steps, nfe)

    def evaluate(name: str, row: dict) -> None:
        if name == "w2-exact":
            row["value"] = metrics.w2_exact(problem, solver, model, times, config.denoise_final,
                                            prior=_prior_law(problem, config))
            if config.dtype != "float64":  # the law is float64 arithmetic's: add the rounding (a W2 bound)
                wide = solver.run(model, times, x_T.double(), solver.noise_source(noise_seed, problem.t_min,
                                  problem.t_max), denoise_final=config.denoise_final)
                rms, row["stderr"] = rounding_rms(result.x, wide.x)
                row["value"] += rms
                row["reason"] = (f"W2 bound in {config.dtype}: exact W2 of the float64 law + RMS distance "
                                 f"{rms:.3g} to the float64 run from the same x_T and noise")
        elif name in (*WEAK_METRICS, *PATH_METRICS):
            if config.prior != "exact":
                raise metrics.MetricError("weak and pathwise metrics pair each sample with a reference from "
                                          "the exact prior; with --prior standard use w2-exact or a sample "
                                          "metric")
            ref, law = metrics.paired_reference(name, problem, solver, model, x_T, cell.seed, result,
                                                noise_seed, SDE_REFERENCE_STEPS)
            row.update(paired_row(name, result.x, ref, law))
        else:
            exact = metrics.end_samples(problem, result, config.samples, cell.seed)
            row["value"] = metrics.sample_metric(name, result.x.cpu().double(), exact, cell.seed)
            row["noise_floor"] = metrics.noise_floor(name, problem, config.samples, cell.seed)

    base_row = {**row0, "steps": steps, "nfe": nfe, "sample_time": result.wall_time}
    return [with_theory(r) for r in metric_rows(metric_names, base_row, evaluate)]


def _chain_cost(chain: list[Cell]) -> float:
    """Rough relative cost: model calls of all cells, x4 for stochastic solvers (Brownian-tree
    queries), plus one fine-step reference (1024 + 2048 steps) per limiting SDE of the chain."""
    cost, limits = 0.0, set()
    for cell in chain:
        solver = make_solver(cell.solver)
        calls = {"steps": cell.target * solver.nfe_per_step, "nfe": cell.target}.get(cell.mode, 64)
        cost += calls * (4 if solver.stochastic else 1)
        if cell.on_path:
            limits.add(shared_limit(solver) or solver.label)
    return cost + 4 * 3 * SDE_REFERENCE_STEPS * len(limits)


@dataclass
class AnalyticSweep(Study):
    """`bench run`: solvers on exact problems (analytic models; ours and the peers' samplers)."""

    settings: SweepConfig
    kind = "sweep"

    def config(self) -> dict:
        return self.settings.to_dict()

    def cells(self) -> list[engine.Cell]:
        return [engine.Cell(c.key, c.chain, c) for c in plan_cells(self.settings)]

    def run_cell(self, cell: engine.Cell) -> list[dict]:
        return run_cell(self.settings, cell.params)

    def cost(self, chain: list[engine.Cell]) -> float:
        return _chain_cost([c.params for c in chain])

    def error_rows(self, cell: engine.Cell, reason: str) -> list[dict]:
        c: Cell = cell.params
        return [{**{k: math.nan for k in RESULT_COLUMNS}, "problem": c.problem, "solver": c.solver,
                 "seed": c.seed, "status": "error", "reason": reason, "metric": "error",
                 "steps": int(c.target) if c.mode != "tol" else 0, "nfe": 0, "grid": self.settings.grid}]


def run_sweep(config: SweepConfig, out_dir: Path, command: str = "", jobs: int | None = 1,
              progress: Progress | None = None, cluster: str | None = None) -> Path:
    """Run (or resume) an analytic sweep into out_dir with the one engine; returns out_dir. `jobs`:
    worker processes (None: one per CPU); `cluster`: a Dask scheduler tcp://HOST:PORT or local:N."""
    return engine.run_study(AnalyticSweep(config), out_dir, command, jobs, progress, cluster)
