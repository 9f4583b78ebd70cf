"""Figures of the score/discretization split (bench/studies/decompose.py):
- plot_decomposition: one panel per solver, error against NFE for the exact score (discretization
  only) and the tested model (both), with the reference-with-tested-model error (score only) as a band
  and the crossover NFE marked;
- score_vs_discretization: per (problem, metric, model) the same solvers and steps with the exact model
  (solid) and the learned one (dashed), and the learned model's own error (dash-dot)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from bench.report.results import NFE_LABEL, Results, aggregate, metric_label, ok_rows  # noqa: E402
from bench.report.style import MAX_LINES, Size, format_log_axes, write_png  # noqa: E402
from bench.studies.decompose import crossover, table  # noqa: E402

COLORS = {"discretization": "tab:blue", "both": "tab:red", "score": "tab:gray"}
LABELS = {"discretization": "exact score (discretization)", "both": "tested model (both)",
          "score": "reference solver, tested model (score)"}


def plot_decomposition(frame: pd.DataFrame, out: str | Path, metric: str = "path-rms") -> Path:
    """Side-by-side panels per solver, log-log error vs NFE; returns the written PNG path."""
    wide = table(frame, metric)
    cross = crossover(frame, metric)
    solvers = sorted(wide["solver"].unique())
    fig, axes = plt.subplots(1, len(solvers), figsize=(3.2 * len(solvers), 3.0), sharey=True, squeeze=False)
    for ax, solver in zip(axes[0], solvers, strict=True):
        part = wide[wide["solver"] == solver].sort_values("nfe")
        score, ci = float(part["score"].iloc[0]), float(part["score_ci"].iloc[0])
        ax.axhspan(max(score - ci, 1e-12), score + ci, color=COLORS["score"], alpha=0.25)
        ax.axhline(score, color=COLORS["score"], lw=1.2, label=LABELS["score"])
        for comp in ("discretization", "both"):
            ci = part[f"{comp}_ci"]
            lower = ci.where(ci < 0.9 * part[comp], 0.9 * part[comp])  # keep bars on the log axis
            ax.errorbar(part["nfe"], part[comp], yerr=[lower, ci], marker="o", ms=3, lw=1.2,
                        color=COLORS[comp], label=LABELS[comp], capsize=2)
        if cross.get(solver) == cross.get(solver):  # not nan
            ax.axvline(cross[solver], color="k", ls=":", lw=1)
            ax.annotate(f"NFE {cross[solver]:g}", (cross[solver], score), textcoords="offset points",
                        xytext=(3, 6), fontsize=7)
        ax.set(xscale="log", yscale="log", title=solver, xlabel="NFE")
        format_log_axes(ax)
    axes[0][0].set_ylabel(metric)
    axes[0][-1].legend(fontsize=6, loc="lower left")
    model = frame["model"].iloc[0]
    fig.suptitle(f"{frame['problem'].iloc[0]}, model {model}: score vs discretization error", fontsize=9)
    fig.tight_layout()
    return write_png(fig, out)


def _reference_value(learned: pd.DataFrame) -> tuple[float, str]:
    """The learned model's own error: a decomposition's "score" rows or its 'reference' solver rows
    when present, else its best run at the largest NFE each solver reached."""
    ref = learned[learned["solver_name"].str.startswith("reference")
                  | learned["solver"].str.startswith("reference")]
    if "component" in learned:
        ref = pd.concat([ref, learned[learned["component"].astype(str) == "score"]])
    if not ref.empty:
        return float(np.exp(np.log(ref["value"]).mean())), "learned model, reference solver"
    top = learned.loc[learned.groupby("solver")["nfe"].transform("max") == learned["nfe"]]
    best = top.groupby("solver")["value"].apply(lambda v: float(np.exp(np.log(v).mean())))
    return float(best.min()), f"learned model, best run at max NFE ({best.idxmin()})"


def score_vs_discretization(res: Results, size: Size) -> list[tuple[str, Figure]]:
    """One panel per (problem, schedule, grid, metric, model) and group of at most MAX_LINES / 2 solvers
    (two lines each); [] without both exact-model and learned-model rows of the same cells."""
    rows = ok_rows(res.rows)
    learned, exact = rows[rows["model"] != "exact"], rows[rows["model"] == "exact"]
    on = ["problem", "schedule", "grid", "metric", "solver", "steps"]
    if learned.empty or exact.empty:
        return []
    pairs = learned.merge(exact[on].drop_duplicates(), on=on)
    if pairs.empty:
        return []
    everything = ok_rows(res.rows.assign(component="")) if "component" in res.rows else ok_rows(res.rows)
    keys = ["problem", "schedule", "grid", "metric", "model"]
    panels = []
    for values, grp in pairs.groupby(keys, sort=True):
        solvers = sorted(grp["solver"].unique(), key=lambda s: res.styles[s].slot)
        n_chunks = math.ceil(len(solvers) / (MAX_LINES // 2))
        for chunk in np.array_split(np.array(solvers, dtype=object), n_chunks):
            panels.append((dict(zip(keys, values, strict=True)), grp[grp["solver"].isin(list(chunk))]))
    cols = min(size.max_cols, len(panels))
    n_rows = math.ceil(len(panels) / cols)
    n_keys = len({*pairs["solver"]}) + 3
    key_in = (n_keys if size.max_cols <= 2 else math.ceil(n_keys / 3)) * size.font * 1.3 / 72
    height = n_rows * (size.panel_height + 0.45) + key_in + 0.2
    fig = Figure(figsize=(size.width, height), layout="constrained")
    axes = fig.subplots(n_rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    handles: dict[str, Line2D] = {}
    for ax, (key, grp) in zip(axes, panels, strict=True):
        cell = np.logical_and.reduce([exact[k] == key[k] for k in ("problem", "schedule", "grid", "metric")])
        base = exact[cell & exact["solver"].isin(grp["solver"].unique())]
        for frame, ls in ((aggregate(base, "nfe"), "-"), (aggregate(grp, "nfe"), "--")):
            for solver, pts in frame.groupby("solver", sort=False):
                st = res.styles[solver]
                ax.plot(pts["x"], pts["y"], color=st.color, marker=st.marker, ls=ls, ms=size.marker,
                        lw=size.line, gid=f"solver:{solver}")
                handles[solver] = Line2D([], [], color=st.color, marker=st.marker, ms=size.marker,
                                         label=solver)
        same = np.logical_and.reduce([everything[k] == key[k] for k in keys])
        ref, label = _reference_value(everything[same])
        ax.axhline(ref, color="0.2", ls="-.", lw=0.8 * size.line, zorder=1)
        handles[label] = Line2D([], [], color="0.2", ls="-.", lw=0.8 * size.line, label=label)
        ax.set(xscale="log", yscale="log", xlabel=NFE_LABEL, ylabel=metric_label(key["metric"]))
        ax.set_title(f"{key['problem']}, {key['metric']}, {key['model']}", fontsize=size.font)
    handles["exact"] = Line2D([], [], color="0.3", ls="-", label="exact score: discretization error")
    handles["learned"] = Line2D([], [], color="0.3", ls="--", label="learned model: total error")
    fig.legend(handles=list(handles.values()), loc="outside lower center",
               ncols=1 if size.max_cols <= 2 else 3, frameon=False, handlelength=2.0, columnspacing=1.0)
    return [("score_vs_discretization", fig)]
