"""Charts with a row per solver, labels on the y axis (never overlapping: the figure grows with the
number of solvers), one figure per (problem, metric), legends above the axes:
- leaderboard: error at equal NFE (bench/report/equal_nfe.py; 10 and 20 by default) with its 95 % CI,
  sorted by the error at the largest budget; hollow markers: below the noise floor;
- order_vs_theory: measured order with its CI against the theory (a black bar over its range), coloured
  by verdict; rows grouped by family, then theory order.

Solver rows carry the gid "solver:<label>" like the curves of curves.py."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from bench.report.curves import slug
from bench.report.equal_nfe import error_at_nfe
from bench.report.results import Results, by_cell, metric_label, ok_rows, preferred_fits
from bench.report.style import FAMILIES, FAMILY_LABELS, Size, SolverStyle

LEADERBOARD_BUDGETS = (10, 20)
BUDGET_STYLE = {0: ("#1f77b4", "o"), 1: ("#d62728", "s"), 2: ("#2ca02c", "D")}  # by budget position
VERDICT_COLORS = {"agrees": "#2ca02c", "disagrees": "#d62728", "unresolved": "0.55"}


def _rows_figure(n_rows: int, size: Size, legend_lines: int = 1) -> tuple[Figure, Axes]:
    """A figure whose height gives each solver row room for its tick label."""
    row_in = max(size.font * 1.25, 7.0) / 72
    header = (legend_lines * 1.6 + 4.5) * size.font / 72
    width = size.width if size.max_cols <= 2 else min(size.width, 8.0)
    fig = Figure(figsize=(width, n_rows * row_in + header + 0.25), layout="constrained")
    ax = fig.subplots()
    ax.set_ylim(n_rows - 0.5, -0.5)  # first row on top
    ax.set_yticks(range(n_rows))
    ax.grid(axis="y", visible=False)
    ax.tick_params(axis="y", length=0)
    return fig, ax


def _groups(frame: pd.DataFrame) -> list[tuple[str, str, pd.DataFrame]]:
    """(name suffix, title, rows) per cell (results.by_cell)."""
    return [("-".join(slug(p) for p in labels), f"{', '.join(labels[:-1])}: {labels[-1]}", rows)
            for labels, rows in by_cell(frame)]


def _leaderboard(table: pd.DataFrame, title: str, metric: str, size: Size) -> Figure:
    budgets = sorted(table["budget"].unique())
    wide = table.pivot_table(index="solver", columns="budget", values="value", aggfunc="first")
    order = wide.sort_values([budgets[-1], *budgets[-2::-1]], na_position="last").index.tolist()
    fig, ax = _rows_figure(len(order), size)
    ax.set_yticks(range(len(order)), order)
    dodge = 0.18 if len(budgets) > 1 else 0.0
    lows = table["ci_low"].to_numpy(float)
    left = min(float(table["value"].min()), float(np.nanmin(lows[lows > 0], initial=np.inf))) / 1.5
    right = float(np.nanmax(np.fmax(table["ci_high"].to_numpy(float), table["value"].to_numpy(float)))) * 1.5
    handles = []
    for i, budget in enumerate(budgets):
        color, marker = BUDGET_STYLE[i % len(BUDGET_STYLE)]
        part = table[table["budget"] == budget].set_index("solver")
        y = np.array([order.index(s) for s in part.index]) + dodge * (i - (len(budgets) - 1) / 2)
        v = part["value"].to_numpy(float)
        # an interval reaching zero runs off the left edge (no lower end on a log axis)
        lo = v - np.where(part["ci_low"].to_numpy(float) > 0, part["ci_low"].to_numpy(float), left / 2)
        hi = part["ci_high"].to_numpy(float) - v
        err = np.nan_to_num(np.clip(np.vstack([lo, hi]), 0, None))
        ax.errorbar(v, y, xerr=err, ls="none", color=color, elinewidth=0.7 * size.line, capsize=0,
                    zorder=2, gid=f"ci:{budget}")
        below = part["below_floor"].to_numpy(bool)
        for mask, face in ((~below, color), (below, "white")):
            ax.plot(v[mask], y[mask], ls="none", marker=marker, color=color, mfc=face, ms=size.marker,
                    mew=0.8 * size.line, zorder=3, gid=f"budget:{budget}")
        handles.append(Line2D([], [], ls="none", marker=marker, color=color, ms=size.marker,
                              label=f"NFE {int(budget)}"))
    if table["below_floor"].astype(bool).any():
        handles.append(Line2D([], [], ls="none", marker="o", color="0.3", mfc="white", ms=size.marker,
                              label="below noise floor"))
    for k, label in enumerate(ax.get_yticklabels()):
        label.set_gid(f"solver:{order[k]}")
    ax.set_xscale("log")
    ax.set_xlim(left, right)
    ax.set_xlabel(metric_label(metric))
    ax.set_title(title, fontsize=size.font, loc="left")
    fig.legend(handles=handles, loc="outside upper center", ncols=len(handles), frameon=False,
               handletextpad=0.2, columnspacing=0.8, borderaxespad=0.1)
    return fig


def leaderboard(res: Results, size: Size, budgets: tuple[int, ...] = LEADERBOARD_BUDGETS
                ) -> list[tuple[str, Figure]]:
    """Error at each NFE budget per solver, one figure per (problem, metric), named
    'leaderboard-<problem>-<metric>'."""
    out = []
    for name, title, rows in _groups(ok_rows(res.rows, positive=False)):
        table = error_at_nfe(rows, budgets)  # empty (object columns) where no run fits a budget
        table = table[table["value"].astype(float) > 0] if not table.empty else table
        if table.empty:
            continue
        title += " at equal NFE"
        out.append((f"leaderboard-{name}", _leaderboard(table, title, rows["metric"].iloc[0], size)))
    return out


def _order_rows(fits: pd.DataFrame, styles: dict[str, SolverStyle]) -> tuple[pd.DataFrame, dict[int, str]]:
    """The fits sorted by family, theory and solver, each with its row (`_row`) below a header row per
    family; and the header rows: {row: family}."""
    fam = fits["solver"].map(lambda s: styles[s].family if s in styles else "other")
    fits = fits.assign(_family=fam, _rank=fam.map(FAMILIES.index)).sort_values(["_rank", "theory", "solver"])
    rows, headers, row = [], {}, 0
    for family in fits["_family"]:
        if family not in headers.values():
            headers[row] = family
            row += 1
        rows.append(row)
        row += 1
    return fits.assign(_row=rows).reset_index(drop=True), headers


def _no_fit(reason: str) -> str:
    """'no fit' and why, in a few words read from the fit's reason."""
    if "floor" in reason:
        return "no fit: noise floor"
    if "fewer than" in reason or "too few" in reason:
        return "no fit: too few levels"
    return "no fit"


def _order_chart(fits: pd.DataFrame, title: str, styles: dict[str, SolverStyle], size: Size) -> Figure:
    fits, headers = _order_rows(fits, styles)
    fig, ax = _rows_figure(len(fits) + len(headers), size)
    labels = {**dict(zip(fits["_row"], fits["solver"], strict=True)),
              **{r: FAMILY_LABELS.get(f, f) for r, f in headers.items()}}
    ax.set_yticks(sorted(labels), [labels[r] for r in sorted(labels)])
    for tick, row in zip(ax.get_yticklabels(), sorted(labels), strict=True):
        if row in headers:  # a family's header row: bold, no data
            tick.set_fontweight("bold")
            tick.set_gid(f"family:{headers[row]}")
        else:
            tick.set_gid(f"solver:{labels[row]}")
    t_hi = float(np.nanmax(fits[["theory", "theory_max"]].to_numpy(float)))
    lo_lim = min(0.0, float(np.nanmin(fits["ci_low"].to_numpy(float), initial=0.0))) - 0.3
    lo_lim = max(lo_lim, -1.0)
    hi_lim = min(max(t_hi + 1.0, float(np.nanmax(fits["ci_high"].to_numpy(float), initial=t_hi))) + 0.3,
                 t_hi + 3.0)
    for _, r in fits.iterrows():
        i = int(r["_row"])
        t_lo, t_max = float(r["theory"]), float(r["theory_max"])
        ax.plot([t_lo - 0.04, t_max + 0.04], [i, i], color="black", lw=2.2 * size.line, alpha=0.35,
                solid_capstyle="butt", zorder=1, gid="theory")
        color = VERDICT_COLORS.get(r["verdict"], "0.55")
        order = float(r["order"])
        if not math.isfinite(order):  # the note on the side of the theory mark with more room
            right = t_max < (lo_lim + hi_lim) / 2
            ax.text(t_max + 0.12 if right else t_lo - 0.12, i, _no_fit(str(r.get("reason", ""))),
                    color="0.45", va="center", ha="left" if right else "right", fontsize=size.font * 0.75,
                    gid=f"solver:{r['solver']}")
            continue
        x = float(np.clip(order, lo_lim + 0.05, hi_lim - 0.05))
        lo = float(np.clip(r["ci_low"], lo_lim, hi_lim)) if math.isfinite(r["ci_low"]) else x
        hi = float(np.clip(r["ci_high"], lo_lim, hi_lim)) if math.isfinite(r["ci_high"]) else x
        marker = (">" if order > x else "<") if x != order else "o"
        ax.errorbar(x, i, xerr=[[max(x - lo, 0)], [max(hi - x, 0)]], color=color, marker=marker,
                    ms=size.marker, elinewidth=0.8 * size.line, capsize=0, zorder=3,
                    gid=f"solver:{r['solver']}")
    for row in list(headers)[1:]:
        ax.axhline(row - 0.5, color="0.6", lw=0.5, zorder=0)
    ax.set_xlim(lo_lim, hi_lim)
    ax.set_xlabel("order of convergence [-]")
    ax.set_title(title, fontsize=size.font, loc="left")
    handles = [Line2D([], [], ls="none", marker="o", color=c, ms=size.marker, label=v)
               for v, c in VERDICT_COLORS.items()]
    handles.append(Line2D([], [], color="black", alpha=0.35, lw=2.2 * size.line, label="theory"))
    fig.legend(handles=handles, loc="outside upper center", ncols=len(handles), frameon=False,
               handletextpad=0.3, columnspacing=0.9, borderaxespad=0.1)
    return fig


def order_vs_theory(res: Results, size: Size) -> list[tuple[str, Figure]]:
    """Measured order (95 % CI) and theory per solver, one figure per (problem, metric), named
    'order_vs_theory-<problem>-<metric>'; one fit per solver (the steps axis when present)."""
    if res.orders is None or res.orders.empty:
        return []
    fits = preferred_fits(res.orders)
    fits = fits[np.isfinite(fits["theory"].astype(float))].copy()
    theory = fits["theory"].astype(float)
    high = fits.get("theory_max", theory).astype(float).fillna(theory)
    fits = fits.assign(theory_max=np.maximum(high, theory))
    out = []
    for name, title, grp in _groups(fits):
        kind = grp["theory_kind"].iloc[0] if "theory_kind" in grp else ""
        title += f" ({kind} order)" if isinstance(kind, str) and kind in ("weak", "strong") else ""
        out.append((f"order_vs_theory-{name}", _order_chart(grp, title, res.styles, size)))
    return out
