"""Error metrics for a solver's output, and the Monte-Carlo noise floor of the sample-based ones.

Two regimes, always kept apart:
- `w2-exact` has no sampling error: on a Gaussian target every solver is affine in (x_T, noise),
  so its output law is an exact Gaussian (bench/measure/exact_law.py) compared with the exact marginal by
  the Bures formula. `path-rms` compares each sample with a high-accuracy solution from the same
  x_T (and Brownian path): its only floor is the reference's own error (bench/measure/reference.py).
- `w2`, `sw2`, `sinkhorn`, `mmd-sample` compare n solver samples with n exact samples of p_{t_min}; even a
  perfect solver scores the *noise floor*, the same metric between two independent exact samples
  (REFERENCE.md: exact W2 of two 4,000-point 2-D standard Gaussian samples is ~0.10). A value
  within ~3x its floor says nothing about the solver (bench/measure/orders.py excludes such points).
- The weak metrics (`weak-mean`, `weak-cov`, `weak-bump`, `mmd`) and `path-median` pair each sample
  with the reference too (bench/measure/paired.py): control variates put their floor far below the
  sampling floor of the sample metrics, and each row carries its standard error.

Seeds: exact samples are drawn from a torch.Generator seeded with numpy's SeedSequence hash of
(_EXACT_STREAM, stream, seed) and never from `manual_seed(seed)` itself, which is what the sweep
and tests/util.prior_sample use for x_T; `stream` 0 is the comparison sample, streams 1 and 2 the
two samples of the noise floor, so all three are independent of each other and of the solver.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import ot
import torch
from torch import Tensor

from analytic.problems import Problem
from analytic.targets import GaussianMixture
from bench.measure.exact_law import ProbeError, bures_w2, diagonal_w2, eigen_output_law, end_law, output_law
from bench.measure.paired import PATH_METRICS
from bench.measure.reference import Reference, path_rms, reference
from solvers.base import Solver
from solvers.model import Model
from solvers.sampler import Sampler, SampleResult


class MetricError(ValueError):
    """A metric that cannot be computed for this problem or solver; the message is one line."""


METRICS: dict[str, str] = {
    "w2-exact": "exact W2 (Bures) between the solver's Gaussian output law and p_t_min; Gaussian targets",
    "weak-mean": "weak: |E X_N - E X|, control variate paired with the reference (stderr column)",
    "weak-cov": "weak: |Cov X_N - Cov X|_F, control variate paired with the reference",
    "weak-bump": "weak: RMS over 64 fixed Gaussian bumps f of E f(X_N) - E f(X), paired control variate",
    "mmd": "weak: Gaussian-kernel MMD of the solver's law to the exact law, paired U-statistic",
    "path-rms": "strong: RMS distance to a high-accuracy solution from the same x_T (and Brownian path)",
    "path-median": "strong: median of that distance (not ruled by the few samples near a separatrix)",
    "w2": "exact optimal-transport W2 between solver samples and exact samples (POT emd2)",
    "sw2": "sliced W2 with 200 seeded random projections (POT), samples vs exact samples",
    "sinkhorn": "sqrt of the debiased Sinkhorn divergence, reg = 0.05 x mean squared distance",
    "mmd-sample": "sqrt of the unbiased Gaussian-kernel MMD^2 between solver and exact samples (unpaired)",
}
SAMPLE_METRICS: tuple[str, ...] = ("w2", "sw2", "sinkhorn", "mmd-sample")

# Default sample sizes. emd2 is O(n^3)-ish: ~0.4 s at n = 1000, ~1 s at 2000, ~3.6 s at 4000 on this
# machine (REFERENCE.md), and its floor only falls like n^(-1/d); 2000 balances time and floor.
# Sliced W2 is O(n log n) per projection, so 4000 points cost ~0.6 s and halve its floor vs 2000.
# Sinkhorn solves three n x n problems (debiased divergence): ~0.15 s at n = 1000, ~1.2 s at 2000
# on two cores, like emd2, so 2000. MMD is three kernel matrices: 2000 points (32 MB each) take
# ~0.5 s (its floor, four pairs, ~2 s once per problem). path-rms has no floor of its own and its
# cost is the reference integration: 1000 samples give ~3 % relative precision on the RMS.
DEFAULT_SAMPLES: dict[str, int] = {"w2": 2000, "sw2": 4000, "sinkhorn": 2000, "mmd-sample": 2000,
                                   "path-rms": 1000}
SW2_PROJECTIONS = 200
SINKHORN_REG = 0.05  # entropic regularization relative to the mean squared pairwise distance
MMD_MAX_MEDIAN_POINTS = 1000  # points used for the median-heuristic bandwidth
MMD_FLOOR_PAIRS = 4  # independent exact pairs behind the MMD noise floor

_EXACT_STREAM = 0xE8AC7
_FLOOR_CACHE: dict[tuple, float] = {}


def _as_float64(x: Tensor) -> Tensor:
    x = torch.as_tensor(x).detach().to("cpu", torch.float64)
    return x.reshape(len(x), -1)


def _check_pair(name: str, x: Tensor, y: Tensor) -> None:
    if x.shape[1] != y.shape[1]:
        raise MetricError(f"{name}: samples have dimensions {x.shape[1]} and {y.shape[1]}")
    if len(x) < 2 or len(y) < 2:
        raise MetricError(f"{name}: needs at least 2 samples on each side")
    if not bool(torch.isfinite(x).all() and torch.isfinite(y).all()):
        raise MetricError(f"{name}: samples contain NaN or infinity")


def _w2(x: Tensor, y: Tensor, seed: int) -> float:
    a, b = np.full(len(x), 1 / len(x)), np.full(len(y), 1 / len(y))
    cost = ot.dist(x.numpy(), y.numpy(), metric="sqeuclidean")
    return math.sqrt(max(float(ot.emd2(a, b, cost, numItermax=10**7)), 0.0))


def _sw2(x: Tensor, y: Tensor, seed: int) -> float:
    """Sliced W2 (Bonneel et al. 2015) over SW2_PROJECTIONS directions drawn by numpy from `seed`."""
    return float(ot.sliced_wasserstein_distance(x.numpy(), y.numpy(), n_projections=SW2_PROJECTIONS,
                                                p=2, seed=seed))


def _entropic(x: Tensor, y: Tensor, reg: float) -> float:
    """Transport cost <P, C> of POT's entropic plan between the uniform laws on x and y."""
    a = torch.full((len(x),), 1 / len(x), dtype=torch.float64)
    b = torch.full((len(y),), 1 / len(y), dtype=torch.float64)
    cost = ot.dist(x, y, metric="sqeuclidean")
    return float(ot.sinkhorn2(a, b, cost, reg, method="sinkhorn", numItermax=5000, stopThr=1e-9))


def _entropic_self(x: Tensor, reg: float, tol: float = 1e-10, max_iter: int = 5000) -> float:
    """<P, C> of the entropic plan from the uniform law on x to itself. Plain Sinkhorn oscillates on
    this symmetric problem; the averaged symmetric update u <- sqrt(u a / (K u)) (Feydy et al. 2019,
    §3.1) converges in a few dozen iterations to the same plan diag(u) K diag(u)."""
    cost = ot.dist(x, x, metric="sqeuclidean")
    kernel = torch.exp(-cost / reg)
    a = torch.full((len(x),), 1 / len(x), dtype=torch.float64)
    u = torch.ones_like(a)
    for _ in range(max_iter):
        u_new = torch.sqrt(u * a / (kernel @ u))
        done = float((u_new - u).abs().max()) <= tol * float(u_new.abs().max())
        u = u_new
        if done:
            break
    return float(((u[:, None] * kernel * u[None, :]) * cost).sum())


def _sinkhorn(x: Tensor, y: Tensor, seed: int) -> float:
    """Debiased Sinkhorn divergence S = OT_e(x, y) - (OT_e(x, x) + OT_e(y, y)) / 2 with OT_e the
    transport cost of the entropic plan (Genevay et al. 2018; Feydy et al. 2019); the cross term is
    POT's `sinkhorn2`. e = SINKHORN_REG x the mean squared distance of two pooled points, so the
    metric is scale-equivariant and exp(-C/e) stays far from underflow for data without outliers
    (NaN otherwise). Returns sqrt(max(S, 0)), in the data's units like W2."""
    pooled = torch.cat([x, y])
    scale = 2 * float(pooled.var(dim=0).sum())
    reg = SINKHORN_REG * max(scale, 1e-300)
    div = _entropic(x, y, reg) - 0.5 * (_entropic_self(x, reg) + _entropic_self(y, reg))
    return math.sqrt(max(div, 0.0)) if math.isfinite(div) else math.nan


def _mmd2(x: Tensor, y: Tensor, seed: int) -> float:
    """Unbiased MMD^2 (Gretton et al. 2012, eq. 3) with k(u, v) = exp(-|u - v|^2 / (2 h^2)), h the
    median pairwise distance of the pooled sample (at most MMD_MAX_MEDIAN_POINTS of it, chosen
    with `seed`). Signed: its mean is 0 when the laws are equal."""
    pooled = torch.cat([x, y])
    perm = torch.randperm(len(pooled), generator=torch.Generator().manual_seed(seed))
    sub = pooled[perm[:MMD_MAX_MEDIAN_POINTS]]
    d2 = ot.dist(sub, sub, metric="sqeuclidean")
    h2 = float(d2[torch.triu_indices(len(sub), len(sub), 1).unbind()].median())
    h2 = h2 if h2 > 0 else 1.0

    def mean_kernel(u: Tensor, v: Tensor, same: bool) -> float:
        k = torch.exp(-ot.dist(u, v, metric="sqeuclidean") / (2 * h2))
        if same:  # drop the diagonal: the unbiased U-statistic
            return float((k.sum() - k.diagonal().sum()) / (len(u) * (len(u) - 1)))
        return float(k.mean())

    return mean_kernel(x, x, True) + mean_kernel(y, y, True) - 2 * mean_kernel(x, y, False)


def _mmd(x: Tensor, y: Tensor, seed: int) -> float:
    """sqrt(max(MMD^2_u, 0)): 0 means 'indistinguishable at this n'."""
    return math.sqrt(max(_mmd2(x, y, seed), 0.0))


_SAMPLE_FUNCS = {"w2": _w2, "sw2": _sw2, "sinkhorn": _sinkhorn, "mmd-sample": _mmd}


def sample_metric(name: str, x: Tensor, y: Tensor, seed: int = 0) -> float:
    """The sample metric `name` between x (n, d) and y (m, d), computed in float64.

    `seed` fixes the random parts (sliced projections, the MMD bandwidth subsample)."""
    if name not in _SAMPLE_FUNCS:
        raise MetricError(f"unknown sample metric {name!r}; valid: {', '.join(SAMPLE_METRICS)}")
    xs, ys = _as_float64(x), _as_float64(y)
    _check_pair(name, xs, ys)
    return _SAMPLE_FUNCS[name](xs, ys, seed)


def exact_seed(seed: int, stream: int = 0) -> int:
    """The generator seed of exact-sample stream `stream` for run seed `seed` (see module doc)."""
    state = np.random.SeedSequence([_EXACT_STREAM, stream, seed & 0xFFFFFFFF, seed >> 32]).generate_state(2)
    return int(state[0]) << 31 | int(state[1]) >> 1


def exact_samples(problem: Problem, n: int, seed: int, t: float | None = None,
                  dtype: torch.dtype = torch.float64, stream: int = 0) -> Tensor:
    """n exact samples of p_t (default t = problem.t_min), independent of the x_T stream."""
    g = torch.Generator().manual_seed(exact_seed(seed, stream))
    return problem.sample_marginal(problem.t_min if t is None else float(t), n, g, dtype)


def noise_floor(name: str, problem: Problem, n: int, seed: int) -> float:
    """Metric `name` between two independent exact n-samples of p_{t_min} (streams 1 and 2);
    cached per (problem, schedule, t_min, metric, n, seed) in this process.

    MMD is the exception: its unbiased estimate between equal laws is centred at 0 and clipped to 0
    about half the time, so one pair says little. Its floor is sqrt of the RMS of the signed MMD^2_u
    over MMD_FLOOR_PAIRS independent pairs (streams 1..2k), i.e. sqrt of its null standard deviation.
    """
    if name not in _SAMPLE_FUNCS:
        raise MetricError(f"{name!r} has no sampling noise floor; "
                          f"sample metrics: {', '.join(SAMPLE_METRICS)}")
    key = (problem.name, problem.schedule.name, problem.t_min, name, n, seed)
    if key not in _FLOOR_CACHE:
        if name == "mmd-sample":
            vals = [_mmd2(_as_float64(exact_samples(problem, n, seed, stream=2 * k + 1)),
                          _as_float64(exact_samples(problem, n, seed, stream=2 * k + 2)), seed)
                    for k in range(MMD_FLOOR_PAIRS)]
            _FLOOR_CACHE[key] = math.sqrt(math.sqrt(sum(v * v for v in vals) / len(vals)))
        else:
            a = exact_samples(problem, n, seed, stream=1)
            b = exact_samples(problem, n, seed, stream=2)
            _FLOOR_CACHE[key] = sample_metric(name, a, b, seed)
    return _FLOOR_CACHE[key]


def _affine_check(model: Model, problem: Problem, times: Tensor) -> None:
    """Refuse models that are not affine in x (e.g. learned ones): midpoint test at three times."""
    g = torch.Generator().manual_seed(0)
    for t in (float(times[0]), float(times[len(times) // 2]), float(times[-1])):
        a, b = (problem.sample_marginal(t, 2, g) for _ in range(2))
        f = lambda x, t=t: model.fn(x, torch.tensor(t, dtype=torch.float64)).to(torch.float64)  # noqa: E731
        mid, ends = f(0.5 * (a + b)), 0.5 * (f(a) + f(b))
        scale = float(ends.abs().max()) + float(f(a).abs().max()) + 1e-300
        if float((mid - ends).abs().max()) > 1e-6 * scale:
            raise MetricError("w2-exact needs a model affine in x (the exact score of a Gaussian); "
                              "this model is not")


def w2_exact(problem: Problem, sampler: Sampler, model: Model, times: Tensor,
             denoise_final: bool = False, prior: tuple[Tensor, Tensor] | None = None) -> float:
    """Exact W2 between the sampler's output law from x_T ~ p_{times[0]} (or the Gaussian `prior`
    given as (mean, cov)) and the exact law where its output belongs (exact_law.end_law: p_{times[-1]}
    for our solvers; with `denoise_final` the output approximates data, so the data law itself)."""
    target: GaussianMixture = problem.target
    if not target.is_gaussian:
        raise MetricError(f"w2-exact needs a Gaussian target; {problem.name} has {target.k} components")
    if sampler.affine is False:
        raise MetricError(f"w2-exact needs a solver affine in (x, noise); {sampler.label} is not")
    times = torch.as_tensor(times, dtype=torch.float64)
    _affine_check(model, problem, times)
    if prior is None and sampler.affine is True:
        try:  # d independent 1-D problems in the target's eigenbasis: 2 + draws probes, not 1 + d (1 + draws)
            return _w2_eigen(problem, sampler, model, times, denoise_final)
        except ProbeError:
            pass  # not diagonal there: probe every direction
    if prior is None:
        exact = problem.marginal(float(times[0]))
        prior = (exact.means[0], exact.covs[0])
    try:
        law = output_law(sampler, model, times, *prior, denoise_final=denoise_final)
    except ProbeError as exc:
        raise MetricError(str(exc)) from None
    if not (torch.isfinite(law.mean).all() and torch.isfinite(law.cov).all()):
        return math.inf
    return bures_w2(law.mean, law.cov, *end_law(problem, law.end))


def _w2_eigen(problem: Problem, sampler: Sampler, model: Model, times: Tensor, denoise_final: bool) -> float:
    """w2_exact through exact_law.eigen_output_law (a ProbeError means: use the general prober)."""
    basis = problem.target.evecs[0]
    exact = problem.marginal(float(times[0]))
    law = eigen_output_law(sampler, model, times, exact.means[0], basis, exact.evals[0],
                           denoise_final=denoise_final)
    if not (torch.isfinite(law.mean).all() and torch.isfinite(law.variances).all()):
        return math.inf
    end_mean, end_cov = end_law(problem, law.end)
    end_vars = torch.einsum("ij,ik,kj->j", basis, end_cov, basis)  # diag(U^T C U): C is diagonal in U
    return diagonal_w2(law.mean, law.variances, end_mean, end_vars)


def metric_rows(metric_names: list[str], base: dict, evaluate: Callable[[str, dict], None]) -> list[dict]:
    """One row per metric: `evaluate(name, row)` fills value (and noise_floor); a MetricError marks the
    row skipped, a non-finite value diverged; metric_time is the evaluation's wall time."""
    out = []
    for name in metric_names:
        row = {**base, "metric": name, "status": "ok"}
        start = time.perf_counter()
        try:
            evaluate(name, row)
        except MetricError as exc:
            row.update(status="skipped", reason=str(exc))
        if row["status"] == "ok" and not math.isfinite(row["value"]):
            row.update(status="diverged", reason="non-finite metric value", value=math.nan)
        row["metric_time"] = time.perf_counter() - start
        out.append(row)
    return out


def end_samples(problem: Problem, end: SampleResult, n: int, seed: int) -> Tensor:
    """n exact samples of the law a run's output is compared with (exact_law.end_law): p_{t_end}
    (the data at t_end = 0), or with `tweedie_law` the denoise E[x0 | x_t] of exact x_t at t_last."""
    if end.t_end == 0.0 and end.tweedie_law:
        exact = exact_samples(problem, n, seed, dtype=torch.float64, t=end.t_last)
        return problem.denoise(exact, end.t_last)
    return exact_samples(problem, n, seed, dtype=torch.float64, t=end.t_end)


def paired_reference(metric: str, problem: Problem, sampler: Sampler, model: Model, x_T: Tensor, seed: int,
                     end: SampleResult, noise_seed: int, sde_steps: int | None = None
                     ) -> tuple[Reference, GaussianMixture]:
    """The pathwise reference of a run from x_T (the exact prior) and the exact law it is judged
    against: the shared ODE reference (plus its final denoise when the run denoised at t_min) for a
    deterministic sampler; for a stochastic Solver a fine run on the same Brownian path (`noise_seed`,
    `sde_steps`). A run must end at t_min or denoise from there; a library's stochastic sampler has
    its own noise, so no pathwise reference."""
    if metric in PATH_METRICS and sampler.stochastic and not sampler.pathwise:
        raise MetricError(f"{metric} needs a pathwise limit; {sampler.label} draws noise independent of "
                          "its Brownian path (a Langevin corrector), so only weak metrics apply")
    if sampler.stochastic and not isinstance(sampler, Solver):
        raise MetricError(f"{metric} of {sampler.label} would need its own fine run on the same "
                          "noise; use w2-exact (Gaussian targets) or a sample metric")
    denoise = end.t_end == 0.0
    at_t_min = math.isclose(end.t_last if denoise else end.t_end, problem.t_min, rel_tol=1e-6)
    if not at_t_min or (denoise and not end.final_denoise):
        raise MetricError(f"{metric} of {sampler.label} needs it to end at t_min (or denoise "
                          "from there); it ends elsewhere")
    solver = sampler if isinstance(sampler, Solver) else None
    ref = reference(problem, model, x_T, seed, solver, noise_seed=noise_seed,
                    steps=sde_steps if sampler.stochastic else None, denoise_final=denoise)
    return ref, problem.target if denoise else problem.marginal(problem.t_min)


def reference_for(problem: Problem, model: Model, x_T: Tensor, seed: int, solver: Solver | None = None,
                  denoise_final: bool = False, **kw) -> Reference:
    """The path-rms reference of `solver`'s run from x_T (bench/measure/reference.py): `.x` to compare
    with `path_rms`, `.error` its self-checked error, to record as the row's noise floor. For
    stochastic solvers pass `noise_seed`, the seed of the BrownianTreeNoise that drove the run."""
    return reference(problem, model, x_T, seed, solver, denoise_final=denoise_final, **kw)


__all__ = ["DEFAULT_SAMPLES", "METRICS", "SAMPLE_METRICS", "MetricError", "Reference", "end_samples",
           "exact_samples", "metric_rows", "noise_floor", "paired_reference", "path_rms", "reference_for",
           "sample_metric", "w2_exact"]
