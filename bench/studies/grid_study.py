"""Grid studies on the one engine: optimise grids per (solver, NFE) and compare them with the
standard grids (kind "grid"), and carry optimised grids to a learned model (kind "grid-transfer").

"grid": one cell per (solver, budget) on one problem: the objective on every standard grid, then
`bench grid optimize`'s minimiser from the best of them; the optimised grid is written to
`OUT/grids/<solver>-nfe<N>.json` and its row has grid "optimized".
"grid-transfer": one cell per (solver, budget, seed) on a shipped learned model: path-rms of the
solver with the network against the network's own high-accuracy flow (the split's discretization
component, bench/studies/images/split.py) on every standard grid and on the grid files of a "grid"
run (grid "optimized"), from x_T drawn from the fitted target's p_T.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from analytic import get_problem
from analytic.grid_files import read_grid_file, write_grid_file
from analytic.grids import FILE_PREFIX, GridError
from bench.measure import metrics
from bench.measure.grids import problem_grid
from bench.measure.paired import paired_row
from bench.measure.reference import reference
from bench.measure.theory import theory
from bench.studies.decompose import PRIOR_STREAM
from bench.studies.defaults import GRID_SOLVERS
from bench.studies.grid_optimize import STANDARD_GRIDS, OptimizeError, objective, optimize
from bench.studies.images.split import TARGETS, split_setup
from bench.sweep.engine import Cell, Study
from solvers import Solver, make_solver, resolve

OPTIMIZED = "optimized"


NETWORK_REFERENCE = ("dpmpp-3m", 100)  # the network's own flow: method, N (vs 2N), as the split study


def learned_problem(model: str) -> tuple:
    """(the fitted target on the shipped model's schedule, the network as a flat Model) of a shipped model."""
    target = TARGETS.get(model)
    if target is None:
        raise OptimizeError(f"no fitted target for model {model!r} (shipped: {', '.join(TARGETS)})")
    setup = split_setup(model, target, target.rsplit("-", 1)[0] + "-gauss")
    return setup, setup.problem, setup.network


def refuse_exact_objective(name: str, model: str | None) -> None:
    """w2-exact needs the exact score: refused with a shipped model."""
    if model is not None and name == "w2-exact":
        raise OptimizeError("w2-exact needs the exact score; with --model use path-rms or a weak metric")


def problem_and_objective(name: str, solver: Solver, *, problem: str | None = None,
                          schedule: str | None = None, model: str | None = None, samples: int = 256,
                          seed: int = 0):
    """(problem, times -> objective) of a grid optimisation: on the exact `problem`, or with the shipped
    `model`'s network on its fitted target, against the network's own flow (NETWORK_REFERENCE)."""
    if model is None:
        prob = get_problem(problem, schedule)
        return prob, objective(name, prob, solver, samples=samples, seed=seed)
    refuse_exact_objective(name, model)
    _, prob, network = learned_problem(model)
    method, steps = NETWORK_REFERENCE
    return prob, objective(name, prob, solver, network, samples, seed, model_name=model,
                           reference_method=method, reference_steps=steps)


def grid_file_name(solver: str, nfe: int) -> str:
    return f"{solver.replace('/', '_')}-nfe{nfe}.json"


def _row(
    problem,
    solver: Solver,
    grid: str,
    steps: int,
    nfe: int,
    budget: int,
    seed: int,
    metric: str,
    found: dict,
    model: str,
    n_samples: float,
) -> dict:
    th = theory(solver, metric)
    return {
        "problem": problem.name,
        "schedule": problem.schedule.name,
        "model": model,
        "solver": solver.label,
        "solver_name": solver.name,
        "params": "{}",
        "family": solver.family,
        "stochastic": solver.stochastic,
        "theory_order": th.low,
        "theory_order_max": th.high,
        "theory_kind": th.kind,
        "grid": grid,
        "steps": steps,
        "nfe": nfe,
        "nfe_budget": budget,
        "seed": seed,
        "metric": metric,
        "stderr": 0.0,
        "noise_floor": math.nan,
        "n_samples": n_samples,
        "dtype": "float64",
        "status": "ok",
        "reason": "",
        **found,
    }


@dataclass
class GridConfig:
    problem: str = "gauss-aniso-3d"
    schedule: str | None = None
    solvers: list[str] = field(
        default_factory=lambda: list(GRID_SOLVERS)
    )
    nfe: list[int] = field(default_factory=lambda: [10])
    objective: str = "w2-exact"
    samples: int = 256  # sample-based objectives
    max_iter: int = 200
    out: str = ""  # where grids/ goes (set by the command)
    starts: int = 1
    model: str | None = None  # a shipped model: optimise against its own flow on its fitted target


@dataclass
class GridStudy(Study):
    settings: GridConfig
    kind = "grid"

    def config(self) -> dict:
        return {k: v for k, v in asdict(self.settings).items() if k != "out"}

    def cells(self) -> list[Cell]:
        cfg = self.settings
        if cfg.model:
            learned_problem(cfg.model)
            refuse_exact_objective(cfg.objective, cfg.model)
        else:
            get_problem(cfg.problem, cfg.schedule)
        chosen = resolve(cfg.solvers)
        return [
            Cell(f"{s.label}|nfe={b}", f"{s.label}|nfe={b}", (s.label, b))
            for s in chosen
            for b in cfg.nfe
            if s.steps_for_nfe(b) is not None and s.steps_for_nfe(b) >= 2
        ]

    def cost(self, chain: list[Cell]) -> float:
        return float(sum(c.params[1] for c in chain))

    def run_cell(self, cell: Cell) -> list[dict]:
        cfg = self.settings
        label, budget = cell.params
        solver = make_solver(label)
        steps = solver.steps_for_nfe(budget)
        problem, f = problem_and_objective(cfg.objective, solver, problem=cfg.problem, schedule=cfg.schedule,
                                           model=cfg.model, samples=cfg.samples)
        with torch.no_grad():
            return self._rows(cfg, problem, solver, label, budget, steps, f)

    def _rows(self, cfg, problem, solver, label: str, budget: int, steps: int, f) -> list[dict]:
        found = optimize(f, problem, steps, max_iter=cfg.max_iter, starts=cfg.starts, progress=False)
        path = Path(cfg.out) / "grids" / grid_file_name(label, budget)
        write_grid_file(
            path,
            found.times,
            problem.schedule.name,
            problem=problem.name,
            solver=label,
            nfe=solver.nfe(steps),
            objective=cfg.objective,
            value=found.value,
            start=found.start,
            start_value=found.start_value,
            standard=found.standard,
            model=cfg.model or "exact",
        )
        nfe = solver.nfe(steps)
        n = math.nan if cfg.objective == "w2-exact" else cfg.samples
        model = cfg.model or "exact"
        rows = [
            _row(problem, solver, g, steps, nfe, budget, 0, cfg.objective, {"value": v}, model, n)
            for g, v in found.standard.items()
        ]
        rows.append(
            _row(
                problem,
                solver,
                OPTIMIZED,
                steps,
                nfe,
                budget,
                0,
                cfg.objective,
                {"value": found.value, "reason": f"from {found.start}, {found.evaluations} evaluations"},
                cfg.model or "exact",
                n,
            )
        )
        return rows


@dataclass
class TransferConfig:
    model: str = "fmnist"
    grids: str = ""  # a "grid" run directory (its grids/ folder)
    solvers: list[str] = field(
        default_factory=lambda: list(GRID_SOLVERS)
    )
    nfe: list[int] = field(default_factory=lambda: [5, 10, 20])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3])
    samples: int = 64
    standard: list[str] = field(default_factory=lambda: list(STANDARD_GRIDS))
    reference_method: str = NETWORK_REFERENCE[0]
    reference_steps: int = NETWORK_REFERENCE[1]


@dataclass
class TransferStudy(Study):
    settings: TransferConfig
    kind = "grid-transfer"

    def cells(self) -> list[Cell]:
        cfg = self.settings
        if not (Path(cfg.grids) / "grids").is_dir():
            raise OptimizeError(f"{cfg.grids} holds no grids/ folder (a `bench grid study` directory)")
        chosen = resolve(cfg.solvers)
        return [
            Cell(f"{s.label}|nfe={b}|seed={seed}", f"seed={seed}", (s.label, b, seed))
            for seed in cfg.seeds
            for s in chosen
            for b in cfg.nfe
            if s.steps_for_nfe(b) is not None
        ]

    def cost(self, chain: list[Cell]) -> float:
        return float(sum(c.params[1] for c in chain))

    def manifest_extra(self) -> dict:
        cfg = self.settings
        return {
            "network_reference": f"{cfg.reference_method} at {cfg.reference_steps} and "
            f"{2 * cfg.reference_steps} steps (logsnr)",
            "optimized_grids": str(Path(cfg.grids) / "grids"),
        }

    def run_cell(self, cell: Cell) -> list[dict]:
        cfg = self.settings
        label, budget, seed = cell.params
        setup, problem, _ = learned_problem(cfg.model)
        x_T = metrics.exact_samples(problem, cfg.samples, seed, t=problem.t_max, stream=PRIOR_STREAM)
        net_ref = reference(
            problem,
            setup.network,
            x_T,
            seed,
            method=cfg.reference_method,
            steps=cfg.reference_steps,
            grid="logsnr",
            model_name=cfg.model,
        )
        law = problem.marginal(problem.t_min)
        solver = make_solver(label)
        steps = solver.steps_for_nfe(budget)
        specs = {g: g for g in cfg.standard}
        specs[OPTIMIZED] = FILE_PREFIX + str(Path(cfg.grids) / "grids" / grid_file_name(label, budget))
        rows = []
        for name, spec in specs.items():
            try:
                times = problem_grid(
                    spec, setup.gauss if name in ("ays-gauss", "tangent") else problem, steps
                )
            except GridError as exc:
                rows.append(
                    {
                        **_row(
                            problem,
                            solver,
                            name,
                            steps,
                            math.nan,
                            budget,
                            seed,
                            "path-rms",
                            {},
                            cfg.model,
                            cfg.samples,
                        ),
                        "value": math.nan,
                        "status": "skipped",
                        "reason": str(exc),
                    }
                )
                continue
            with torch.no_grad():
                run = solver.run(setup.network, times, x_T.clone())
            found = paired_row("path-rms", run.x, net_ref, law)
            if name == OPTIMIZED:
                meta = read_grid_file(spec[len(FILE_PREFIX):])
                found["reason"] = f"optimised on {meta.get('problem')} for {meta.get('objective')}"
            rows.append(
                _row(
                    problem,
                    solver,
                    name,
                    steps,
                    run.nfe,
                    budget,
                    seed,
                    "path-rms",
                    found,
                    cfg.model,
                    cfg.samples,
                )
            )
        return rows
