"""Error against NFE (or wall time) as small multiples: one figure per (problem, metric), one panel per
solver family (and per schedule/model/grid where those vary), at most MAX_LINES solvers per panel
(a larger family is split evenly: "SDE (1/2)", "SDE (2/2)"), axes shared by all panels.

In a panel: a line per solver in its fixed style (style.py), a 95 % band from the standard error,
hollow markers where a point is below 3x its noise floor or 2x its standard error (left out of the
order fit), the noise floor as a grey band over the NFE range of the data where the metric has a
shared one (one reference or exact sample; per-row floors of paired estimators show only as hollow
points), and short reference slopes of order 1-4 at the right edge, labelled "1".."4" (not where the
data span less than 1.5 decades: no order shows there). Each panel's solver legend sits above it,
outside the data; what the decorations mean is said once, below the panels.

Every artist carries a gid: "solver:<label>" (a solver's data line), "below:<label>", "band:<label>",
"slope:<p>" (line and label), "floor", so tests can tell data from decoration.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from bench.report.results import (
    FLOOR_SOURCES,
    NFE_LABEL,
    PER_ROW_FLOORS,
    TIME_LABEL,
    Results,
    aggregate,
    metric_label,
    ok_rows,
)
from bench.report.style import FAMILIES, FAMILY_LABELS, MAX_LINES, Size, SolverStyle

SUB_KEYS = ("schedule", "model", "grid")  # a panel per value where they vary within a figure
MIN_SLOPE_DECADES = 1.5  # a flatter y range (a floor-bound metric) shows no order: no slopes drawn
TINY = 1e-300  # lower end of the noise-floor band: the bottom of the axes


@dataclass
class Panel:
    title: str
    solvers: list[str]
    points: pd.DataFrame  # aggregate() of the panel's rows


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", str(text)).strip("-").lower() or "x"


def family_panels(solvers: Iterable[str], styles: dict[str, SolverStyle]) -> list[tuple[str, list[str]]]:
    """(title, solvers) per family in FAMILIES order, in style-slot order, at most MAX_LINES per panel."""
    by_family: dict[str, list[str]] = {}
    for solver in sorted(set(solvers), key=lambda s: styles[s].slot):
        by_family.setdefault(styles[solver].family, []).append(solver)
    out = []
    for family in FAMILIES:
        members = by_family.get(family, [])
        n = math.ceil(len(members) / MAX_LINES)
        for i, chunk in enumerate(np.array_split(np.array(members, dtype=object), n) if n else []):
            out.append((FAMILY_LABELS[family] + (f" ({i + 1}/{n})" if n > 1 else ""), list(chunk)))
    return out


def _common_prefix(values: list[str]) -> str:
    """The part all values share, up to and including their last ':' or ',' (guided:cfg:y=1:w=0, ...)."""
    prefix = os.path.commonprefix(values)
    return prefix[: max(prefix.rfind(":"), prefix.rfind(",")) + 1]


def _panels(rows: pd.DataFrame, x: str, styles: dict[str, SolverStyle]) -> tuple[list[Panel], str]:
    """The panels (a line of the varying schedule/model/grid above the family in each title) and what
    those varying values share (for the figure's title)."""
    varying = [k for k in SUB_KEYS if rows[k].nunique() > 1]
    prefixes = {k: _common_prefix(sorted(rows[k].unique())) for k in varying}
    subs = sorted(rows.groupby(list(SUB_KEYS), sort=True), key=lambda kv: kv[0][1] != "exact")
    panels = []
    for values, grp in subs:
        key = dict(zip(SUB_KEYS, values, strict=True))
        note = ", ".join(str(key[k])[len(prefixes[k]):] + (" grid" if k == "grid" else "") for k in varying)
        points = aggregate(grp, x)
        for title, chunk in family_panels(grp["solver"].unique(), styles):
            title = f"{note}\n{title}" if note else title
            panels.append(Panel(title, chunk, points[points["solver"].isin(chunk)]))
    shared = ", ".join(f"{k} {p}..." for k, p in prefixes.items() if p)
    return panels, shared


def _legend_cols(labels: list[str], size: Size, cols: int) -> int:
    """2 legend columns when they fit above the panel, else 1 (estimated from the label lengths)."""
    font = size.font * 0.85
    panel_pt = (size.width - 0.45) / cols * 72
    col_pt = (2.4 + 0.55 * max(len(lb) for lb in labels)) * font
    return 2 if 2 * col_pt + 0.8 * font <= panel_pt else 1


def _grid(panels: list[Panel], size: Size) -> tuple[Figure, list[Axes], int]:
    cols = min(size.max_cols, len(panels))
    n_rows = math.ceil(len(panels) / cols)
    ncol = min(_legend_cols(p.solvers, size, cols) for p in panels)
    title_lines = max(p.title.count("\n") + 1 for p in panels)
    entries = math.ceil(max(len(p.solvers) for p in panels) / ncol)
    legend_in = (entries + 1.3 * title_lines) * size.font * 0.85 * 1.4 / 72
    height = n_rows * (size.panel_height + legend_in + size.font * 2.2 / 72) + size.font * 6 / 72
    fig = Figure(figsize=(size.width, height), layout="constrained")
    grid = fig.subplots(n_rows, cols, squeeze=False, sharex=True, sharey=True)
    axes = grid.ravel().tolist()
    for i, ax in enumerate(axes):
        ax.set_autoscale_on(False)  # the limits are set once for all panels (autoscaling shared axes is slow)
        if i >= len(panels):
            ax.set_visible(False)
        elif i + cols >= len(panels):  # nothing drawn below it: it carries the x tick labels
            ax.xaxis.set_tick_params(which="both", labelbottom=True)
    return fig, axes[: len(panels)], ncol


def _limits(panels: list[Panel], floors: bool, room: bool) -> tuple[tuple[float, float], tuple[float, float]]:
    """Shared x limits (with `room` on the right for the slope labels) and y limits of the data (and of
    the noise floors when they are drawn)."""
    pts = pd.concat([p.points for p in panels])
    ys = np.concatenate([pts["y"], pts["hi"], pts["floor"] if floors else []])
    ys = ys[np.isfinite(ys) & (ys > 0)]
    lo, hi = float(ys.min()), float(ys.max())
    pad = 10 ** (0.06 * max(math.log10(hi / lo), 1.0))
    xs = pts["x"].to_numpy(float)
    xdec = max(math.log10(xs.max() / xs.min()), 0.3)
    right = 10 ** ((0.14 if room else 0.04) * xdec)
    return (xs.min() / 10 ** (0.04 * xdec), xs.max() * right), (lo / pad, hi * pad)


def _slope_step(xlim: tuple[float, float], ylim: tuple[float, float]) -> float:
    """log10 of the slopes' x extent: their labels ~6 % of the axes' height apart."""
    return min(0.06 * math.log10(ylim[1] / ylim[0]), 0.3 * math.log10(xlim[1] / xlim[0]))


def _slope_start(points: pd.DataFrame, x_end: float, xlim: tuple[float, float],
                 ylim: tuple[float, float]) -> tuple[float, float]:
    """(y where the slopes start, how far the top must grow): above the panel's points at the right
    edge when they fit there, else below them, else above with the top grown."""
    step = _slope_step(xlim, ylim)
    margin = 10 ** (0.04 * math.log10(ylim[1] / ylim[0]))
    x0 = x_end / 10**step
    inside = points["x"] >= x0
    # the points under the slopes and, per solver, the one before them (its segment enters the region)
    before = points[~inside].sort_values("x").groupby("solver").tail(1)
    right = pd.concat([points[inside], before])
    ys = np.concatenate([right["y"], right["hi"]])
    ys = ys[np.isfinite(ys) & (ys > 0)]
    if ys.size == 0:
        return ylim[1] / margin, 1.0
    above = ys.max() * margin * 10 ** (4 * step)  # order 4 ends above the highest point at its end
    if above * margin <= ylim[1]:
        return above, 1.0
    below = ys.min() / margin  # order 1 starts below the lowest point near the edge
    if below / 10 ** (4 * step) >= ylim[0] * margin:
        return below, 1.0
    return above, above * margin / ylim[1]


def _draw_solvers(ax: Axes, panel: Panel, styles: dict[str, SolverStyle], size: Size
                  ) -> tuple[list[Line2D], set[str]]:
    """The panel's solver lines (returned, for its legend), bands and hollow points; and which of
    'band', 'hollow' were drawn."""
    handles, drawn = [], set()
    for solver in panel.solvers:
        pts = panel.points[panel.points["solver"] == solver]
        st = styles[solver]
        handles += ax.plot(pts["x"], pts["y"], color=st.color, marker=st.marker, ms=size.marker,
                           lw=size.line, label=solver, gid=f"solver:{solver}", zorder=3)
        band = pts[np.isfinite(pts["hi"])]
        if len(band) > 1:  # where the interval reaches zero the point is hollow and the band stops at it
            lower = band["lo"].where(band["lo"] > 0, band["y"])
            ax.fill_between(band["x"], lower, band["hi"], color=st.color, alpha=0.15, lw=0, zorder=2,
                            gid=f"band:{solver}")
            drawn.add("band")
        low = pts[pts["below"]]
        if not low.empty:
            ax.plot(low["x"], low["y"], color=st.color, marker=st.marker, ms=size.marker, ls="none",
                    mfc="white", mew=0.8 * size.line, gid=f"below:{solver}", zorder=3.5)
            drawn.add("hollow")
    return handles, drawn


def _floor(ax: Axes, panel: Panel) -> bool:
    """A shared noise floor (one reference or exact sample per panel): its range over the panel's points
    as a grey band, lighter below, over the x range of the data."""
    floors = panel.points["floor"].to_numpy(float)
    floors = floors[np.isfinite(floors) & (floors > 0)]
    if floors.size == 0:
        return False
    xs = [float(panel.points["x"].min()), float(panel.points["x"].max())]
    lo, hi = float(floors.min()), max(float(floors.max()), float(floors.min()) * 1.05)
    ax.fill_between(xs, [TINY, TINY], [lo, lo], color="0.5", alpha=0.12, lw=0, zorder=1, gid="floor")
    ax.fill_between(xs, [lo, lo], [hi, hi], color="0.4", alpha=0.3, lw=0, zorder=1, gid="floor")
    return True


def _slopes(ax: Axes, x_data: float, y0: float, xlim: tuple[float, float], ylim: tuple[float, float],
            size: Size) -> None:
    """Order 1-4 reference slopes from (x_data / r, y0) to the data's right edge; their labels sit just
    right of the line ends (the x limits leave room for them)."""
    step = _slope_step(xlim, ylim)
    xs = np.array([x_data / 10**step, x_data])
    for p in (1, 2, 3, 4):
        ys = y0 * (xs / xs[0]) ** (-p)
        ax.plot(xs, ys, color="0.35", ls=(0, (3, 2)), lw=0.6 * size.line, zorder=1.5, gid=f"slope:{p}")
        ax.text(x_data * 10 ** (0.015 * math.log10(xlim[1] / xlim[0])), ys[-1], str(p), color="0.25",
                fontsize=size.font * 0.7, va="center", ha="left", gid=f"slope:{p}")


def _figure(res: Results, rows: pd.DataFrame, x: str, xlabel: str, slopes: bool, size: Size) -> Figure:
    panels, shared = _panels(rows, x, res.styles)
    fig, axes, ncol = _grid(panels, size)
    metric = rows["metric"].iloc[0]
    shared_floor = metric not in PER_ROW_FLOORS  # per-row floors: hollow points, no band
    xlim, ylim = _limits(panels, shared_floor, slopes)
    x_data = float(pd.concat([p.points for p in panels])["x"].max())
    slopes = slopes and math.log10(ylim[1] / ylim[0]) >= MIN_SLOPE_DECADES
    starts = [math.nan] * len(panels)
    for _ in range(2) if slopes else ():  # the slopes' size depends on the limits they may grow
        found = [_slope_start(p.points, x_data, xlim, ylim) for p in panels]
        starts = [y0 for y0, _ in found]
        ylim = (ylim[0], ylim[1] * max(grow for _, grow in found))
    axes[0].set_xscale("log")  # shared by every panel, as are the limits
    axes[0].set_yscale("log")
    axes[0].set_xlim(*xlim)
    axes[0].set_ylim(*ylim)
    drawn: set[str] = set()
    for ax, panel, y0 in zip(axes, panels, starts, strict=True):
        handles, marks = _draw_solvers(ax, panel, res.styles, size)
        drawn |= marks
        if shared_floor and _floor(ax, panel):
            drawn.add("floor")
        if slopes:
            _slopes(ax, x_data, y0, xlim, ylim, size)
        ax.legend(handles=handles, title=panel.title, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncols=ncol,
                  frameon=False, borderaxespad=0.2, handlelength=1.6, handletextpad=0.4, columnspacing=0.8,
                  alignment="left", borderpad=0.1, labelspacing=0.25)
    cols = min(size.max_cols, len(panels))
    for i, ax in enumerate(axes):
        if i % cols == 0:
            ax.set_ylabel(metric_label(rows["metric"].iloc[0]))
        if i + cols >= len(panels):
            ax.set_xlabel(xlabel)
    title = f"{rows['problem'].iloc[0]}: {metric}" + (f" ({shared})" if shared else "")
    fig.suptitle(title, fontsize=size.font)
    _key(fig, size, drawn | ({"slopes"} if slopes else set()), metric)
    return fig


def _key(fig: Figure, size: Size, drawn: set[str], metric: str) -> None:
    """What the decorations drawn mean, once per figure, below the panels."""
    source = FLOOR_SOURCES.get(metric, "")
    entries = {
        "band": Patch(color="0.5", alpha=0.3, label="95 % CI (standard error)"),
        "hollow": Line2D([], [], color="0.3", marker="o", mfc="white", ls="none",
                         label="hollow: < 3x its noise floor or 2x s.e. (not fitted)"),
        "slopes": Line2D([], [], color="0.35", ls=(0, (3, 2)), lw=0.6 * size.line,
                         label="reference slopes, order 1-4"),
        "floor": Patch(color="0.4", alpha=0.35, label=f"noise floor ({source or 'as recorded'})"),
    }
    handles = [h for k, h in entries.items() if k in drawn]
    if not handles:
        return
    fig.legend(handles=handles, loc="outside lower center", ncols=1 if size.max_cols <= 2 else 4,
               frameon=False, handlelength=1.6, borderaxespad=0.1, fontsize=size.font * 0.8)


def curve_figures(res: Results, rows: pd.DataFrame, name: str, x: str, xlabel: str, size: Size,
                  slopes: bool) -> list[tuple[str, Figure]]:
    """One figure per (problem, metric) of `rows`, named '<name>-<problem>-<metric>'."""
    rows = rows[np.isfinite(rows[x]) & (rows[x] > 0)]
    return [(f"{name}-{slug(problem)}-{slug(metric)}", _figure(res, grp, x, xlabel, slopes, size))
            for (problem, metric), grp in rows.groupby(["problem", "metric"], sort=True)]


def error_vs_nfe(res: Results, size: Size) -> list[tuple[str, Figure]]:
    rows = ok_rows(res.rows)
    return curve_figures(res, rows[rows["metric"] != "fid"], "error_vs_nfe", "nfe", NFE_LABEL, size, True)


def work_precision(res: Results, size: Size) -> list[tuple[str, Figure]]:
    rows = ok_rows(res.rows)
    return curve_figures(res, rows[rows["metric"] != "fid"], "work_precision", "sample_time", TIME_LABEL,
                         size, False)


def fid_vs_nfe(res: Results, size: Size) -> list[tuple[str, Figure]]:
    rows = ok_rows(res.rows)
    return curve_figures(res, rows[rows["metric"] == "fid"], "fid_vs_nfe", "nfe", NFE_LABEL, size, False)
