"""Figure of the score/discretization split (bench/studies/decompose.py): one panel per solver, error
against NFE for the exact score (discretization only) and the tested model (both), with the
reference-with-tested-model error (score only) as a band and the crossover NFE marked."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from bench.report.style import format_log_axes  # noqa: E402
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
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=150)
    plt.close(fig)
    return out
