"""Paper-ready figures from a results directory (results.csv/.parquet, orders.csv, manifest.json).

Reads only the files of the directory, never reruns anything, and writes `figures/` inside it,
each figure as PDF and 300-dpi PNG:
- error_vs_nfe: error against NFE (log-log), one panel per (problem, metric), a line per solver
  with a 95 % band over seeds, dashed reference slopes of orders 1-4 and the noise floor band;
- order_vs_theory: measured order (with CI) against the theoretical order, diagonal drawn;
- work_precision: error against wall time (DiffEqDevTools' work-precision diagrams);
- fid_vs_nfe and score_vs_discretization: learned-model rows, drawn only when such rows exist.
"""

from __future__ import annotations

import fnmatch
import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from scipy import stats

from bench.measure.orders import FLOOR_FACTOR, STDERR_FACTOR
from bench.report.decomposition import plot_decomposition
from bench.report.style import FAMILIES, Size, SolverStyle, format_log_axes, solver_styles, use_style

RESULT_COLUMNS = (
    "problem", "schedule", "model", "solver", "solver_name", "params", "family", "stochastic",
    "theory_order", "grid", "steps", "nfe", "seed", "metric", "value", "noise_floor", "n_samples",
    "dtype", "status", "reason", "sample_time", "metric_time", "tolerance",
)
ORDER_COLUMNS = (
    "problem", "schedule", "model", "solver", "family", "grid", "metric", "axis", "order", "ci_low",
    "ci_high", "theory", "verdict", "n_points", "n_excluded", "note",
)
_NUMERIC = ("theory_order", "steps", "nfe", "seed", "value", "noise_floor", "n_samples", "sample_time",
            "metric_time", "tolerance")
_ORDER_NUMERIC = ("order", "ci_low", "ci_high", "theory", "n_points", "n_excluded")
METRIC_LABELS = {
    "w2-exact": "exact $W_2$ [data units]", "w2": "$W_2$ (EMD) [data units]",
    "sw2": "sliced $W_2$ [data units]", "sinkhorn": "Sinkhorn $W_2$ [data units]",
    "path-rms": "path RMS error [data units]", "path-median": "path median error [data units]",
    "weak-mean": "weak: $|E X_N - E X|$ [data units]", "weak-cov": "weak: $|Cov_N - Cov|_F$ [data units$^2$]",
    "weak-bump": "weak: RMS bump error [-]", "mmd": "weak: MMD [-]", "mmd-sample": "MMD (unpaired) [-]",
    "fid": "FID [-]",
}
# metrics whose noise floor belongs to each row (paired estimators: the solver's own pathwise noise and
# reference): shown as hollow points, not as one band
PER_ROW_FLOORS = frozenset({"weak-mean", "weak-cov", "weak-bump", "mmd", "path-median"})
NFE_LABEL = "NFE [model evaluations]"
TIME_LABEL = "sampling wall time [s]"
# what the noise_floor column holds, per metric (bench/measure/metrics.py and reference.py,
# bench/studies/images/run.py)
FLOOR_SOURCES = {
    "path-rms": "reference vs. half its steps",  # the reference's self-check, sweep and image-run alike
    "path-median": "reference vs. half its steps",
    **{m: "two exact samples" for m in ("w2", "sw2", "sinkhorn", "mmd-sample")},
    # bench/measure/paired.py: the norm with no signal plus the reference's Richardson correction
    **{m: "paired noise + reference bias" for m in ("weak-mean", "weak-cov", "weak-bump", "mmd")},
    "fid": "as many real images",  # bench/studies/images/run.py FIDHook.floor: held-out training images
}


def floor_label(metrics: Iterable[str]) -> str:
    """Legend text of the noise-floor band for the metrics whose floors a figure shades."""
    groups: dict[str, list[str]] = {}
    for metric in dict.fromkeys(metrics):
        groups.setdefault(FLOOR_SOURCES.get(metric, ""), []).append(metric)
    parts = [", ".join(ms) + (f": {src}" if src else "") for src, ms in groups.items()]
    return f"noise floor ({'; '.join(parts)})"


class ResultsError(ValueError):
    """A results directory that cannot be read; the message is one line for the user."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


@dataclass
class Results:
    """The parsed files of one results directory (after the solver/problem filters)."""

    directory: Path
    rows: pd.DataFrame
    orders: pd.DataFrame | None
    manifest: dict | None
    styles: dict[str, SolverStyle]


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def _legacy_orders(frame: pd.DataFrame) -> pd.DataFrame:
    """orders.csv written before three-valued verdicts: a boolean `agrees`."""
    if "verdict" not in frame.columns and "agrees" in frame.columns:
        frame["verdict"] = np.where(_as_bool(frame["agrees"]), "agrees", "disagrees")
    return frame


def _read_table(path: Path, required: Sequence[str], numeric: Sequence[str],
                legacy=lambda frame: frame) -> pd.DataFrame:
    try:
        frame = legacy(pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path))
    except Exception as exc:  # any parse failure is the user's malformed file
        raise ResultsError(f"cannot read {path}: {_first_line(exc)}") from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ResultsError(f"{path} lacks column(s) {', '.join(missing)}")
    for col in numeric:
        parsed = pd.to_numeric(frame[col], errors="coerce")
        bad = parsed.isna() & frame[col].notna() & (frame[col].astype(str).str.strip() != "")
        if bad.any():
            raise ResultsError(f"{path}: column {col!r} is not numeric (e.g. {frame[col][bad].iloc[0]!r})")
        frame[col] = parsed.astype(float)
    return frame


def _as_bool(series: pd.Series) -> pd.Series:
    if series.dtype == bool:
        return series
    return series.astype(str).str.strip().str.lower().isin(("true", "1", "yes"))


def _matches(values: pd.Series, patterns: Iterable[str] | None) -> pd.Series:
    if not patterns:
        return pd.Series(True, index=values.index)
    pats = list(patterns)
    return values.astype(str).map(lambda v: any(v == p or fnmatch.fnmatchcase(v, p) for p in pats))


def load_results(results_dir: Path | str, solvers: list[str] | None = None,
                 problems: list[str] | None = None) -> Results:
    """Read and validate a results directory; ResultsError (one line) when it is unusable."""
    directory = Path(results_dir)
    if not directory.is_dir():
        raise ResultsError(f"results directory {directory} does not exist")
    csv, parquet = directory / "results.csv", directory / "results.parquet"
    if not csv.exists() and not parquet.exists():
        raise ResultsError(f"{directory} has no results.csv or results.parquet")
    frames = [_read_table(p, RESULT_COLUMNS, _NUMERIC) for p in (parquet, csv) if p.exists()]
    if len(frames) == 2 and len(frames[0]) != len(frames[1]):
        raise ResultsError(f"results.parquet ({len(frames[0])} rows) and results.csv ({len(frames[1])} "
                           f"rows) in {directory} disagree")
    rows = frames[0]
    if rows.empty:
        raise ResultsError(f"{parquet if parquet.exists() else csv} has no rows")
    rows["stochastic"] = _as_bool(rows["stochastic"])
    for col in ("problem", "schedule", "model", "solver", "solver_name", "family", "grid", "metric",
                "status", "reason"):
        rows[col] = rows[col].fillna("").astype(str)
    keep = (_matches(rows["solver"], solvers) | _matches(rows["solver_name"], solvers)) & _matches(
        rows["problem"], problems)
    rows = rows[keep].reset_index(drop=True)
    if rows.empty:
        raise ResultsError(f"no rows of {directory} match solvers={solvers} problems={problems}")

    orders = None
    orders_path = directory / "orders.csv"
    if orders_path.exists():
        try:
            orders = _read_table(orders_path, ORDER_COLUMNS, _ORDER_NUMERIC, legacy=_legacy_orders)
        except ResultsError as exc:
            if "No columns to parse" not in str(exc):
                raise
            orders = pd.DataFrame(columns=list(ORDER_COLUMNS))  # an empty file: no fits were possible
        orders["verdict"] = orders["verdict"].fillna("unresolved").astype(str)
        orders["note"] = orders["note"].fillna("").astype(str)
        keep = _matches(orders["solver"], solvers) & _matches(orders["problem"], problems)
        orders = orders[keep].reset_index(drop=True)

    manifest = None
    manifest_path = directory / "manifest.json"
    if manifest_path.exists():
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError) as exc:
            raise ResultsError(f"cannot read {manifest_path}: {_first_line(exc)}") from None
        if not isinstance(manifest, dict):
            raise ResultsError(f"{manifest_path} is not a JSON object")

    rank = rows["family"].map({f: i for i, f in enumerate(FAMILIES)}).fillna(len(FAMILIES))
    order = rows.assign(_rank=rank).sort_values(["_rank", "theory_order", "solver"])[["solver", "family"]]
    labels = list(dict.fromkeys(zip(order["solver"], order["family"], strict=True)))
    if orders is not None:
        labels += [(s, f) for s, f in zip(orders["solver"], orders["family"], strict=True)]
    return Results(directory, rows, orders, manifest, solver_styles(labels))


# ----------------------------------------------------------------------------- aggregation


def ok_rows(rows: pd.DataFrame, positive: bool = True) -> pd.DataFrame:
    """Rows with status ok and a finite (and, for log axes, positive) value; a decomposition's
    "score" rows (the reference solver with the tested model, one value per seed) are not a solver's
    curve: score_vs_discretization draws them as the learned model's own error."""
    good = (rows["status"] == "ok") & np.isfinite(rows["value"])
    if positive:
        good &= rows["value"] > 0
    if "component" in rows:
        good &= rows["component"].astype(str) != "score"
    return rows[good]


def aggregate(rows: pd.DataFrame, x: str) -> pd.DataFrame:
    """One point per (solver, steps or tolerance): mean x, geometric mean of the value over seeds,
    a 95 % t-interval of the log value (equal to the mean when there is one seed), and `below`: the
    point is under FLOOR_FACTOR x its noise floor or STDERR_FACTOR x its standard error, the levels
    the order fit leaves out (bench/measure/orders.py)."""
    adaptive = rows["family"] == "adaptive"
    knob = rows["steps"].where(~adaptive, rows["tolerance"]).fillna(-1.0)
    out = []
    for (solver, _), grp in rows.assign(_knob=knob).groupby(["solver", "_knob"], sort=False):
        logs = np.log(grp["value"].to_numpy(float))
        n = len(logs)
        mean = logs.mean()
        half = 0.0
        if n > 1 and logs.std(ddof=1) > 0:
            half = float(stats.t.ppf(0.975, n - 1) * logs.std(ddof=1) / math.sqrt(n))
        floor = grp["noise_floor"].to_numpy(float) if "noise_floor" in grp else np.array([np.nan])
        se = grp["stderr"].to_numpy(float) if "stderr" in grp else np.array([np.nan])
        floor_mean = np.nanmean(floor) if np.isfinite(floor).any() else math.nan
        se_mean = math.sqrt(np.nansum(se**2)) / n if np.isfinite(se).any() else math.nan
        below = math.exp(mean) < FLOOR_FACTOR * floor_mean or math.exp(mean) < STDERR_FACTOR * se_mean
        out.append({"solver": solver, "family": grp["family"].iloc[0], "x": float(grp[x].median()),
                    "y": math.exp(mean), "lo": math.exp(mean - half), "hi": math.exp(mean + half), "n": n,
                    "below": bool(below)})
    frame = pd.DataFrame(out, columns=["solver", "family", "x", "y", "lo", "hi", "n", "below"])
    return frame.sort_values(["solver", "x"]).reset_index(drop=True)


# ----------------------------------------------------------------------------- figure helpers


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "x"


def _panel_title(key: dict, varying: set[str]) -> str:
    parts = [key["problem"]]
    if "schedule" in varying and key.get("schedule"):
        parts.append(key["schedule"])
    model = str(key.get("model", "exact"))
    if model != "exact" and key["problem"] != f"image:{Path(model.rstrip('/')).name}":  # image-run names it
        parts.append(f"model {model}")
    if "grid" in varying and key.get("grid"):
        parts.append(f"{key['grid']} grid")
    if key.get("metric"):
        parts.append(key["metric"])
    return ", ".join(parts)


def _layout(n_panels: int, size: Size, n_legend: int) -> tuple[Figure, list[Axes]]:
    cols = min(size.max_cols, n_panels)
    rows = math.ceil(n_panels / cols)
    legend_cols = 2 if size.max_cols <= 2 else 4
    legend_height = math.ceil(n_legend / legend_cols) * size.font * 1.5 / 72 + 0.1
    fig = Figure(figsize=(size.width, rows * size.panel_height + legend_height), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def _legend(fig: Figure, handles: list, size: Size) -> None:
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=2 if size.max_cols <= 2 else 4,
                   frameon=False, handlelength=2.2, columnspacing=1.0, borderaxespad=0.2)


def _solver_handles(solvers: Iterable[str], styles: dict[str, SolverStyle], ls: str = "-") -> list:
    return [Line2D([], [], color=styles[s].color, marker=styles[s].marker, ls=ls, label=s)
            for s in styles if s in set(solvers)]


def _save(fig: Figure, figdir: Path, name: str) -> list[Path]:
    figdir.mkdir(parents=True, exist_ok=True)
    for ax in fig.axes:
        format_log_axes(ax)
    paths = [figdir / f"{name}.pdf", figdir / f"{name}.png"]
    fig.savefig(paths[0])
    fig.savefig(paths[1], dpi=300)
    return paths


def _draw_lines(ax: Axes, agg: pd.DataFrame, styles: dict[str, SolverStyle], size: Size,
                ls: str = "-", hollow_below: bool = False) -> None:
    """One line per solver; with `hollow_below`, points within their own noise floor are hollow."""
    for solver, grp in agg.groupby("solver", sort=False):
        st = styles[solver]
        ax.plot(grp["x"], grp["y"], color=st.color, marker=st.marker, ls=ls, ms=size.marker,
                lw=size.line, zorder=3)
        low = grp[grp["below"]] if hollow_below else grp.iloc[:0]
        if not low.empty:
            ax.plot(low["x"], low["y"], color=st.color, marker=st.marker, ls="none", ms=size.marker,
                    mfc="white", zorder=3.5)
        if (grp["n"] > 1).any():
            ax.fill_between(grp["x"], grp["lo"], grp["hi"], color=st.color, alpha=0.2, lw=0, zorder=2)


def _noise_floor(ax: Axes, floors: np.ndarray, y_low: float) -> bool:
    """Shade [min, max] of the noise floor over rows and everything below it (not resolvable)."""
    floors = floors[np.isfinite(floors) & (floors > 0)]
    if floors.size == 0:
        return False
    lo, hi = float(floors.min()), float(floors.max())
    ax.axhspan(min(y_low, lo), lo, color="0.55", alpha=0.12, lw=0, zorder=1)
    ax.axhspan(lo, hi if hi > lo else lo * 1.04, color="0.45", alpha=0.3, lw=0, zorder=1)
    ax.axhline(float(np.median(floors)), color="0.35", lw=0.6, ls=":", zorder=1)
    return True


def _log_limits(values: np.ndarray, pad: float = 1.6) -> tuple[float, float]:
    values = values[np.isfinite(values) & (values > 0)]
    return float(values.min()) / pad, float(values.max()) * pad


def _reference_slopes(ax: Axes, agg: pd.DataFrame, size: Size) -> None:
    """A fan of dashed lines of slope -1..-4 from just above the top-left data point, short enough
    that the order-4 line ends inside the axes; labels at the line ends."""
    x0, x1 = float(agg["x"].min()), float(agg["x"].max())
    lo, hi = ax.get_ylim()
    if not x1 > x0:
        return
    y0 = min(float(agg.loc[agg["x"] == x0, "y"].max()) * 1.3, hi / 1.05)
    r = min((x1 / x0) ** 0.55, (y0 / lo) ** (0.85 / 4))
    xs = np.geomspace(x0, x0 * r, 20)
    for p in (1, 2, 3, 4):
        ys = y0 * (xs / x0) ** (-p)
        ax.plot(xs, ys, color="0.45", ls=(0, (3, 2)), lw=0.6 * size.line, zorder=1.5)
        ax.text(xs[-1] * 1.04, ys[-1], str(p), color="0.3", fontsize=size.font * 0.75, va="center")
    ax.set_ylim(lo, hi)


# ----------------------------------------------------------------------------- panels


def _panels(rows: pd.DataFrame, keys: Sequence[str]) -> list[tuple[dict, pd.DataFrame]]:
    out = []
    for values, grp in rows.groupby(list(keys), sort=True):
        values = values if isinstance(values, tuple) else (values,)
        out.append((dict(zip(keys, values, strict=True)), grp))
    # exact model first, then by key
    out.sort(key=lambda kv: (kv[0].get("model", "exact") != "exact",))
    return out


def _split_for_size(panels: list, size: Size) -> list[tuple[str, list]]:
    """One figure, or one per metric when there are too many panels for a readable figure."""
    limit = 4 * size.max_cols
    if len(panels) <= limit:
        return [("", panels)]
    groups: dict[str, list] = {}
    for key, grp in panels:
        groups.setdefault(key.get("metric", ""), []).append((key, grp))
    out = []
    for metric, chunk in groups.items():
        for start in range(0, len(chunk), limit):
            part = "" if start == 0 else f"-{start // limit + 1}"
            out.append((f"{_slug(metric)}{part}", chunk[start:start + limit]))
    return out


def _xy_figures(res: Results, rows: pd.DataFrame, name: str, x: str, xlabel: str, size: Size,
                slopes: bool, keys: Sequence[str] = ("problem", "schedule", "model", "grid", "metric"),
                extra: Callable[[Axes, dict, pd.DataFrame], list] | None = None) -> list[Path]:
    """Log-log error plots, one panel per key, a figure per grid when there are several."""
    rows = rows[np.isfinite(rows[x]) & (rows[x] > 0)]
    if rows.empty:
        return []
    varying = {k for k in ("schedule", "grid") if rows.groupby("problem")[k].nunique().max() > 1}
    paths: list[Path] = []
    for suffix, panels in _split_for_size(_panels(rows, keys), size):
        extra_handles: dict[str, object] = {}
        solvers_seen: list[str] = []
        floored: list[str] = []  # metrics whose noise floor is shaded
        fig, axes = _layout(len(panels), size, len(rows["solver"].unique()) + 2)
        for ax, (key, grp) in zip(axes, panels, strict=True):
            agg = aggregate(grp, x)
            solvers_seen += agg["solver"].tolist()
            per_row = grp["metric"].iloc[0] in PER_ROW_FLOORS
            _draw_lines(ax, agg, res.styles, size, hollow_below=per_row)
            ax.set_xscale("log")
            ax.set_yscale("log")
            lims = np.concatenate([agg["lo"].to_numpy(), agg["hi"].to_numpy()])
            floor_rows = grp.iloc[:0] if per_row else grp  # per-row floors: hollow points, no band
            if grp["metric"].iloc[0] == "path-rms" and (~grp["stochastic"].astype(bool)).any():
                # path-rms floors are per-reference self-checks: SDE references (one per solver,
                # on its own Brownian path) are far coarser; shade the shared ODE reference's
                floor_rows = grp[~grp["stochastic"].astype(bool)]
            if per_row and agg["below"].any():
                extra_handles["below"] = Line2D([], [], color="0.3", marker="o", mfc="white", ls="none",
                                                label="within its own noise floor (not fitted)")
            floors = floor_rows["noise_floor"].to_numpy(float)
            finite_floors = floors[np.isfinite(floors) & (floors > 0)]
            ax.set_ylim(*_log_limits(np.concatenate([lims, finite_floors])))
            if _noise_floor(ax, floors, ax.get_ylim()[0]):
                floored.append(key.get("metric", ""))
                extra_handles["noise floor"] = Patch(color="0.45", alpha=0.35, label=floor_label(floored))
            if slopes:
                _reference_slopes(ax, agg, size)
                extra_handles["slopes"] = Line2D([], [], color="0.45", ls=(0, (3, 2)), lw=0.6 * size.line,
                                                 label="reference slopes, order 1-4")
            if extra is not None:
                for handle in extra(ax, key, grp):
                    extra_handles[handle.get_label()] = handle
            ax.set_title(_panel_title(key, varying))
            ax.set_xlabel(xlabel)
            ax.set_ylabel(METRIC_LABELS.get(key.get("metric", ""), f"{key.get('metric', 'error')} [-]"))
        _legend(fig, _solver_handles(solvers_seen, res.styles) + list(extra_handles.values()), size)
        paths += _save(fig, res.directory / "figures", f"{name}-{suffix}" if suffix else name)
    return paths


def error_vs_nfe(res: Results, size: Size) -> list[Path]:
    rows = ok_rows(res.rows)
    return _xy_figures(res, rows[rows["metric"] != "fid"], "error_vs_nfe", "nfe", NFE_LABEL, size, True)


def work_precision(res: Results, size: Size) -> list[Path]:
    rows = ok_rows(res.rows)
    return _xy_figures(res, rows[rows["metric"] != "fid"], "work_precision", "sample_time", TIME_LABEL,
                       size, False)


def fid_vs_nfe(res: Results, size: Size) -> list[Path]:
    rows = ok_rows(res.rows)
    rows = rows[rows["metric"] == "fid"]
    if rows.empty:
        return []
    return _xy_figures(res, rows, "fid_vs_nfe", "nfe", NFE_LABEL, size, False)


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


def score_vs_discretization(res: Results, size: Size) -> list[Path]:
    """Same solver and steps with the exact model (discretization error alone, solid) and with a
    learned model (total error, dashed), plus the learned model's own reference error."""
    rows = ok_rows(res.rows)
    learned = rows[rows["model"] != "exact"]
    exact = rows[rows["model"] == "exact"]
    if learned.empty or exact.empty:
        return []
    everything = res.rows[(res.rows["status"] == "ok") & np.isfinite(res.rows["value"])]
    on = ["problem", "schedule", "grid", "metric", "solver", "steps"]
    pairs = learned.merge(exact[on].drop_duplicates(), on=on)
    if pairs.empty:
        return []
    keys = ("problem", "schedule", "grid", "metric", "model")
    solvers_seen: list[str] = []
    panels = _panels(pairs, keys)
    fig, axes = _layout(len(panels), size, len(pairs["solver"].unique()) + 3)
    varying = {k for k in ("schedule", "grid") if pairs.groupby("problem")[k].nunique().max() > 1}
    ref_handles: dict[str, Line2D] = {}
    floored: list[str] = []
    for ax, (key, grp) in zip(axes, panels, strict=True):
        sel = {k: key[k] for k in ("problem", "schedule", "grid", "metric")}
        mask = np.logical_and.reduce([exact[k] == v for k, v in sel.items()])
        base = exact[mask & exact["solver"].isin(grp["solver"].unique())]
        agg_exact, agg_learned = aggregate(base, "nfe"), aggregate(grp, "nfe")
        solvers_seen += agg_learned["solver"].tolist()
        _draw_lines(ax, agg_exact, res.styles, size, "-")
        _draw_lines(ax, agg_learned, res.styles, size, "--")
        same = np.logical_and.reduce([everything[k] == v for k, v in {**sel, "model": key["model"]}.items()])
        ref, label = _reference_value(everything[same])
        ax.axhline(ref, color="0.2", ls="-.", lw=0.8 * size.line, zorder=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        floors = pd.concat([base["noise_floor"], grp["noise_floor"]]).to_numpy(float)
        ax.set_ylim(*_log_limits(np.concatenate([agg_exact["lo"], agg_exact["hi"], agg_learned["lo"],
                                                 agg_learned["hi"], [ref], floors])))
        if _noise_floor(ax, floors, ax.get_ylim()[0]):
            floored.append(key["metric"])
            ref_handles["noise floor"] = Patch(color="0.45", alpha=0.35, label=floor_label(floored))
        ax.set_title(_panel_title({**key, "model": "exact"}, varying) + f" ({key['model']})")
        ax.set_xlabel(NFE_LABEL)
        ax.set_ylabel(METRIC_LABELS.get(key["metric"], f"{key['metric']} [-]"))
        ref_handles[label] = Line2D([], [], color="0.2", ls="-.", lw=0.8 * size.line, label=label)
    handles = _solver_handles(solvers_seen, res.styles) + [
        Line2D([], [], color="0.3", ls="-", label="exact score: discretization error"),
        Line2D([], [], color="0.3", ls="--", label="learned model: total error"),
        *ref_handles.values()]
    _legend(fig, handles, size)
    return _save(fig, res.directory / "figures", "score_vs_discretization")


def order_vs_theory(res: Results, size: Size) -> list[Path]:
    """Measured order with its CI against the theoretical order (the lower end of its interval, for the
    metric's kind: weak or strong), per (problem, metric); hollow markers where the fit disagrees with
    theory, grey ones where it is unresolved. Per solver the 'steps' axis is used when present."""
    if res.orders is None:
        return []
    o = res.orders[np.isfinite(res.orders["order"]) & np.isfinite(res.orders["theory"])].copy()
    if o.empty:
        return []
    ident = ["problem", "schedule", "model", "solver", "grid", "metric"]
    o["_pref"] = (o["axis"] != "steps").astype(int)
    o = o.sort_values("_pref").drop_duplicates(ident).drop(columns="_pref")
    keys = ("problem", "schedule", "model", "grid", "metric")
    panels = _panels(o, keys)
    varying = {k for k in ("schedule", "grid") if o.groupby("problem")[k].nunique().max() > 1}
    fig, axes = _layout(len(panels), size, len(o["solver"].unique()) + 2)
    solvers_seen: list[str] = []
    t_lo, t_hi = float(o["theory"].min()) - 0.6, float(o["theory"].max()) + 0.6
    y_lo = max(-1.0, min(0.0, float(np.nanmin(o["ci_low"].fillna(o["order"])))) - 0.3)
    y_hi = min(t_hi + 3.0, max(t_hi, float(np.nanmax(o["ci_high"].fillna(o["order"])))) + 0.3)
    for ax, (key, grp) in zip(axes, panels, strict=True):
        ax.plot([t_lo, t_hi], [t_lo, t_hi], color="0.4", ls="--", lw=0.7 * size.line, zorder=1)
        for theory, same in grp.groupby("theory"):
            half = min(0.25, 0.08 * (len(same) - 1))  # dodge, staying close to the true x
            offsets = np.linspace(-half, half, len(same))
            for off, (_, r) in zip(offsets, same.sort_values("solver").iterrows(), strict=True):
                st = res.styles[r["solver"]]
                solvers_seen.append(r["solver"])
                y = float(np.clip(r["order"], y_lo, y_hi))
                lo = r["ci_low"] if np.isfinite(r["ci_low"]) else r["order"]
                hi = r["ci_high"] if np.isfinite(r["ci_high"]) else r["order"]
                err = [[max(y - np.clip(lo, y_lo, y_hi), 0)], [max(np.clip(hi, y_lo, y_hi) - y, 0)]]
                clipped = y != r["order"]
                marker = ("^" if r["order"] > y else "v") if clipped else st.marker
                fill = {"agrees": st.color, "disagrees": "white"}.get(r["verdict"], "0.8")
                ax.errorbar(theory + off, y, yerr=err, color=st.color, marker=marker, ms=size.marker,
                            mfc=fill, mec=st.color, lw=0.8 * size.line, capsize=1.5 * size.line, zorder=3)
        ax.set_xlim(t_lo, t_hi)
        ax.set_ylim(y_lo, y_hi)
        ax.set_xticks(sorted(set(np.round(grp["theory"].astype(float), 2))))
        ax.set_title(_panel_title(key, varying))
        ax.set_xlabel("theoretical order [-]")
        ax.set_ylabel("measured order [-]")
    handles = _solver_handles(solvers_seen, res.styles, ls="none") + [
        Line2D([], [], color="0.4", ls="--", label="measured = theory"),
        Line2D([], [], color="0.3", marker="o", mfc="white", ls="none", label="disagrees with theory"),
        Line2D([], [], color="0.3", marker="o", mfc="0.8", ls="none", label="unresolved"),
    ]
    _legend(fig, handles, size)
    return _save(fig, res.directory / "figures", "order_vs_theory")


def make_figures(results_dir: Path, style: str = "paper", solvers: list[str] | None = None,
                 problems: list[str] | None = None) -> list[Path]:
    """Write every figure the results directory supports into `figures/`; returns the paths."""
    res = load_results(results_dir, solvers, problems)
    paths: list[Path] = []
    with use_style(style) as size:
        for draw in (error_vs_nfe, order_vs_theory, work_precision, fid_vs_nfe, score_vs_discretization):
            paths += draw(res, size)
    if "component" in res.rows:  # a decomposition study: its split per solver, for each metric
        for metric in sorted(set(res.rows["metric"])):
            out = res.directory / "figures" / f"decomposition-{metric}.png"
            paths.append(plot_decomposition(res.rows[res.rows["metric"] == metric], out, metric))
    return paths
