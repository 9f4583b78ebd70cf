"""Score error vs discretization error (the seed chapter's split of a sampler's error into its
statistical and its sampling part; cf. Chen et al. 2023, Thm 2: W2/TV <= score term + step term).

For every (solver, steps, seed), from one draw x_T ~ p_T (exact prior), three errors:
  discretization  the solver with the exact score                    (no score error)
  score           the high-accuracy reference with the tested model  (no discretization error)
  both            the solver with the tested model
each measured by sample W2 against exact samples of p_{t_min} (noise floor in `noise_floor`) and by
path-rms against the exact-score reference flow of the same x_T (coupled: no sampling noise).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pandas as pd

from analytic import get_problem, make_grid
from bench.measure import metrics
from bench.measure.models import analytic_model
from bench.measure.reference import path_rms, reference
from bench.studies.perturb import parse_model_spec
from solvers import resolve, sample

COMPONENTS = ("discretization", "score", "both")
DEFAULT_SOLVERS = ["ddim", "heun", "dpmpp-2m", "dpm-solver-3"]
DEFAULT_STEPS = [4, 8, 16, 32, 64, 128, 256]
PRIOR_STREAM = 7  # exact-sample stream of x_T (streams 0..2 are the W2 samples and its floor)


def _errors(x, exact_samples, ref_exact, seed: int) -> dict[str, float]:
    return {"w2": metrics.sample_metric("w2", x.double(), exact_samples, seed),
            "path-rms": path_rms(x, ref_exact)}


def decompose(problem_name: str, model_spec: str, solvers: list[str] | None = None,
              steps: list[int] | None = None, seeds: int = 3, samples: int = 500,
              schedule: str | None = None, grid: str = "logsnr",
              progress: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Tidy rows: problem, model, solver, steps, nfe, seed, component, metric, value, noise_floor."""
    problem = get_problem(problem_name, schedule)
    chosen = resolve(solvers or DEFAULT_SOLVERS)
    stochastic = [s.label for s in chosen if s.stochastic or "adaptive" in s.all_tags]
    if stochastic:
        raise metrics.MetricError("the decomposition is for fixed-step ODE solvers; not: "
                                  + ", ".join(stochastic))
    rows = []
    for seed in range(seeds):
        exact, tested = analytic_model(problem), parse_model_spec(model_spec, problem)
        x_T = metrics.exact_samples(problem, samples, seed, t=problem.t_max, stream=PRIOR_STREAM)
        y = metrics.exact_samples(problem, samples, seed)
        floor = metrics.noise_floor("w2", problem, samples, seed)
        ref_exact = reference(problem, exact, x_T, seed).x
        ref_tested = reference(problem, tested, x_T, seed, model_name=model_spec).x
        base = {"problem": problem.name, "model": model_spec, "seed": seed}
        score = _errors(ref_tested, y, ref_exact, seed)
        for solver in chosen:
            for n in steps or DEFAULT_STEPS:
                if n < solver.min_steps:
                    continue
                times = make_grid(grid, problem.schedule, n, problem.t_min, problem.t_max)
                found = {"score": score}
                for component, model in (("discretization", exact), ("both", tested)):
                    result = sample(solver, model, times, x_T.clone())
                    found[component] = _errors(result.x, y, ref_exact, seed)
                    nfe = result.nfe
                for component in COMPONENTS:
                    for metric, value in found[component].items():
                        rows.append({**base, "solver": solver.label, "steps": n, "nfe": nfe,
                                     "component": component, "metric": metric, "value": value,
                                     "noise_floor": floor if metric == "w2" else 0.0})
            if progress is not None:
                progress(f"seed {seed} {solver.label} done")
    return pd.DataFrame(rows)


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

