"""Exact guidance on Gaussian mixtures (tutorial section 6): class y = a set of components (by
default each component is its own class), so p_t(x | y) is again a mixture and every guided score
is closed-form:
  classifier guidance (Dhariwal & Nichol 2021, eq. 10 in score form):
      s = grad log p_t(x) + w grad log p_t(y | x),  grad log p_t(y | x) = s_cond - s_uncond;
  classifier-free guidance (Ho & Salimans 2022, eq. 6):
      eps~ = (1 + w) eps_cond - w eps_uncond,  i.e. classifier guidance with scale 1 + w.
w = 0 (classifier) samples p, w = 1 samples p(. | y); w > 1 sharpens towards the class.
The guided sweep measures each solver's path-rms against the same guided PF-ODE solved to high
accuracy (bench/measure/reference.py), so guidance's effect on discretization error is isolated.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pandas as pd
import torch
from torch import Tensor

from analytic import get_problem, make_grid
from analytic.problems import Problem
from analytic.targets import GaussianMixture
from bench.measure import metrics
from bench.measure.reference import path_rms, reference
from bench.studies.learned import CheckpointError
from solvers import resolve, sample
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


def guided_sweep(problem_name: str, label: int, scales: list[float] | None = None, kind: str = "classifier",
                 solvers: list[str] | None = None, steps: list[int] | None = None, seeds: int = 2,
                 samples: int = 500, schedule: str | None = None, grid: str = "logsnr",
                 progress: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Rows per (scale, solver, steps, seed): path-rms to the guided reference flow of the same
    x_T ~ p_T, its self-checked error (noise_floor) and the fraction of samples in class `label`."""
    problem = get_problem(problem_name, schedule)
    chosen = resolve(solvers or DEFAULT_SOLVERS)
    bad = [s.label for s in chosen if s.stochastic or "adaptive" in s.all_tags]
    if bad:
        raise metrics.MetricError("the guided sweep is for fixed-step ODE solvers; not: " + ", ".join(bad))
    rows = []
    for scale in DEFAULT_SCALES if scales is None else scales:
        model = guided_model(problem, label, scale, kind)
        name = f"guided:{kind}:{label}:{scale:g}"
        for seed in range(seeds):
            x_T = metrics.exact_samples(problem, samples, seed, t=problem.t_max, stream=7)
            ref = reference(problem, model, x_T, seed, model_name=name)
            ref_freq = float((classify(problem, ref.x) == label).double().mean())
            for solver in chosen:
                for n in steps or DEFAULT_STEPS:
                    if n < solver.min_steps:
                        continue
                    times = make_grid(grid, problem.schedule, n, problem.t_min, problem.t_max)
                    result = sample(solver, model, times, x_T.clone())
                    rows.append({"problem": problem.name, "kind": kind, "label": label, "scale": scale,
                                 "solver": solver.label, "steps": n, "nfe": result.nfe, "seed": seed,
                                 "path_rms": path_rms(result.x, ref.x), "noise_floor": ref.error,
                                 "class_freq": float((classify(problem, result.x) == label).double().mean()),
                                 "ref_class_freq": ref_freq})
        if progress is not None:
            progress(f"scale {scale:g} done")
    return pd.DataFrame(rows)
