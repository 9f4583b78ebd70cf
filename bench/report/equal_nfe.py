"""Errors at equal NFE: what every solver reaches with the same number of model calls.

A row is read at budget B from the cells placed at that budget (`nfe_budget` = B: the most steps whose
NFE fits, so a 3-NFE solver at B = 10 runs 3 steps, 9 calls, and says so in `nfe`); a run without
budgets (a step ladder) is read at its largest NFE <= B; an adaptive solver (tolerance ladder, NFE
counted at run time) at the tolerance whose mean NFE over seeds is the largest <= B. Seeds are
averaged; the standard error combines the cells' own standard errors (sampling error of the paired
estimators) when they have them, else the spread over seeds.
"""

from __future__ import annotations

import math

import pandas as pd

from bench.measure.paired import Z95

EQUAL_NFE_BUDGETS = (10, 20, 50)
COLUMNS = ["problem", "metric", "solver", "family", "budget", "nfe", "steps", "value", "stderr", "ci_low",
           "ci_high", "noise_floor", "below_floor", "n_seeds"]


def _pick(rows: pd.DataFrame, budget: int) -> pd.DataFrame:
    """The rows of one (problem, metric, solver) that stand for `budget` (empty when none fits)."""
    if "nfe_budget" in rows and (rows.nfe_budget == budget).any():
        return rows[rows.nfe_budget == budget]
    if rows.tolerance.notna().any():  # adaptive: one tolerance level, chosen by its mean NFE
        mean_nfe = rows.groupby("tolerance").nfe.mean()
        fits = mean_nfe[mean_nfe <= budget]
        return rows[rows.tolerance == fits.idxmax()] if not fits.empty else rows.iloc[:0]
    fits = rows[rows.nfe <= budget]
    return fits[fits.nfe == fits.nfe.max()] if not fits.empty else fits


def _aggregate(rows: pd.DataFrame) -> dict:
    values = rows.value.astype(float)
    k = len(values)
    if "stderr" in rows and rows.stderr.notna().all():
        se = math.sqrt(float((rows.stderr.astype(float) ** 2).sum())) / k
    else:
        se = float(values.std(ddof=1)) / math.sqrt(k) if k > 1 else math.nan
    mean = float(values.mean())
    floor = float(rows.noise_floor.mean()) if "noise_floor" in rows else math.nan
    return {"nfe": float(rows.nfe.mean()), "steps": float(rows.steps.mean()), "value": mean, "stderr": se,
            "ci_low": mean - Z95 * se, "ci_high": mean + Z95 * se, "noise_floor": floor,
            "below_floor": bool(math.isfinite(floor) and mean < floor), "n_seeds": k}


def error_at_nfe(frame: pd.DataFrame, budgets: tuple[int, ...] = EQUAL_NFE_BUDGETS) -> pd.DataFrame:
    """One row per (problem, metric, solver, budget): the seed-mean error at that NFE budget with its
    standard error and 95 % CI (normal), the NFE and steps actually used, and whether the mean lies
    below the noise floor. Only rows with status ok are read."""
    ok = frame[frame.status == "ok"] if "status" in frame else frame
    if "tolerance" not in ok:
        ok = ok.assign(tolerance=math.nan)
    out = []
    for (problem, metric, solver), rows in ok.groupby(["problem", "metric", "solver"], sort=True):
        family = rows.family.iloc[0] if "family" in rows else ""
        for budget in budgets:
            picked = _pick(rows, budget)
            if not picked.empty:
                out.append({"problem": problem, "metric": metric, "solver": solver, "family": family,
                            "budget": budget, **_aggregate(picked)})
    return pd.DataFrame(out, columns=COLUMNS)
