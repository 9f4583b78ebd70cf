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
   Rows with a standard error (`stderr`) also leave out levels whose error is under
   STDERR_FACTOR (2) x its standard error: they are not distinguishable from zero;
3. the order is minus the least-squares slope over the kept levels; its 95 % interval comes from
   a bootstrap (BOOTSTRAP resamples, fixed generator): parametric when the rows carry standard
   errors (each level's log error redrawn with its standard error: the larger of the one its rows
   state and the scatter between seeds), else over seeds when there are two or more (resample
   seeds with replacement, recompute the level means, refit), else over the fit's residuals
   (inflated by sqrt(n / (n - 2))).
The fine end is not trimmed beyond the floor rule: a slope that bends there (order reduction,
round-off) is a finding, and the note says so. The local slopes between consecutive kept levels,
with their standard errors, are kept for the verdict.

`orders_table` applies this per (problem, schedule, model, solver, family, grid, metric) and axis
("steps", "nfe") and compares with the theory the rows carry (bench/measure/theory.py: weak order for
errors in law, strong order for pathwise errors, an interval [theory, theory_max] where the
implementation caps the nominal order). `verdict` is three-valued, tol = 0.15 for ODE solvers and
0.2 for stochastic ones (the pre-asymptotic bias of finite N):
- agrees: the CI overlaps [theory - tol, theory_max + tol], is no wider than CI_MAX_WIDTH, and so
  does the finest local slope (within 2 of its standard errors);
- disagrees: the CI excludes that band, so does the finest local slope (within 2 of its standard
  errors), and the finest local slopes have settled: there are at least three (four usable levels),
  the last two agree within tol, with a standard error of their difference below tol, and the last
  three do not climb or fall by more than tol;
- unresolved otherwise, with the reason: too few levels above the floor or standard error, local
  slopes still drifting, or a CI too wide to decide.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

FLOOR_FACTOR = 3.0
STDERR_FACTOR = 2.0
CI_MAX_WIDTH = 0.6
MIN_POINTS = 3
SLOPE_TOL = 0.1
BOOTSTRAP = 2000
GROUP_KEYS = ("problem", "schedule", "model", "solver", "family", "grid", "metric")
ORDER_COLUMNS = [*GROUP_KEYS, "axis", "order", "ci_low", "ci_high", "theory", "theory_max", "theory_kind",
                 "verdict", "reason", "finest_slope", "n_points", "n_excluded", "note"]
VERDICTS = ("agrees", "disagrees", "unresolved")


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
    local_slopes: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False)  # orders, coarse first
    local_se: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False)


def _ols(x: np.ndarray, y: np.ndarray) -> tuple[float, float, np.ndarray]:
    """Least-squares slope, intercept and residuals of y on x."""
    xm, ym = x.mean(), y.mean()
    slope = float(((x - xm) * (y - ym)).sum() / ((x - xm) ** 2).sum())
    intercept = float(ym - slope * xm)
    return slope, intercept, y - (intercept + slope * x)


def _slopes(lx: np.ndarray, ys: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Least-squares slopes of each row of ys (B, L) on lx (L,), rows weighted 0/1 by `weights` (a row
    with fewer than two levels gives NaN)."""
    w = np.ones_like(ys) if weights is None else weights.astype(float)
    ys = np.where(w > 0, ys, 0.0)
    sw = w.sum(1)
    xm, ym = (w * lx).sum(1) / sw, (w * ys).sum(1) / sw
    xc = lx[None, :] - xm[:, None]
    sxx = (w * xc * xc).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sw >= 2, (w * xc * (ys - ym[:, None])).sum(1) / sxx, np.nan)


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


def fit_order(steps_or_nfe, errors, noise_floor=None, seeds=None, stderr=None) -> OrderFit:
    """Observed order p (error ~ C N^-p) with a bootstrap 95 % interval; see the module doc."""
    x = np.asarray(steps_or_nfe, dtype=float).ravel()
    e = np.asarray(errors, dtype=float).ravel()
    if x.shape != e.shape:
        raise ValueError(f"{len(x)} step counts but {len(e)} errors")
    floor = np.broadcast_to(np.asarray(np.nan if noise_floor is None else noise_floor, dtype=float),
                            x.shape)
    se = np.broadcast_to(np.asarray(np.nan if stderr is None else stderr, dtype=float), x.shape)
    seed_arr = np.zeros(len(x)) if seeds is None else np.asarray(seeds).ravel()
    valid = np.isfinite(x) & (x > 0) & np.isfinite(e) & (e > 0)
    used, below = np.zeros(len(x), bool), np.zeros(len(x), bool)
    levels = np.unique(x[valid])
    kept, level_se = [], []
    n_noise = 0
    for level in levels:
        rows = valid & (x == level)
        mean_floor = np.nanmean(floor[rows]) if np.isfinite(floor[rows]).any() else np.nan
        mean_e = math.exp(np.log(e[rows]).mean())
        # the level mean's standard error: sqrt(sum se_i^2) / k over its k rows
        stated = math.sqrt(np.nansum(se[rows] ** 2)) / rows.sum() if np.isfinite(se[rows]).any() else np.nan
        if np.isfinite(mean_floor) and mean_e < FLOOR_FACTOR * mean_floor:
            below |= rows
        elif np.isfinite(stated) and mean_e < STDERR_FACTOR * stated:
            below |= rows
            n_noise += 1
        else:
            kept.append(level)
            logs = np.log(e[rows])  # in log: relative standard errors
            scatter = logs.std(ddof=1) / math.sqrt(len(logs)) if len(logs) > 1 else np.nan
            level_se.append(np.nanmax([stated / mean_e, scatter]) if np.isfinite([stated, scatter]).any()
                            else np.nan)
    n_below = len(levels) - len(kept)
    notes = []
    if n_below - n_noise:
        notes.append(f"{n_below - n_noise} level(s) below {FLOOR_FACTOR:g}x noise floor")
    if n_noise:
        notes.append(f"{n_noise} level(s) below {STDERR_FACTOR:g}x standard error")
    if len(kept) < MIN_POINTS:
        notes.append(f"fewer than {MIN_POINTS} usable levels")
        return OrderFit(math.nan, math.nan, math.nan, len(kept), n_below, "; ".join(notes), used, below)

    kept_arr = np.array(kept)
    lx = np.log(kept_arr)
    ly = np.array([np.log(e[valid & (x == lv)]).mean() for lv in kept_arr])
    ly_se = np.array(level_se)
    cut = _coarse_cut(lx, ly)
    if cut:
        notes.append(f"dropped {cut} coarsest level(s) as pre-asymptotic")
    lx, ly, ly_se, kept_arr = lx[cut:], ly[cut:], ly_se[cut:], kept_arr[cut:]
    for lv in kept_arr:
        used |= valid & (x == lv)
    slope, intercept, resid = _ols(lx, ly)
    order = -slope
    local = -np.diff(ly) / np.diff(lx)
    local_se = np.sqrt(np.nan_to_num(ly_se[1:]) ** 2 + np.nan_to_num(ly_se[:-1]) ** 2) / np.diff(lx)
    if len(lx) >= MIN_POINTS + 1 and abs(local[-1] - order) > 0.3 * max(1.0, abs(order)):
        notes.append(f"finest local order {local[-1]:.2f} differs from the fit")

    rng = np.random.default_rng(0)
    distinct = np.unique(seed_arr[used])
    boot = np.empty(0)
    if np.isfinite(se[used]).any() and np.isfinite(ly_se).all():
        notes.append("CI: parametric bootstrap over the levels' standard errors, joined with the "
                     "residual bootstrap (lack of fit)")
        boot = -_slopes(lx, ly + ly_se * rng.standard_normal((BOOTSTRAP, len(ly))))
    elif len(distinct) >= 2:
        notes.append(f"CI: bootstrap over {len(distinct)} seeds, joined with the residual bootstrap")
        logs = np.log(np.where(used, e, 1.0))
        cells = [[used & (x == lv) & (seed_arr == sd) for sd in distinct] for lv in kept_arr]
        sums = np.array([[logs[c].sum() for c in row] for row in cells])  # (levels, seeds)
        counts = np.array([[c.sum() for c in row] for row in cells])
        pick = rng.integers(0, len(distinct), (BOOTSTRAP, len(distinct)))
        total, n = sums[:, pick].sum(-1).T, counts[:, pick].sum(-1).T  # (BOOTSTRAP, levels)
        boot = -_slopes(lx, np.where(n > 0, total / np.maximum(n, 1), np.nan), weights=n > 0)
    else:
        notes.append("CI: residual bootstrap (one seed)")
    scale = math.sqrt(len(lx) / (len(lx) - 2)) if len(lx) > 2 else 1.0
    fitted = intercept + slope * lx
    residual = -_slopes(lx, fitted + scale * resid[rng.integers(0, len(resid), (BOOTSTRAP, len(resid)))])
    bounds = [np.nanpercentile(b, [2.5, 97.5]) for b in (boot, residual) if np.isfinite(b).any()]
    lo, hi = min(float(b[0]) for b in bounds), max(float(b[1]) for b in bounds)
    excluded = n_below + cut
    return OrderFit(order, min(lo, order), max(hi, order), len(lx), excluded, "; ".join(notes), used, below,
                    local, local_se)


def verdict(fit: OrderFit, low: float, high: float, tol: float) -> tuple[str, str]:
    """(agrees | disagrees | unresolved, reason) of a fit against the theory interval [low, high]."""
    if not math.isfinite(low):
        return "unresolved", "no theory order to compare with"
    if not math.isfinite(fit.order):
        return "unresolved", fit.note or "no order could be fitted"
    band = (low - tol, high + tol)
    theory = f"{low:g}" if low == high else f"{low:g}..{high:g}"
    ci = f"CI [{fit.ci_low:.2f}, {fit.ci_high:.2f}]"
    overlaps = fit.ci_high >= band[0] and fit.ci_low <= band[1]
    finest, finest_se = fit.local_slopes[-1], fit.local_se[-1]
    finest_in = finest + 2 * finest_se >= band[0] and finest - 2 * finest_se <= band[1]
    local = ", ".join(f"{v:.2f}" for v in fit.local_slopes[-3:])
    if overlaps and fit.ci_high - fit.ci_low > CI_MAX_WIDTH:
        return "unresolved", f"{ci} too wide to decide against {theory}"
    if overlaps and finest_in:
        return "agrees", ""
    if overlaps:
        return "unresolved", (f"{ci} overlaps {theory} ± {tol:g} but the finest local slope "
                              f"{finest:.2f} ± {2 * finest_se:.2f} does not (local slopes {local})")
    if finest_in:
        return "unresolved", (f"{ci} excludes {theory} ± {tol:g} but the finest local slope {finest:.2f} "
                              f"± {2 * finest_se:.2f} lies within it: the coarse levels are pre-asymptotic "
                              f"(local slopes {local})")
    if _settled(fit, tol):
        return "disagrees", f"{ci} excludes {theory} ± {tol:g}; finest local slopes {local} have settled"
    return "unresolved", f"{ci} excludes {theory} ± {tol:g} but the local slopes {local} are still drifting"


def _settled(fit: OrderFit, tol: float) -> bool:
    """The finest local slopes have stopped moving: there are three at least, the last two agree within
    tol and their difference is measured to within tol, and the last three do not climb or fall
    monotonically by more than tol."""
    s, se = fit.local_slopes, fit.local_se
    if len(s) < 3 or abs(s[-1] - s[-2]) > tol or math.hypot(se[-1], se[-2]) > tol:
        return False  # two slopes (three levels) cannot show that they have stopped moving
    return not ((s[-1] - s[-2]) * (s[-2] - s[-3]) > 0 and abs(s[-1] - s[-3]) > tol)


NO_ORDER_METRICS = ("fid", "mode-flips")


def _column(group: pd.DataFrame, name: str, fallback: str | None = None) -> float:
    for col in (name, fallback):
        if col and col in group and pd.notna(group[col].iloc[0]):
            return float(group[col].iloc[0])
    return math.nan


def orders_table(results: pd.DataFrame, tolerance: float = 0.15,
                 stochastic_tolerance: float = 0.2) -> pd.DataFrame:
    """orders.csv rows (bench results format) from results rows: one fit per group and axis."""
    ok = results[(results["status"] == "ok") & np.isfinite(results["value"].astype(float))
                 & (results["value"].astype(float) > 0)]
    if "metric" in ok.columns:  # FID tends to the model's own FID, not to 0: it has no order
        ok = ok[~ok["metric"].isin(NO_ORDER_METRICS)]
    if "component" in ok.columns:  # a decomposition's score/both rows tend to the score error, not to 0
        ok = ok[ok["component"].isna() | (ok["component"] == "discretization")]
    keys = [k for k in GROUP_KEYS if k in ok.columns]
    out = []
    if ok.empty:
        return pd.DataFrame(columns=ORDER_COLUMNS)
    for group_key, group in ok.groupby(keys, sort=True, dropna=False):
        base = dict(zip(keys, group_key if isinstance(group_key, tuple) else (group_key,), strict=True))
        low = _column(group, "theory_order")
        high = _column(group, "theory_order_max", "theory_order")
        kind = str(group["theory_kind"].iloc[0]) if "theory_kind" in group else ""
        stochastic = bool(group["stochastic"].astype(bool).any()) if "stochastic" in group else False
        tol = stochastic_tolerance if stochastic else tolerance
        floor = group["noise_floor"].astype(float).to_numpy() if "noise_floor" in group else None
        stderr = group["stderr"].astype(float).to_numpy() if "stderr" in group else None
        seeds = group["seed"].to_numpy() if "seed" in group else None
        for axis in ("steps", "nfe"):
            if axis not in group:
                continue
            fit = fit_order(group[axis].to_numpy(), group["value"].to_numpy(), floor, seeds, stderr)
            verdict_, reason = verdict(fit, low, high, tol)
            out.append({**base, "axis": axis, "order": fit.order, "ci_low": fit.ci_low,
                        "ci_high": fit.ci_high, "theory": low, "theory_max": high,
                        "theory_kind": "" if kind == "nan" else kind, "verdict": verdict_, "reason": reason,
                        "finest_slope": fit.local_slopes[-1] if len(fit.local_slopes) else math.nan,
                        "n_points": fit.n_points, "n_excluded": fit.n_excluded, "note": fit.note})
    table = pd.DataFrame(out)
    return table.reindex(columns=[c for c in ORDER_COLUMNS if c in table.columns or c not in GROUP_KEYS])
