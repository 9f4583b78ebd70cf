"""`bench images split`: a learned image model against the exact target fitted to the same data.

For every (solver, NFE budget, seed), from one draw x_T of the exact target's p_T (the same x_T for
the network and the exact score), with the schedule of the network:
  discretization  the solver with the network   vs the network's high-accuracy flow (`reference_method`
                                                   at N and 2N steps, self-checked)
  both            the solver with the network   vs the exact target's high-accuracy flow (RK4 in
                                                   log-SNR, bench/measure/reference.py)
  exact           the solver with the exact score vs the exact flow: the exact study's discretization
                                                   error on the fitted target
and once per seed
  score           the network's high-accuracy flow vs the exact flow (no discretization error),
and once per (solver, NFE)
  exact-gauss     w2-exact of the solver on the `-gauss` target of the same data (no sampling error).
Metrics: path-rms (strong) and the paired weak metrics (bench/measure/paired.py; their test functions
are fixed by the exact target's law at t_min). The same ranking on each lets bench/report/link.py ask
whether the exact study predicts the learned one (Kendall tau, bootstrap over seeds).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from functools import lru_cache

import torch
from torch import Tensor

from analytic import get_problem
from analytic.grids import check_grid
from analytic.problems import Problem
from bench.measure import metrics
from bench.measure.grids import problem_grid
from bench.measure.models import analytic_model
from bench.measure.paired import WEAK_METRICS, paired_row
from bench.measure.reference import reference
from bench.measure.theory import theory
from bench.studies.decompose import PRIOR_STREAM
from bench.studies.defaults import LINK_NFE, LINK_SOLVERS
from bench.studies.images.models import image_shape, load_model
from bench.sweep.engine import Cell, Study
from solvers import Solver, make_solver, resolve
from solvers.model import Model

SPLIT_METRICS = ("path-rms", *WEAK_METRICS)
COMPONENTS = ("discretization", "both", "exact", "score", "exact-gauss")
TARGETS = {"digits": "digits-gmm", "fmnist": "fmnist-gmm"}  # the shipped models' fitted targets


class SplitError(ValueError):
    """Bad split-study input (one-line message)."""


@dataclass
class SplitConfig:
    model: str = "digits"
    target: str | None = None  # default: TARGETS[model]
    solvers: list[str] = field(default_factory=lambda: list(LINK_SOLVERS))
    nfe: list[int] = field(default_factory=lambda: list(LINK_NFE))
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3])
    samples: int = 64  # per seed
    grid: str = "logsnr"
    reference_method: str = "dpmpp-3m"
    reference_steps: int = 100  # the network's reference: N and 2N steps
    fid_results: str | None = None  # a `bench images run` directory with FID rows of the same model

    def target_name(self) -> str:
        if self.target:
            return self.target
        if self.model not in TARGETS:
            raise SplitError(f"--target is needed for model {self.model!r} (shipped: {', '.join(TARGETS)})")
        return TARGETS[self.model]

    def gauss_name(self) -> str:
        """The `-gauss` target of the same data set (digits-gmm -> digits-gauss)."""
        base = self.target_name().split("[")[0].rsplit("-", 1)[0]
        return f"{base}-gauss"


class FlatNetwork:
    """fn(x, t) on flat (n, d) states for an image network on (n, C, H, W)."""

    def __init__(self, net, shape: tuple[int, int, int]):
        self.net, self.shape = net, shape

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        return self.net(x.reshape(len(x), *self.shape), t).reshape(len(x), -1)


@dataclass
class Setup:
    problem: Problem  # the fitted target, on the network's schedule
    gauss: Problem
    network: Model
    exact: Model


@lru_cache(maxsize=2)
def split_setup(model: str, target: str, gauss: str) -> Setup:
    """Per worker: the network (flat), the fitted targets on its schedule and the exact score."""
    net = load_model(model)
    shape = image_shape(net)
    problems = []
    for name in (target, gauss):
        problem = get_problem(name)
        if problem.image_shape != shape:
            raise SplitError(f"target {name} holds {problem.image_shape} images, model {model} {shape}")
        sched = net.schedule
        problems.append(dataclasses.replace(problem, schedule=sched, t_min=sched.t_min, t_max=sched.t_max))
    network = Model(FlatNetwork(net.fn, shape), "eps", net.schedule)
    return Setup(problems[0], problems[1], network, analytic_model(problems[0]))


@dataclass
class SplitStudy(Study):
    """Cells: (solver, budget, seed) in chain seed=S with the per-seed `score` cell, whose references
    every cell of the chain shares; (solver, budget) `exact-gauss` cells in chain "gauss"."""

    settings: SplitConfig
    kind = "image-split"

    def cells(self) -> list[Cell]:
        cfg = self.settings
        if cfg.samples < 2 or not cfg.seeds or not cfg.nfe:
            raise SplitError("--samples must be >= 2 and --seeds, --nfe not empty")
        check_grid(cfg.grid)
        for name in (cfg.target_name(), cfg.gauss_name()):
            get_problem(name)  # a bad target or missing data fails here, in one line
        chosen = resolve(cfg.solvers)
        bad = [s.label for s in chosen if not s.fixed_step_ode]
        if bad:
            raise SplitError("the split is for fixed-step ODE solvers; not: " + ", ".join(bad))
        make_solver(cfg.reference_method)
        cells = []
        for seed in cfg.seeds:
            cells.append(Cell(f"score|seed={seed}", f"seed={seed}", ("score", None, seed)))
            cells += [Cell(f"{s.label}|nfe={b}|seed={seed}", f"seed={seed}", (s.label, b, seed))
                      for s in chosen for b in cfg.nfe if s.steps_for_nfe(b) is not None]
        cells += [Cell(f"{s.label}|nfe={b}|gauss", "gauss", (s.label, b, None))
                  for s in chosen for b in cfg.nfe if s.steps_for_nfe(b) is not None]
        return cells

    def cost(self, chain: list[Cell]) -> float:
        return float(sum(1 if c.params[2] is None else 4 * (c.params[1] or 300) for c in chain))

    def incompatibility(self, old_config: dict) -> str | None:
        """A rerun may add or change --fid-results (it only feeds the report's Kendall table)."""
        return super().incompatibility({**(old_config or {}), "fid_results": self.settings.fid_results})

    def manifest_extra(self) -> dict:
        cfg = self.settings
        return {"target": cfg.target_name(), "gauss_target": cfg.gauss_name(),
                "network_reference": f"{cfg.reference_method} at {cfg.reference_steps} and "
                                     f"{2 * cfg.reference_steps} steps (logsnr)",
                "exact_reference": "RK4 in log-SNR, self-checked N vs 2N (bench/measure/reference.py)"}

    def _references(self, setup: Setup, seed: int):
        cfg = self.settings
        x_T = metrics.exact_samples(setup.problem, cfg.samples, seed, t=setup.problem.t_max,
                                    stream=PRIOR_STREAM)
        exact_ref = reference(setup.problem, setup.exact, x_T, seed)
        net_ref = reference(setup.problem, setup.network, x_T, seed, method=cfg.reference_method,
                            steps=cfg.reference_steps, grid="logsnr", model_name=cfg.model)
        return x_T, exact_ref, net_ref

    def run_cell(self, cell: Cell) -> list[dict]:
        with torch.no_grad():
            return self._run_cell(cell)

    def _run_cell(self, cell: Cell) -> list[dict]:
        cfg = self.settings
        label, budget, seed = cell.params
        setup = split_setup(cfg.model, cfg.target_name(), cfg.gauss_name())
        if seed is None:
            return self._gauss_rows(setup, make_solver(label), budget)
        x_T, exact_ref, net_ref = self._references(setup, seed)
        law = setup.problem.marginal(setup.problem.t_min)
        if label == "score":
            solver = make_solver(cfg.reference_method)
            return [self._row(setup, solver, 2 * cfg.reference_steps, None, seed, "score", m,
                              paired_row(m, net_ref.x, exact_ref, law), sample_time=math.nan)
                    for m in SPLIT_METRICS]
        solver = make_solver(label)
        steps = solver.steps_for_nfe(budget)
        times = problem_grid(cfg.grid, setup.problem, steps)
        with_net = solver.run(setup.network, times, x_T.clone())
        with_exact = solver.run(setup.exact, times, x_T.clone())
        pairs = {"discretization": (with_net, net_ref), "both": (with_net, exact_ref),
                 "exact": (with_exact, exact_ref)}
        rows = []
        for component, (run, ref) in pairs.items():
            for m in SPLIT_METRICS:
                found = paired_row(m, run.x, ref, law)
                rows.append(self._row(setup, solver, steps, run.nfe, seed, component, m, found, budget,
                                      run.wall_time))
        return rows

    def _gauss_rows(self, setup: Setup, solver: Solver, budget: int) -> list[dict]:
        problem = setup.gauss
        steps = solver.steps_for_nfe(budget)
        times = problem_grid(self.settings.grid, problem, steps)
        value = metrics.w2_exact(problem, solver, analytic_model(problem), times)
        row = self._row(setup, solver, steps, solver.nfe(steps), self.settings.seeds[0], "exact-gauss",
                        "w2-exact", {"value": value, "stderr": 0.0, "noise_floor": 0.0}, budget)
        return [{**row, "problem": problem.name, "model": "exact", "n_samples": math.nan}]

    def _row(self, setup: Setup, solver: Solver, steps: int, nfe: int | None, seed: int, component: str,
             metric: str, found: dict, budget: int | None = None, sample_time: float = math.nan) -> dict:
        th = theory(solver, metric)
        value = float(found["value"])
        return {
            "problem": setup.problem.name, "schedule": setup.problem.schedule.name,
            "model": "exact" if component == "exact" else self.settings.model,
            "solver": solver.label if component != "score" else f"reference ({solver.label})",
            "solver_name": solver.name, "params": str(solver.params), "family": solver.family,
            "stochastic": False, "theory_order": th.low, "theory_order_max": th.high,
            "theory_kind": th.kind, "grid": self.settings.grid, "steps": steps,
            "nfe": nfe if nfe is not None else solver.nfe(steps), "seed": seed, "metric": metric,
            "n_samples": self.settings.samples, "dtype": "float64",
            "status": "ok" if math.isfinite(value) else "diverged", "reason": "",
            "sample_time": sample_time, "metric_time": math.nan, "tolerance": math.nan,
            "nfe_budget": budget if budget is not None else math.nan, "component": component,
            **found}
