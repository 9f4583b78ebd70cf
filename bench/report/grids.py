"""Tables and figures of the grid studies (bench/studies/grid_study.py) and `bench grid show`."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402
from torch import Tensor  # noqa: E402

from analytic.grid_files import read_grid_file  # noqa: E402
from bench.report.style import write_png  # noqa: E402

OPTIMIZED = "optimized"


def grid_table(rows: pd.DataFrame) -> pd.DataFrame:
    """(solver, NFE) x grid of the objective, with the best standard grid and the optimised/best ratio."""
    ok = rows[rows["status"] == "ok"]
    table = ok.pivot_table(index=["solver", "nfe"], columns="grid", values="value", aggfunc="first")
    standard = table.drop(columns=[OPTIMIZED], errors="ignore")
    table["best standard"] = standard.idxmin(axis=1)
    table["gain"] = standard.min(axis=1) / table[OPTIMIZED]
    return table


def _ci(values: np.ndarray) -> tuple[float, float, float]:
    """Mean and 95% t-interval over seeds."""
    values = values[np.isfinite(values)]
    mean = float(values.mean()) if len(values) else math.nan
    if len(values) < 2:
        return mean, math.nan, math.nan
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def transfer_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (solver, NFE budget, grid): mean path-rms over seeds with its 95% CI, and the per-seed
    ratio optimized / best standard grid (by mean) with its 95% CI (a paired comparison)."""
    ok = rows[(rows["status"] == "ok") & (rows["metric"] == "path-rms")]
    out = []
    for (solver, budget), part in ok.groupby(["solver", "nfe_budget"], sort=False):
        by_grid = part.pivot_table(index="seed", columns="grid", values="value", aggfunc="first")
        standard = by_grid.drop(columns=[OPTIMIZED], errors="ignore")
        best = standard.mean().idxmin()
        for grid in by_grid.columns:
            mean, lo, hi = _ci(by_grid[grid].to_numpy())
            out.append({"solver": solver, "nfe": int(budget), "grid": grid, "path_rms": mean, "ci_lo": lo,
                        "ci_hi": hi, "best_standard": best})
        if OPTIMIZED in by_grid:
            ratio = np.log(by_grid[OPTIMIZED] / by_grid[best]).to_numpy()
            mean, lo, hi = _ci(ratio)
            out.append({"solver": solver, "nfe": int(budget), "grid": f"{OPTIMIZED}/{best}",
                        "path_rms": math.exp(mean), "ci_lo": math.exp(lo) if math.isfinite(lo) else math.nan,
                        "ci_hi": math.exp(hi) if math.isfinite(hi) else math.nan, "best_standard": best})
    return pd.DataFrame(out)


def transfer_table(rows: pd.DataFrame) -> pd.DataFrame:
    """One line per (solver, NFE): 'mean [lo, hi]' per grid and the optimised/best ratio with its CI."""
    summary = transfer_summary(rows)
    fmt = summary.assign(text=[f"{m:.3g} [{lo:.3g}, {hi:.3g}]" for m, lo, hi in
                               zip(summary["path_rms"], summary["ci_lo"], summary["ci_hi"], strict=True)])
    fmt["grid"] = [g if "/" not in g else "optimized / best" for g in fmt["grid"]]
    return fmt.pivot_table(index=["solver", "nfe"], columns="grid", values="text", aggfunc="first")


def plot_grids(times: dict[str, Tensor], schedule, out: Path, title: str,
               files: tuple[str, ...] = ()) -> Path:
    """Grids side by side: time and log-SNR against the step index (grid files, `files`, dashed)."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    colors = plt.get_cmap("tab20").colors
    for k, (name, t) in enumerate(times.items()):
        index = np.arange(len(t))
        style = {"marker": "o", "ms": 3, "label": name, "color": colors[2 * k % 20 + k // 10]}
        if name in files:
            style.update(ls="--", lw=2)
        axes[0].plot(index, t.numpy(), **style)
        axes[1].plot(index, schedule.log_snr(t).numpy(), **style)
    axes[0].set(xlabel="step index i", ylabel="t_i (schedule time)", title="time")
    axes[1].set(xlabel="step index i", ylabel="log-SNR lambda(t_i)", title="log-SNR")
    axes[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(title)
    fig.tight_layout()
    return write_png(fig, out, dpi=120)


def plot_grid_study(rows: pd.DataFrame, out: Path) -> Path:
    """Objective per solver (groups) and grid (bars), log scale; the optimised grid last."""
    table = grid_table(rows)
    grids = [g for g in table.columns if g not in ("best standard", "gain", OPTIMIZED)] + [OPTIMIZED]
    labels = [f"{s}\nNFE {int(n)}" for s, n in table.index]
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(labels)), 4))
    width = 0.8 / len(grids)
    for k, g in enumerate(grids):
        color = "black" if g == OPTIMIZED else None
        ax.bar(np.arange(len(labels)) + (k - len(grids) / 2 + 0.5) * width, table[g].to_numpy(dtype=float),
               width, label=g, color=color)
    ax.set_yscale("log")
    ax.set_xticks(np.arange(len(labels)), labels)
    metric = rows["metric"].iloc[0]
    ax.set_ylabel(f"{metric} (exact, no sampling error)" if metric == "w2-exact" else metric)
    ax.set_title(f"{rows['problem'].iloc[0]}: standard grids vs the grid optimised for each solver")
    ax.legend(fontsize=7, ncol=4)
    fig.tight_layout()
    return write_png(fig, out, dpi=120)


def grids_origin(manifest: dict | None) -> str:
    """'optimised on P for O', read from a grid file of a transfer run's grid folder ('' if none)."""
    folder = Path((manifest or {}).get("optimized_grids", ""))
    files = sorted(folder.glob("*.json")) if folder.name else []
    if not files:
        return ""
    doc = read_grid_file(files[0])
    model = doc.get("model", "exact")
    with_model = f" with the {model} network" if model != "exact" else ""
    return f"optimised{with_model} on {doc.get('problem')} for {doc.get('objective')}"


def plot_transfer(rows: pd.DataFrame, out: Path, origin: str = "") -> Path:
    """path-rms against NFE per solver (panels), one line per grid with 95% CI bars over seeds."""
    summary = transfer_summary(rows)
    summary = summary[~summary["grid"].str.contains("/")]
    solvers = list(dict.fromkeys(summary["solver"]))
    fig, axes = plt.subplots(1, len(solvers), figsize=(3.2 * len(solvers), 3.4), sharey=True, squeeze=False)
    for ax, solver in zip(axes[0], solvers, strict=True):
        part = summary[summary["solver"] == solver]
        for grid, g in part.groupby("grid", sort=False):
            style = {"color": "black", "lw": 2} if grid == OPTIMIZED else {"lw": 1, "alpha": 0.8}
            lo = np.maximum(g["ci_lo"], g["path_rms"] / 10)  # a CI reaching below 0 is drawn to mean/10
            err = np.vstack([g["path_rms"] - lo, g["ci_hi"] - g["path_rms"]])
            ax.errorbar(g["nfe"], g["path_rms"], yerr=err, marker="o", ms=3, capsize=2, label=grid, **style)
        ax.set(xscale="log", yscale="log", xlabel="NFE", title=solver)
        budgets = sorted(set(part["nfe"]))
        ax.set_xticks(budgets, [str(b) for b in budgets])
        ax.minorticks_off()
    axes[0][0].set_ylabel(f"path-rms vs the network's own flow ({rows['model'].iloc[0]})")
    axes[0][-1].legend(fontsize=7)
    what = origin or "optimised"
    fig.suptitle(f"grids {what} (black) vs the standard grids, with the learned model; 95% CI over seeds")
    fig.tight_layout()
    return write_png(fig, out, dpi=120)
