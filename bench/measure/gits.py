"""GITS: a time grid chosen by dynamic programming on a teacher trajectory (Chen et al. 2024, "On the
Trajectory Regularity of ODE-based Diffusion Sampling", ICML 2024, arXiv 2405.11326, section
"Geometry-Inspired Time Scheduling"; reference code zju-pi/diff-sampler, gits-main/gits_utils.py).

Procedure. Take K candidate times on the Karras rho = 7 grid in sigma~ (their `polynomial` schedule;
K = 61 as in their README's recommended `num_steps_tea`, whose command-line default is 21), integrate
a high-accuracy teacher from warm-up samples x_T and keep its state at every candidate. cost[i, j]
(i < j) is the mean over samples of the L2 distance between one Euler step from the teacher state at
candidate i to candidate j and the teacher state at j, both in EDM's VE variables y = x / alpha with
time sigma~ = sigma / alpha. In the VP-scaled state that step is DDIM: x_j = alpha_j x0_hat +
sigma_j eps_hat, i.e. y_j = y_i + (sigma~_j - sigma~_i) eps_hat.
Dynamic programming then picks the path of exactly `steps` steps from candidate 0 (t_max) to K - 1
(t_min) that minimises

    V_k(i) = min_{i < m < K-1} cost[i, m] + coeff * V_{k-1}(m),   V_1(i) = cost[i, K-1],

so step s of the path (s = 0 first) carries weight coeff^s: with coeff > 1 (default 1.15) errors of the
late, low-noise steps count more than those of the early ones. Ties go to the smallest index, as in
their backtracking.

What differs from their code:
- Teacher: classical RK4 in log-SNR (bench.measure.reference.RK4LogSNR) with `substeps` uniform-in-
  lambda steps between consecutive candidates, instead of their iPNDM run on the candidate grid itself;
  our models are cheap and the cost matrix is then free of teacher error at the scale of the Euler
  defects it measures.
- Cost metric: their `metric='l2'` option. Their command-line default is `metric='dev'` (the deviation
  of the Euler point from the straight line joining the trajectory's end points, minus the teacher's);
  the plain L2 distance needs no image-shaped states and is what this module uses.
- The distance is taken in the VE variable x / alpha, so cost[i, j] = ||x_hat_j - x_j|| / alpha_j for
  our VP-scaled states: the factor 1 / alpha_j per candidate makes it the same number as theirs.
- Their optional AFS variant (an extra free step searched between the first two times) and the
  multi-coeff dump for text-to-image models are not implemented.

The teacher costs points * substeps * 4 model evaluations (plus one per candidate for the Euler
directions; they count in `model.calls`), so the cost matrix is memoised per (model, schedule, x_T,
interval, candidate count, substeps) and shared by every step count; the chosen grids are memoised per
(steps, coeff) on top. Memo entries hold a weak reference to the model, so a recycled `id` never
returns another model's grid.
"""

from __future__ import annotations

import hashlib
import math
import weakref

import numpy as np
import torch
from torch import Tensor

from analytic.grids import karras
from bench.measure.reference import RK4LogSNR
from solvers.loop import sample
from solvers.model import Model

DEFAULT_POINTS = 61  # candidate times (their recommended num_steps_tea)
DEFAULT_COEFF = 1.15  # their default DP coefficient
DEFAULT_SUBSTEPS = 8  # RK4 steps per candidate interval
_MEMO_LIMIT = 256

_COSTS: dict[tuple, tuple[weakref.ref, Tensor, np.ndarray]] = {}
_TIMES: dict[tuple, tuple[weakref.ref, Tensor]] = {}


def dp_path(cost: np.ndarray, steps: int, coeff: float = DEFAULT_COEFF) -> list[int]:
    """The candidate indices (0 first, K - 1 last, strictly increasing, steps + 1 of them) of the path
    minimising sum_s coeff^s cost[p_s, p_{s+1}] over paths of exactly `steps` steps."""
    cost = np.asarray(cost, dtype=np.float64)
    if cost.ndim != 2 or cost.shape[0] != cost.shape[1] or cost.shape[0] < 2:
        raise ValueError(f"cost must be a square matrix of at least 2 candidates, got shape {cost.shape}")
    k_last = cost.shape[0] - 1
    if not 1 <= steps <= k_last:
        raise ValueError(f"steps must be in [1, {k_last}] for {k_last + 1} candidates, got {steps}")
    if not (math.isfinite(coeff) and coeff > 0):
        raise ValueError(f"coeff must be positive, got {coeff}")
    upper = np.triu(np.ones_like(cost, dtype=bool), k=1)
    if not np.isfinite(cost[upper]).all():
        raise ValueError("cost must be finite above the diagonal")
    # V[i]: best weighted cost from candidate i to the end in k steps (inf where impossible).
    value = np.full(k_last + 1, np.inf)
    value[:k_last] = cost[:k_last, k_last]
    choice = np.zeros((steps + 1, k_last + 1), dtype=np.int64)
    inner = upper.copy()
    inner[:, k_last] = False  # an intermediate point is never the last candidate
    for k in range(2, steps + 1):
        total = np.where(inner, cost + coeff * value[None, :], np.inf)
        choice[k] = np.argmin(total, axis=1)  # first minimum: the smallest index on ties
        value = total[np.arange(k_last + 1), choice[k]]
    path, node = [0], 0
    for k in range(steps, 1, -1):
        node = int(choice[k, node])
        path.append(node)
    path.append(k_last)
    return path


def path_cost(cost: np.ndarray, path: list[int], coeff: float = 1.0) -> float:
    """sum_s coeff^s cost[p_s, p_{s+1}]: what `dp_path` minimises."""
    pairs = zip(path[:-1], path[1:], strict=True)
    return float(sum(coeff ** s * cost[a, b] for s, (a, b) in enumerate(pairs)))


def candidate_times(model: Model, t_min: float, t_max: float, points: int = DEFAULT_POINTS) -> Tensor:
    """The `points` candidate times: Karras rho = 7 in sigma~ from t_max to t_min (float64)."""
    return karras(model.schedule, points - 1, t_min, t_max, rho=7.0)


def teacher_trajectory(model: Model, x_T: Tensor, times: Tensor, substeps: int = DEFAULT_SUBSTEPS
                       ) -> Tensor:
    """States at every time of `times` (stacked, shape (len(times), *x_T.shape)) of RK4 in log-SNR
    from x_T at times[0], with `substeps` steps uniform in lambda inside each interval."""
    sched, solver = model.schedule, RK4LogSNR()
    ramp = torch.linspace(0, 1, substeps + 1, dtype=torch.float64)
    states, x = [x_T], x_T
    grid = times.tolist()
    for t0, t1 in zip(grid[:-1], grid[1:], strict=True):
        lam0, lam1 = float(sched.log_snr(t0)), float(sched.log_snr(t1))
        sub = torch.as_tensor(sched.t_of_log_snr(lam0 + ramp * (lam1 - lam0)), dtype=torch.float64).clone()
        sub[0], sub[-1] = t0, t1
        x = sample(solver, model, sub, x, None).x
        states.append(x)
    return torch.stack(states)


def cost_matrix(model: Model, times: Tensor, trajectory: Tensor) -> np.ndarray:
    """cost[i, j] = mean_n ||y_i + (sigma~_j - sigma~_i) eps(x_i, t_i) - y_j||_2 for i < j, with
    y = x / alpha the teacher's VE state (zero on and below the diagonal)."""
    sched, grid = model.schedule, times.tolist()
    k = len(grid)
    alpha = torch.tensor([float(sched.alpha(t)) for t in grid], dtype=torch.float64)
    sig = torch.tensor([float(sched.sigma_tilde(t)) for t in grid], dtype=torch.float64)
    n = trajectory.shape[1]
    ve = trajectory.to(torch.float64) / alpha.reshape((k,) + (1,) * (trajectory.ndim - 1))
    cost = np.zeros((k, k))
    with torch.no_grad():
        for i in range(k - 1):
            eps = model(trajectory[i], grid[i]).eps.to(torch.float64)
            gaps = (sig[i + 1:] - sig[i]).reshape((k - i - 1,) + (1,) * (trajectory.ndim - 1))
            defect = ve[i][None] + gaps * eps[None] - ve[i + 1:]
            cost[i, i + 1:] = defect.reshape(k - i - 1, n, -1).norm(dim=2).mean(dim=1).numpy()
    return cost


def _digest(x: Tensor) -> str:
    return hashlib.sha1(x.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def _remember(memo: dict, key: tuple, value: tuple) -> None:
    if len(memo) >= _MEMO_LIMIT:
        memo.clear()
    memo[key] = value


def gits_costs(model: Model, x_T: Tensor, t_min: float, t_max: float, points: int = DEFAULT_POINTS,
               substeps: int = DEFAULT_SUBSTEPS) -> tuple[Tensor, np.ndarray]:
    """(candidate times, cost matrix) of the teacher from x_T, memoised."""
    sched = model.schedule
    key = (id(model), getattr(sched, "name", type(sched).__name__), tuple(x_T.shape), str(x_T.dtype),
           _digest(x_T), float(t_min), float(t_max), int(points), int(substeps))
    hit = _COSTS.get(key)
    if hit is not None and hit[0]() is model:
        return hit[1], hit[2]
    times = candidate_times(model, t_min, t_max, points)
    cost = cost_matrix(model, times, teacher_trajectory(model, x_T, times, substeps))
    _remember(_COSTS, key, (weakref.ref(model), times, cost))
    return times, cost


def gits_times(model: Model, x_T: Tensor, steps: int, t_min: float, t_max: float, *,
               points: int = DEFAULT_POINTS, coeff: float = DEFAULT_COEFF,
               substeps: int = DEFAULT_SUBSTEPS) -> Tensor:
    """The GITS grid: steps + 1 strictly decreasing float64 times from t_max to t_min, a subset of the
    max(points, steps + 1) Karras candidates, chosen by `dp_path` on the teacher's cost matrix from the
    warm-up samples x_T (drawn from p_{t_max} by the caller; GITS uses 256)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if substeps < 1:
        raise ValueError(f"substeps must be >= 1, got {substeps}")
    if not (math.isfinite(t_min) and math.isfinite(t_max) and t_min < t_max):
        raise ValueError(f"need t_min < t_max, got t_min={t_min}, t_max={t_max}")
    if x_T.ndim < 2:
        raise ValueError(f"x_T must be a batch of samples (n, ...), got shape {tuple(x_T.shape)}")
    points = max(int(points), steps + 1)
    sched = model.schedule
    key = (id(model), getattr(sched, "name", type(sched).__name__), tuple(x_T.shape), str(x_T.dtype),
           _digest(x_T), int(steps), float(t_min), float(t_max), points, float(coeff), int(substeps))
    hit = _TIMES.get(key)
    if hit is not None and hit[0]() is model:
        return hit[1].clone()
    times, cost = gits_costs(model, x_T, t_min, t_max, points, substeps)
    chosen = times[dp_path(cost, steps, coeff)].clone()
    _remember(_TIMES, key, (weakref.ref(model), chosen))
    return chosen.clone()
