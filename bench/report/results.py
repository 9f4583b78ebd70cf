"""Reading a results directory (results.csv/.parquet, orders.csv, manifest.json) and the aggregates the
figures and the report share: one point per solver and step count, one preferred fit per solver.
Reads only the directory's files, never reruns anything."""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bench.measure.orders import FLOOR_FACTOR, STDERR_FACTOR
from bench.measure.paired import Z95
from bench.report.style import SolverStyle, solver_styles

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
_OPTIONAL_NUMERIC = ("stderr", "nfe_budget", "theory_order_max")
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
# reference): points under their own floor are drawn hollow
PER_ROW_FLOORS = frozenset({"weak-mean", "weak-cov", "weak-bump", "mmd", "path-median"})
NFE_LABEL = "NFE [model evaluations]"
TIME_LABEL = "sampling wall time [s]"
# what the noise_floor column holds, per metric (bench/measure/metrics.py and reference.py,
# bench/studies/images/run.py)
FLOOR_SOURCES = {
    "path-rms": "reference vs. half its steps",  # the reference's self-check, sweep and images run alike
    "path-median": "reference vs. half its steps",
    **{m: "two exact samples" for m in ("w2", "sw2", "sinkhorn", "mmd-sample")},
    # bench/measure/paired.py: the norm with no signal plus the reference's Richardson correction
    **{m: "paired noise + reference bias" for m in ("weak-mean", "weak-cov", "weak-bump", "mmd")},
    "fid": "as many real images",  # bench/studies/images/run.py FIDHook.floor: held-out training images
}


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, f"{metric or 'error'} [-]")


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
    """The parsed files of one results directory (after the solver/problem filters); `styles` covers
    every solver of the directory, filtered or not, so that a filter never restyles a solver."""

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
    for col in [*numeric, *(c for c in _OPTIONAL_NUMERIC if c in frame.columns)]:
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


def _read_orders(path: Path) -> pd.DataFrame | None:
    if not path.exists():
        return None
    try:
        orders = _read_table(path, ORDER_COLUMNS, _ORDER_NUMERIC, legacy=_legacy_orders)
    except ResultsError as exc:
        if "No columns to parse" not in str(exc):
            raise
        orders = pd.DataFrame(columns=list(ORDER_COLUMNS))  # an empty file: no fits were possible
    orders["verdict"] = orders["verdict"].astype(object).fillna("unresolved").astype(str)
    orders["note"] = orders["note"].astype(object).fillna("").astype(str)
    return orders


def _read_manifest(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ResultsError(f"cannot read {path}: {_first_line(exc)}") from None
    if not isinstance(manifest, dict):
        raise ResultsError(f"{path} is not a JSON object")
    return manifest


def load_results(results_dir: Path | str, solvers: list[str] | None = None,
                 problems: list[str] | None = None) -> Results:
    """Read and validate a results directory; ResultsError (one line) when it is unusable. `solvers`
    and `problems` are names or globs (a solver matches by label or by name)."""
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
        rows[col] = rows[col].astype(object).fillna("").astype(str)
    orders = _read_orders(directory / "orders.csv")
    labelled = rows[rows["family"] != ""]  # failed rows may lack a family: they must not restyle a solver
    pairs = list(zip(labelled["solver"], labelled["family"], strict=True))
    if orders is not None:
        pairs += list(zip(orders["solver"].astype(str), orders["family"].astype(str), strict=True))
    pairs += list(zip(rows["solver"], rows["family"], strict=True))
    styles = solver_styles(pairs)

    keep = (_matches(rows["solver"], solvers) | _matches(rows["solver_name"], solvers)) & _matches(
        rows["problem"], problems)
    rows = rows[keep].reset_index(drop=True)
    if rows.empty:
        raise ResultsError(f"no rows of {directory} match solvers={solvers} problems={problems}")
    if orders is not None:
        orders = orders[_matches(orders["solver"], solvers) & _matches(orders["problem"], problems)]
        orders = orders.reset_index(drop=True)
    return Results(directory, rows, orders, _read_manifest(directory / "manifest.json"), styles)


# ----------------------------------------------------------------------------- aggregates


def budget_of(rows: pd.DataFrame) -> pd.Series:
    """Each row's NFE budget: `nfe_budget` where the study placed it at one, else its NFE."""
    return rows["nfe_budget"].fillna(rows["nfe"]) if "nfe_budget" in rows else rows["nfe"]


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
    """One point per (solver, steps or tolerance): median x, mean value over seeds, a 95 % interval
    from its standard error (`lo`, `hi`; NaN without one; `lo` 0 where the interval reaches zero), the
    mean noise floor, and `below`: the point is under FLOOR_FACTOR x its noise floor or STDERR_FACTOR x
    its standard error, the levels the order fit leaves out (bench/measure/orders.py). The standard
    error combines the cells' own when they all have one, else it is the spread over seeds (as
    bench/report/equal_nfe.py does)."""
    knob = rows["steps"].where(rows["family"] != "adaptive", rows["tolerance"]).fillna(-1.0)
    se = rows["stderr"].astype(float) if "stderr" in rows else pd.Series(np.nan, index=rows.index)
    grouped = rows.assign(_knob=knob, _se2=se**2, _has_se=np.isfinite(se)).groupby(["solver", "_knob"],
                                                                                   sort=False)
    out = grouped.agg(family=("family", "first"), x=(x, "median"), y=("value", "mean"), sd=("value", "std"),
                      n=("value", "size"), se2=("_se2", "sum"), has_se=("_has_se", "all"),
                      floor=("noise_floor", "mean")).reset_index()
    spread = np.where(out["n"] > 1, out["sd"] / np.sqrt(out["n"]), np.nan)
    out["se"] = np.where(out["has_se"], np.sqrt(out["se2"]) / out["n"], spread)
    out["lo"] = np.maximum(out["y"] - Z95 * out["se"], 0.0)
    out["hi"] = out["y"] + Z95 * out["se"]
    out["below"] = (out["y"] < FLOOR_FACTOR * out["floor"]) | (out["y"] < STDERR_FACTOR * out["se"])
    cols = ["solver", "family", "x", "y", "lo", "hi", "se", "floor", "n", "below"]
    return out[cols].sort_values(["solver", "x"]).reset_index(drop=True)


def preferred_fits(orders: pd.DataFrame) -> pd.DataFrame:
    """One fit per (problem, schedule, model, grid, metric, solver): the 'steps' axis when present,
    else 'nfe' (adaptive solvers)."""
    ident = ["problem", "schedule", "model", "grid", "metric", "solver"]
    pref = (orders["axis"] != "steps").astype(int)
    return orders.assign(_pref=pref).sort_values("_pref", kind="stable").drop_duplicates(ident).drop(
        columns="_pref").sort_values(ident)


def by_cell(frame: pd.DataFrame) -> list[tuple[list[str], pd.DataFrame]]:
    """(labels, rows) per (problem, metric), split further by schedule, model and grid where those vary
    for it; labels: the problem, the varying values, the metric."""
    out = []
    for (problem, metric), grp in frame.groupby(["problem", "metric"], sort=True):
        varying = [k for k in ("schedule", "model", "grid") if k in grp and grp[k].nunique() > 1]
        for values, sub in (grp.groupby(varying, sort=True) if varying else [((), grp)]):
            values = values if isinstance(values, tuple) else (values,)
            out.append(([str(problem), *(str(v) for v in values), str(metric)], sub))
    return out
