"""Exact guidance on Gaussian mixtures (tutorial section 6): class y = a set of components (by
default each component is its own class), so p_t(x | y) is again a mixture and every guided score
is closed-form:
  classifier guidance (Dhariwal & Nichol 2021, eq. 10 in score form):
      s = grad log p_t(x) + w grad log p_t(y | x),  grad log p_t(y | x) = s_cond - s_uncond;
  classifier-free guidance (Ho & Salimans 2022, eq. 6):
      eps~ = (1 + w) eps_cond - w eps_uncond,  i.e. classifier guidance with scale 1 + w.
w = 0 (classifier) samples p, w = 1 samples p(. | y); w > 1 sharpens towards the class.
The guided study measures each solver's path-rms against the same guided PF-ODE solved to high
accuracy (bench/measure/reference.py), so guidance's effect on discretization error is isolated; it
runs on the one engine and writes the standard results directory, one `model` per scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from analytic import get_problem
from analytic.grids import check_grid
from analytic.problems import Problem
from analytic.targets import GaussianMixture
from bench.measure import metrics
from bench.measure.grids import problem_grid
from bench.measure.precision import dtype_of, rounded_model
from bench.measure.reference import path_rms, reference
from bench.measure.theory import theory
from bench.studies.learned import CheckpointError
from bench.sweep.engine import Cell, Study
from solvers import make_solver, resolve
from solvers.model import Model

KINDS = ("classifier", "cfg")
DEFAULT_SCALES = [0.0, 1.0, 2.0, 4.0, 8.0]
DEFAULT_SOLVERS = ["ddim", "heun", "dpmpp-2m", "dpm-solver-3"]
DEFAULT_STEPS = [4, 8, 16, 32, 64]


def class_target(problem: Problem, label: int, labels: list[int] | None = None) -> GaussianMixture:
    """The data law given class `label`: the components carrying that label, weights renormalized."""
    labels = list(range(problem.target.k)) if labels is None else list(labels)
    if len(labels) != problem.target.k:
        raise CheckpointError(f"need one label per component ({problem.target.k}), got {len(labels)}")
    mask = torch.tensor([lab == label for lab in labels])
    if not mask.any():
        raise CheckpointError(f"no component of {problem.name} has class {label}; "
                              f"classes: {sorted(set(labels))}")
    target = problem.target
    weights = target.weights[mask] / target.weights[mask].sum()
    return GaussianMixture(weights, target.means[mask], target.covs[mask])


def classify(problem: Problem, x: Tensor, labels: list[int] | None = None) -> Tensor:
    """Bayes class of each sample under the data law at t_min (the argmax of p(y | x))."""
    labels_t = torch.tensor(list(range(problem.target.k)) if labels is None else list(labels))
    resp = problem.target.responsibilities(x.double(), *problem.coefficients(problem.t_min))
    classes = torch.unique(labels_t)
    per_class = torch.stack([resp[:, labels_t == c].sum(-1) for c in classes], dim=-1)
    return classes[per_class.argmax(-1)]


def guided_model(problem: Problem, label: int, scale: float, kind: str = "classifier",
                 labels: list[int] | None = None) -> Model:
    """The exact guided eps prediction: eps_uncond + w_eff (eps_cond - eps_uncond)."""
    if kind not in KINDS:
        raise CheckpointError(f"unknown guidance {kind!r}; valid: {', '.join(KINDS)}")
    if not math.isfinite(scale) or scale < 0:
        raise CheckpointError(f"guidance scale must be finite and >= 0, got {scale}")
    cond = class_target(problem, label, labels)
    w_eff = scale if kind == "classifier" else 1.0 + scale

    def predict(x: Tensor, t: Tensor) -> Tensor:
        alpha, sigma = problem.coefficients(t)
        uncond = problem.target.eps(x, alpha, sigma)
        return uncond + w_eff * (cond.eps(x, alpha, sigma) - uncond)

    return Model(predict, "eps", problem.schedule)


@dataclass
class GuidedConfig:
    problem: str = "mix-2d"
    label: int = 0
    scales: list[float] = field(default_factory=lambda: list(DEFAULT_SCALES))
    guidance: str = "classifier"  # classifier | cfg
    solvers: list[str] = field(default_factory=lambda: list(DEFAULT_SOLVERS))
    steps: list[int] = field(default_factory=lambda: list(DEFAULT_STEPS))
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    samples: int = 500
    schedule: str | None = None
    grid: str = "logsnr"
    dtype: str = "float64"  # the solver runs (model and state); the references stay float64


def model_name(guidance: str, label: int, scale: float) -> str:
    """The `model` of guided rows: one panel per guidance scale in the figures."""
    return f"guided:{guidance}:y={label}:w={scale:g}"


@dataclass
class GuidedStudy(Study):
    """`bench learned guided`: per (scale, solver, steps, seed) path-rms to the guided reference flow
    of the same x_T ~ p_T (its self-checked error is the noise floor) and the fraction of samples in
    class `label` (`class_freq`, `ref_class_freq` columns); a chain is one (scale, seed)."""

    settings: GuidedConfig
    kind = "guided"

    def cells(self) -> list[Cell]:
        cfg = self.settings
        if cfg.samples <= 0 or not cfg.seeds or not cfg.scales:
            raise metrics.MetricError("--samples must be positive, --seeds and --scales not empty")
        problem = get_problem(cfg.problem, cfg.schedule)
        check_grid(cfg.grid, problem.schedule.name)
        dtype_of(cfg.dtype)
        for scale in cfg.scales:
            guided_model(problem, cfg.label, scale, cfg.guidance)  # refuse bad labels and scales up front
        chosen = resolve(cfg.solvers)
        bad = [s.label for s in chosen if not s.fixed_step_ode]
        if bad:
            raise metrics.MetricError("the guided study takes fixed-step ODE solvers; not: " + ", ".join(bad))
        return [Cell(f"w={scale:g}|{solver.label}|steps={n}|seed={seed}", f"w={scale:g}|seed={seed}",
                     (scale, solver.label, n, seed))
                for scale in cfg.scales for seed in cfg.seeds for solver in chosen for n in cfg.steps
                if n >= solver.min_steps]

    def run_cell(self, cell: Cell) -> list[dict]:
        cfg = self.settings
        scale, label, n, seed = cell.params
        problem = get_problem(cfg.problem, cfg.schedule)
        model = guided_model(problem, cfg.label, scale, cfg.guidance)
        name = model_name(cfg.guidance, cfg.label, scale)
        x_T = metrics.exact_samples(problem, cfg.samples, seed, t=problem.t_max, stream=7)
        ref = reference(problem, model, x_T, seed, model_name=name)
        solver = make_solver(label)
        times = problem_grid(cfg.grid, problem, n, model)
        dtype = dtype_of(cfg.dtype)
        result = solver.run(rounded_model(model, dtype), times, x_T.to(dtype))
        th = theory(solver, "path-rms")
        value = path_rms(result.x, ref.x)
        return [{"problem": problem.name, "schedule": problem.schedule.name, "model": name,
                 "solver": solver.label, "solver_name": solver.name, "params": str(solver.params),
                 "family": solver.family, "stochastic": False, "theory_order": th.low,
                 "theory_order_max": th.high, "theory_kind": th.kind, "grid": cfg.grid, "steps": n,
                 "nfe": result.nfe, "seed": seed, "metric": "path-rms", "value": value,
                 "noise_floor": ref.error, "n_samples": cfg.samples, "dtype": cfg.dtype,
                 "status": "ok" if math.isfinite(value) else "diverged", "reason": "",
                 "sample_time": result.wall_time, "metric_time": math.nan, "tolerance": math.nan,
                 "guidance": cfg.guidance, "label": cfg.label, "scale": scale,
                 "class_freq": float((classify(problem, result.x) == cfg.label).double().mean()),
                 "ref_class_freq": float((classify(problem, ref.x) == cfg.label).double().mean())}]

    def cost(self, chain: list[Cell]) -> float:
        return float(sum(c.params[2] for c in chain))
