"""Observed convergence orders: the slope p of log error against log steps (or NFE), error ~ C N^-p.

`fit_order` works on error levels: the errors at one N are averaged in log (geometric mean over
seeds), then
1. levels whose mean error is below FLOOR_FACTOR (3) x the mean noise floor at that N are excluded
   and marked (`below_floor`): they measure Monte-Carlo noise or the reference's error;
2. the asymptotic range is found by dropping the coarsest level while the slope still changes:
   while (a) a quadratic fit of log e on log N over the remaining levels says the slope changes
   across them by more than SLOPE_TOL x max(1, |slope|) (and by more than twice that change's
   standard error from the quadratic fit's residuals, so noise alone does not trigger it) and
   (b) the coarsest local slope differs from the finer levels' slope by as much, so a bend at the
   fine end does not eat the coarse levels; always keeping MIN_POINTS levels;
3. the order is minus the least-squares slope over the kept levels; its 95 % interval comes from
   a bootstrap (BOOTSTRAP resamples, fixed generator): over seeds when there are two or more
   (resample seeds with replacement, recompute the level means, refit), else over the fit's
   residuals (inflated by sqrt(n / (n - 2))).
The fine end is not trimmed beyond the floor rule: a slope that bends there (order reduction,
round-off) is a finding, and the note says so.

`orders_table` applies this per (problem, schedule, model, solver, family, grid, metric) and axis
("steps", "nfe") and decides agreement with theory: agrees iff the order is finite and
ci_low - tol <= theory <= ci_high + tol, tol = 0.15 for ODE solvers and 0.2 for stochastic ones
(weak orders from sample metrics are noisier). The tolerance absorbs the pre-asymptotic bias of
finite N; the interval absorbs the statistical error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

FLOOR_FACTOR = 3.0
MIN_POINTS = 3
SLOPE_TOL = 0.1
BOOTSTRAP = 2000
GROUP_KEYS = ("problem", "schedule", "model", "solver", "family", "grid", "metric")
ORDER_COLUMNS = [*GROUP_KEYS, "axis", "order", "ci_low", "ci_high", "theory", "agrees", "n_points",
                 "n_excluded", "note"]


@dataclass
class OrderFit:
    order: float
    ci_low: float
    ci_high: float
    n_points: int  # step levels in the fit
    n_excluded: int  # step levels left out: below 3x the floor, or pre-asymptotic
    note: str
    used: np.ndarray = field(repr=False)  # per input point: its level is in the fit
    below_floor: np.ndarray = field(repr=False)  # per input point: its level is under 3x the floor


def _ols(x: np.ndarray, y: np.ndarray) -> tuple[float, float, np.ndarray]:
    """Least-squares slope, intercept and residuals of y on x."""
    xm, ym = x.mean(), y.mean()
    slope = float(((x - xm) * (y - ym)).sum() / ((x - xm) ** 2).sum())
    intercept = float(ym - slope * xm)
    return slope, intercept, y - (intercept + slope * x)


def _coarse_cut(lx: np.ndarray, ly: np.ndarray) -> int:
    """How many of the coarsest levels to drop as pre-asymptotic (see module doc)."""
    for start in range(len(lx)):
        if len(lx) - start <= MIN_POINTS:
            return start
        x, y = lx[start:], ly[start:]
        xc = x - x.mean()
        design = np.stack([np.ones_like(xc), xc, xc**2 - (xc**2).mean()], axis=1)
        coef, *_ = np.linalg.lstsq(design, y, rcond=None)
        resid = y - design @ coef
        span = x.max() - x.min()
        change = 2 * coef[2] * span  # slope change across the range, from the quadratic term
        sd = math.sqrt(float((resid**2).sum()) / (len(x) - 3)) if len(x) > 3 else 0.0
        se_change = 2 * span * sd * math.sqrt(float(np.linalg.inv(design.T @ design)[2, 2]))
        rest_slope = _ols(x[1:], y[1:])[0]
        local = (y[1] - y[0]) / (x[1] - x[0])
        tol = SLOPE_TOL * max(1.0, abs(coef[1]))
        curved = abs(change) > max(tol, 2 * se_change)
        if not (curved and abs(local - rest_slope) > max(tol, 2 * se_change)):
            return start
    return 0


def fit_order(steps_or_nfe, errors, noise_floor=None, seeds=None) -> OrderFit:
    """Observed order p (error ~ C N^-p) with a bootstrap 95 % interval; see the module doc."""
    x = np.asarray(steps_or_nfe, dtype=float).ravel()
    e = np.asarray(errors, dtype=float).ravel()
    if x.shape != e.shape:
        raise ValueError(f"{len(x)} step counts but {len(e)} errors")
    floor = np.broadcast_to(np.asarray(np.nan if noise_floor is None else noise_floor, dtype=float),
                            x.shape)
    seed_arr = np.zeros(len(x)) if seeds is None else np.asarray(seeds).ravel()
    valid = np.isfinite(x) & (x > 0) & np.isfinite(e) & (e > 0)
    used, below = np.zeros(len(x), bool), np.zeros(len(x), bool)
    levels = np.unique(x[valid])
    kept = []
    for level in levels:
        rows = valid & (x == level)
        mean_floor = np.nanmean(floor[rows]) if np.isfinite(floor[rows]).any() else np.nan
        if np.isfinite(mean_floor) and math.exp(np.log(e[rows]).mean()) < FLOOR_FACTOR * mean_floor:
            below |= rows
        else:
            kept.append(level)
    n_below = len(levels) - len(kept)
    notes = [f"{n_below} level(s) below {FLOOR_FACTOR:g}x noise floor"] if n_below else []
    if len(kept) < MIN_POINTS:
        notes.append(f"fewer than {MIN_POINTS} usable levels")
        return OrderFit(math.nan, math.nan, math.nan, len(kept), n_below, "; ".join(notes), used, below)

    kept_arr = np.array(kept)
    lx = np.log(kept_arr)
    ly = np.array([np.log(e[valid & (x == lv)]).mean() for lv in kept_arr])
    cut = _coarse_cut(lx, ly)
    if cut:
        notes.append(f"dropped {cut} coarsest level(s) as pre-asymptotic")
    lx, ly, kept_arr = lx[cut:], ly[cut:], kept_arr[cut:]
    for lv in kept_arr:
        used |= valid & (x == lv)
    slope, intercept, resid = _ols(lx, ly)
    order = -slope
    if len(lx) >= MIN_POINTS + 1:
        tail = (ly[-1] - ly[-2]) / (lx[-1] - lx[-2])
        if abs(-tail - order) > 0.3 * max(1.0, abs(order)):
            notes.append(f"finest local order {-tail:.2f} differs from the fit")

    rng = np.random.default_rng(0)
    distinct = np.unique(seed_arr[used])
    boot = []
    if len(distinct) >= 2:
        notes.append(f"CI: bootstrap over {len(distinct)} seeds")
        rows_of = {lv: [np.log(e[used & (x == lv) & (seed_arr == s)]) for s in distinct] for lv in kept_arr}
        for _ in range(BOOTSTRAP):
            pick = rng.integers(0, len(distinct), len(distinct))
            bx, by = [], []
            for lv, lx_v in zip(kept_arr, lx, strict=True):
                vals = np.concatenate([rows_of[lv][j] for j in pick])
                if len(vals):
                    bx.append(lx_v)
                    by.append(vals.mean())
            if len(bx) >= 2:
                boot.append(-_ols(np.array(bx), np.array(by))[0])
    else:
        notes.append("CI: residual bootstrap (one seed)")
        scale = math.sqrt(len(lx) / (len(lx) - 2)) if len(lx) > 2 else 1.0
        fitted = intercept + slope * lx
        for _ in range(BOOTSTRAP):
            boot.append(-_ols(lx, fitted + scale * rng.choice(resid, len(resid)))[0])
    lo, hi = (float(v) for v in np.percentile(boot, [2.5, 97.5])) if boot else (math.nan, math.nan)
    excluded = n_below + cut
    return OrderFit(order, min(lo, order), max(hi, order), len(lx), excluded, "; ".join(notes), used, below)


NO_ORDER_METRICS = ("fid",)


def orders_table(results: pd.DataFrame, tolerance: float = 0.15,
                 stochastic_tolerance: float = 0.2) -> pd.DataFrame:
    """orders.csv rows (bench results format) from results rows: one fit per group and axis."""
    ok = results[(results["status"] == "ok") & np.isfinite(results["value"].astype(float))
                 & (results["value"].astype(float) > 0)]
    if "metric" in ok.columns:  # FID tends to the model's own FID, not to 0: it has no order
        ok = ok[~ok["metric"].isin(NO_ORDER_METRICS)]
    keys = [k for k in GROUP_KEYS if k in ok.columns]
    out = []
    if ok.empty:
        return pd.DataFrame(columns=ORDER_COLUMNS)
    for group_key, group in ok.groupby(keys, sort=True, dropna=False):
        base = dict(zip(keys, group_key if isinstance(group_key, tuple) else (group_key,), strict=True))
        theory = float(group["theory_order"].iloc[0]) if "theory_order" in group else math.nan
        stochastic = bool(group["stochastic"].astype(bool).any()) if "stochastic" in group else False
        tol = stochastic_tolerance if stochastic else tolerance
        floor = group["noise_floor"].astype(float).to_numpy() if "noise_floor" in group else None
        seeds = group["seed"].to_numpy() if "seed" in group else None
        for axis in ("steps", "nfe"):
            if axis not in group:
                continue
            fit = fit_order(group[axis].to_numpy(), group["value"].to_numpy(), floor, seeds)
            agrees = (math.isfinite(fit.order) and math.isfinite(theory)
                      and fit.ci_low - tol <= theory <= fit.ci_high + tol)
            note = fit.note if math.isfinite(theory) else "; ".join(filter(None, [fit.note, "no theory"]))
            out.append({**base, "axis": axis, "order": fit.order, "ci_low": fit.ci_low,
                        "ci_high": fit.ci_high, "theory": theory, "agrees": bool(agrees),
                        "n_points": fit.n_points, "n_excluded": fit.n_excluded, "note": note})
    table = pd.DataFrame(out)
    return table.reindex(columns=[c for c in ORDER_COLUMNS if c in table.columns or c not in GROUP_KEYS])
