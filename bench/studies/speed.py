"""Speed measurements reported by `bench perf` (asv tracks the same quantities over commits)."""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from analytic import get_problem, get_schedule
from analytic.targets import GaussianMixture, IsotropicMixture
from bench.studies.analytic import default_config, run_sweep
from solvers import Model, make_solver


def random_mixture(k: int, d: int, seed: int = 0) -> GaussianMixture:
    g = torch.Generator().manual_seed(seed)
    means = 2 * torch.randn(k, d, generator=g, dtype=torch.float64)
    a = torch.randn(k, d, d, generator=g, dtype=torch.float64) / math.sqrt(d)
    covs = a @ a.transpose(1, 2) + 0.1 * torch.eye(d, dtype=torch.float64)
    return GaussianMixture(torch.full((k,), 1.0 / k, dtype=torch.float64), means, covs)


def _best_of(fn, repeats: int) -> float:
    """Best wall time of `fn` over `repeats` consecutive calls after one warm-up call (as timeit and
    asv do: the steady state of a sampling loop that calls the same model at every step)."""
    fn()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def score_throughput(n: int = 65536, k: int = 8, d: int = 2, repeats: int = 5,
                     dtype: torch.dtype = torch.float32) -> dict[str, float]:
    """Score evaluations per second: closed form (eigen-factorized, O(n K d^2)) against autograd
    of the mixture log-density as one would write it with torch.distributions (the noised
    covariances alpha^2 Sigma + sigma^2 I are rebuilt at every call, as a time-dependent model must)."""
    target = random_mixture(k, d)
    alpha, sigma = 0.8, 0.6
    x = target.sample(n, torch.Generator().manual_seed(1), alpha, sigma, dtype)
    eye = torch.eye(d, dtype=dtype)
    weights, means, covs = (v.to(dtype) for v in (target.weights, target.means, target.covs))

    def analytic() -> None:
        target.score(x, alpha, sigma)

    def autograd() -> None:
        xg = x.detach().requires_grad_(True)
        comps = torch.distributions.MultivariateNormal(alpha * means, alpha**2 * covs + sigma**2 * eye)
        mix = torch.distributions.MixtureSameFamily(torch.distributions.Categorical(weights), comps)
        torch.autograd.grad(mix.log_prob(xg).sum(), xg)

    def autograd_same_density() -> None:
        xg = x.detach().requires_grad_(True)
        torch.autograd.grad(target.log_prob(xg, alpha, sigma).sum(), xg)

    fns = {"analytic": analytic, "autograd": autograd, "autograd_same_density": autograd_same_density}
    return {name: n / _best_of(fn, repeats) for name, fn in fns.items()}


def image_score_throughput(problem_name: str, n: int = 4096, repeats: int = 5,
                           dtype: torch.dtype = torch.float32) -> dict[str, float]:
    """Score evaluations per second on a problem fitted to images at one noise level (steady state: a
    sampling loop revisits its grid's levels), against a plain GEMM of the same FLOPs: 2 n d^2 for a
    Gaussian (one (n, d) x (d, d) product), 2 n K d^2 for a mixture of K full Gaussians (one batched
    product with the precisions), 4 n d N for N point masses (logits and posterior mean)."""
    problem = get_problem(problem_name)
    target, d = problem.target, problem.dim
    alpha, sigma = problem.coefficients(0.5)
    x = problem.sample_marginal(0.5, n, torch.Generator().manual_seed(1), dtype)
    g = torch.Generator().manual_seed(2)
    if isinstance(target, IsotropicMixture):
        flops = 4.0 * n * d * target.k
        a, b = torch.randn(n, d, generator=g).to(dtype), torch.randn(d, target.k, generator=g).to(dtype)
        c = torch.randn(target.k, d, generator=g).to(dtype)

        def gemm() -> None:
            torch.mm(torch.mm(a, b), c)
    else:
        flops = 2.0 * n * target.k * d * d
        a = torch.randn(target.k, d, d, generator=g).to(dtype)
        b = torch.randn(target.k, d, n, generator=g).to(dtype)

        def gemm() -> None:
            torch.bmm(a, b)

    score = _best_of(lambda: target.score(x, alpha, sigma), repeats)
    plain = _best_of(gemm, repeats)
    return {"evals_per_s": n / score, "gflops": flops / score / 1e9, "gemm_gflops": flops / plain / 1e9,
            "efficiency": plain / score}


def default_sweep_timing(jobs: int = 2, out: Path | None = None) -> str:
    """Run the default study and summarize wall time by solver family and metric."""
    out = Path(out) if out else Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    start = time.perf_counter()
    run_sweep(default_config(), out, command="bench perf sweep", jobs=jobs)
    wall = time.perf_counter() - start
    frame = pd.read_csv(out / "results.csv")
    per_cell = frame.drop_duplicates(["problem", "solver", "steps", "seed", "tolerance"])
    lines = [f"default sweep: {len(per_cell)} cells, wall {wall:.1f} s with {jobs} jobs ({out})",
             f"  sampling total {per_cell.sample_time.sum():.1f} s (CPU seconds over all workers)",
             f"  metrics total {frame.metric_time.sum():.1f} s"]
    for metric, t in frame.groupby("metric").metric_time.sum().items():
        lines.append(f"    {metric}: {t:.1f} s")
    for fam, t in per_cell.groupby("family").sample_time.sum().items():
        lines.append(f"    sampling {fam}: {t:.1f} s")
    return "\n".join(lines)


DIFFUSERS_EQUIVALENT = {
    "ddim": ("DDIMScheduler", {}),
    "dpmpp-2m": ("DPMSolverMultistepScheduler", {"solver_order": 2, "algorithm_type": "dpmsolver++",
                                                 "lower_order_final": False}),
    "unipc-2": ("UniPCMultistepScheduler", {"solver_order": 2, "lower_order_final": False}),
}


def loop_overhead(solver_name: str, steps: int = 50, n: int = 16, repeats: int = 5) -> dict[str, float]:
    """Per-step time of the sampling loop minus the model's own time, ours against diffusers'
    `scheduler.step` loop, on the same tiny eps model, tensor and discrete timesteps."""
    import diffusers  # optional: the peers extra

    cls_name, kwargs = DIFFUSERS_EQUIVALENT[solver_name]
    scheduler = getattr(diffusers, cls_name)(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02,
                                             beta_schedule="linear", **kwargs)
    scheduler.set_timesteps(steps)
    timesteps = scheduler.timesteps
    schedule = get_schedule("ddpm-discrete")
    times = torch.cat([(timesteps.double() + 1) / 1000, torch.tensor([schedule.t_min], dtype=torch.float64)])
    times = torch.unique_consecutive(times)
    x0 = torch.randn(n, 3, generator=torch.Generator().manual_seed(0))

    def eps_model(x, t):
        return 0.1 * x

    def model_only() -> None:
        x = x0
        for t in timesteps:
            x = x + eps_model(x, t) * 0  # the same tensor traffic as one model call

    def ours() -> None:  # cold schedule cache: ours pays its setup as diffusers pays set_timesteps
        schedule.__dict__.pop("_scalar_cache", None)
        make_solver(solver_name).run(Model(eps_model, "eps", schedule), times, x0)

    def theirs() -> None:
        scheduler.set_timesteps(steps)
        x = x0
        for t in scheduler.timesteps:
            x = scheduler.step(eps_model(x, t), t, x).prev_sample

    base = _best_of(model_only, repeats)
    loops = (("ours", ours), ("diffusers", theirs))
    per_step = {name: (_best_of(fn, repeats) - base) / steps for name, fn in loops}
    per_step["ratio"] = per_step["ours"] / per_step["diffusers"]
    return per_step


def cli_startup(commands: list[str], repeats: int = 5) -> dict[str, float]:
    """Best wall time over `repeats` fresh processes of `bench <command> --help` for each command path
    ('' is `bench --help`; the installed console script, else python -m bench.cli): what a user waits
    for before any work starts."""
    import shutil
    import subprocess
    import sys

    script = shutil.which("bench")
    entry = [script] if script else [sys.executable, "-m", "bench.cli"]
    out = {}
    for command in commands:
        argv = [*entry, *command.split(), "--help"]
        best = math.inf
        for _ in range(repeats):
            start = time.perf_counter()
            subprocess.run(argv, check=True, capture_output=True)
            best = min(best, time.perf_counter() - start)
        out[command] = best
    return out
