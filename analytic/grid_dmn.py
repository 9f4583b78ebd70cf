"""DM-NonUniform time steps: model-free optimisation of the grid in lambda = log(alpha / sigma).

Xue et al., "Accelerating Diffusion Sampling with Optimized Time Steps", CVPR 2024 (arXiv 2402.17376),
the time-step optimisation problem of its method section over lambda_1 < ... < lambda_{N-1}, as the
authors' step_optim.py (`sel_lambdas_lof_obj`) implements it. The objective bounds the
data-prediction error of DPM-Solver++ multistep (the same predictor as UniPC's): every step is
exp(lambda) times a weighted sum of past data predictions, with first, second or third order J
coefficients, and each prediction's error is weighted by sigma^2 / alpha of the VP-normalised
alpha = 1 / sqrt(1 + e^{-2 lambda}), sigma = 1 / sqrt(1 + e^{2 lambda}). It needs no model
evaluations ("model-free"): only the two end points' lambdas. It is minimised with scipy's
trust-constr under the linear monotonicity constraints, from the uniform-lambda grid (the authors'
'unif' initialisation, recommended for pixel-space models); the paper reports < 15 s per grid.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from scipy.optimize import LinearConstraint, minimize
from torch import Tensor

from analytic.schedules import Schedule

TRUNC = 3  # steps s < TRUNC bound their higher-order terms by an l2 norm (the authors' truncNum)

_CACHE: dict[tuple[str, int, float, float], Tensor] = {}


def _phi(h: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """H0, H1, H2 of the reference code: H_k(h) = e^h h^k - k H_{k-1}(h), H0 = e^h - 1."""
    eh = np.exp(h)
    h0 = eh - 1
    h1 = eh * h - h0
    return h0, h1, eh * h * h - 2 * h1


def dmn_objective(lambdas: np.ndarray) -> float:
    """The error bound of a full, increasing lambda grid (lambda(t_max) first, lambda(t_min) last).

    Step s goes from lambda_s to lambda_{s+1} with order 1 for s in {0, N-1}, order 2 for
    s in {1, N-2}, else order 3 (DPM-Solver++ multistep with lower-order start and final step).
    """
    lam = np.asarray(lambdas, dtype=np.float64)
    n = lam.size - 1
    if lam.ndim != 1 or n < 1:
        raise ValueError(f"need a 1-d grid of at least 2 lambdas, got shape {lam.shape}")
    h, e = np.diff(lam), np.exp(lam)
    alpha, sigma = 1 / np.sqrt(1 + np.exp(-2 * lam)), 1 / np.sqrt(1 + np.exp(2 * lam))
    weight = sigma**2 / alpha
    s = np.arange(n)
    order = np.where((s == 0) | (s == n - 1), 1, np.where((s == 1) | (s == n - 2), 2, 3))

    # terms[s, j]: weighted coefficient of the data prediction at lambda_{s-j} in step s
    terms = np.zeros((n, 3))
    h0, h1, h2 = _phi(h)
    first = s[order == 1]
    terms[first, 0] = (e[first + 1] - e[first]) * weight[first]
    sec = s[order == 2]
    a = h[sec - 1]
    terms[sec, 1] = -e[sec] * h1[sec] / a * weight[sec - 1]
    terms[sec, 0] = e[sec] * (h1[sec] + a * h0[sec]) / a * weight[sec]
    third = s[order == 3]
    a, b = h[third - 2], h[third - 1]
    terms[third, 2] = e[third] * (h2[third] + b * h1[third]) / (a * (a + b)) * weight[third - 2]
    terms[third, 1] = -e[third] * (h2[third] + (a + b) * h1[third]) / (a * b) * weight[third - 1]
    terms[third, 0] = (e[third] * (h2[third] + (2 * b + a) * h1[third] + b * (a + b) * h0[third])
                       / (b * (a + b)) * weight[third])

    # Early steps add |first-order term| or the l2 norm of their terms; later steps instead add each
    # term to its data point's coefficient, and the |coefficients| are added at the end. The sums
    # run in the reference code's order (cumsum is sequential): trust-constr's path on this
    # non-smooth bound depends on the last bits of it.
    late = (order > 1) & (s >= TRUNC)
    norms = np.sqrt(terms[:, 2] ** 2 + terms[:, 1] ** 2 + terms[:, 0] ** 2)
    early = np.where(order == 1, np.abs(terms[:, 0]), np.where(late, 0.0, norms))
    later = np.flatnonzero(late)
    points = (later[:, None] - np.arange(3)).clip(0).ravel()  # clipped ones carry a zero term
    coef = np.bincount(points, weights=terms[later].ravel(), minlength=n)[:n]
    return float(np.cumsum(early)[-1] + np.cumsum(np.abs(coef))[-1])


def _optimise(lam_T: float, lam_eps: float, steps: int) -> np.ndarray:
    init = np.linspace(lam_T, lam_eps, steps + 1)
    if steps < 2:
        return init
    # lam_T <= x_0 <= x_1 <= ... <= x_{N-2} <= lam_eps as N rows of differences
    diff = np.eye(steps, steps - 1) - np.eye(steps, steps - 1, k=-1)
    lb = np.zeros(steps)
    lb[0], lb[-1] = lam_T, -lam_eps
    constraint = LinearConstraint(diff, lb, np.full(steps, np.inf))

    def objective(x: np.ndarray) -> float:
        return dmn_objective(np.concatenate(([lam_T], x, [lam_eps])))

    with warnings.catch_warnings():  # delta_grad == 0 (BFGS skip), maxiter reached, ...
        warnings.simplefilter("ignore")
        result = minimize(objective, init[1:-1], method="trust-constr", constraints=[constraint],
                          options={"verbose": 0})
    lam = np.concatenate(([lam_T], result.x, [lam_eps]))
    # The constraints only ask lambda_{i+1} >= lambda_i, up to trust-constr's tolerance: a tie or
    # inversion (or a bound no better than the start) would give a degenerate grid, so fall back
    # to the uniform-lambda initialisation then.
    if not (np.all(np.isfinite(lam)) and np.all(np.diff(lam) > 0)
            and dmn_objective(lam) <= dmn_objective(init)):
        return init
    return lam


def dmn(schedule: Schedule, steps: int, t_min: float, t_max: float) -> Tensor:
    """steps + 1 strictly decreasing times t_max .. t_min minimising `dmn_objective` (memoised)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    key = (schedule.name, int(steps), float(t_min), float(t_max))
    if key not in _CACHE:
        lam_T, lam_eps = float(schedule.log_snr(t_max)), float(schedule.log_snr(t_min))
        # lambdas too close for the schedule's t to tell apart: the uniform-lambda start instead
        for lam in (_optimise(lam_T, lam_eps, steps), np.linspace(lam_T, lam_eps, steps + 1)):
            times = schedule.t_of_log_snr(torch.as_tensor(lam, dtype=torch.float64))
            times[0], times[-1] = t_max, t_min
            if bool((times[1:] < times[:-1]).all()):
                break
        else:
            raise ValueError(f"DM-NonUniform grid for {key} is not strictly decreasing")
        _CACHE[key] = times
    return _CACHE[key].clone()
